"""Hook configuration: every source merged in a fixed order, errors naming file and key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hookutil import hooks_for

from stagecrew.config import ConfigError
from stagecrew.hooks import HookConfig, Matcher, load_hooks, parse_hooks
from stagecrew.hooks.config import select


def _settings(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _commands(config: HookConfig, event: str) -> list[str]:
    return [h.command for g in config.groups(event) for h in g.hooks]


def test_every_source_adds_hooks_in_config_order(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _settings(home / ".claude/settings.json", {"hooks": hooks_for("PreToolUse", "home")})
    _settings(
        project / ".claude/settings.json",
        {"permissions": {"allow": ["Bash(ls)"]}, "hooks": hooks_for("PreToolUse", "team")},
    )
    _settings(
        project / ".claude/settings.local.json",
        {"hooks": {**hooks_for("PreToolUse", "local"), **hooks_for("Stop", "stop-check")}},
    )
    config = load_hooks(
        project,
        home=home,
        user_hooks=("user config.json", hooks_for("PreToolUse", "sc-user")),
        project_hooks=("project config.json", hooks_for("PreToolUse", "sc-project")),
    )
    assert _commands(config, "PreToolUse") == ["home", "sc-user", "team", "local", "sc-project"]
    assert _commands(config, "Stop") == ["stop-check"]
    assert not config.is_empty
    assert config.sources == (
        str(home / ".claude/settings.json"),
        "user config.json",
        str(project / ".claude/settings.json"),
        str(project / ".claude/settings.local.json"),
        "project config.json",
    )


def test_no_sources_is_empty(project: Path, tmp_path: Path) -> None:
    _settings(project / ".claude/settings.json", {"permissions": {}})  # a file without hooks
    config = load_hooks(project, home=tmp_path / "nohome")
    assert config.is_empty
    assert config.groups("PreToolUse") == ()


def test_home_that_is_the_project_counts_once(project: Path) -> None:
    _settings(project / ".claude/settings.json", {"hooks": hooks_for("Stop", "once")})
    config = load_hooks(project, home=project)
    assert _commands(config, "Stop") == ["once"]


def test_defaults_and_extensions_are_read(project: Path, tmp_path: Path) -> None:
    config = parse_hooks(
        {
            "PreToolUse": [
                {
                    "matcher": "Bash",
                    "hooks": [
                        {"type": "command", "command": "a"},
                        {"type": "command", "command": "b", "timeout": 5, "on_failure": "block"},
                    ],
                }
            ]
        },
        "x.json",
    )
    a, b = config.groups("PreToolUse")[0].hooks
    assert (a.timeout_s, a.on_failure) == (60.0, "continue")
    assert (b.timeout_s, b.on_failure) == (5.0, "block")
    assert b.origin == "x.json: hooks.PreToolUse[0].hooks[1]"


@pytest.mark.parametrize(
    ("hooks", "key", "expected"),
    [
        ([], "hooks", "expected an object"),
        ({"PreToolUse": {}}, "hooks.PreToolUse", "expected a list"),
        ({"PreToolUSe": []}, "hooks.PreToolUSe", "did you mean PreToolUse"),
        ({"Stop": ["x"]}, "hooks.Stop[0]", "expected an object"),
        ({"Stop": [{"matcher": 3, "hooks": []}]}, "hooks.Stop[0].matcher", "expected a string"),
        ({"Stop": [{"matcher": "Bash("}]}, "hooks.Stop[0].matcher", "regular expression"),
        ({"Stop": [{"matcher": ""}]}, "hooks.Stop[0].hooks", "is required"),
        ({"Stop": [{"hooks": {}}]}, "hooks.Stop[0].hooks", "expected a list"),
        ({"Stop": [{"hooks": [{"command": "x"}]}]}, "hooks.Stop[0].hooks[0].type", "required"),
        (
            {"Stop": [{"hooks": [{"type": "command"}]}]},
            "hooks.Stop[0].hooks[0].command",
            "non-empty string",
        ),
        (
            {"Stop": [{"hooks": [{"type": "command", "command": "x", "timeout": "9"}]}]},
            "hooks.Stop[0].hooks[0].timeout",
            "positive number of seconds",
        ),
        (
            {"Stop": [{"hooks": [{"type": "command", "command": "x", "timeout": 0}]}]},
            "hooks.Stop[0].hooks[0].timeout",
            "positive number of seconds",
        ),
        (
            {"Stop": [{"hooks": [{"type": "command", "command": "x", "on_failure": "deny"}]}]},
            "hooks.Stop[0].hooks[0].on_failure",
            '"continue" or "block"',
        ),
    ],
)
def test_invalid_settings_name_the_file_and_the_key(
    project: Path, tmp_path: Path, hooks: Any, key: str, expected: str
) -> None:
    path = _settings(project / ".claude/settings.json", {"hooks": hooks})
    with pytest.raises(ConfigError) as err:
        load_hooks(project, home=tmp_path / "nohome")
    message = str(err.value)
    assert message.startswith(f"{path}: '{key}' ")
    assert expected in message
    assert "\n" not in message


def test_invalid_stagecrew_hooks_name_their_source(project: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^/u/config.json: 'hooks.Stop' expected a list"):
        load_hooks(project, home=tmp_path, user_hooks=("/u/config.json", {"Stop": "x"}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{ not json", "not valid JSON (line 1, column 3"),
        ("[1, 2]", "expected a JSON object at the top level"),
        (b"\xff\xfe", "not valid UTF-8"),
    ],
)
def test_unreadable_settings_files(
    project: Path, tmp_path: Path, text: str | bytes, expected: str
) -> None:
    path = project / ".claude/settings.local.json"
    path.parent.mkdir()
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_hooks(project, home=tmp_path / "nohome")
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


def test_what_claude_code_has_and_stagecrew_cannot_run_loads_with_warnings() -> None:
    config = parse_hooks(
        {
            "PermissionRequest": [{"hooks": [{"type": "command", "command": "x"}]}],
            "Stop": [
                {
                    "hooks": [
                        {"type": "prompt", "prompt": "Is the work done?"},
                        {"type": "command", "command": "check", "async": False},
                    ]
                }
            ],
        },
        "s.json",
    )
    assert _commands(config, "Stop") == ["check"]
    assert "PermissionRequest" not in config.events
    assert len(config.warnings) == 2
    assert any("PermissionRequest" in w for w in config.warnings)
    assert any("'prompt'" in w for w in config.warnings)


@pytest.mark.parametrize(
    ("matcher", "names", "expected"),
    [
        ("", ["bash"], True),
        ("*", ["anything"], True),
        ("Bash", ["bash", "Bash"], True),
        ("Bash", ["bash_output", "BashOutput"], False),  # plain names match exactly
        ("Bash|Edit", ["edit", "Edit"], True),
        ("bash", ["bash", "Bash"], True),
        ("Bash.*", ["bash_output", "BashOutput"], True),
        ("mcp__.*", ["mcp__github__create_issue"], True),
        ("mcp__memory__.*", ["mcp__github__create_issue"], False),
        ("Notebook.*", ["edit", "Edit"], False),
        ("^Write$", ["todo", "TodoWrite"], False),
        (".*Write", ["todo", "TodoWrite"], True),  # a regex is searched, as RegExp.test does
    ],
)
def test_matchers_as_claude_code_reads_them(matcher: str, names: list[str], expected: bool) -> None:
    assert Matcher.parse(matcher).matches(names) is expected


def test_a_command_matched_twice_runs_once_with_the_stricter_settings() -> None:
    config = parse_hooks(
        {
            "PreToolUse": [
                {"matcher": "Bash", "hooks": [{"type": "command", "command": "guard"}]},
                {"matcher": "Edit", "hooks": [{"type": "command", "command": "fmt"}]},
                {
                    "matcher": "*",
                    "hooks": [
                        {"type": "command", "command": "guard", "timeout": 90},
                        {"type": "command", "command": "log", "on_failure": "block"},
                    ],
                },
            ]
        },
        "s.json",
    )
    chosen = select(config, "PreToolUse", ("bash", "Bash"))
    assert [(s.matcher, s.hook.command) for s in chosen] == [("Bash", "guard"), ("*", "log")]
    assert chosen[0].hook.timeout_s == 90
    chosen = select(config, "PreToolUse", ("edit", "Edit"))
    assert [s.hook.command for s in chosen] == ["fmt", "guard", "log"]
