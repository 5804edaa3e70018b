"""Faults, with a real misbehaving server (tests/mcp/fault_server.py) over stdio and HTTP:
crash on call, hang, a 5 MB result, invalid schemas, slow start, a missing command."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mcputil import FAULT_SERVER, HttpFaultServer, free_port

from stagecrew.mcp import McpLayer, McpManager, build_mcp_config
from stagecrew.tools.base import ToolContext
from stagecrew.tools.providers import ToolSet

pytestmark = pytest.mark.timeout(120)


def manager(servers: dict[str, Any], **top: Any) -> McpManager:
    layers = [McpLayer("test .mcp.json", "mcp.json", {"mcpServers": servers})]
    if top:
        layers.append(McpLayer("test config", "config", top))
    return McpManager(build_mcp_config(layers, environ={}))


@pytest.fixture(params=["stdio", "http"])
def fault(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The fault server's entry, over each transport."""
    if request.param == "stdio":
        return {"command": sys.executable, "args": [str(FAULT_SERVER)], "call_timeout_s": 2}
    server: HttpFaultServer = request.getfixturevalue("http_fault")
    return {"type": "http", "url": server.url, "call_timeout_s": 2}


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=tmp_path)


async def test_crash_restarts_once_then_gives_up(fault: dict[str, Any], ctx: ToolContext) -> None:
    async with manager({"f": fault}) as mcp:
        first = await mcp.call("mcp__f__pid", {}, ctx)
        assert not first.is_error, first.content

        crashed = await mcp.call("mcp__f__crash", {}, ctx)
        assert crashed.is_error
        assert "MCP server 'f'" in crashed.content and "restarted" in crashed.content
        if "command" in fault:  # stdio: the stderr tail names the cause
            assert "crashing on purpose" in crashed.content

        again = await mcp.call("mcp__f__pid", {}, ctx)  # waits for the restart
        assert not again.is_error, again.content
        assert again.content != first.content  # a new process answered
        [row] = mcp.status()
        assert (row.status, row.restarts) == ("running", 1)

        second = await mcp.call("mcp__f__crash", {}, ctx)
        assert second.is_error and "not restarted" in second.content
        after = await mcp.call("mcp__f__echo", {"text": "hi"}, ctx)
        assert after.is_error and "not available" in after.content
        [row] = mcp.status()
        assert row.status == "failed" and "not restarted" in (row.error or "")


async def test_hang_is_cut_by_the_call_timeout(fault: dict[str, Any], ctx: ToolContext) -> None:
    async with manager({"f": fault}) as mcp:
        t0 = time.monotonic()
        hung = await mcp.call("mcp__f__hang", {}, ctx)
        took = time.monotonic() - t0
        assert hung.is_error and "did not answer within 2 s" in hung.content
        assert 1.9 < took < 6
        ok = await mcp.call("mcp__f__echo", {"text": "still here"}, ctx)
        assert (ok.is_error, ok.content) == (False, "still here")


async def test_big_result_is_truncated_with_a_note(fault: dict[str, Any], ctx: ToolContext) -> None:
    async with manager({"f": fault}, call_timeout_s=60) as mcp:
        result = await mcp.call("mcp__f__big", {}, ctx)
    assert not result.is_error
    assert len(result.content) < 31_000
    assert result.content.startswith("xxxx") and result.content.endswith("END!")
    cut = 5 * 1024 * 1024 - 30_000
    assert f"{cut:,} of {5 * 1024 * 1024:,} characters cut" in result.content
    assert result.metadata["truncated_chars"] == cut


async def test_invalid_schemas_are_replaced_with_a_notice(
    fault: dict[str, Any], ctx: ToolContext
) -> None:
    async with manager({"f": fault}) as mcp:
        specs = {s.name: s for s in mcp.specs()}
        assert specs["mcp__f__broken"].parameters == {"type": "object"}
        assert any("tool 'broken'" in n and "without parameters" in n for n in mcp.notices)
        if "command" in fault:  # only the stdio server can send a tool without any schema
            assert specs["mcp__f__bare"].parameters == {"type": "object"}
            assert any("tool 'bare' has no input schema" in n for n in mcp.notices)
        assert specs["mcp__f__echo"].parameters["required"] == ["text"]
        # read_only follows the readOnlyHint annotation and nothing else
        assert specs["mcp__f__peek"].read_only is True
        assert specs["mcp__f__echo"].read_only is False
        # the tools still work
        result = await mcp.call("mcp__f__broken", {}, ctx)
        assert (result.is_error, result.content) == (False, "broken ran")


async def test_rendering_of_blocks(fault: dict[str, Any], ctx: ToolContext) -> None:
    async with manager({"f": fault}) as mcp:
        image = await mcp.call("mcp__f__picture", {}, ctx)
        assert image.content == "[image: image/png, 825 bytes]"
        structured = await mcp.call("mcp__f__structured", {}, ctx)
        assert '"answer": 42' in structured.content
        failed = await mcp.call("mcp__f__fail", {}, ctx)
        assert (failed.is_error, failed.content) == (True, "it went wrong")
        unknown = await mcp.call("mcp__f__nope", {}, ctx)
        assert unknown.is_error


