"""Permission rules: grammar, last-match-wins, layers, bash parts, paths, patches, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagecrew.tools.permissions import (
    DEFAULT_RULES,
    Decision,
    PermissionChecker,
    Rule,
    RuleError,
    bash_pattern_matches,
    combine_layers,
    parse_rule,
    patch_paths,
)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return tmp_path


def check(rules: list[str], tool: str, ws: Path, **arguments: object) -> Decision:
    return PermissionChecker(rules).check(tool, arguments, ws)


def bash(rules: list[str] | tuple[str, ...], command: str, ws: Path) -> Decision:
    return PermissionChecker(rules).check("bash", {"command": command}, ws)


def defaults(tool: str, ws: Path, **arguments: object) -> str:
    return PermissionChecker(DEFAULT_RULES).check(tool, arguments, ws).action


# -- grammar -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("allow read", Rule("allow", "read")),
        ("ask edit(src/**)", Rule("ask", "edit", "src/**")),
        ("deny bash(git push *)", Rule("deny", "bash", "git push *")),
        ("deny bash(rm -rf *)", Rule("deny", "bash", "rm -rf *")),
        ("ask read(.env)", Rule("ask", "read", ".env")),
        ("allow *", Rule("allow", "*")),
        ("  DENY   Bash( echo (nested) )  ", Rule("deny", "bash", "echo (nested)")),
        ("allow web*", Rule("allow", "web*")),
        ("allow apply_patch", Rule("allow", "apply_patch")),
    ],
)
def test_parse_rule(text: str, rule: Rule) -> None:
    assert parse_rule(text) == rule


def test_rules_print_back_canonically() -> None:
    assert str(parse_rule("deny   bash(git push *)")) == "deny bash(git push *)"
    assert str(parse_rule("allow *")) == "allow *"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("permit read", "action must be allow, ask or deny"),
        ("allow", "expected 'ACTION TOOL'"),
        ("", "expected 'ACTION TOOL'"),
        ("deny bash()", "empty pattern"),
        ("deny bash(git push *", "expected 'ACTION TOOL'"),
        ("allow re$d", "bad tool name"),
    ],
)
def test_bad_rules_are_reported_with_the_rule(text: str, fragment: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_rule(text)
    assert fragment in str(info.value)
    assert repr(text) in str(info.value)


def test_non_string_rule_is_an_error() -> None:
    with pytest.raises(RuleError):
        parse_rule(42)  # type: ignore[arg-type]


# -- ordering and layers -------------------------------------------------------------------------


def test_last_matching_rule_wins(ws: Path) -> None:
    assert check(["deny read", "allow read"], "read", ws, file_path="a").action == "allow"
    assert check(["allow read", "deny read"], "read", ws, file_path="a").action == "deny"
    # A later rule that does not match changes nothing.
    rules = ["allow *", "deny read(secret/**)", "allow read(*.md)"]
    assert check(rules, "read", ws, file_path="secret/key.txt").action == "deny"
    assert check(rules, "read", ws, file_path="secret/README.md").action == "allow"
    assert check(rules, "read", ws, file_path="src/a.py").action == "allow"


def test_tool_globs(ws: Path) -> None:
    rules = ["deny *", "allow read", "allow web*"]
    assert check(rules, "read", ws, file_path="a").action == "allow"
    assert check(rules, "webfetch", ws, url="https://a.b").action == "allow"
    assert check(rules, "write", ws, file_path="a").action == "deny"
    assert check(rules, "Read", ws, file_path="a").action == "allow"  # tool names are lowercased


def test_no_matching_rule_means_ask(ws: Path) -> None:
    decision = check(["allow read"], "write", ws, file_path="a")
    assert decision == Decision("ask", None, "write 'a' matches no permission rule")
    assert PermissionChecker([], default="deny").check("todo", {}, ws).action == "deny"


def test_layers_in_order(ws: Path) -> None:
    layers = {
        "flags": ["allow bash(git push *)"],
        "defaults": list(DEFAULT_RULES),
        "project": ["deny bash(git push *)"],
        "user": None,
    }
    rules = combine_layers(layers)
    assert [r.layer for r in rules][:1] == ["defaults"]
    assert rules[-1] == Rule("allow", "bash", "git push *", "flags")
    assert bash(rules, "git push origin main", ws).action == "allow"  # flags beat project
    without_flags = combine_layers({k: v for k, v in layers.items() if k != "flags"})
    assert bash(without_flags, "git push origin main", ws).action == "deny"


def test_layers_as_a_sequence(ws: Path) -> None:
    rules = combine_layers(
        [DEFAULT_RULES, ["deny edit(src/**)"], None, ["allow edit(src/gen/**)"], []]
    )
    assert [r.layer for r in rules][-2:] == ["user", "agent"]
    checker = PermissionChecker(rules)
    assert checker.check("edit", {"file_path": "src/a.py"}, ws).action == "deny"
    assert checker.check("edit", {"file_path": "src/gen/x.py"}, ws).action == "allow"
    assert checker.check("edit", {"file_path": "docs/x.md"}, ws).action == "allow"


def test_unknown_layer_name_is_an_error() -> None:
    with pytest.raises(RuleError, match="unknown permission layer"):
        combine_layers({"session": ["allow *"]})


def test_bad_rule_in_a_layer_is_an_error() -> None:
    with pytest.raises(RuleError, match="nope"):
        combine_layers([["allow *"], ["nope read"]])


# -- bash ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "command", "matches"),
    [
        ("git push *", "git push origin main", True),
        ("git push *", "git push", True),  # the documented choice: trailing " *" is optional
        ("git push *", "git pushx", False),
        ("git push *", "git status", False),
        ("git push", "git push origin", False),  # no wildcard: exact
        ("rm -rf *", "rm -rf /", True),
        ("rm -rf *", "rm -rf a/b c", True),
        ("rm -rf *", "rm -fr /", False),
        ("npm run *:dev", "npm run web:dev", True),
        ("git ?ush *", "git push x", True),
        ("echo [x]", "echo [x]", True),
        ("echo [x]", "echo x", False),
    ],
)
def test_bash_pattern_matching(pattern: str, command: str, matches: bool) -> None:
    assert bash_pattern_matches(pattern, command) is matches


def test_denial_message_for_the_model(ws: Path) -> None:
    decision = bash(["allow *", "deny bash(git push *)"], "git push origin main", ws)
    assert decision.action == "deny"
    assert decision.rule == "deny bash(git push *)"
    assert decision.message == (
        "Permission denied: bash 'git push origin main' matches rule 'deny bash(git push *)'"
    )


def test_compound_commands_are_checked_part_by_part(ws: Path) -> None:
    rules = ["allow *", "ask bash(npm publish *)", "deny bash(git push *)"]
    for command in (
        "cd repo && git push origin main",
        "git status; git push origin main",
        "false || git push origin main",
        "echo ok | git push origin main",
        "(cd x && git push origin main)",
    ):
        decision = bash(rules, command, ws)
        assert decision.action == "deny", command
        assert "bash 'git push origin main'" in decision.reason
    mixed = bash(rules, "npm publish && ls", ws)
    assert mixed.action == "ask" and "npm publish" in mixed.reason
    assert bash(rules, "ls && git status", ws).action == "allow"


def test_strictest_part_wins_regardless_of_order(ws: Path) -> None:
    rules = ["allow *", "ask bash(make *)", "deny bash(curl *)"]
    assert bash(rules, "curl x; make", ws).action == "deny"
    assert bash(rules, "make; curl x", ws).action == "deny"
    assert bash(rules, "make; ls", ws).action == "ask"


@pytest.mark.parametrize(
    "command",
    [
        "sudo git push origin main",
        "env GIT_TRACE=1 git push origin main",
        "timeout -s KILL 60 git push origin main",
        "nice -n 5 nohup git push origin main",
        "command git push origin main",
        "time git push origin main",
        "exec git push origin main",
        "echo main | xargs git push origin",
        "sh -c 'git push origin main'",
        'bash -lc "cd repo && git push origin main"',
        "sudo env A=1 timeout 5 bash -c 'git push origin main'",
        "eval 'git push origin main'",
        "echo $(git push origin main)",
        "find . -maxdepth 0 -exec git push origin main \\;",
        "/usr/bin/git push origin main",
        "git push 'origin' \"main\"",
        "g''it pu\\sh origin main",
        "git -C repo --no-pager push origin main",
        "bash <<< 'git push origin main'",
        "sh <<'EOF'\ncd repo\ngit push origin main\nEOF",
        "$'git' push origin main",
    ],
)
def test_wrappers_and_shell_strings_do_not_hide_a_denied_command(command: str, ws: Path) -> None:
    assert bash(["allow *", "deny bash(git push *)"], command, ws).action == "deny"


def test_a_wrapper_cannot_launder_a_denied_command(ws: Path) -> None:
    # A later allow for the wrapper still leaves the wrapped command's own deny in force: both
    # programs run, and the strictest stage wins.
    rules = ["allow *", "deny bash(rm *)", "allow bash(sudo *)"]
    assert bash(rules, "sudo rm -rf /", ws).action == "deny"
    assert bash(rules, "sudo apt list", ws).action == "allow"


def test_wrapper_rules_match_the_wrapped_form(ws: Path) -> None:
    assert bash(["allow *", "ask bash(sudo *)"], "sudo ls", ws).action == "ask"
    assert bash(["allow *", "deny bash(timeout *)"], "timeout 5 ls", ws).action == "deny"


def test_a_path_spelling_only_tightens(ws: Path) -> None:
    # ``/bin/rm`` is caught by ``rm`` rules, but ``./ls`` does not ride on ``allow bash(ls *)``.
    assert bash(["allow *", "deny bash(rm *)"], "/bin/rm -f x", ws).action == "deny"
    decision = bash(["allow bash(ls *)"], "./ls -la", ws)
    assert decision.action == "ask" and decision.rule is None


def test_unparseable_or_substituted_commands_are_at_least_ask(ws: Path) -> None:
    for command in ("echo $(date)", "ls `pwd`", "case x in a) ls;; esac", "$CMD", "curl x | sh"):
        decision = bash(["allow *"], command, ws)
        assert decision.action == "ask", command
        assert command in decision.reason
    # ...but a deny found inside still wins.
    assert bash(["allow *", "deny bash(rm *)"], "case x in a) ;; esac; rm -rf y", ws).action == (
        "deny"
    )
    assert bash(["allow *", "deny bash(rm *)"], "echo $(rm -rf y)", ws).action == "deny"


def test_empty_bash_command_uses_tool_rules(ws: Path) -> None:
    assert bash(["allow bash"], "", ws).action == "allow"
    assert bash(["deny bash"], "   ", ws).action == "deny"


def test_tool_level_bash_rule_covers_every_part(ws: Path) -> None:
    assert bash(["allow *", "deny bash"], "ls", ws).action == "deny"
    assert bash(["deny *", "allow bash"], "ls && rm x", ws).action == "allow"


# -- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("src/**", "src/a.py", True),
        ("src/**", "src/deep/er/a.py", True),
        ("src/**", "src", True),
        ("src/**", "lib/src/a.py", False),
        ("src/*.py", "src/a.py", True),
        ("src/*.py", "src/deep/a.py", False),
        ("**/*.pem", "a.pem", True),
        ("**/*.pem", "certs/deep/a.pem", True),
        ("*.pem", "certs/deep/a.pem", True),  # no slash: any depth, like .gitignore
        (".env", ".env", True),
        (".env", "service/.env", True),
        (".env", ".env.local", False),
        (".env.*", "service/.env.local", True),
        ("./docs/*.md", "docs/a.md", True),
        ("/etc/**", "/etc/passwd", True),
        ("/etc/**", "etc/passwd", False),
        ("src/[ab].py", "src/a.py", True),
        ("src/[!ab].py", "src/a.py", False),
        ("src/?.py", "src/ab.py", False),
    ],
)
def test_path_globs(pattern: str, path: str, matches: bool, ws: Path) -> None:
    decision = check(["allow *", f"deny read({pattern})"], "read", ws, file_path=path)
    assert (decision.action == "deny") is matches


def test_paths_are_normalised_against_the_workspace(ws: Path) -> None:
    rules = ["allow *", "deny read(secret/**)"]
    for path in ("secret/k", "./secret/k", "src/../secret/k", f"{ws}/secret/k", "secret//k"):
        assert check(rules, "read", ws, file_path=path).action == "deny", path
    assert check(rules, "read", ws, file_path="../outside/secret/k").action == "allow"


def test_outside_paths_match_absolute_and_any_depth_patterns(ws: Path) -> None:
    home_key = str(Path.home() / ".ssh" / "id_ed25519")
    assert defaults("read", ws, file_path=home_key) == "ask"
    assert defaults("read", ws, file_path="~/.ssh/config") == "ask"
    assert defaults("read", ws, file_path="/etc/ssl/private/server.key") == "ask"
    assert defaults("read", ws, file_path="/etc/hostname") == "allow"


def test_symlinks_are_checked_under_both_names(ws: Path) -> None:
    (ws / ".env").write_text("TOKEN=x\n")
    (ws / "innocent.txt").symlink_to(ws / ".env")
    decision = PermissionChecker(DEFAULT_RULES).check("read", {"file_path": "innocent.txt"}, ws)
    assert decision.action == "ask"
    assert ".env" in decision.reason


def test_directory_tools_default_to_the_workspace_root(ws: Path) -> None:
    rules = ["allow *", "deny grep(.)", "deny glob(src/**)"]
    assert check(rules, "grep", ws, pattern="TODO").action == "deny"
    assert check(rules, "grep", ws, pattern="TODO", path="src").action == "allow"
    assert check(rules, "glob", ws, pattern="*.py", path="src").action == "deny"
    assert check(rules, "ls", ws).action == "allow"


def test_pattern_rules_do_not_match_calls_without_a_path(ws: Path) -> None:
    assert check(["allow *", "deny read(**)"], "read", ws).action == "allow"
    assert check(["allow *", "deny read"], "read", ws).action == "deny"


def test_path_keys_and_lists(ws: Path) -> None:
    rules = ["allow *", "deny read(*.pem)"]
    assert check(rules, "read", ws, path="a.pem").action == "deny"
    assert check(rules, "read", ws, paths=["a.txt", "b.pem"]).action == "deny"
    assert check(rules, "read", ws, paths=["a.txt"]).action == "allow"


# -- apply_patch ---------------------------------------------------------------------------------

PATCH = """*** Begin Patch
*** Add File: docs/new.md
+hello
*** Update File: src/app.py
*** Move to: src/legacy/app.py
@@
-a
+b
*** Delete File: secrets/old.key
*** End Patch
"""


def test_patch_paths() -> None:
    assert patch_paths(PATCH) == [
        "docs/new.md",
        "src/app.py",
        "src/legacy/app.py",
        "secrets/old.key",
    ]


@pytest.mark.parametrize(
    ("rule", "action"),
    [
        ("deny apply_patch(docs/**)", "deny"),  # added file
        ("deny apply_patch(src/app.py)", "deny"),  # updated file
        ("deny apply_patch(src/legacy/**)", "deny"),  # move destination
        ("deny apply_patch(*.key)", "deny"),  # deleted file
        ("deny apply_patch(tests/**)", "allow"),
    ],
)
def test_every_patch_path_is_checked(rule: str, action: str, ws: Path) -> None:
    decision = check(["allow *", rule], "apply_patch", ws, patch=PATCH)
    assert decision.action == action
    if action == "deny":
        assert decision.message.startswith("Permission denied: apply_patch '")


def test_unreadable_patch_only_meets_tool_rules(ws: Path) -> None:
    assert check(["allow *", "deny apply_patch(**)"], "apply_patch", ws, patch="junk").action == (
        "allow"
    )
    assert check(["allow *", "ask apply_patch"], "apply_patch", ws, patch="junk").action == "ask"


# -- webfetch and other tools --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "url", "matches"),
    [
        ("github.com", "https://github.com/a/b", True),
        ("*.github.com", "https://api.github.com/x", True),
        ("*.github.com", "https://github.com/x", False),
        ("github.com", "https://GitHub.com:443/x", True),
        ("docs.python.org/3/*", "https://docs.python.org/3/library/", True),
        ("docs.python.org/3/*", "https://docs.python.org/2/library/", False),
        ("https://example.com/*", "https://example.com/a", True),
        ("https://example.com/*", "http://example.com/a", False),
    ],
)
def test_webfetch_patterns(pattern: str, url: str, matches: bool, ws: Path) -> None:
    decision = check(["allow *", f"deny webfetch({pattern})"], "webfetch", ws, url=url)
    assert (decision.action == "deny") is matches


def test_other_tools_match_string_arguments(ws: Path) -> None:
    rules = ["allow *", "deny task(*deploy*)"]
    assert check(rules, "task", ws, prompt="please deploy prod").action == "deny"
    assert check(rules, "task", ws, prompt="write tests").action == "allow"
    assert check(rules, "todo", ws, items=[]).action == "allow"


# -- the shipped defaults ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments", "action"),
    [
        ("read", {"file_path": "src/app.py"}, "allow"),
        ("read", {"file_path": ".env"}, "ask"),
        ("read", {"file_path": "config/.env"}, "ask"),
        ("read", {"file_path": ".env.production"}, "ask"),
        ("read", {"file_path": "certs/server.pem"}, "ask"),
        ("read", {"file_path": "tls.key"}, "ask"),
        ("read", {"file_path": "id_rsa"}, "ask"),
        ("read", {"file_path": "backup/id_rsa.pub"}, "ask"),
        ("read", {"file_path": "home/.ssh/known_hosts"}, "ask"),
        ("read", {"file_path": "aws/credentials"}, "ask"),
        ("read", {"file_path": "gcp/credentials.json"}, "ask"),
        ("read", {"file_path": "docs/environment.md"}, "allow"),
        ("edit", {"file_path": ".env"}, "allow"),
        ("write", {"file_path": "src/new.py"}, "allow"),
        ("webfetch", {"url": "https://example.com"}, "allow"),
        ("bash", {"command": "ls -la && pytest -q"}, "allow"),
        ("bash", {"command": "git push origin main"}, "ask"),
        ("bash", {"command": "git push"}, "ask"),
        ("bash", {"command": "git status && git push -f"}, "ask"),
        ("bash", {"command": "rm -rf build"}, "ask"),
        ("bash", {"command": "rm -fr build"}, "ask"),
        ("bash", {"command": "rm -r build"}, "ask"),
        ("bash", {"command": "rm build/a.o"}, "allow"),
        ("bash", {"command": "sudo apt-get install x"}, "ask"),
        ("bash", {"command": "sh -c 'sudo reboot'"}, "ask"),
        ("todo", {"todos": []}, "allow"),
    ],
)
def test_defaults(tool: str, arguments: dict[str, object], action: str, ws: Path) -> None:
    assert PermissionChecker(DEFAULT_RULES).check(tool, arguments, ws).action == action


# -- session memory and headless policy ----------------------------------------------------------


def test_remember_lifts_ask_but_never_deny(ws: Path) -> None:
    checker = PermissionChecker([*DEFAULT_RULES, "deny bash(git push --force *)"])
    command = {"command": "git push origin main"}
    assert checker.check("bash", command, ws).action == "ask"
    checker.remember("bash", "git push *")
    decision = checker.check("bash", command, ws)
    assert decision.action == "allow" and "session" in decision.reason
    forced = checker.check("bash", {"command": "git push --force origin main"}, ws)
    assert forced.action == "deny"


def test_remember_applies_per_part_and_per_stage(ws: Path) -> None:
    checker = PermissionChecker(DEFAULT_RULES)
    checker.remember("bash", "sudo apt *")
    assert checker.check("bash", {"command": "sudo apt list"}, ws).action == "allow"
    assert checker.check("bash", {"command": "sudo apt list && sudo rm x"}, ws).action == "ask"


def test_remember_for_files_and_whole_tools(ws: Path) -> None:
    checker = PermissionChecker(DEFAULT_RULES)
    assert checker.check("read", {"file_path": ".env"}, ws).action == "ask"
    checker.remember("read", ".env")
    assert checker.check("read", {"file_path": ".env"}, ws).action == "allow"
    assert checker.check("read", {"file_path": "x.pem"}, ws).action == "ask"
    checker.remember("READ")
    assert checker.check("read", {"file_path": "x.pem"}, ws).action == "allow"
    assert checker.session == [
        Rule("allow", "read", ".env", "session"),
        Rule("allow", "read", None, "session"),
    ]


def test_only_a_literal_answer_lifts_an_unparseable_command(ws: Path) -> None:
    checker = PermissionChecker(DEFAULT_RULES)
    args = {"command": "echo $(date)"}
    assert checker.check("bash", args, ws).action == "ask"
    checker.remember("bash", "echo *")  # a glob must not bless what it cannot see
    assert checker.check("bash", args, ws).action == "ask"
    assert checker.check("bash", {"command": "echo $(rm -rf x)"}, ws).action == "ask"
    checker.remember("bash", "echo $(date)", literal=True)
    assert checker.check("bash", args, ws).action == "allow"
    assert checker.check("bash", {"command": "echo $(rm -rf x)"}, ws).action == "ask"


def test_remember_covers_commands_no_rule_matches(ws: Path) -> None:
    checker = PermissionChecker(["allow read"])
    assert checker.check("bash", {"command": "make"}, ws).action == "ask"
    checker.remember("bash", "make *")
    assert checker.check("bash", {"command": "make"}, ws).action == "allow"


@pytest.mark.parametrize(
    ("policy", "action"), [("ask", "ask"), ("allow", "allow"), ("deny", "deny")]
)
def test_headless_ask_policy(policy: str, action: str, ws: Path) -> None:
    checker = PermissionChecker(DEFAULT_RULES, ask_policy=policy)  # type: ignore[arg-type]
    decision = checker.check("bash", {"command": "git push"}, ws)
    assert decision.action == action
    if policy != "ask":
        assert f"ask_policy={policy}" in decision.reason
    # The policy only rewrites ask: allow and deny stand.
    assert checker.check("bash", {"command": "ls"}, ws).action == "allow"
    denying = PermissionChecker(["deny *"], ask_policy=policy)  # type: ignore[arg-type]
    assert denying.check("read", {"file_path": "a"}, ws).action == "deny"


def test_headless_deny_message(ws: Path) -> None:
    checker = PermissionChecker(DEFAULT_RULES, ask_policy="deny")
    decision = checker.check("bash", {"command": "git push origin main"}, ws)
    assert decision.message.startswith(
        "Permission denied: bash 'git push origin main' matches rule 'ask bash(git push *)'"
    )


def test_bad_ask_policy() -> None:
    with pytest.raises(ValueError, match="ask_policy"):
        PermissionChecker([], ask_policy="maybe")  # type: ignore[arg-type]


def test_remembered_globs_versus_literal_calls(ws: Path) -> None:
    checker = PermissionChecker(DEFAULT_RULES)
    # As a glob, a remembered ``rm -rf *`` covers every rm -rf...
    checker.remember("bash", "rm -rf *")
    assert checker.check("bash", {"command": "rm -rf /"}, ws).action == "allow"
    # ...remembered literally, it covers only itself.
    literal = PermissionChecker(DEFAULT_RULES)
    literal.remember("bash", "rm -rf *", literal=True)
    assert literal.check("bash", {"command": "rm -rf *"}, ws).action == "allow"
    assert literal.check("bash", {"command": "rm -rf /"}, ws).action == "ask"


def test_remember_call_covers_exactly_that_call(ws: Path) -> None:
    checker = PermissionChecker(DEFAULT_RULES)
    compound = {"command": "cd app && git push origin main"}
    assert checker.check("bash", compound, ws).action == "ask"
    rules = checker.remember_call("bash", compound, ws)
    assert rules == [Rule("allow", "bash", compound["command"], "session", literal=True)]
    assert checker.check("bash", compound, ws).action == "allow"
    assert checker.check("bash", {"command": "git push origin main"}, ws).action == "ask"
    assert checker.check("bash", {"command": "cd app && git push -f"}, ws).action == "ask"

    checker.remember_call("read", {"file_path": "./config/.env"}, ws)
    assert checker.check("read", {"file_path": "config/.env"}, ws).action == "allow"
    assert checker.check("read", {"file_path": ".env"}, ws).action == "ask"

    checker.remember_call("apply_patch", {"patch": PATCH}, ws)
    assert checker.check("apply_patch", {"patch": PATCH}, ws).action == "allow"


def test_remember_call_never_lifts_deny(ws: Path) -> None:
    checker = PermissionChecker([*DEFAULT_RULES, "deny bash(git push --force *)"])
    call = {"command": "git status && git push --force"}
    checker.remember_call("bash", call, ws)
    assert checker.check("bash", call, ws).action == "deny"
