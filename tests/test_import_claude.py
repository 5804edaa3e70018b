"""``crew import claude`` and a Claude Code project used as it is, end to end.

``tests/fixtures/claude_project`` holds every kind of file a Claude Code setup has (instruction
files with imports inside and outside code spans, commands with a YAML-list hint, a namespace
and ``$ARGUMENTS``, a skill with a supporting file, agents with ``model: opus`` and an unknown
alias, rules with spaces in their specifiers, two hooks, two MCP servers with
``${VAR:-default}``). Each test works on a copy. The import must report exactly what the
fixture holds and run nothing; ``crew run`` on the project must use all of it as Claude Code
would; bad files are one line each; ``--write`` copies a setup that works without Claude
Code's files and never clobbers what is there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import crew, git

from stagecrew.claude import ClaudeRule
from stagecrew.claude.importer import translate_rule
from stagecrew.tools.permissions import DEFAULT_RULES, PermissionChecker

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "claude_project"
SECRET = "s3cr3t-value-never-printed-4711"
SETTINGS_VALUE = "settings-literal-value"  # the fixture's settings env value: names only
COUNTS = {
    "instruction_files": 3,  # CLAUDE.md, .claude/rules/testing.md, CLAUDE.local.md
    "imports": 1,  # docs/conventions.md (the one in a code span is text)
    "commands": 3,
    "skills": 1,
    "agents": 2,
    "mcp_servers": 2,
    "permission_rules": {"deny": 3, "ask": 1, "allow": 4},
    "hooks": {"PreToolUse": 1, "Stop": 1},
    "env": 2,
    "model": 1,
}
# What nothing in the import may create: the hooks' and a command's !`cmd`'s marker files.
RAN_MARKERS = ("hook-ran-pre", "hook-ran-stop", "bang-ran")


# -- helpers ----------------------------------------------------------------------------------


def project_copy(tmp_path: Path, *, commit: bool = False) -> Path:
    """The fixture copied into a fresh git repository (the fixture itself is never touched)."""
    project = tmp_path / "project"
    shutil.copytree(FIXTURE, project)
    git(project, "init", "-q", "-b", "main")
    if commit:
        git(project, "add", "-A")
        git(project, "commit", "-q", "-m", "fixture")
    return project


def home_dir(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return home


def import_claude(
    project: Path, home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``crew import claude ARGS`` with a home of its own and the secret in the environment."""
    full = {
        "HOME": str(home),
        "STAGECREW_CONFIG_DIR": str(home / "config"),
        "FIXTURE_SECRET": SECRET,
    }
    return crew("import", "claude", *args, cwd=project, env={**full, **(env or {})})


def import_json(project: Path, home: Path, *args: str) -> dict:
    proc = import_claude(project, home, "--json", *args)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def add_bad_files(project: Path) -> dict[str, Path]:
    """The bad inputs of the issue, next to the fixture's own missing import and unknown alias:
    a command with broken front matter, an import cycle, a rule naming an unknown tool."""
    broken = project / ".claude/commands/broken.md"
    broken.write_text("---\ndescription: [never closed\n---\nBody.\n")
    (project / "docs/cycle-a.md").write_text("CYCLE-A: see @cycle-b.md\n")
    (project / "docs/cycle-b.md").write_text("CYCLE-B: back to @cycle-a.md\n")
    with (project / "CLAUDE.md").open("a") as fh:
        fh.write("\nMore in @docs/cycle-a.md.\n")
    local = project / ".claude/settings.local.json"
    local.write_text(
        json.dumps({"permissions": {"allow": ["Bash(make check:*)"], "deny": ["Reed(./x)"]}})
    )
    return {"broken": broken, "local": local}


def scripted_config(project: Path, base_url: str) -> None:
    """The model at the scripted server; the fixture's MCP servers are not started (they are
    no real servers: the import test checks their entries, not their tools)."""
    config = {
        "models": {"primary": {"model": "openai/m", "api_base": base_url}},
        "mcp": {"disabled": ["docs", "tracker"]},
    }
    (project / ".stagecrew").mkdir(exist_ok=True)
    (project / ".stagecrew/config.json").write_text(json.dumps(config))


