"""``crew run`` end to end: a subprocess CLI, a real Ray head, the scripted model over HTTP,
real tools on a real git repository, and the event log on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import crew, git

from stagecrew.messages import Envelope
from stagecrew.orchestrator.eventlog import read_events
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.ray

BUGGY = "def mean(values):\n    return sum(values) / (len(values) + 1)\n"
TEST = (
    "import unittest\nfrom stats import mean\n\n"
    "class T(unittest.TestCase):\n"
    "    def test_mean(self):\n        self.assertEqual(mean([2, 4, 6]), 4)\n"
)


@pytest.fixture
def buggy_repo(git_repo: Path) -> Path:
    (git_repo / "stats.py").write_text(BUGGY)
    (git_repo / "test_stats.py").write_text(TEST)
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "buggy")
    (git_repo.parent / "outside.txt").write_text("TOP-SECRET-OUTSIDE\n")
    return git_repo


def tool(name: str, **arguments: object) -> dict[str, object]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


SCRIPT = [
    tool("read", file_path="../outside.txt"),  # refused: outside the workspace
    tool("read", path="stats.py"),  # fails validation: the loop must carry on
    tool("read", file_path="stats.py"),
    tool("edit", file_path="stats.py", old_string="(len(values) + 1)", new_string="len(values)"),
    tool("bash", command=f"{sys.executable} -m unittest -q"),
    {"text": "Fixed mean(); the tests pass."},
]


def test_crew_run_fixes_repo_and_logs_everything(ray_head: object, buggy_repo: Path) -> None:
    with ScriptedLLM(SCRIPT) as llm:
        proc = crew(
            "run",
            "Fix the failing test.",
            "--model",
            "openai/scripted",
            "--api-base",
            llm.base_url,
            "--output-format",
            "json",
            cwd=buggy_repo,
        )
        requests = [r.body for r in llm.requests]
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["stop_reason"] == "done" and result["success"] is True
    assert result["turns"] == 6
    assert result["usage"]["total_tokens"] > 0
    assert result["result"] == "Fixed mean(); the tests pass."

    # The repository really changed, and its tests really pass now.
    assert "/ len(values)" in (buggy_repo / "stats.py").read_text()
    check = subprocess.run(
        [sys.executable, "-m", "unittest", "-q"], cwd=buggy_repo, capture_output=True
    )
    assert check.returncode == 0

    # What the model was sent: each tool result went back, in order.
    assert len(requests) == 6
    tool_msgs = [m for m in requests[-1]["messages"] if m["role"] == "tool"]
    assert len(tool_msgs) == 5
    assert "outside the workspace" in tool_msgs[0]["content"]
    assert (
        "file_path" in tool_msgs[1]["content"]
        and "Invalid arguments for tool 'read'" in tool_msgs[1]["content"]
    )
    assert "return sum(values) / (len(values) + 1)" in tool_msgs[2]["content"]
    assert "OK" in tool_msgs[4]["content"]
    assert all("TOP-SECRET-OUTSIDE" not in json.dumps(r) for r in requests)
    assert requests[0]["tools"] and {t["function"]["name"] for t in requests[0]["tools"]} >= {
        "read",
        "write",
        "edit",
        "glob",
        "grep",
        "ls",
        "bash",
    }

    # The event log holds the envelopes in order, from start to finish.
    log = Path(result["log"])
    events = list(read_events(log))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    kinds = [e.body.kind for e in events]
    assert kinds[0] == "session_started" and kinds[-1] == "session_finished"
    assert kinds.count("tool_started") == kinds.count("tool_finished") == 5
    assert kinds.count("model_requested") == 6
    finished = [e.body for e in events if e.body.kind == "tool_finished"]
    assert [f.tool for f in finished] == ["read", "read", "read", "edit", "bash"]
    assert finished[0].is_error and finished[1].is_error and not finished[2].is_error
    assert any(e.body.kind == "actor_finished" and e.body.stop_reason == "done" for e in events)
    for line in log.read_text().splitlines():  # every line is a valid envelope
        Envelope.from_json(line)


def test_stream_json_and_text_formats(ray_head: object, git_repo: Path) -> None:
    with ScriptedLLM([tool("ls", path="."), {"text": "There is a README."}]) as llm:
        proc = crew(
            "run",
            "What is here?",
            "--model",
            "openai/s",
            "--api-base",
            llm.base_url,
            "--output-format",
            "stream-json",
            cwd=git_repo,
        )
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(x) for x in proc.stdout.splitlines()]
        assert lines[0]["body"]["kind"] == "session_started"
        assert lines[-1]["body"]["kind"] == "session_finished"
        assert [x["seq"] for x in lines] == sorted(x["seq"] for x in lines)

        llm.add_turns([{"text": "Hello from the model."}])
        proc = crew(
            "run", "Say hello.", "--model", "openai/s", "--api-base", llm.base_url, cwd=git_repo
        )
        assert proc.returncode == 0, proc.stderr
        assert "Hello from the model." in proc.stdout
        assert "session log:" in proc.stderr


def test_max_steps_is_a_failure_exit(ray_head: object, git_repo: Path) -> None:
    with ScriptedLLM([{**tool("ls", path="."), "repeat": "forever"}]) as llm:
        proc = crew(
            "run",
            "loop",
            "--model",
            "openai/s",
            "--api-base",
            llm.base_url,
            "--max-steps",
            "3",
            "--output-format",
            "json",
            cwd=git_repo,
        )
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["stop_reason"] == "max_steps" and result["turns"] == 3
