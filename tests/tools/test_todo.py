"""todo tool, plus the registry that assembles every tool (schemas, plan-mode flags)."""

from __future__ import annotations

import json
from pathlib import Path

from stagecrew.tools.base import ToolContext, execute
from stagecrew.tools.registry import default_tools, plan_mode_tools, tool_schemas

TOOLS = default_tools()


async def test_todo_replaces_list_and_renders(tmp_path: Path) -> None:
    ctx = ToolContext(workspace=tmp_path)
    todos = [
        {"content": "Read the code", "status": "completed"},
        {"content": "Fix the bug", "status": "in_progress", "activeForm": "Fixing the bug"},
        {"content": "Run the tests", "status": "pending", "id": "tests"},
    ]
    r = await execute(TOOLS, "todo", {"todos": todos}, ctx)
    assert not r.is_error
    assert r.content.splitlines() == [
        "Task list updated: 1/3 completed.",
        "[x] Read the code",
        "[~] Fix the bug (Fixing the bug)",
        "[ ] Run the tests",
    ]
    assert [t["id"] for t in ctx.state["todos"]] == ["1", "2", "tests"]
    r = await execute(TOOLS, "todo", {"todos": []}, ctx)
    assert ctx.state["todos"] == [] and "(the task list is empty)" in r.content


async def test_todo_rejects_two_in_progress_and_bad_input(tmp_path: Path) -> None:
    ctx = ToolContext(workspace=tmp_path)
    ctx.state["todos"] = [{"id": "1", "content": "keep", "status": "pending"}]
    two = [{"content": "a", "status": "in_progress"}, {"content": "b", "status": "in_progress"}]
    r = await execute(TOOLS, "todo", {"todos": two}, ctx)
    assert r.is_error and "2 tasks are in_progress" in r.content
    assert ctx.state["todos"] == [{"id": "1", "content": "keep", "status": "pending"}]
    r = await execute(TOOLS, "todo", {"todos": [{"content": "a", "status": "doing"}]}, ctx)
    assert r.is_error and "todos.0.status" in r.content
    dup = [{"content": "a", "status": "pending", "id": "x"}] * 2
    r = await execute(TOOLS, "todo", {"todos": dup}, ctx)
    assert r.is_error and "duplicate todo ids: x" in r.content


async def test_todo_allowed_in_plan_mode(tmp_path: Path) -> None:
    ctx = ToolContext(workspace=tmp_path, read_only=True)
    r = await execute(TOOLS, "todo", {"todos": [{"content": "plan", "status": "pending"}]}, ctx)
    assert not r.is_error


# ---- registry ------------------------------------------------------------------------------


def test_default_tools_and_flags() -> None:
    assert list(TOOLS) == [
        "read",
        "write",
        "edit",
        "apply_patch",
        "ls",
        "glob",
        "grep",
        "bash",
        "bash_output",
        "kill_shell",
        "git",
        "webfetch",
        "todo",
        "memory",
        "tasks",
        "task",
        "task_result",
    ]
    read_only = {n for n, t in TOOLS.items() if t.read_only}
    assert read_only == {
        "read",
        "ls",
        "glob",
        "grep",
        "webfetch",
        "todo",
        "bash_output",
        "memory",
        "tasks",
        "task_result",
    }
    # bash sandboxes itself, git refuses its writing actions, task makes read-only children.
    assert {n for n, t in TOOLS.items() if t.sandboxable} == {"bash", "git", "task"}
    assert set(plan_mode_tools(TOOLS)) == read_only | {"bash", "git", "task"}
    assert default_tools() is not TOOLS  # fresh dict each call


def test_schemas_are_valid_openai_functions() -> None:
    schemas = tool_schemas(TOOLS)
    assert len(schemas) == len(TOOLS)
    for schema in schemas:
        json.dumps(schema)
        fn = schema["function"]
        assert schema["type"] == "function" and fn["name"] in TOOLS
        assert len(fn["description"]) > 80
        params = fn["parameters"]
        assert params["type"] == "object" and params["properties"]
        for prop in params["properties"].values():
            assert "title" not in prop
    by_name = {s["function"]["name"]: s["function"]["parameters"] for s in schemas}
    assert by_name["read"]["required"] == ["file_path"]
    assert set(by_name["edit"]["properties"]) == {
        "file_path",
        "old_string",
        "new_string",
        "replace_all",
    }
    assert set(by_name["bash"]["properties"]) == {
        "command",
        "timeout",
        "description",
        "run_in_background",
    }


async def test_plan_mode_blocks_writers(tmp_path: Path) -> None:
    ctx = ToolContext(workspace=tmp_path, read_only=True)
    r = await execute(TOOLS, "write", {"file_path": "x", "content": "y"}, ctx)
    assert r.is_error and "read-only" in r.content and not (tmp_path / "x").exists()