def system_text(request: object) -> str:
    from stagecrew.testing.scripted_llm import message_text

    messages = request.messages  # type: ignore[attr-defined]
    return "\n".join(message_text(m) for m in messages if m["role"] == "system")


def all_text(request: object) -> str:
    from stagecrew.testing.scripted_llm import message_text

    return "\n".join(message_text(m) for m in request.messages)  # type: ignore[attr-defined]


def tool_results(request: object) -> list[str]:
    from stagecrew.testing.scripted_llm import message_text

    messages = request.messages  # type: ignore[attr-defined]
    return [message_text(m) for m in messages if m["role"] == "tool"]


def task_description(request: object) -> str:
    tools = request.body.get("tools", [])  # type: ignore[attr-defined]
    return next(t["function"]["description"] for t in tools if t["function"]["name"] == "task")


# -- the report -------------------------------------------------------------------------------


def test_the_import_reports_exactly_what_the_fixture_holds(tmp_path: Path) -> None:
    project, home = project_copy(tmp_path), home_dir(tmp_path)
    report = import_json(project, home)
    assert report["found"] is True
    assert report["counts"] == COUNTS
    items = {(i["kind"], i["name"]): i for i in report["items"]}
    assert items[("instruction", "docs/conventions.md")]["imported_by"] == "CLAUDE.md"
    assert not any("not-an-import" in i["name"] for i in report["items"])
    assert items[("instruction", "CLAUDE.local.md")]["scope"] == "local"
    assert items[("command", "/review [pr-number] [priority]")]["argument_hint"] == (
        "[pr-number] [priority]"
    )
    assert ("command", "/frontend:component") in items
    assert items[("skill", "changelog")]["supporting_files"] == 1
    reviewer = items[("agent", "reviewer")]
    assert (reviewer["source_model"], reviewer["role"]) == ("opus", "primary")
    assert reviewer["tools"] == ["read", "grep", "glob"]
    assert items[("agent", "scout")]["role"] is None
    assert items[("mcp_server", "docs")]["transport"] == "stdio"
    assert items[("mcp_server", "docs")]["target"] == "fixture-docs-server --root ${DOCS_ROOT:-.}"
    assert items[("mcp_server", "tracker")]["transport"] == "http"
    assert items[("mcp_server", "tracker")]["headers"] == ["Authorization"]
    assert items[("permission_rule", "Bash(git diff *)")]["action"] == "allow"
    assert items[("permission_rule", "Edit(/migrations/**)")]["action"] == "deny"
    assert items[("permission_rule", "Bash(make check:*)")]["source"] == (
        ".claude/settings.local.json"
    )
    assert items[("hook", "PreToolUse")]["matcher"] == "Bash"
    # What cannot be resolved: the missing import, the unknown alias, the missing directory.
    warnings = report["warnings"]
    assert len(warnings) == 3 and all("\n" not in w for w in warnings)
    assert warnings[0].startswith("CLAUDE.md:9: import @docs/old-guide.md: no such file")
    assert "scout.md: 'model': unknown model alias 'gpt-9-ultra'" in warnings[1]
    assert "'permissions.additionalDirectories': ../shared-docs: no such directory" in warnings[2]
    unsupported = "\n".join(report["unsupported"])
    for key in ("statusLine", "'permissions.defaultMode'", "'env' (FIXTURE_SECRET, BUILD_MODE)"):
        assert key in unsupported
    assert "'model: opus'" in unsupported
    assert "write" not in report  # a report only


