"""The memory and tasks tools through the real ``execute`` path, on real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagecrew.memory.index import MemoryIndex
from stagecrew.memory.layers import Checkpoint, MemoryPaths, ProjectMemory, ProjectMemoryWriter
from stagecrew.memory.tasks import TaskLedger
from stagecrew.tools.base import Tool, ToolContext, execute
from stagecrew.tools.memory_tools import MemoryTool, TasksTool

TOOLS: dict[str, Tool] = {"memory": MemoryTool(), "tasks": TasksTool()}


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    root = tmp_path / "proj"
    root.mkdir()
    session = root / ".stagecrew" / "state" / "sessions" / "s1"
    session.mkdir(parents=True)
    context = ToolContext(workspace=root, session_dir=session, agent_id="lead")
    context.services.user_config_dir = str(tmp_path / "cfg")
    paths = MemoryPaths.for_session_dir(context.workspace, session, tmp_path / "cfg")
    context.services.memory_writer = ProjectMemoryWriter(paths.project_memory)
    yield context
    index = context.services.memory_index
    if isinstance(index, MemoryIndex):
        index.close()


async def test_schemas_are_valid() -> None:
    for tool in TOOLS.values():
        schema = tool.schema()
        assert schema["function"]["name"] == tool.name
        assert "action" in schema["function"]["parameters"]["required"]


async def test_note_then_search_finds_it(ctx: ToolContext) -> None:
    r = await execute(
        TOOLS, "memory", {"action": "note", "text": "flaky test: test_upload_retry"}, ctx
    )
    assert not r.is_error, r.content
    notes = ctx.session_dir / "notes.md"
    assert "flaky test: test_upload_retry" in notes.read_text()
    r = await execute(TOOLS, "memory", '{"action": "search", "query": "test_upload_retry"}', ctx)
    assert not r.is_error
    assert "notes" in r.content and "flaky test: test_upload_retry" in r.content
    assert r.metadata["hits"] == 1


async def test_save_goes_through_the_writer(ctx: ToolContext) -> None:
    calls: list[tuple[str, str]] = []
    real = ctx.services.memory_writer

    async def routed(section: str, text: str) -> str:  # what the lead's actor proxy does
        calls.append((section, text))
        return await real(section, text)

    ctx.services.memory_writer = routed
    r = await execute(
        TOOLS, "memory", {"action": "save", "section": "rules", "text": "use uv, not pip"}, ctx
    )
    assert not r.is_error, r.content
    assert calls == [("Rules", "use uv, not pip")]
    mem = ProjectMemory.load(ctx.workspace / ".stagecrew" / "memory" / "MEMORY.md")
    assert mem.get("Rules") == "- use uv, not pip"
    r = await execute(TOOLS, "memory", {"action": "search", "query": "uv pip"}, ctx)
    assert "memory · .stagecrew/memory/MEMORY.md · Project memory / Rules" in r.content


async def test_save_errors(ctx: ToolContext) -> None:
    r = await execute(TOOLS, "memory", {"action": "save", "section": "gossip", "text": "x"}, ctx)
    assert r.is_error and "Unknown project memory section" in r.content
    r = await execute(TOOLS, "memory", {"action": "save", "text": ""}, ctx)
    assert r.is_error and "needs 'text'" in r.content
    ctx.services.memory_writer = None
    r = await execute(TOOLS, "memory", {"action": "save", "text": "x"}, ctx)
    assert r.is_error and "no memory writer" in r.content
    assert not (ctx.workspace / ".stagecrew" / "memory" / "MEMORY.md").exists()


async def test_plan_mode(ctx: ToolContext) -> None:
    ctx.read_only = True
    r = await execute(TOOLS, "memory", {"action": "save", "text": "a durable fact"}, ctx)
    assert r.is_error and "plan mode" in r.content
    assert not (ctx.workspace / ".stagecrew" / "memory" / "MEMORY.md").exists()
    assert not (
        await execute(TOOLS, "memory", {"action": "note", "text": "plan: A then B"}, ctx)
    ).is_error
    assert not (await execute(TOOLS, "memory", {"action": "search", "query": "plan"}, ctx)).is_error
    assert not (
        await execute(TOOLS, "tasks", {"action": "create", "title": "step A"}, ctx)
    ).is_error
    assert "T1 step A" in (await execute(TOOLS, "tasks", {"action": "list"}, ctx)).content


async def test_search_sees_other_sessions_and_archive(ctx: ToolContext, tmp_path: Path) -> None:
    old = MemoryPaths(ctx.workspace, "s0", tmp_path / "cfg")
    cp = Checkpoint()
    cp.set("Discovered knowledge", "- the staging DB is at db.staging.internal:5432")
    cp.save(old.checkpoint)
    with MemoryIndex(old.index_db) as index:
        index.archive("s1", [{"role": "tool", "content": "pytest output: 3 failed in test_pay.py"}])
    r = await execute(TOOLS, "memory", {"action": "search", "query": "staging DB"}, ctx)
    assert "checkpoint · session s0" in r.content and "db.staging.internal:5432" in r.content
    r = await execute(
        TOOLS, "memory", {"action": "search", "query": "test_pay.py", "kinds": ["archive"]}, ctx
    )
    assert "archive · session:s1" in r.content
    r = await execute(TOOLS, "memory", {"action": "search", "query": "x", "kinds": ["bogus"]}, ctx)
    assert r.is_error and "Unknown kinds" in r.content
    r = await execute(TOOLS, "memory", {"action": "search", "query": "nothing-matches-this"}, ctx)
    assert not r.is_error and "Nothing in memory matches" in r.content
    r = await execute(TOOLS, "memory", {"action": "search"}, ctx)
    assert r.is_error


async def test_tasks_tool_flow(ctx: ToolContext) -> None:
    async def run(**args: object) -> str:
        r = await execute(TOOLS, "tasks", args, ctx)
        assert not r.is_error, r.content
        return r.content

    assert "Created T1" in await run(action="create", title="Build parser")
    assert "Created T1.1" in await run(action="create", title="Tokenizer", parent="T1")
    out = await run(action="start", id="T1.1")
    assert "T1.1 is now in_progress" in out and "  - [~] T1.1 Tokenizer" in out
    await run(action="progress", id="T1.1", note="numbers work")
    await run(action="done", id="T1.1", note="tokenizer merged")
    await run(action="block", id="T1", note="need grammar")
    assert "[!] T1 Build parser — blocked: need grammar" in await run(action="list")
    progress = ctx.session_dir / "tasks" / "T1.1" / "progress.md"
    assert "numbers work" in progress.read_text()

    r = await execute(TOOLS, "tasks", {"action": "start", "id": "T1.1"}, ctx)
    assert r.is_error and "already done" in r.content
    r = await execute(TOOLS, "tasks", {"action": "done"}, ctx)
    assert r.is_error and "needs the task 'id'" in r.content
    r = await execute(TOOLS, "tasks", {"action": "explode"}, ctx)
    assert r.is_error and "Invalid arguments" in r.content


async def test_tasks_owner_rule_through_the_tool(ctx: ToolContext) -> None:
    TaskLedger(ctx.session_dir / "tasks", "someone-else").create("their task")
    r = await execute(TOOLS, "tasks", {"action": "progress", "id": "T1", "note": "hi"}, ctx)
    assert r.is_error and "belongs to someone-else" in r.content


async def test_no_session_dir(tmp_path: Path) -> None:
    ctx = ToolContext(workspace=tmp_path)
    ctx.services.user_config_dir = str(tmp_path / "cfg")
    r = await execute(TOOLS, "tasks", {"action": "list"}, ctx)
    assert r.is_error and "No session directory" in r.content
    r = await execute(TOOLS, "memory", {"action": "note", "text": "x"}, ctx)
    assert r.is_error
    r = await execute(TOOLS, "memory", {"action": "search", "query": "x"}, ctx)
    assert not r.is_error
    ctx.services.memory_index.close()
