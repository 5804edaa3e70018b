"""Custom commands: real markdown files in temporary projects, discovered, expanded and run.

The unit tests cover discovery (every place, namespacing, precedence, skills as commands),
the front matter (argument hints, parenthesis-aware ``allowed-tools``, broken files as one
line), expansion (``$ARGUMENTS``, ``$1``, ``@file`` inside the workspace only, ``!`cmd```
through the permission rules) and the chat's parsing, completion and help. The end-to-end
tests run ``crew run "/name args"`` against the scripted model server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagecrew.actors.builder import SessionSetupError, custom_setup, prepare_session
from stagecrew.cli.chat import (
    COMMANDS,
    Command,
    CommandError,
    complete_command,
    custom_meta,
    help_rows,
    parse_command,
)
from stagecrew.commands import (
    CommandExpansionError,
    discover_commands,
    expand_command,
    split_invocation,
)
from stagecrew.config import load_config
from stagecrew.skills import allow_rules, discover_skills, split_tool_list
from stagecrew.skills.allowed_tools import AllowedToolsError
from stagecrew.tools.permissions import DEFAULT_RULES, PermissionChecker


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A project, a home (for ~/.claude and ~/.config/opencode) and a stagecrew config dir."""
    project, home, config = tmp_path / "proj", tmp_path / "home", tmp_path / "config"
    for d in (project, home, config):
        d.mkdir()
    (project / ".git").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("STAGECREW_CONFIG_DIR", str(config))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return {"project": project, "home": home, "config": config}


def catalog(places: dict[str, Path]):  # type: ignore[no-untyped-def]
    skills = discover_skills(
        places["project"], user_config_dir=places["config"], home=places["home"]
    )
    return discover_commands(
        places["project"], user_config_dir=places["config"], home=places["home"], skills=skills
    )


def checker(*rules: str, ask_policy: str = "deny") -> PermissionChecker:
    return PermissionChecker([*DEFAULT_RULES, *rules], ask_policy=ask_policy)  # type: ignore[arg-type]


# -- discovery --------------------------------------------------------------------------------


def test_every_place_is_read_and_subdirectories_namespace(places: dict[str, Path]) -> None:
    p, h, c = places["project"], places["home"], places["config"]
    write(p / ".claude/commands/frontend/component.md", "Make a component.")
    write(p / ".stagecrew/commands/ship.md", "Ship it.")
    write(p / ".opencode/command/oc-one.md", "One.")
    write(p / ".opencode/commands/oc-two.md", "Two.")
    write(h / ".claude/commands/mine.md", "Mine.")
    write(h / ".config/opencode/command/oc-user.md", "User opencode.")
    write(c / "commands/crew-user.md", "User stagecrew.")
    write(p / ".claude/commands/notes.txt", "not markdown")
    write(p / ".claude/commands/.hidden/secret.md", "hidden")
    found = catalog(places)
    names = set(found.commands)
    assert {"frontend:component", "ship", "oc-one", "oc-two", "mine", "oc-user", "crew-user"} <= (
        names
    )
    assert not {"notes", "secret", ".hidden:secret"} & names
    component = found.commands["frontend:component"]
    assert component.slash == "/frontend:component"
    assert (component.scope, component.origin) == ("project", "claude")
    assert found.commands["mine"].label == "user claude command"
    assert found.commands["crew-user"].label == "user stagecrew command"
    assert found.match("/frontend:component Button  big") == (component, "Button  big")
    assert found.match("//frontend:component") is None
    assert found.match("/nope x") is None


def test_project_overrides_user_and_stagecrew_overrides_claude(places: dict[str, Path]) -> None:
    p, h = places["project"], places["home"]
    write(h / ".claude/commands/review.md", "---\ndescription: user review\n---\nUser.")
    write(p / ".claude/commands/review.md", "---\ndescription: project review\n---\nProject.")
    write(p / ".claude/commands/fix.md", "Claude fix.")
    write(p / ".stagecrew/commands/fix.md", "Stagecrew fix.")
    found = catalog(places)
    assert found.commands["review"].body == "Project.\n"
    assert found.commands["fix"].body == "Stagecrew fix.\n"
    hidden = {(lost.source, won.source) for lost, won in found.shadowed}
    assert (h / ".claude/commands/review.md", p / ".claude/commands/review.md") in hidden
    assert (p / ".claude/commands/fix.md", p / ".stagecrew/commands/fix.md") in hidden