def test_the_text_report_and_nothing_runs_or_leaks(tmp_path: Path) -> None:
    project, home = project_copy(tmp_path), home_dir(tmp_path)
    proc = import_claude(project, home)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in (
        "Instruction files: 3, and 1 import (read as is, into the system prompt)",
        "  docs/conventions.md       imported by CLAUDE.md",
        'Commands: 3 (read as is: /name in the chat and crew run "/name args")',
        "  /review [pr-number] [priority]     .claude/commands/review.md",
        "Skills: 1 (",
        "  changelog (+1 file)  .claude/skills/changelog/SKILL.md",
        "Agents: 2 (profiles for the task tool and @name)",
        "profile 'reviewer', model opus → role primary; tools: read, grep, glob",
        "model gpt-9-ultra: unknown alias → the parent's model",
        "MCP servers: 2 (",
        "  docs     stdio  fixture-docs-server --root ${DOCS_ROOT:-.} (env DOCS_TOKEN)",
        "  tracker  http   ${TRACKER_URL:-http://127.0.0.1:9/mcp} (headers Authorization)",
        "Permission rules: 8 (deny 3, ask 1, allow 4; Claude Code's syntax, deny > ask > allow)",
        "  deny   Read(./.env)                       .claude/settings.json",
        "  allow  Bash(git diff *)                   .claude/settings.json",
        "  allow  Bash(npm run test:*)               .claude/settings.json",
        "Hooks: 2 (PreToolUse 1, Stop 1; run as in Claude Code)",
        "  PreToolUse  Bash  touch hook-ran-pre   .claude/settings.json",
        "Environment: 2 (names only",
        "  FIXTURE_SECRET  .claude/settings.json",
        "Warnings (3):",
        "stagecrew reads these files live: nothing needs importing.",
    ):
        assert line in out, f"missing {line!r} in:\n{out}"
    # Nothing ran: no hook, no !`cmd` of a command, nothing written; no secret shown anywhere.
    assert [m for m in RAN_MARKERS if (project / m).exists()] == []
    assert not (project / ".stagecrew").exists()
    as_json = import_claude(project, home, "--json").stdout
    for text in (out, proc.stderr, as_json):
        assert SECRET not in text and SETTINGS_VALUE not in text


def test_an_unset_variable_is_named_never_a_set_one(tmp_path: Path) -> None:
    project, home = project_copy(tmp_path), home_dir(tmp_path)
    mcp = json.loads((project / ".mcp.json").read_text())
    mcp["mcpServers"]["search"] = {
        "type": "http",
        "url": "https://search.example.com/mcp",
        "headers": {"X-Api-Key": "${FIXTURE_SEARCH_KEY}", "X-Other": "${FIXTURE_SECRET}"},
    }
    (project / ".mcp.json").write_text(json.dumps(mcp))
    proc = import_claude(project, home)
    assert proc.returncode == 0, proc.stderr
    line = next(w for w in proc.stdout.splitlines() if "FIXTURE_SEARCH_KEY" in w)
    assert ".mcp.json: 'mcpServers.search.headers.X-Api-Key' uses ${FIXTURE_SEARCH_KEY}" in line
    assert "which is not set" in line
    assert "FIXTURE_SECRET}, which" not in proc.stdout  # set: no warning, and never its value
    assert SECRET not in proc.stdout