async def test_prompts_and_resources(fault: dict[str, Any], ctx: ToolContext) -> None:
    async with manager({"f": fault}) as mcp:
        [prompt] = mcp.list_prompts()
        assert prompt.name == "mcp__f__greet"
        assert prompt.usage() == "/mcp__f__greet <name> [greeting]"
        text = await mcp.get_prompt("f", "greet", {"name": "Ada"})
        assert text == "Hello, Ada! Please review the code."
        text = await mcp.expand_prompt_command('/mcp__f__greet Ada "Good morning to you"')
        assert text == "Good morning to you, Ada! Please review the code."
        assert await mcp.expand_prompt_command("/something else") is None
        from stagecrew.mcp import McpError

        with pytest.raises(McpError, match=r"missing name; usage: /mcp__f__greet"):
            await mcp.expand_prompt_command("/mcp__f__greet")

        listed = await mcp.call("mcp_resources", {"action": "list"}, ctx)
        assert "f  note://hello  hello (text/plain)" in listed.content
        read = await mcp.call(
            "mcp_resources", {"action": "read", "server": "f", "uri": "note://hello"}, ctx
        )
        assert (read.is_error, read.content) == (False, "hello from a resource")
        bad = await mcp.call("mcp_resources", {"action": "read"}, ctx)
        assert bad.is_error


async def test_slow_and_missing_servers_do_not_stop_the_others(
    fault_entry: dict[str, Any], ctx: ToolContext
) -> None:
    slow = {
        **fault_entry,
        "args": [str(FAULT_SERVER), "--slow-start", "60"],
        "startup_timeout_s": 2,
    }
    mcp = manager({"ok": fault_entry, "slow": slow, "ghost": {"command": "no-such-command-xyz"}})
    t0 = time.monotonic()
    try:
        notices = await mcp.start()
        took = time.monotonic() - t0
        assert took < 10  # the slow server costs its timeout, not more
        rows = {r.name: r for r in mcp.status()}
        assert rows["ok"].status == "running" and rows["ok"].tools == 12
        assert rows["slow"].status == "failed"
        assert rows["ghost"].status == "failed"
        [slow_notice] = [n for n in notices if "'slow'" in n]
        assert slow_notice == (
            "MCP server 'slow' did not start: no answer within 2 s "
            "(stderr: fault_server: warming up for 60.0 s)"
        )
        assert "MCP server 'ghost' did not start: command not found: no-such-command-xyz" in notices
        assert all(not s.name.startswith(("mcp__slow", "mcp__ghost")) for s in mcp.specs())
        result = await mcp.call("mcp__ok__echo", {"text": "fine"}, ctx)
        assert result.content == "fine"
    finally:
        await mcp.stop()


async def test_server_that_exits_at_start_shows_its_stderr() -> None:
    entry = {
        "command": sys.executable,
        "args": ["-c", "import sys; sys.exit('bad config: no key')"],
    }
    async with manager({"bad": entry}) as mcp:
        [row] = mcp.status()
        assert row.status == "failed"
        assert row.error is not None and "(stderr: bad config: no key)" in row.error


async def test_unreachable_http_server_fails_fast() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    t0 = time.monotonic()
    async with manager({"web": {"type": "http", "url": url}}) as mcp:
        [row] = mcp.status()
    assert row.status == "failed" and row.error
    assert time.monotonic() - t0 < 10


async def test_as_a_provider_in_a_toolset(fault_entry: dict[str, Any], ctx: ToolContext) -> None:
    """One registration: the manager is a ToolProvider; ToolSet filters by `mcp__server`."""
    async with manager({"f": fault_entry}) as mcp:
        tools = ToolSet([mcp], allowed=["mcp__f"])
        assert "mcp__f__echo" in tools and "mcp_resources" not in tools
        result = await tools.execute("mcp__f__echo", '{"text": "via toolset"}', ctx)
        assert result.content == "via toolset"
        # plan mode: only tools annotated read-only may run
        plan = ToolContext(workspace=ctx.workspace, read_only=True)
        denied = await tools.execute("mcp__f__echo", {"text": "x"}, plan)
        assert denied.is_error and "read-only" in denied.content
        allowed = await tools.execute("mcp__f__peek", {}, plan)
        assert allowed.content == "peek ran"


async def test_stop_twice_and_without_start(fault_entry: dict[str, Any]) -> None:
    mcp = manager({"f": fault_entry})
    await mcp.stop()
    mcp = manager({"f": fault_entry})
    await mcp.start()
    t0 = time.monotonic()
    await mcp.stop()
    assert time.monotonic() - t0 < 5
    await mcp.stop()