def test_user_invocable_skills_are_commands_and_win_over_a_command(
    places: dict[str, Path],
) -> None:
    p = places["project"]
    write(p / ".claude/commands/deploy.md", "The command.")
    write(p / ".claude/skills/deploy/SKILL.md", "---\ndescription: Deploy\n---\nThe skill.")
    write(
        p / ".claude/skills/internal/SKILL.md",
        "---\ndescription: Internal\nuser-invocable: false\n---\nModel only.",
    )
    found = catalog(places)
    assert found.commands["deploy"].body == "The skill.\n"
    assert found.commands["deploy"].label == "project skill"
    assert "internal" not in found.commands
    assert found.commands["review-diff"].scope == "shipped"  # the shipped skill


# -- front matter -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ('"[message]"', "[message]"),
        ("[message]", "[message]"),  # YAML reads a list: shown as written
        ("[pr-number, priority]", "[pr-number] [priority]"),
        ("[pr-number] [priority]", "[pr-number] [priority]"),  # not YAML; Claude Code's example
        ("add [tagId] | remove [tagId]", "add [tagId] | remove [tagId]"),
        ("\n  - file\n  - '<mode>'", "[file] <mode>"),
    ],
)
def test_argument_hint_as_text_or_list(places: dict[str, Path], written: str, shown: str) -> None:
    write(places["project"] / ".claude/commands/x.md", f"---\nargument-hint: {written}\n---\nX")
    assert catalog(places).commands["x"].argument_hint == shown


def test_allowed_tools_split_outside_parentheses() -> None:
    assert split_tool_list("Bash(git diff *), Read") == ["Bash(git diff *)", "Read"]
    assert split_tool_list("Bash(git add:*), Bash(git commit -m *) Edit") == [
        "Bash(git add:*)",
        "Bash(git commit -m *)",
        "Edit",
    ]
    assert split_tool_list(["Bash(git log *)", "Read, Grep"]) == ["Bash(git log *)", "Read", "Grep"]
    with pytest.raises(AllowedToolsError, match="unbalanced"):
        split_tool_list("Bash(git diff *, Read")
    assert allow_rules(
        ["Bash(git diff *)", "Bash(git add:*)", "Read", "WebFetch(domain:example.com)", "mcp__gh"]
    ) == [
        "allow bash(git diff *)",
        "allow bash(git add *)",
        "allow read",
        "allow webfetch(example.com)",
        "allow mcp__gh",
    ]


def test_front_matter_fields(places: dict[str, Path]) -> None:
    write(
        places["project"] / ".claude/commands/pr.md",
        "---\ndescription: Open a PR\nallowed-tools: Bash(gh pr create *), Read\n"
        "model: openai/other\nagent: plan\nsubtask: true\n---\nBody",
    )
    write(places["project"] / ".claude/commands/plain.md", "# Plain heading\n\nText.")
    found = catalog(places)
    pr = found.commands["pr"]
    assert pr.description == "Open a PR"
    assert pr.allowed_tools == ("Bash(gh pr create *)", "Read")
    assert pr.allow_rules == ("allow bash(gh pr create *)", "allow read")
    assert (pr.model, pr.agent) == ("openai/other", "plan")
    assert found.commands["plain"].description == "Plain heading"  # the first line, as Claude


