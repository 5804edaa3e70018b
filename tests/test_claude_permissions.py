"""Claude Code's permission rules, read from real settings files and decided as Claude Code
decides them, by stagecrew's one policy engine.

Most checks use the Claude Code rules alone, where a call no rule matches is ``ask``: that is
Claude Code's default mode, so "not allowed by the rule" shows as ``ask`` with no rule. The
last tests put them where a session puts them: after stagecrew's defaults, before its own
layers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stagecrew.claude import load_claude_permissions, settings_files
from stagecrew.config import ConfigError
from stagecrew.tools.permissions import (
    DEFAULT_RULES,
    Decision,
    PermissionChecker,
    claude_bash_matches,
)


def write_settings(path: Path, permissions: Any, **extra: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"permissions": permissions, **extra}), encoding="utf-8")
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The person's home, with ``~`` in rules meaning it (as it does for the agent)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    return root


def claude_checker(project: Path, home: Path, *, defaults: bool = False) -> PermissionChecker:
    loaded = load_claude_permissions(project, home=home)
    assert not loaded.notices, loaded.notices
    base = list(DEFAULT_RULES) if defaults else []
    return PermissionChecker([*base, *loaded.rule_strings()])


def project_rules(project: Path, home: Path, **lists: list[str]) -> PermissionChecker:
    write_settings(project / ".claude" / "settings.json", lists)
    return claude_checker(project, home)


def bash(checker: PermissionChecker, command: str, ws: Path) -> Decision:
    return checker.check("bash", {"command": command}, ws)


# -- loading ---------------------------------------------------------------------------------


def test_rules_load_from_the_three_files_with_their_sources(project: Path, home: Path) -> None:
    write_settings(home / ".claude" / "settings.json", {"allow": ["Bash(ls)"]})
    write_settings(
        project / ".claude" / "settings.json",
        {"deny": ["Read(./.env)"], "ask": ["Bash(git push *)"]},
        hooks={},
    )
    write_settings(project / ".claude" / "settings.local.json", {"allow": ["WebFetch"]})
    loaded = load_claude_permissions(project, home=home)
    assert loaded.rule_strings() == [
        "allow Bash(ls) from ~/.claude/settings.json",
        "deny Read(./.env) from .claude/settings.json",
        "ask Bash(git push *) from .claude/settings.json",
        "allow WebFetch from .claude/settings.local.json",
    ]
    by_action = loaded.by_action()
    assert [r.rule for r in by_action["deny"]] == ["Read(./.env)"]
    assert [r.rule for r in by_action["allow"]] == ["Bash(ls)", "WebFetch"]
    assert by_action["deny"][0].path == project / ".claude" / "settings.json"
    assert loaded.notices == ()


def test_no_settings_files_means_no_rules(project: Path, home: Path) -> None:
    loaded = load_claude_permissions(project, home=home)
    assert loaded.rules == () and loaded.notices == ()
    assert [s.label for s in settings_files(project, home)] == [
        "~/.claude/settings.json",
        ".claude/settings.json",
        ".claude/settings.local.json",
    ]


def test_a_rule_with_an_unknown_tool_is_one_line_and_the_rest_load(
    project: Path, home: Path
) -> None:
    settings = write_settings(
        project / ".claude" / "settings.json",
        {"deny": ["Reed(./.env)", "Read(./.env)"], "allow": ["WebSearch", 7, "Bash(ls)"]},
    )
    loaded = load_claude_permissions(project, home=home)
    assert loaded.rule_strings() == [
        "deny Read(./.env) from .claude/settings.json",
        "allow Bash(ls) from .claude/settings.json",
    ]
    unknown = [n for n in loaded.notices if "Reed" in n]
    assert len(unknown) == 1 and "\n" not in unknown[0]
    assert str(settings) in unknown[0] and "'Reed(./.env)'" in unknown[0]
    assert "unknown Claude Code tool 'Reed'" in unknown[0]
    # A tool Claude Code has and stagecrew does not, and a non-string entry: one line each.
    assert any("WebSearch" in n and "no WebSearch tool" in n for n in loaded.notices)
    assert any("permissions.allow[1]" in n and "7" in n for n in loaded.notices)
    assert len(loaded.notices) == 3


def test_malformed_permissions_are_notices_and_unused_keys_are_listed(
    project: Path, home: Path
) -> None:
    write_settings(home / ".claude" / "settings.json", ["Bash"])
    write_settings(
        project / ".claude" / "settings.json",
        {"allow": "Bash(ls)", "deny": ["Edit"], "defaultMode": "acceptEdits"},
    )
    loaded = load_claude_permissions(project, home=home)
    assert loaded.rule_strings() == ["deny Edit from .claude/settings.json"]
    assert len(loaded.notices) == 2
    assert any("'permissions' should be an object" in n for n in loaded.notices)
    assert any("'permissions.allow' should be a list" in n for n in loaded.notices)
    assert loaded.ignored == ((project / ".claude" / "settings.json", "permissions.defaultMode"),)


def test_a_settings_file_that_is_not_json_stops_the_session(project: Path, home: Path) -> None:
    path = project / ".claude" / "settings.json"
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_claude_permissions(project, home=home)


# -- Bash ------------------------------------------------------------------------------------


def test_legacy_prefix_rule(project: Path, home: Path) -> None:
    checker = project_rules(project, home, allow=["Bash(npm run test:*)"])
    for command in ("npm run test", "npm run test -- --watch", "timeout 60 npm run test"):
        decision = bash(checker, command, project)
        assert decision.action == "allow", command
        assert decision.rule == "allow Bash(npm run test:*) from .claude/settings.json"
    # Claude Code's prefix rules stop at a word boundary: neither of these is the prefix
    # followed by a space, so they are not allowed by the rule (ask, as in Claude Code).
    for command in ("npm run test:unit", "npm run testx", "npm run tes"):
        assert bash(checker, command, project) == Decision(
            "ask", None, f"bash '{command}' matches no permission rule"
        )
    # Every part of a compound command must be allowed.
    assert bash(checker, "npm run test && rm -rf build", project).action == "ask"


def test_wildcard_rule(project: Path, home: Path) -> None:
    checker = project_rules(project, home, allow=["Bash(git diff *)"])
    assert bash(checker, "git diff HEAD", project).action == "allow"
    assert bash(checker, "git diff", project).action == "allow"  # the lone trailing " *"
    assert bash(checker, "git -C . diff HEAD~1 -- src", project).action == "allow"
    assert bash(checker, "git diffx", project).action == "ask"
    assert bash(checker, "git status", project).action == "ask"


def test_bash_specifier_forms() -> None:
    assert claude_bash_matches("ls:*", "ls -la") and not claude_bash_matches("ls:*", "lsof")
    assert claude_bash_matches("ls *", "ls -la") and not claude_bash_matches("ls *", "lsof")
    assert claude_bash_matches("ls*", "lsof")
    # With two wildcards the last one is not optional.
    assert claude_bash_matches("* run *", "npm run build")
    assert not claude_bash_matches("* run *", "npm run")
    # In a wildcard rule an escaped star is a star; without a wildcard the command is exact.
    assert claude_bash_matches(r"echo \* *", "echo * and more")
    assert not claude_bash_matches(r"echo \* *", "echo a and more")
    assert claude_bash_matches("npm install", "npm install")
    assert not claude_bash_matches("npm install", "npm install left-pad")


def test_a_rule_with_spaces_in_its_specifier(project: Path, home: Path) -> None:
    checker = project_rules(
        project,
        home,
        deny=["Bash(docker compose down --volumes)", "Read(./docs/private notes/**)"],
    )
    assert bash(checker, "docker compose down --volumes", project).action == "deny"
    assert bash(checker, "docker compose down", project).action == "ask"
    read = checker.check("read", {"file_path": "docs/private notes/plan.md"}, project)
    assert read.action == "deny"
    assert read.rule == "deny Read(./docs/private notes/**) from .claude/settings.json"
    assert checker.check("read", {"file_path": "docs/notes/plan.md"}, project).action == "ask"


def test_bare_tool_name_covers_every_call(project: Path, home: Path) -> None:
    checker = project_rules(project, home, allow=["Bash"], deny=["Bash(rm:*)"])
    assert bash(checker, "make -j8", project).action == "allow"
    assert bash(checker, "rm -rf build", project).action == "deny"
    assert bash(checker, "sudo rm -rf build", project).action == "deny"  # every stage is checked


# -- files -----------------------------------------------------------------------------------


def test_read_deny_blocks_reading_and_writing_the_file(project: Path, home: Path) -> None:
    checker = project_rules(project, home, deny=["Read(./.env)"])
    explanation = "deny Read(./.env) from .claude/settings.json"
    read = checker.check("read", {"file_path": ".env"}, project)
    assert read.action == "deny" and read.rule == explanation
    assert read.message == f"Permission denied: read '.env' matches rule '{explanation}'"
    for tool, arguments in [
        ("read", {"file_path": "services/api/.env"}),  # no "/": any depth, as in gitignore
        ("read", {"file_path": str(project / ".env")}),
        ("edit", {"file_path": ".env", "old_string": "a", "new_string": "b"}),
        ("write", {"file_path": ".env", "content": "x"}),
        ("apply_patch", {"patch": "*** Begin Patch\n*** Add File: .env\n+X=1\n*** End Patch"}),
        ("grep", {"pattern": "KEY", "path": ".env"}),
    ]:
        decision = checker.check(tool, arguments, project)
        assert (decision.action, decision.rule) == ("deny", explanation), tool
    assert checker.check("read", {"file_path": ".env.example"}, project).action == "ask"
    assert checker.check("read", {"file_path": "env.txt"}, project).action == "ask"


def test_edit_rule_anchored_at_the_project_root(project: Path, home: Path) -> None:
    checker = project_rules(project, home, deny=["Edit(/migrations/**)"])
    explanation = "deny Edit(/migrations/**) from .claude/settings.json"
    for tool in ("edit", "write", "apply_patch"):
        arguments: dict[str, Any] = {"file_path": "migrations/0001_init.sql", "content": ""}
        if tool == "apply_patch":
            arguments = {"patch": "*** Update File: migrations/0001_init.sql\n"}
        decision = checker.check(tool, arguments, project)
        assert (decision.action, decision.rule) == ("deny", explanation), tool
    # A nested migrations directory is not the project root's, and Edit rules do not cover reads.
    nested = checker.check("edit", {"file_path": "app/migrations/0001_init.sql"}, project)
    assert nested.action == "ask"
    assert checker.check("read", {"file_path": "migrations/0001_init.sql"}, project).action == "ask"


def test_a_leading_slash_in_the_users_settings_anchors_at_home(project: Path, home: Path) -> None:
    write_settings(home / ".claude" / "settings.json", {"deny": ["Edit(/notes/**)"]})
    checker = claude_checker(project, home)
    assert checker.check("write", {"file_path": str(home / "notes" / "a.md")}, project).action == (
        "deny"
    )
    assert checker.check("write", {"file_path": "notes/a.md"}, project).action == "ask"


def test_absolute_and_home_paths(project: Path, home: Path) -> None:
    checker = project_rules(project, home, deny=["Read(//etc/passwd)", "Read(~/.aws/**)"])
    passwd = checker.check("read", {"file_path": "/etc/passwd"}, project)
    assert (
        passwd.action == "deny"
        and passwd.rule == "deny Read(//etc/passwd) from .claude/settings.json"
    )
    assert checker.check("read", {"file_path": "etc/passwd"}, project).action == "ask"
    aws = checker.check("read", {"file_path": "~/.aws/credentials"}, project)
    assert aws.action == "deny" and "Read(~/.aws/**)" in aws.reason
    assert checker.check("ls", {"path": str(home / ".aws")}, project).action == "deny"


def test_relative_rules_do_not_reach_outside_the_workspace(project: Path, home: Path) -> None:
    checker = project_rules(project, home, allow=["Read(*.md)"])
    assert checker.check("read", {"file_path": "docs/a.md"}, project).action == "allow"
    outside = project.parent / "other" / "b.md"
    assert checker.check("read", {"file_path": str(outside)}, project).action == "ask"


# -- web and MCP -----------------------------------------------------------------------------


def test_webfetch_domain(project: Path, home: Path) -> None:
    checker = project_rules(project, home, allow=["WebFetch(domain:example.com)"])
    fetch = checker.check("webfetch", {"url": "https://example.com/docs?q=1"}, project)
    assert fetch.action == "allow"
    assert fetch.rule == "allow WebFetch(domain:example.com) from .claude/settings.json"
    assert checker.check("webfetch", {"url": "https://example.org/"}, project).action == "ask"
    assert checker.check("webfetch", {"url": "https://evil.com/example.com"}, project).action == (
        "ask"
    )


def test_mcp_server_and_tool_rules(project: Path, home: Path) -> None:
    checker = project_rules(project, home, allow=["mcp__srv"], deny=["mcp__srv__drop_table"])
    assert checker.check("mcp__srv__query", {"sql": "select 1"}, project).action == "allow"
    drop = checker.check("mcp__srv__drop_table", {"name": "users"}, project)
    assert (
        drop.action == "deny"
        and drop.rule == "deny mcp__srv__drop_table from .claude/settings.json"
    )
    assert checker.check("mcp__srv2__query", {}, project).action == "ask"
    assert checker.check("mcp__other__query", {}, project).action == "ask"


def test_other_tools_match_their_arguments(project: Path, home: Path) -> None:
    checker = project_rules(project, home, allow=["Skill(pdf)"], deny=["Task(deployer)"])
    assert checker.check("skill", {"name": "pdf"}, project).action == "allow"
    assert checker.check("skill", {"name": "docx"}, project).action == "ask"
    deploy = {"prompt": "Ship it", "subagent_type": "deployer"}
    assert checker.check("task", deploy, project).action == "deny"


# -- precedence ------------------------------------------------------------------------------


@pytest.mark.parametrize("deny_first", [True, False])
def test_deny_beats_allow_whatever_the_order(project: Path, home: Path, deny_first: bool) -> None:
    deny = {"deny": ["Bash(git push *)"]}
    allow = {"allow": ["Bash(git push *)", "Bash(git *)"]}
    first, second = (deny, allow) if deny_first else (allow, deny)
    write_settings(home / ".claude" / "settings.json", first)
    write_settings(project / ".claude" / "settings.local.json", second)
    checker = claude_checker(project, home)
    push = bash(checker, "git push origin main", project)
    assert push.action == "deny" and push.rule is not None and push.rule.startswith("deny ")
    assert bash(checker, "git status", project).action == "allow"


def test_ask_beats_allow(project: Path, home: Path) -> None:
    write_settings(project / ".claude" / "settings.json", {"allow": ["Bash"]})
    write_settings(project / ".claude" / "settings.local.json", {"ask": ["Bash(git push *)"]})
    checker = claude_checker(project, home)
    push = bash(checker, "git push", project)
    assert push.action == "ask"
    assert push.rule == "ask Bash(git push *) from .claude/settings.local.json"
    assert bash(checker, "git status", project).action == "allow"


def test_claude_rules_in_a_session_s_order(project: Path, home: Path) -> None:
    """Where a session puts them: after stagecrew's defaults, before its own layers. They beat
    the defaults; stagecrew's later rules refine their allow and ask; their deny is final."""
    write_settings(
        project / ".claude" / "settings.json",
        {"allow": ["Bash(git push *)", "Read(./.env)"], "deny": ["Bash(rm:*)"]},
    )
    claude = load_claude_permissions(project, home=home).rule_strings()
    own = ["ask bash(git push --force*)", "allow bash(rm -rf build)"]
    checker = PermissionChecker([*DEFAULT_RULES, *claude, *own])
    # The defaults ask before git push and reading .env; the person's Claude Code rules allow.
    assert bash(checker, "git push origin main", project).action == "allow"
    assert checker.check("read", {"file_path": ".env"}, project).action == "allow"
    # stagecrew's own later rule narrows an allow...
    assert bash(checker, "git push --force origin main", project).action == "ask"
    # ...but never lifts a Claude Code deny.
    rm = bash(checker, "rm -rf build", project)
    assert rm.action == "deny" and rm.rule == "deny Bash(rm:*) from .claude/settings.json"
    # A session answer ("always allow") lifts an ask, never that deny.
    checker.remember_call("bash", {"command": "rm -rf build"}, project)
    assert bash(checker, "rm -rf build", project).action == "deny"
