"""`crew mcp add/remove/list` through the real command line, checking the files written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcputil import BIN, FAULT_SERVER

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / ".git").mkdir(parents=True)  # a project root marker
    return root


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    return tmp_path / "userconf"


def crew_mcp(
    *args: str, cwd: Path, user_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "STAGECREW_CONFIG_DIR": str(user_dir), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "stagecrew.cli.main", "mcp", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_add_and_remove_keep_the_rest_of_the_file(project: Path, user_dir: Path) -> None:
    mcp_json = project / ".mcp.json"
    mcp_json.write_text(
        json.dumps({"mcpServers": {"keep": {"command": "keep-me"}}, "x-note": "mine"}, indent=4)
    )
    added = crew_mcp(
        "add", "-e", "TOKEN=${GH_TOKEN}", "-e", "MODE=a=b", "git", "--",
        "uvx", "mcp-server-git", "--repository", ".",
        cwd=project, user_dir=user_dir,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert f"Added stdio MCP server 'git' to {mcp_json} (project scope)" in added.stdout
    http = crew_mcp(
        "add", "--transport", "http", "--header", "Authorization: Bearer ${API_TOKEN}",
        "api", "https://mcp.example.com/mcp",
        cwd=project, user_dir=user_dir,
    )  # fmt: skip
    assert http.returncode == 0, http.stderr
    sse = crew_mcp(
        "add", "-t", "sse", "old", "http://127.0.0.1:9/sse", cwd=project, user_dir=user_dir
    )
    assert sse.returncode == 0, sse.stderr
    assert json.loads(mcp_json.read_text()) == {
        "mcpServers": {
            "keep": {"command": "keep-me"},
            "git": {
                "type": "stdio",
                "command": "uvx",
                "args": ["mcp-server-git", "--repository", "."],
                "env": {"TOKEN": "${GH_TOKEN}", "MODE": "a=b"},
            },
            "api": {
                "type": "http",
                "url": "https://mcp.example.com/mcp",
                "headers": {"Authorization": "Bearer ${API_TOKEN}"},
            },
            "old": {"type": "sse", "url": "http://127.0.0.1:9/sse"},
        },
        "x-note": "mine",
    }

    dup = crew_mcp("add", "git", "--", "other", cwd=project, user_dir=user_dir)
    assert dup.returncode == 2
    assert dup.stderr == f"crew: {mcp_json}: an MCP server named 'git' is already configured\n"

    removed = crew_mcp("remove", "git", cwd=project, user_dir=user_dir)
    assert removed.returncode == 0, removed.stderr
    data = json.loads(mcp_json.read_text())
    assert list(data["mcpServers"]) == ["keep", "api", "old"] and data["x-note"] == "mine"

    missing = crew_mcp("remove", "git", cwd=project, user_dir=user_dir)
    assert missing.returncode == 1 and "no MCP server named 'git'" in missing.stderr


def test_user_scope_and_usage_errors(project: Path, user_dir: Path) -> None:
    added = crew_mcp(
        "add", "--scope", "user", "time", "--", "mcp-server-time", cwd=project, user_dir=user_dir
    )
    assert added.returncode == 0, added.stderr
    assert json.loads((user_dir / "mcp.json").read_text()) == {
        "mcpServers": {"time": {"type": "stdio", "command": "mcp-server-time", "args": []}}
    }
    assert not (project / ".mcp.json").exists()

    for args, message in [
        (("add", "bad name", "--", "x"), "'bad name' is not a usable server name"),
        (("add", "-t", "http", "h", "not-a-url"), "takes one http:// or https:// URL"),
        (("add", "-e", "NOEQUALS", "s", "--", "x"), "--env takes KEY=VALUE"),
        (("add", "-t", "http", "-e", "A=1", "h", "http://x"), "--env is for stdio servers"),
    ]:
        result = crew_mcp(*args, cwd=project, user_dir=user_dir)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr

    # in both scopes: remove needs to be told which
    crew_mcp("add", "time", "--", "mcp-server-time", cwd=project, user_dir=user_dir)
    both = crew_mcp("remove", "time", cwd=project, user_dir=user_dir)
    assert both.returncode == 2 and "--scope" in both.stderr
    user_only = crew_mcp("remove", "--scope", "user", "time", cwd=project, user_dir=user_dir)
    assert user_only.returncode == 0
    assert json.loads((user_dir / "mcp.json").read_text()) == {"mcpServers": {}}
    assert "time" in json.loads((project / ".mcp.json").read_text())["mcpServers"]


def test_list_starts_servers_and_shows_status(project: Path, user_dir: Path) -> None:
    (project / ".mcp.json").write_text(
        json.dumps(
            {
                "mcpServers": {
                    "time": {"command": str(BIN / "mcp-server-time")},
                    "fault": {"command": sys.executable, "args": [str(FAULT_SERVER)]},
                    "ghost": {"command": "no-such-command-xyz"},
                    "off": {"command": "whatever"},
                }
            }
        )
    )
    (project / ".stagecrew").mkdir()
    (project / ".stagecrew" / "config.json").write_text(json.dumps({"mcp": {"disabled": ["off"]}}))
    listed = crew_mcp("list", cwd=project, user_dir=user_dir)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TRANSPORT", "STATUS", "TOOLS", "START", "DETAIL"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["time"].split()[1:4] == ["stdio", "running", "2"]
    assert rows["fault"].split()[1:4] == ["stdio", "running", "12"]
    assert rows["ghost"].split()[1:3] == ["stdio", "failed"]
    assert "command not found: no-such-command-xyz" in rows["ghost"]
    assert rows["off"].split()[1:3] == ["stdio", "disabled"]

    as_json = crew_mcp("list", "--json", cwd=project, user_dir=user_dir)
    data = json.loads(as_json.stdout)
    by_name = {s["name"]: s for s in data["servers"]}
    assert by_name["time"]["status"] == "running" and by_name["time"]["start_ms"] > 0
    assert by_name["fault"]["prompts"] == 1 and by_name["fault"]["resources"] == 1
    assert any("ghost" in n for n in data["notices"])


def test_list_reports_a_bad_config_in_one_line(project: Path, user_dir: Path) -> None:
    (project / ".mcp.json").write_text(json.dumps({"mcpServers": {"x": {"command": 5}}}))
    result = crew_mcp("list", cwd=project, user_dir=user_dir)
    assert result.returncode == 2
    assert result.stderr == (
        f"crew: {project / '.mcp.json'}: 'mcpServers.x.command' must be a non-empty string "
        "(got 5)\n"
    )
    empty = project.parent / "empty"
    (empty / ".git").mkdir(parents=True)
    none = crew_mcp("list", cwd=empty, user_dir=user_dir)
    assert none.returncode == 0 and "No MCP servers configured" in none.stdout