def test_broken_front_matter_is_one_line_and_the_rest_loads(places: dict[str, Path]) -> None:
    p = places["project"]
    bad = write(p / ".claude/commands/bad.md", "---\ndescription: a: b\n---\nBody")
    tools = write(p / ".claude/commands/tools.md", "---\nallowed-tools: Bash(git\n---\nBody")
    write(p / ".claude/commands/open.md", "---\ndescription: no end\nBody")
    write(p / ".claude/commands/good.md", "---\ndescription: fine\n---\nBody")
    found = catalog(places)
    assert set(found.commands) == {"good", "review-diff"}
    lines = {p.path.name: str(p) for p in found.problems}
    assert set(lines) == {"bad.md", "tools.md", "open.md"}
    for line in lines.values():
        assert "\n" not in line
    assert lines["bad.md"].startswith(f"{bad}: invalid YAML frontmatter (line 2)")
    assert lines["tools.md"].startswith(f"{tools}: field 'allowed-tools': unbalanced")
    assert "unterminated" in lines["open.md"]


# -- expansion --------------------------------------------------------------------------------


def expand(places: dict[str, Path], body: str, args: str, **kw: object) -> str:
    write(places["project"] / ".claude/commands/t.md", body)
    command = catalog(places).commands["t"]
    return expand_command(command, args, places["project"], **kw).text  # type: ignore[arg-type]


def test_arguments_positional_and_appended(places: dict[str, Path]) -> None:
    ok = checker()
    text = expand(places, "All: $ARGUMENTS. First $1, second $2, none [$3].", 'a "b c"', checker=ok)
    assert text == 'All: a "b c". First a, second b c, none [].'
    assert expand(places, "Zero-based $ARGUMENTS[1].", "x y", checker=ok) == "Zero-based y."
    assert expand(places, "No placeholder.", "x y", checker=ok) == (
        "No placeholder.\n\nARGUMENTS: x y"
    )
    assert expand(places, "No placeholder.", "", checker=ok) == "No placeholder."


def test_file_references_inline_inside_the_workspace_only(
    places: dict[str, Path], tmp_path: Path
) -> None:
    p = places["project"]
    write(p / "src/app.py", "print('app')\n")
    write(tmp_path / "secret.txt", "outside")
    ok = checker()
    text = expand(
        places, "Review @src/app.py. Also @param and `@src/app.py` and a@b.c", "", checker=ok
    )
    assert text == (
        "Review <file path=\"src/app.py\">\nprint('app')\n</file>. Also @param and "
        "`@src/app.py` and a@b.c"
    )
    assert "print('app')" in expand(places, "Look at @$1", "src/app.py", checker=ok)
    for ref in ("@../secret.txt", f"@{tmp_path / 'secret.txt'}", "@link/secret.txt"):
        (p / "link").unlink(missing_ok=True)
        (p / "link").symlink_to(tmp_path)
        with pytest.raises(CommandExpansionError, match="outside the workspace"):
            expand(places, f"Read {ref}", "", checker=ok)


def test_file_reference_under_an_ask_rule_follows_the_ask_policy(places: dict[str, Path]) -> None:
    write(places["project"] / ".env", "TOKEN=1")
    with pytest.raises(CommandExpansionError, match=r"@\.env needs approval under rule 'ask read"):
        expand(places, "Env: @.env", "", checker=checker(ask_policy="ask"))
    text = expand(
        places, "Env: @.env", "", checker=checker(ask_policy="ask"), confirm=lambda q: True
    )
    assert "TOKEN=1" in text


def test_shell_commands_run_in_the_project_root_with_quoted_arguments(
    places: dict[str, Path],
) -> None:
    p = places["project"]
    sub = p / "sub"
    sub.mkdir()
    text = expand(
        places, "Here: !`pwd`. Said: !`printf '%s|' $1 $2`", "'a; touch pwned' b", checker=checker()
    )
    assert text == f"Here: {p}. Said: a; touch pwned|b|"
    assert not (p / "pwned").exists()
    # An argument that looks like a directive stays text.
    text = expand(places, "Echo $ARGUMENTS", "!`touch pwned2` @.git", checker=checker())
    assert text == "Echo !`touch pwned2` @.git" and not (p / "pwned2").exists()
    assert expand(places, "Fails: !`echo out; exit 3`", "", checker=checker()) == (
        "Fails: out\n[exit status 3]"
    )


