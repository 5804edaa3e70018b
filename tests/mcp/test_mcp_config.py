"""MCP configuration: Claude Code's .mcp.json, stagecrew's `mcp` key, expansion, filters, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagecrew.config import ConfigError
from stagecrew.mcp import McpLayer, build_mcp_config, load_mcp_config
from stagecrew.mcp.files import add_server, remove_server
from stagecrew.mcp.names import qualified_name


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A project root and a private user config dir."""
    project = tmp_path / "project"
    project.mkdir()
    user = tmp_path / "userconf"
    user.mkdir()
    monkeypatch.setenv("STAGECREW_CONFIG_DIR", str(user))
    return project, user


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_claude_code_mcp_json_with_expansion(dirs: tuple[Path, Path]) -> None:
    project, _ = dirs
    write(
        project / ".mcp.json",
        {
            "mcpServers": {
                "gh": {
                    "command": "${TOOLS:-/opt/tools}/gh-mcp",
                    "args": ["--token", "${TOKEN}", "--mode=${MODE:-fast}"],
                    "env": {"API": "${API_BASE:-https://api.example}/v1", "TOKEN": "${TOKEN}"},
                },
                "web": {
                    "type": "http",
                    "url": "https://${HOST}/mcp",
                    "headers": {"Authorization": "Bearer ${TOKEN}"},
                },
                "legacy": {"type": "sse", "url": "http://127.0.0.1:1/sse"},
                "modern": {"type": "streamable-http", "url": "http://127.0.0.1:1/mcp"},
                "plain": {"type": "stdio", "command": "srv", "future_key": {"ignored": True}},
            }
        },
    )
    env = {"TOKEN": "t0k", "HOST": "mcp.example", "MODE": ""}
    config = load_mcp_config(project, environ=env)
    gh = config.servers["gh"]
    assert gh.transport == "stdio"
    assert gh.command == "/opt/tools/gh-mcp"
    # ${VAR:-default} takes the default when VAR is unset or empty, like the shell.
    assert gh.args == ("--token", "t0k", "--mode=fast")
    assert gh.env == {"API": "https://api.example/v1", "TOKEN": "t0k"}
    web = config.servers["web"]
    assert (web.transport, web.url) == ("http", "https://mcp.example/mcp")
    assert web.headers == {"Authorization": "Bearer t0k"}
    assert config.servers["legacy"].transport == "sse"
    assert config.servers["modern"].transport == "http"
    assert config.servers["plain"].command == "srv"  # unknown keys in .mcp.json are ignored
    assert list(config.servers) == ["gh", "web", "legacy", "modern", "plain"]


def test_unset_variable_names_file_key_and_variable(dirs: tuple[Path, Path]) -> None:
    project, _ = dirs
    path = write(
        project / ".mcp.json", {"mcpServers": {"gh": {"command": "x", "env": {"T": "${NOPE}"}}}}
    )
    with pytest.raises(ConfigError) as err:
        load_mcp_config(project, environ={})
    message = str(err.value)
    assert message.startswith(f"{path}: 'mcpServers.gh.env.T'")
    assert "NOPE is not set" in message and "\n" not in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON (line 1"),
        ("[1, 2]", "expected a JSON object at the top level"),
        ({"mcpServers": []}, "'mcpServers' must be an object"),
        (
            {"mcpServers": {"a": {"command": "x", "args": "--flag"}}},
            "'mcpServers.a.args' must be a list of strings",
        ),
        (
            {"mcpServers": {"a": {"command": ""}}},
            "'mcpServers.a.command' must be a non-empty string",
        ),
        (
            {"mcpServers": {"a": {"type": "websocket", "url": "ws://x"}}},
            "'mcpServers.a.type' must be one of",
        ),
        (
            {"mcpServers": {"a": {"type": "http", "url": "ftp://x"}}},
            "'mcpServers.a.url' must be an http",
        ),
        ({"mcpServers": {"a": {"type": "http"}}}, "'mcpServers.a.url' must be a non-empty string"),
        ({"mcpServers": {"a": {"args": []}}}, "'mcpServers.a' needs \"command\""),
        ({"mcpServers": {"a b": {"command": "x"}}}, "'mcpServers.a b' is not a usable server name"),
        (
            {"mcpServers": {"a": {"command": "x", "env": {"K": 1}}}},
            "'mcpServers.a.env' must be an object of string values",
        ),
        (
            {"mcpServers": {"a": {"command": "x", "startup_timeout_s": 0}}},
            "'mcpServers.a.startup_timeout_s' must be a number",
        ),
    ],
)
def test_invalid_mcp_json_is_one_line_naming_file_and_key(
    dirs: tuple[Path, Path], content: object, expected: str
) -> None:
    project, _ = dirs
    path = write(project / ".mcp.json", content)
    with pytest.raises(ConfigError) as err:
        load_mcp_config(project, environ={})
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert "\n" not in message


