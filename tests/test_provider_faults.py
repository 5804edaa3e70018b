"""A provider that drops or hangs, seen from the agent and from ``crew run``.

A cut answer must never be taken for the whole one, a cut tool call never blamed on the model,
and a provider that hangs must not leave the person looking at a silent terminal: every retry
is on the screen and in the log as it happens, and the last line names the server and says
what to do. The agent tests run the loop in-process (no Ray); the ``crew run`` tests run the
real CLI against a real Ray head, both against the scripted model server over HTTP.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import crew, git

from stagecrew.actors.inprocess import run_agent_inprocess
from stagecrew.actors.spec import AgentSpec
from stagecrew.messages import (
    ModelRetry,
    ModelSpecWire,
    SessionFinished,
    StopReason,
    ToolStarted,
)
from stagecrew.orchestrator.eventlog import read_events
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.filterwarnings("ignore:Accessing the 'model_:DeprecationWarning")

ANSWER = "Fixed calc.add: it subtracted instead of adding. The tests pass now."
EDIT_ARGS = {"file_path": "calc.py", "old_string": "return a - b", "new_string": "return a + b"}
EDIT = {"tool_calls": [{"name": "edit", "arguments": EDIT_ARGS}]}
READ = {"tool_calls": [{"name": "read", "arguments": {"file_path": "calc.py"}}]}


def always_dropped(turn: dict[str, Any]) -> dict[str, Any]:
    """Every serving cut half-way, ending the HTTP response properly: the stream just stops,
    without a finish reason (what litellm reads as a normal end of stream)."""
    return {**turn, "drop": True, "drop_mode": "eof", "repeat": "forever"}


# ---------------------------------------------------------------------------------------------
# the agent loop, in-process


def agent_spec(llm: ScriptedLLM, workspace: Path, num_retries: int) -> AgentSpec:
    return AgentSpec(
        session="faults",
        actor_id="faults-primary",
        workspace=str(workspace),
        prompt="Fix calc.add.",
        model=ModelSpecWire(
            model="openai/scripted", api_base=llm.base_url, num_retries=num_retries, timeout_s=20
        ),
        max_steps=10,
        max_format_failures=2,
    )


@pytest.fixture
def calc(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    return ws


async def test_agent_takes_the_whole_answer_after_a_drop(calc: Path) -> None:
    script = [READ, {"text": ANSWER, "drop": True, "drop_mode": "eof"}, {"text": ANSWER}]
    with ScriptedLLM(script) as llm:
        result, events = await run_agent_inprocess(agent_spec(llm, calc, num_retries=2))
    assert result.stop_reason is StopReason.DONE and result.summary == ANSWER
    retries = [e for e in events if isinstance(e, ModelRetry)]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.error_kind == "dropped" and retry.discard_partial is True
    assert (retry.attempt, retry.max_attempts) == (2, 3)
    assert retry.model == "openai/scripted" and retry.role == "primary"
    assert result.messages[-1] == {"role": "assistant", "content": ANSWER}


async def test_agent_never_blames_the_model_for_a_cut_stream(calc: Path) -> None:
    """Cut tool calls used to reach the tool step as malformed calls ("2 malformed tool calls
    in a row", model_format_failures); now the run ends as a provider error."""
    with ScriptedLLM([always_dropped(EDIT)]) as llm:
        result, events = await run_agent_inprocess(agent_spec(llm, calc, num_retries=1))
        served = len(llm.requests)
    assert result.stop_reason is StopReason.ERROR
    assert result.error is not None and llm.base_url in result.error
    assert "ended mid-answer, without a finish reason" in result.error
    assert result.error.endswith("(after 2 attempts)")
    assert served == 2  # one call of the agent, two attempts of the gateway
    assert not [e for e in events if isinstance(e, ToolStarted)]
    assert [e.attempt for e in events if isinstance(e, ModelRetry)] == [2]
    assert (calc / "calc.py").read_text() == "def add(a, b):\n    return a - b\n"


# ---------------------------------------------------------------------------------------------
# crew run, end to end


def configure(repo: Path, llm: ScriptedLLM, *, num_retries: int, timeout_s: float) -> None:
    (repo / ".stagecrew").mkdir(exist_ok=True)
    (repo / ".stagecrew" / "config.json").write_text(
        json.dumps(
            {
                "models": {
                    "primary": {
                        "model": "openai/scripted",
                        "api_base": llm.base_url,
                        "num_retries": num_retries,
                        "timeout_s": timeout_s,
                    }
                }
            }
        )
    )


@pytest.fixture
def calc_repo(git_repo: Path) -> Path:
    (git_repo / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "calc")
    return git_repo


def log_of(stderr: str) -> Path:
    line = next(x for x in stderr.splitlines() if "session log: " in x)
    return Path(line.split("session log: ", 1)[1].strip())


@pytest.mark.ray
def test_run_answer_dropped_once_ends_done_with_the_whole_answer(
    ray_head: object, calc_repo: Path
) -> None:
    script = [READ, {"text": ANSWER, "drop": True, "drop_mode": "eof"}, {"text": ANSWER}]
    with ScriptedLLM(script) as llm:
        configure(calc_repo, llm, num_retries=2, timeout_s=20)
        proc = crew("run", "Fix calc.add.", "--output-format", "json", cwd=calc_repo)
        outcomes = [r.outcome for r in llm.requests]
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["stop_reason"] == "done" and result["result"] == ANSWER
    assert outcomes == ["ok", "dropped", "ok"]
    events = [e.body for e in read_events(Path(result["log"]))]
    retries = [e for e in events if isinstance(e, ModelRetry)]
    assert len(retries) == 1 and retries[0].discard_partial is True
    finished = [e for e in events if isinstance(e, SessionFinished)]
    assert finished[-1].summary == ANSWER


@pytest.mark.ray
def test_run_always_dropped_is_a_provider_error(ray_head: object, calc_repo: Path) -> None:
    with ScriptedLLM([always_dropped(EDIT)]) as llm:
        configure(calc_repo, llm, num_retries=2, timeout_s=20)
        proc = crew("run", "Fix calc.add.", cwd=calc_repo)
        served = len(llm.requests)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    naming = [x for x in proc.stderr.splitlines() if llm.base_url in x]
    assert len(naming) == 1, proc.stderr
    line = naming[0]
    assert line.startswith("model role 'primary' (openai/scripted): ")
    assert "ended mid-answer" in line and line.endswith("(after 3 attempts)")
    assert "malformed" not in proc.stdout + proc.stderr
    assert served == 3
    events = [e.body for e in read_events(log_of(proc.stderr))]
    finished = [e for e in events if isinstance(e, SessionFinished)]
    assert finished and finished[-1].stop_reason == StopReason.ERROR
    assert finished[-1].error == line
    assert not [e for e in events if isinstance(e, ToolStarted)]
    assert len([e for e in events if isinstance(e, ModelRetry)]) == 2
    assert (calc_repo / "calc.py").read_text() == "def add(a, b):\n    return a - b\n"


@pytest.mark.ray
def test_run_hang_shows_each_retry_as_it_happens(ray_head: object, calc_repo: Path) -> None:
    """The retry lines reach the terminal while the run is still waiting on the provider."""
    with ScriptedLLM([{"text": ANSWER, "hang": True, "repeat": "forever"}], hang_cap=60) as llm:
        configure(calc_repo, llm, num_retries=2, timeout_s=1.0)
        proc = subprocess.Popen(
            [sys.executable, "-m", "stagecrew.cli.main", "run", "Fix calc.add."],
            cwd=calc_repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen: list[tuple[str, float]] = []  # each stdout line and when it arrived
        stderr: list[str] = []
        drain = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
        drain.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                seen.append((line.rstrip("\n"), time.monotonic()))
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        ended = time.monotonic()
        drain.join(timeout=10)
        served = len(llm.requests)
    assert proc.returncode == 1, (seen, stderr)
    retry_lines = [(x, at) for x, at in seen if x.startswith("⟳ ")]
    assert [x.split(" in ")[0] for x, _ in retry_lines] == [
        "⟳ primary model retry 2/3",
        "⟳ primary model retry 3/3",
    ]
    assert all("sent nothing within 1 s" in x for x, _ in retry_lines)
    # Shown as it happened: after the first retry line two more attempts of 1 s each ran.
    assert ended - retry_lines[0][1] > 2.0, (retry_lines, ended)
    assert served == 3
    error = [x for x in stderr if llm.base_url in x]
    assert len(error) == 1
    assert "is serving the model 'scripted'" in error[0]
    assert "models.primary.timeout_s" in error[0] and "(after 3 attempts)" in error[0]
    events = [e.body for e in read_events(log_of("".join(stderr)))]
    retries = [e for e in events if isinstance(e, ModelRetry)]
    assert [(r.attempt, r.max_attempts, r.error_kind) for r in retries] == [
        (2, 3, "timeout"),
        (3, 3, "timeout"),
    ]
    finished = [e for e in events if isinstance(e, SessionFinished)]
    assert finished[-1].stop_reason == StopReason.ERROR