def test_shell_commands_in_code_blocks_are_text_and_slow_ones_fail(places: dict[str, Path]) -> None:
    p = places["project"]
    body = "Example:\n```sh\n!`touch fenced` and @README.md\n```\nDone $1."
    write(p / "README.md", "readme")
    text = expand(places, body, "x", checker=checker())
    assert text == "Example:\n```sh\n!`touch fenced` and @README.md\n```\nDone x."
    assert not (p / "fenced").exists()
    write(p / ".claude/commands/slow.md", "Wait: !`sleep 5; touch late`")
    command = catalog(places).commands["slow"]
    with pytest.raises(CommandExpansionError, match=r"did not finish within 0\.3 s"):
        expand_command(command, "", p, checker=checker(), timeout_s=0.3)


def test_a_denied_shell_command_fails_the_command_naming_the_rule(places: dict[str, Path]) -> None:
    p = places["project"]
    body = "Log: !`git log -1`. Then !`touch ran`"
    with pytest.raises(CommandExpansionError) as caught:
        expand(places, body, "", checker=checker("deny bash(git log *)"))
    assert "/t" in str(caught.value) and "rule 'deny bash(git log *)'" in str(caught.value)
    assert not (p / "ran").exists()
    # An ask in a headless run follows the ask policy (deny here), naming the rule.
    with pytest.raises(CommandExpansionError, match=r"rule 'ask bash\(git push \*\)'"):
        expand(places, "!`git push`", "", checker=checker(ask_policy="deny"))
    asked: list[str] = []
    expand(
        places,
        "!`touch approved`",
        "",
        checker=checker("ask bash(touch *)", ask_policy="ask"),
        confirm=lambda q: asked.append(q) or True,
    )
    assert asked == ["/t runs !`touch approved`: allow it?"] and (p / "approved").exists()


# -- the session builder ----------------------------------------------------------------------


def config_for(places: dict[str, Path], **extra: object):  # type: ignore[no-untyped-def]
    cfg = {"models": {"primary": {"model": "openai/m", "api_base": "http://127.0.0.1:9"}}}
    write(places["project"] / ".stagecrew/config.json", json.dumps({**cfg, **extra}))
    return load_config(places["project"])


def test_prepare_session_expands_and_applies_the_command(places: dict[str, Path]) -> None:
    write(
        places["project"] / ".claude/commands/ship.md",
        "---\nallowed-tools: Bash(git push:*)\nmodel: openai/fast\nagent: plan\n---\nShip $1 now.",
    )
    config = config_for(places, permissions=["deny bash(git push --force *)"])
    prepared = prepare_session(config, "/ship main", places["project"])
    spec = prepared.spec
    assert spec.prompt == "Ship main now."
    assert (spec.profile, spec.model.model) == ("plan", "openai/fast")
    assert spec.permissions[:2] == ["allow bash(git push *)", "deny bash(git push --force *)"]
    assert prepared.command is not None and prepared.command.command.name == "ship"
    # Without expansion (the chat's //line) the text is the person's, untouched.
    plain = prepare_session(config, "/ship main", places["project"], expand_commands=False)
    assert plain.spec.prompt == "/ship main" and plain.command is None
    # Not a command: the text goes to the model as written (an MCP prompt, a path).
    assert prepare_session(config, "/mcp__gh__pr 1", places["project"]).spec.prompt == (
        "/mcp__gh__pr 1"
    )


def test_prepare_session_names_a_broken_command_and_a_bad_agent(places: dict[str, Path]) -> None:
    bad = write(places["project"] / ".claude/commands/bad.md", "---\nmodel: [x\n---\nBody")
    write(places["project"] / ".claude/commands/who.md", "---\nagent: nobody\n---\nBody")
    config = config_for(places)
    with pytest.raises(SessionSetupError, match=f"^{bad}: invalid YAML"):
        prepare_session(config, "/bad now", places["project"])
    with pytest.raises(SessionSetupError, match=r"/who \(.*who.md\) names unknown agent profile"):
        prepare_session(config, "/who", places["project"])
    # A session that does not use the broken file runs, with the problem as a notice.
    prepared = prepare_session(config, "Fix it.", places["project"])
    assert [n for n in prepared.notices if n.startswith(str(bad))]