def test_nothing_to_import_and_usage_errors(tmp_path: Path) -> None:
    empty, home = tmp_path / "empty", home_dir(tmp_path)
    empty.mkdir()
    git(empty, "init", "-q")
    proc = import_claude(empty, home)
    assert proc.returncode == 0
    assert "No Claude Code setup found here or in ~/.claude: nothing to import." in proc.stdout
    report = import_json(empty, home)
    assert report["found"] is False and report["items"] == [] and "note" in report
    missing = import_claude(empty, home, "--cwd", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    assert import_claude(empty, home, "--no-such-option").returncode == 2


def test_bad_files_are_one_line_each_and_the_rest_loads(tmp_path: Path) -> None:
    project, home = project_copy(tmp_path), home_dir(tmp_path)
    bad = add_bad_files(project)
    report = import_json(project, home)
    warnings = report["warnings"]
    assert all("\n" not in w for w in warnings)

    def one(*parts: str) -> str:
        found = [w for w in warnings if all(p in w for p in parts)]
        assert len(found) == 1, (parts, warnings)
        return found[0]

    one(str(bad["broken"]), "invalid YAML frontmatter")
    one("docs/cycle-b.md:1: import @cycle-a.md refused: import cycle")
    one("CLAUDE.md:9: import @docs/old-guide.md: no such file")
    one("scout.md", "unknown model alias 'gpt-9-ultra'")
    one(str(bad["local"]), "'Reed(./x)'", "unknown Claude Code tool 'Reed'")
    # Everything else still loads: the fixture's counts, with the cycle's two files imported once.
    assert report["counts"] == {**COUNTS, "imports": 3}
    assert "/broken" not in {i["name"] for i in report["items"]}


# -- rules: stagecrew's syntax only where it means the same -------------------------------------

BASH = [
    "npm run test",
    "npm run test -- -k login",
    "npm run testx",
    "npm run test:unit",
    "git diff",
    "git diff --stat",
    "git diffx",
    "git push origin main",
    "git log main",
    "ls",
    "lsof",
]


@pytest.mark.parametrize(
    ("action", "rule", "native"),
    [
        ("allow", "Bash(npm run test:*)", ["allow bash(npm run test *)"]),
        ("allow", "Bash(git diff *)", ["allow bash(git diff *)"]),
        ("deny", "Bash(ls)", ["deny bash(ls)"]),
        ("ask", "Bash", ["ask bash"]),
        (
            "deny",
            "Read",
            [f"deny {t}" for t in ("apply_patch", "edit", "glob", "grep", "ls", "read", "write")],
        ),
        ("deny", "WebFetch(domain:evil.example.com)", ["deny webfetch(evil.example.com)"]),
        ("deny", "mcp__github", ["deny mcp__github__*"]),
        ("allow", "mcp__github__create_issue", ["allow mcp__github__create_issue"]),
        ("deny", "Bash(git * main *)", None),  # two stars and a trailing " *": not the same
        ("deny", "Bash(ls?)", None),  # "?" is a character for Claude Code, a wildcard here
        ("deny", "Read(./.env)", None),  # gitignore path matching
        ("allow", "Edit(/migrations/**)", None),
    ],
)
def test_rules_translate_only_when_they_mean_the_same(
    tmp_path: Path, action: str, rule: str, native: list[str] | None
) -> None:
    claude = ClaudeRule(action, rule, ".claude/settings.json", tmp_path)  # type: ignore[arg-type]
    strings, note = translate_rule(claude)
    if native is None:
        assert strings == [f"{action} {rule} from .stagecrew/config.json"]
        assert note.startswith("kept in Claude Code's syntax")
    else:
        assert (strings, note) == (native, "")
    # Whatever the form, every call is decided as the Claude Code rule decides it.
    original = PermissionChecker([*DEFAULT_RULES, str(claude)])
    written = PermissionChecker([*DEFAULT_RULES, *strings])
    calls = [("bash", {"command": c}) for c in BASH]
    calls += [(t, {"file_path": p}) for t in ("read", "edit", "write") for p in (".env", "a/.env")]
    calls += [("write", {"file_path": "migrations/1.sql"}), ("grep", {"path": "src"})]
    calls += [("webfetch", {"url": f"https://{h}/x"}) for h in ("evil.example.com", "ok.org")]
    calls += [("mcp__github__create_issue", {}), ("mcp__github__list", {}), ("mcp__gitlab__x", {})]
    for tool, arguments in calls:
        want = original.check(tool, arguments, tmp_path).action
        assert written.check(tool, arguments, tmp_path).action == want, (tool, arguments)


# -- crew run on the fixture --------------------------------------------------------------------


@pytest.mark.ray
def test_crew_run_uses_the_claude_setup_as_claude_code_would(
    ray_head: object, tmp_path: Path
) -> None:
    """One scripted session covers the issue's checks: instructions and the import in the
    first request, /name args expanded, a skill body only on request, a Claude-format subagent
    through task, permission spot checks; the bad files added are warnings and the rest runs."""
    from stagecrew.testing.scripted_llm import ScriptedLLM

    project, home = project_copy(tmp_path, commit=True), home_dir(tmp_path)
    bad = add_bad_files(project)
    (project / ".env").write_text("DOTENV-CONTENT=1\n")
    calls = [
        {"name": "skill", "arguments": {"name": "changelog"}},
        {"name": "read", "arguments": {"file_path": ".env"}},
        {"name": "write", "arguments": {"file_path": "migrations/002_more.sql", "content": "x"}},
        {"name": "bash", "arguments": {"command": "git diff --stat"}},
        {"name": "bash", "arguments": {"command": "git push origin main"}},
    ]
    review = {"prompt": "Review the fix.", "subagent_type": "reviewer"}
    script = [
        # The subagent's turn first: only a request carrying its body matches it.
        {"when": {"system_contains": "AGENT-REVIEWER-BODY"}, "text": "REVIEW-DONE"},
        {"tool_calls": calls},
        {"tool_calls": [{"name": "task", "arguments": review}]},
        {"text": "ALL-DONE."},
    ]
    with ScriptedLLM(script) as llm:
        scripted_config(project, llm.base_url)
        proc = crew(
            "run",
            "/fix-issue 42 the login page",
            "--permission-mode",
            "deny",
            cwd=project,
            env={"HOME": str(home)},
        )
        requests = list(llm.requests)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    child = [r for r in requests if "AGENT-REVIEWER-BODY" in system_text(r)]
    root = [r for r in requests if r not in child]
    assert len(root) == 3 and len(child) == 1

    # The instructions and the imported file, in the first request's system message; the file
    # named in a code span is not imported. The command expanded with $ARGUMENTS.
    first = root[0]
    system = system_text(first)
    for marker in ("FIXTURE-INSTRUCTIONS", "IMPORTED-CONVENTIONS", "RULES-TESTING"):
        assert marker in system
    assert "LOCAL-INSTRUCTIONS" in system and "CODE-SPAN-TARGET" not in all_text(first)
    said = [m["content"] for m in first.messages if m["role"] == "user"]
    assert said == ["FIX-ISSUE-COMMAND: fix issue 42 the login page and add a test."]
    # The skill: its name in the prompt, its body only after the model asked for it.
    assert "- changelog: Write a changelog entry from the recent commits" in system
    assert "SKILL-BODY-CHANGELOG" not in all_text(first)
    assert "- reviewer: Reviews a diff for bugs; use after every change" in task_description(first)
    skill, dotenv, migration, diff, push = tool_results(root[1])
    assert "SKILL-BODY-CHANGELOG" in skill
    # Permission spot checks, decided as Claude Code decides them, each naming its file.
    assert "Permission denied" in dotenv
    assert "deny Read(./.env) from .claude/settings.json" in dotenv
    assert "DOTENV-CONTENT" not in all_text(root[1])
    assert "deny Edit(/migrations/**) from .claude/settings.json" in migration
    assert not (project / "migrations/002_more.sql").exists()
    assert "Permission" not in diff  # allowed by Bash(git diff *)
    assert "ask Bash(git push:*) from .claude/settings.json" in push and "denied" in push
    assert "deny Read(./.env) from .claude/settings.json" in proc.stdout  # the explanation line
    # The Claude-format subagent through task: its body as the system prompt, its tools.
    assert {t["function"]["name"] for t in child[0].body["tools"]} == {"read", "grep", "glob"}
    assert "REVIEW-DONE" in "\n".join(tool_results(root[2]))
    assert "ALL-DONE." in proc.stdout
    # The hooks ran as configured (a session runs them; the import never does).
    assert (project / "hook-ran-pre").exists() and (project / "hook-ran-stop").exists()
    # Each bad file: one line naming it; the session ran with the rest.
    assert f"warning: {bad['broken']}: invalid YAML frontmatter" in proc.stderr
    assert "scout.md: 'model': unknown model alias 'gpt-9-ultra'" in proc.stderr
    assert "'Reed(./x)': unknown Claude Code tool 'Reed'" in proc.stderr
    assert "instructions: docs/cycle-b.md:1: import @cycle-a.md refused: import cycle" in (
        proc.stdout
    )
    assert "instructions: CLAUDE.md:9: import @docs/old-guide.md: no such file" in proc.stdout


# -- --write --------------------------------------------------------------------------------------


@pytest.mark.ray
def test_write_copies_a_setup_that_works_without_claude_files(
    ray_head: object, tmp_path: Path
) -> None:
    from stagecrew.testing.scripted_llm import ScriptedLLM

    project, home = project_copy(tmp_path, commit=True), home_dir(tmp_path)
    script = [
        {"tool_calls": [{"name": "read", "arguments": {"file_path": ".env"}}]},
        {"text": "REVIEWED."},
    ]
    with ScriptedLLM(script) as llm:
        scripted_config(project, llm.base_url)  # an existing config.json gains, never loses
        before = json.loads((project / ".stagecrew/config.json").read_text())
        proc = import_claude(project, home, "--write")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        target = project / ".stagecrew"
        for rel in (
            "commands/review.md",
            "commands/fix-issue.md",
            "commands/frontend/component.md",
            "skills/changelog/SKILL.md",
            "skills/changelog/format.md",
            "agents/reviewer.md",
            "agents/scout.md",
        ):
            assert (target / rel).is_file(), rel
            assert f"created  .stagecrew/{rel}" in proc.stdout
        assert "updated  .stagecrew/config.json" in proc.stdout
        config = json.loads((target / "config.json").read_text())
        assert config["models"] == before["models"]
        assert config["mcp"]["disabled"] == ["docs", "tracker"]
        assert "allow bash(git diff *)" in config["permissions"]
        assert "allow bash(npm run test *)" in config["permissions"]
        assert "deny Read(./.env) from .stagecrew/config.json" in config["permissions"]
        assert sorted(config["hooks"]) == ["PreToolUse", "Stop"]
        headers = config["mcp"]["servers"]["tracker"]["headers"]
        assert headers == {"Authorization": "Bearer ${FIXTURE_SECRET:-dev-token}"}
        agent = (target / "agents/reviewer.md").read_text()
        assert "role: primary" in agent and "AGENT-REVIEWER-BODY" in agent
        written = "\n".join(p.read_text() for p in target.rglob("*") if p.is_file())
        assert SECRET not in written and SETTINGS_VALUE not in written
        assert SECRET not in proc.stdout

        # Twice: nothing changes. A file changed since: kept as it is, said, exit 1.
        again = import_claude(project, home, "--write")
        assert again.returncode == 0 and "created" not in again.stdout
        assert "unchanged  .stagecrew/config.json" in again.stdout
        (target / "agents/scout.md").write_text("MY OWN EDIT\n")
        third = import_claude(project, home, "--write")
        assert third.returncode == 1
        assert "kept       .stagecrew/agents/scout.md" in third.stdout
        assert "exists and differs; not overwritten" in third.stdout
        assert (target / "agents/scout.md").read_text() == "MY OWN EDIT\n"
        (target / "agents/scout.md").unlink()

        # Without Claude Code's files, the written setup still works.
        shutil.rmtree(project / ".claude")
        (project / ".mcp.json").unlink()
        run = crew("run", "/review 7 high", cwd=project, env={"HOME": str(home)})
        requests = list(llm.requests)
    assert run.returncode == 0, run.stdout + run.stderr
    said = [m["content"] for m in requests[0].messages if m["role"] == "user"]
    assert said == ["REVIEW-COMMAND: review pull request #7 with priority high."]
    assert "- reviewer: Reviews a diff for bugs" in task_description(requests[0])
    assert "deny Read(./.env) from .stagecrew/config.json" in tool_results(requests[1])[0]
    assert "REVIEWED." in run.stdout
