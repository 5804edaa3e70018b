"""Real MCP servers from PyPI and npm, started as processes through the manager."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from mcputil import BIN

from stagecrew.mcp import McpLayer, McpManager, build_mcp_config
from stagecrew.tools.base import ToolContext

pytestmark = pytest.mark.timeout(120)


def manager(servers: dict[str, object]) -> McpManager:
    return McpManager(
        build_mcp_config([McpLayer("test", "mcp.json", {"mcpServers": servers})], environ={})
    )


async def test_time_and_git_servers(git_repo: Path) -> None:
    (git_repo / "new_file.txt").write_text("untracked\n")
    (git_repo / "README.md").write_text("# changed\n")
    servers = {
        "time": {"command": str(BIN / "mcp-server-time"), "args": ["--local-timezone", "UTC"]},
        "git": {"command": str(BIN / "mcp-server-git"), "args": ["--repository", str(git_repo)]},
    }
    ctx = ToolContext(workspace=git_repo)
    async with manager(servers) as mcp:
        assert mcp.notices == []
        names = {s.name for s in mcp.specs()}
        assert {"mcp__time__get_current_time", "mcp__time__convert_time"} <= names
        assert {"mcp__git__git_status", "mcp__git__git_log", "mcp__git__git_diff_unstaged"} <= names
        rows = {r.name: r for r in mcp.status()}
        for name in servers:
            assert rows[name].status == "running" and rows[name].tools > 0
            assert rows[name].start_ms is not None and rows[name].start_ms > 0

        now = await mcp.call("mcp__time__get_current_time", {"timezone": "Europe/Paris"}, ctx)
        assert not now.is_error, now.content
        assert json.loads(now.content)["timezone"] == "Europe/Paris"

        status = await mcp.call("mcp__git__git_status", {"repo_path": str(git_repo)}, ctx)
        assert not status.is_error, status.content
        assert "On branch main" in status.content
        assert "new_file.txt" in status.content and "README.md" in status.content

        diff = await mcp.call("mcp__git__git_diff_unstaged", {"repo_path": str(git_repo)}, ctx)
        assert "+# changed" in diff.content

        bad = await mcp.call("mcp__time__get_current_time", {"timezone": "Not/AZone"}, ctx)
        assert bad.is_error  # the server's own error, as an error result


def _filesystem_server() -> list[str] | None:
    """The command that runs @modelcontextprotocol/server-filesystem from a local install:
    $STAGECREW_TEST_MCP_FILESYSTEM (its bin or its dist/index.js), the project's
    node_modules, or the global npm root. Never npx: tests have no network."""
    node = shutil.which("node")
    if node is None:
        return None
    candidates = []
    if os.environ.get("STAGECREW_TEST_MCP_FILESYSTEM"):
        candidates.append(Path(os.environ["STAGECREW_TEST_MCP_FILESYSTEM"]))
    root = Path(__file__).resolve().parents[2]
    candidates.append(root / "node_modules/@modelcontextprotocol/server-filesystem")
    npm = shutil.which("npm")
    if npm:
        try:
            out = subprocess.run(
                [npm, "root", "-g"], capture_output=True, text=True, timeout=20
            ).stdout.strip()
            if out:
                candidates.append(Path(out) / "@modelcontextprotocol/server-filesystem")
        except (OSError, subprocess.SubprocessError):
            pass
    for path in candidates:
        script = path / "dist" / "index.js" if path.is_dir() else path
        if script.is_file():
            return [node, str(script)]
    return None


async def test_filesystem_server_through_node(tmp_path: Path) -> None:
    command = _filesystem_server()
    if command is None:
        pytest.skip(
            "@modelcontextprotocol/server-filesystem is not installed locally (node_modules, "
            "npm root -g, or STAGECREW_TEST_MCP_FILESYSTEM); tests cannot download it"
        )
    (tmp_path / "hello.txt").write_text("hello from the filesystem server\n")
    servers = {"fs": {"command": command[0], "args": [*command[1:], str(tmp_path)]}}
    ctx = ToolContext(workspace=tmp_path)
    async with manager(servers) as mcp:
        assert mcp.notices == []
        names = {s.name for s in mcp.specs()}
        assert "mcp__fs__list_directory" in names
        read_tool = (
            "mcp__fs__read_text_file"
            if "mcp__fs__read_text_file" in names
            else ("mcp__fs__read_file")
        )
        result = await mcp.call(read_tool, {"path": str(tmp_path / "hello.txt")}, ctx)
        assert not result.is_error, result.content
        assert "hello from the filesystem server" in result.content
        outside = await mcp.call(read_tool, {"path": "/etc/hostname"}, ctx)
        assert outside.is_error  # the server refuses paths outside its roots