def test_custom_setup_reads_the_person_home(places: dict[str, Path]) -> None:
    write(places["home"] / ".claude/commands/mine.md", "Mine")
    assert "mine" in custom_setup(places["project"]).commands.commands
    assert "mine" not in custom_setup(places["project"], home=places["config"]).commands.commands


# -- the chat ---------------------------------------------------------------------------------


def test_chat_parses_custom_commands_and_lets_mcp_prompts_through() -> None:
    custom = {"/review", "/help", "/frontend:component"}
    assert parse_command("/review 12 high", custom) == Command("/review", "12 high", custom=True)
    assert parse_command("/help", custom) == Command("/help", custom=True)  # overrides
    assert parse_command("/help") == Command("/help")
    assert parse_command("/frontend:component X", custom) == Command(
        "/frontend:component", "X", custom=True
    )
    assert parse_command("/mcp__git__status now") is None
    assert parse_command("//review", custom) is None
    with pytest.raises(CommandError, match="did you mean /review"):
        parse_command("/rev", custom)
    assert split_invocation("/x\nmore lines") == ("x", "more lines")


def test_chat_completes_and_lists_custom_commands(places: dict[str, Path]) -> None:
    p = places["project"]
    write(
        p / ".claude/commands/review.md",
        "---\ndescription: Review a PR\nargument-hint: [pr]\n---\nB",
    )
    write(p / ".claude/commands/clear.md", "---\ndescription: Tidy files\n---\nB")
    found = catalog(places)
    custom = {c.slash: custom_meta(c) for c in found.sorted()}
    assert custom["/review"] == "[pr] Review a PR"
    assert custom["/clear"] == "Tidy files (overrides the built-in /clear)"
    completions = dict(complete_command("/c", custom=custom))
    assert list(completions) == ["/cancel", "/clear"]
    assert completions["/clear"].startswith("Tidy files")
    assert complete_command("/rev", custom=custom) == [
        ("/review", "[pr] Review a PR"),
        ("/review-diff", custom["/review-diff"]),
    ]
    assert complete_command("/review ", ["build"], custom=custom) == []
    rows = help_rows(found.sorted())
    builtin, replacing = [text for name, text in rows if name == "/clear"]
    assert builtin == COMMANDS["/clear"] + " — replaced by a custom command, see below"
    assert replacing == "Tidy files (overrides the built-in /clear) · project claude command"
    assert ("/review [pr]", "[pr] Review a PR · project claude command") in rows
    assert [name for name, _ in rows][: len(COMMANDS)] == list(COMMANDS)


# -- end to end: crew run "/name args" ----------------------------------------------------------


def scripted_project(repo: Path, base_url: str, **config: object) -> None:
    models = {"models": {"primary": {"model": "openai/m", "api_base": base_url}}}
    write(repo / ".stagecrew/config.json", json.dumps({**models, **config}))


@pytest.mark.ray
def test_crew_run_sends_the_expanded_command(
    ray_head: object, git_repo: Path, tmp_path: Path
) -> None:
    from conftest import crew

    from stagecrew.testing.scripted_llm import ScriptedLLM

    write(
        git_repo / ".claude/commands/team/greet.md",
        "---\ndescription: Greet people\nargument-hint: [who]\n---\n"
        "Say hello to $ARGUMENTS; first is $1. Branch: !`git branch --show-current`.",
    )
    broken = write(git_repo / ".claude/commands/broken.md", "---\nmodel: a: b\n---\nBody")
    with ScriptedLLM([{"text": "Hello."}]) as llm:
        scripted_project(git_repo, llm.base_url)
        proc = crew("run", "/team:greet Alice Bob", cwd=git_repo, env={"HOME": str(tmp_path)})
        requests = list(llm.requests)
    assert proc.returncode == 0, proc.stderr
    said = [m["content"] for m in requests[0].messages if m["role"] == "user"]
    assert said == ["Say hello to Alice Bob; first is Alice. Branch: main."]
    assert "/team:greet: project claude command from" in proc.stderr
    assert f"warning: {broken}: invalid YAML frontmatter" in proc.stderr  # the rest still ran