def test_project_overrides_user_and_filters(dirs: tuple[Path, Path]) -> None:
    project, user = dirs
    write(
        user / "mcp.json",
        {
            "mcpServers": {
                "a": {"command": "user-a"},
                "b": {"command": "user-b"},
                "c": {"command": "c"},
            }
        },
    )
    write(project / ".mcp.json", {"mcpServers": {"a": {"command": "project-a"}}})
    user_key = {"servers": {"d": {"command": "d"}}, "disabled": ["c"], "startup_timeout_s": 5}
    project_key = {
        "servers": {"b": {"type": "http", "url": "http://127.0.0.1:9/mcp"}},
        "call_timeout_s": 7,
    }
    config = load_mcp_config(project, user=user_key, project=project_key, environ={})
    assert config.servers["a"].command == "project-a"  # project .mcp.json over user mcp.json
    assert config.servers["b"].transport == "http"  # project config key over both
    assert config.servers["d"].command == "d"
    assert "c" not in config.servers and config.disabled["c"].command == "c"
    assert (config.startup_timeout_s, config.call_timeout_s) == (5.0, 7.0)

    # `enabled`: only these run; the highest source's list wins; `disabled` still applies.
    config = load_mcp_config(
        project,
        user={"enabled": ["a"]},
        project={"enabled": ["a", "b", "c"], "disabled": ["b"]},
        environ={},
    )
    assert list(config.servers) == ["a", "c"]
    assert set(config.disabled) == {"b"}


def test_stagecrew_mcp_key_is_strict(dirs: tuple[Path, Path]) -> None:
    project, _ = dirs
    with pytest.raises(ConfigError, match=r"/p/config.json: unknown key 'mcp.server'"):
        load_mcp_config(project, project={"server": {}}, project_source="/p/config.json")
    with pytest.raises(ConfigError, match=r"'mcp.servers.x.cmd' is not a known key"):
        load_mcp_config(project, project={"servers": {"x": {"command": "a", "cmd": "b"}}})
    with pytest.raises(ConfigError, match=r"'mcp.disabled' must be a list of server names"):
        build_mcp_config([McpLayer("s", "config", {"disabled": "a"})])


def test_relative_cwd_is_taken_from_the_project_root(dirs: tuple[Path, Path]) -> None:
    project, _ = dirs
    write(project / ".mcp.json", {"mcpServers": {"a": {"command": "x", "cwd": "tools"}}})
    assert load_mcp_config(project, environ={}).servers["a"].cwd == str(project / "tools")


def test_editing_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / ".mcp.json",
        {"other": {"keep": [1, 2]}, "mcpServers": {"old": {"command": "old", "x-custom": 1}}},
    )
    add_server(path, "new", {"type": "stdio", "command": "new", "args": []})
    data = json.loads(path.read_text())
    assert data == {
        "other": {"keep": [1, 2]},
        "mcpServers": {
            "old": {"command": "old", "x-custom": 1},
            "new": {"type": "stdio", "command": "new", "args": []},
        },
    }
    with pytest.raises(ConfigError, match="already configured"):
        add_server(path, "new", {"command": "again"})
    assert remove_server(path, "old") is True
    assert remove_server(path, "old") is False
    assert json.loads(path.read_text()) == {
        "other": {"keep": [1, 2]},
        "mcpServers": {"new": {"type": "stdio", "command": "new", "args": []}},
    }


def test_tool_names_are_valid_for_model_apis() -> None:
    assert qualified_name("time", "get_current_time") == "mcp__time__get_current_time"
    assert qualified_name("fs", "read.file/v2") == "mcp__fs__read_file_v2"
    long = qualified_name("server", "t" * 100)
    assert len(long) == 64 and long.startswith("mcp__server__ttt")
    assert long != qualified_name("server", "t" * 101)  # a hash tells them apart
    taken = {"mcp__a__x_y"}
    assert qualified_name("a", "x.y", taken) == "mcp__a__x_y_2"


def test_provider_options_round_trip(dirs: tuple[Path, Path]) -> None:
    """The configuration crosses process boundaries as the provider's JSON options."""
    from stagecrew.mcp.provider import config_from_options, provider_spec

    project, _ = dirs
    write(
        project / ".mcp.json",
        {
            "mcpServers": {
                "a": {"command": "x", "args": ["1"], "env": {"K": "v"}, "call_timeout_s": 3},
                "b": {"type": "sse", "url": "http://127.0.0.1:1/sse", "headers": {"H": "1"}},
            }
        },
    )
    config = load_mcp_config(project, project={"disabled": ["b"]}, environ={})
    spec = provider_spec(config)
    assert spec is not None and spec.kind == "mcp"
    again = config_from_options(json.loads(json.dumps(spec.options)))
    assert again == config
    assert provider_spec(build_mcp_config([])) is None
