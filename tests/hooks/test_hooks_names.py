"""Tool names and inputs as Claude Code's scripts expect them."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagecrew.hooks import matcher_names, payload_tool_input, payload_tool_name
from stagecrew.hooks.names import payload_tool_response
from stagecrew.tools.files import EditArgs, GlobArgs, LsArgs, ReadArgs, WriteArgs
from stagecrew.tools.search import GrepArgs
from stagecrew.tools.shell import BashArgs, BashOutputArgs, KillShellArgs
from stagecrew.tools.task import TaskArgs
from stagecrew.tools.todo import TodoArgs
from stagecrew.tools.web import WebFetchArgs


@pytest.mark.parametrize(
    ("tool", "sent", "matchable"),
    [
        ("bash", "Bash", {"bash", "Bash"}),
        ("read", "Read", {"read", "Read"}),
        ("write", "Write", {"write", "Write"}),
        ("edit", "Edit", {"edit", "Edit", "MultiEdit"}),
        ("apply_patch", "apply_patch", {"apply_patch", "Edit", "MultiEdit"}),
        ("glob", "Glob", {"glob", "Glob"}),
        ("grep", "Grep", {"grep", "Grep"}),
        ("ls", "LS", {"ls", "LS"}),
        ("webfetch", "WebFetch", {"webfetch", "WebFetch"}),
        ("task", "Task", {"task", "Task", "Agent"}),  # Claude Code renamed Task to Agent
        ("todo", "TodoWrite", {"todo", "TodoWrite"}),
        ("bash_output", "BashOutput", {"bash_output", "BashOutput"}),
        ("kill_shell", "KillShell", {"kill_shell", "KillShell", "KillBash"}),
        ("skill", "skill", {"skill", "Skill"}),  # its input is not Claude Code's
        ("git", "git", {"git"}),
        ("memory", "memory", {"memory"}),
        ("task_result", "task_result", {"task_result"}),
        ("mcp__github__create_issue", "mcp__github__create_issue", {"mcp__github__create_issue"}),
    ],
)
def test_name_table(tool: str, sent: str, matchable: set[str]) -> None:
    assert payload_tool_name(tool) == sent
    assert set(matcher_names(tool)) == matchable


@pytest.mark.parametrize(
    ("args", "claude_fields"),
    [
        (BashArgs, {"command", "timeout", "description", "run_in_background"}),
        (ReadArgs, {"file_path", "offset", "limit"}),
        (WriteArgs, {"file_path", "content"}),
        (EditArgs, {"file_path", "old_string", "new_string", "replace_all"}),
        (GlobArgs, {"pattern", "path"}),
        (LsArgs, {"path", "ignore"}),
        (
            GrepArgs,
            {"pattern", "path", "glob", "output_mode", "-B", "-A", "-C", "-n", "-i", "type"}
            | {"head_limit", "multiline"},
        ),
        (WebFetchArgs, {"url", "prompt"}),
        (TaskArgs, {"description", "prompt", "subagent_type"}),
        (TodoArgs, {"todos"}),
        (BashOutputArgs, {"bash_id", "filter"}),
        (KillShellArgs, {"shell_id"}),
    ],
)
def test_stagecrew_arguments_carry_claude_codes_field_names(
    args: type, claude_fields: set[str]
) -> None:
    """The premise of passing inputs through: the schema the model fills in uses Claude
    Code's names (stagecrew may add fields of its own)."""
    schema_fields = set(args.model_json_schema()["properties"])
    assert claude_fields <= schema_fields


def test_relative_paths_become_absolute(tmp_path: Path) -> None:
    root = tmp_path / "p"
    got = payload_tool_input("edit", {"file_path": "src/../a.py", "old_string": "x"}, root)
    assert got == {"file_path": str(root / "a.py"), "old_string": "x"}
    absolute = str(tmp_path / "elsewhere.txt")
    assert payload_tool_input("read", {"file_path": absolute}, root)["file_path"] == absolute
    assert payload_tool_input("grep", {"pattern": "x", "path": "src"}, root)["path"] == str(
        root / "src"
    )
    assert payload_tool_input("bash", {"command": "cat a"}, root) == {"command": "cat a"}


def test_grep_field_names_become_the_flags(tmp_path: Path) -> None:
    dumped = GrepArgs(pattern="x", **{"-B": 2, "-i": True}).model_dump(exclude_none=True)
    got = payload_tool_input("grep", dumped, tmp_path)
    assert got["-B"] == 2 and got["-i"] is True
    assert "before" not in got and "case_insensitive" not in got
    # and what comes back (an updatedInput in Claude Code's names) validates as is
    assert GrepArgs.model_validate(got).before == 2


def test_tool_response(tmp_path: Path) -> None:
    edit = payload_tool_response("edit", {"file_path": "a.py"}, "ok", False, tmp_path)
    assert edit["filePath"] == str(tmp_path / "a.py") and edit["success"] is True
    bash = payload_tool_response("bash", {"command": "x"}, "out\n[exit code 1]", True, tmp_path)
    assert bash["stdout"].startswith("out") and bash["success"] is False