@pytest.mark.ray
def test_crew_run_fails_a_command_whose_shell_step_is_denied(
    ray_head: object, git_repo: Path, tmp_path: Path
) -> None:
    from conftest import crew

    from stagecrew.testing.scripted_llm import ScriptedLLM

    write(git_repo / ".claude/commands/last.md", "Last commit: !`git log -1 --oneline`")
    with ScriptedLLM([{"text": "never"}]) as llm:
        scripted_project(git_repo, llm.base_url, permissions=["deny bash(git log *)"])
        proc = crew("run", "/last", cwd=git_repo, env={"HOME": str(tmp_path)})
        requests = list(llm.requests)
    assert proc.returncode == 2, proc.stderr
    assert "rule 'deny bash(git log *)'" in proc.stderr
    assert not requests


# -- end to end: /name args in the chat ---------------------------------------------------------


@pytest.mark.ray
def test_chat_runs_custom_commands_and_shows_an_override(
    ray_head: object, git_repo: Path, tmp_path: Path
) -> None:
    from test_chat_tmux import Tmux, open_chat

    from stagecrew.testing.scripted_llm import ScriptedLLM

    write(
        git_repo / ".claude/commands/greet.md", "---\nargument-hint: [who]\n---\nGreet $1 warmly."
    )
    write(git_repo / ".claude/commands/ps.md", "---\ndescription: Our ps\n---\nList the processes.")
    script = [
        {"when": {"contains": "Greet Bob warmly."}, "text": "Hello Bob."},
        {"when": {"contains": "List the processes."}, "text": "No processes."},
    ]
    term = Tmux(tmp_path)
    try:
        with ScriptedLLM(script) as llm:
            open_chat(term, git_repo, llm)
            term.type("/greet Bob")
            term.send("Enter")
            term.wait_text("Hello Bob.")
            term.wait_turns(1)
            term.type("/ps")
            term.send("Enter")
            term.wait_text("No processes.")
            term.wait_turns(2)
            term.type("/help")
            term.send("Enter")
            screen = term.wait_text("Esc Enter")
            requests = list(llm.requests)
        term.send("C-d")
        term.wait_exit()
    finally:
        term.kill()
    assert [r.messages[-1]["content"] for r in requests] == [
        "Greet Bob warmly.",
        "List the processes.",
    ]
    assert "/greet: project claude command from" in screen
    assert "/ps: project claude command from" in screen and "(overrides the built-in /ps)" in screen
    assert "/greet [who]" in screen and "replaced by a custom command" in screen


def test_a_command_model_alias_names_the_model_of_its_role(places: dict[str, Path]) -> None:
    """``model: haiku`` in a command means what it means for a Claude-format agent: the
    model this configuration gives the matching role; a litellm string is used as is."""
    from stagecrew.actors.builder import prepare_session

    p = places["project"]
    write(p / ".claude/commands/quick.md", "---\nmodel: haiku\n---\nBe quick: $ARGUMENTS\n")
    write(p / ".claude/commands/exact.md", "---\nmodel: openai/exact\n---\nExact.\n")
    models = {
        "primary": {"model": "openai/big", "api_base": "http://127.0.0.1:1/v1"},
        "checkpoint": {"model": "openai/small"},
    }
    write(p / ".stagecrew/config.json", json.dumps({"models": models}))
    config = load_config(p)
    assert prepare_session(config, "/quick now", p).spec.model.model == "openai/small"
    assert prepare_session(config, "/exact", p).spec.model.model == "openai/exact"
    assert prepare_session(config, "plain", p).spec.model.model == "openai/big"
