"""The task ledger under faults: racing writers, ``kill -9`` between and during task calls,
subagents' tasks nesting under their parent's task, and ``crew tasks`` on what is left.

The writers here are real processes on the real files (no Ray): what the ledger must survive
is a process dying at any instant, which a subprocess and ``SIGKILL`` reproduce exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import crew, wait_for

from stagecrew.cli.runner import show_tasks
from stagecrew.layout import session_dir
from stagecrew.memory.context import CONTEXT_MARKER
from stagecrew.memory.tasks import TaskLedger, TaskOwnershipError, TaskStatus
from stagecrew.messages import ActorStarted, Envelope
from stagecrew.orchestrator.eventlog import read_events
from stagecrew.testing.scripted_llm import ScriptedLLM

# A writer that makes task calls as fast as it can and prints each one once it returned, so
# the test knows exactly which calls the ledger must show, whenever the process is killed.
_WRITER = textwrap.dedent(
    """
    import sys
    from stagecrew.memory.tasks import TaskLedger

    ledger = TaskLedger(sys.argv[1], sys.argv[2])
    start = int(sys.argv[3])
    for i in range(start, start + int(sys.argv[4])):
        task = ledger.create(f"{sys.argv[2]} step {i}")
        print("created", task.id, flush=True)
        ledger.start(task.id)
        print("started", task.id, flush=True)
        ledger.done(task.id, f"finished {i}")
        print("done", task.id, flush=True)
    """
)


def _writer(tasks_dir: Path, actor: str, start: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tasks_dir), actor, str(start), str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _check_consistent(ledger: TaskLedger) -> list[str]:
    """The file parses, ids are unique and gap-free at the top, every child has its parent."""
    data = json.loads(ledger.ledger_path.read_text())
    ids = [t["id"] for t in data["tasks"]]
    assert len(ids) == len(set(ids)), f"duplicated task ids: {ids}"
    top = sorted(int(i[1:]) for i in ids if "." not in i)
    assert top == list(range(1, len(top) + 1)), f"lost or skipped ids: {top}"
    for t in data["tasks"]:
        assert t["parent"] is None or t["parent"] in ids
    return ids


def test_racing_writers_keep_every_task(tmp_path: Path) -> None:
    tasks_dir = tmp_path / "tasks"
    procs = [_writer(tasks_dir, f"agent-{n}", 0, 15) for n in range(4)]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    ledger = TaskLedger(tasks_dir)
    ids = _check_consistent(ledger)
    assert len(ids) == 60
    assert all(t.status is TaskStatus.DONE for t in ledger.tasks())
    per_owner = {t.owner for t in ledger.tasks()}
    assert per_owner == {f"agent-{n}" for n in range(4)}


@pytest.mark.parametrize("kills", [6])
def test_kill_9_mid_writes_loses_nothing_written(tmp_path: Path, kills: int) -> None:
    """Kill the writer at a different instant each round; every call it reported is in the
    ledger with the status it last reported, and the next writer goes on from there."""
    tasks_dir = tmp_path / "tasks"
    ledger = TaskLedger(tasks_dir)
    reported: dict[str, str] = {}
    start = 0
    for round_no in range(kills):
        proc = _writer(tasks_dir, "lead", start, 10_000)
        assert proc.stdout is not None
        lines_wanted = 5 + 7 * round_no  # a different point in the create/start/done cycle
        for _ in range(lines_wanted):
            verb, tid = proc.stdout.readline().split()
            reported[tid] = verb
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for line in proc.stdout.read().splitlines():  # printed before the kill landed
            verb, tid = line.split()
            reported[tid] = verb
        ids = _check_consistent(ledger)
        status = {t.id: t.status for t in ledger.tasks()}
        want = {"created": TaskStatus.PENDING, "started": TaskStatus.IN_PROGRESS}
        for tid, verb in reported.items():
            assert tid in status, f"{tid} was reported but is not in the ledger"
            if verb == "done":
                assert status[tid] is TaskStatus.DONE
            else:  # the kill may have landed after the next write but before its print
                assert status[tid] in {want[verb], TaskStatus.IN_PROGRESS, TaskStatus.DONE}
        # no task the writer never got to: at most one past what it reported
        assert len(ids) <= len(reported) + 1
        start += 1000
    # progress files hold whole entries only
    for progress in tasks_dir.glob("T*/progress.md"):
        for line in progress.read_text().splitlines()[3:]:
            assert line.startswith("- "), line


def test_replayed_create_does_not_duplicate(tmp_path: Path) -> None:
    ledger = TaskLedger(tmp_path / "tasks", "lead")
    first = ledger.create("Wire the ledger mock on 127.0.0.1:48213")
    again = ledger.create("Wire the ledger mock on 127.0.0.1:48213")
    assert again.id == first.id
    assert [t.id for t in ledger.tasks()] == ["T1"]
    ledger.done("T1", "wired")
    assert ledger.create("Wire the ledger mock on 127.0.0.1:48213").id == "T2"


def test_subagent_tasks_nest_under_parent_task(tmp_path: Path) -> None:
    tasks_dir = tmp_path / "tasks"
    lead = TaskLedger(tasks_dir, "lead")
    lead.create("Build parser")
    lead.create("Tokenizer", parent="T1")
    lead.create("AST", parent="T1")
    lead.start("T1")
    lead.start("T1.2")
    child = TaskLedger(tasks_dir, "lead-sa-1")
    assert child.join("lead").anchor == "T1.2"
    assert child.create("Node types").id == "T1.2.1"
    assert child.create("Visitor", parent="T1.2.1").id == "T1.2.1.1"
    grandchild = TaskLedger(tasks_dir, "lead-sa-2")
    child.start("T1.2.1")
    assert grandchild.join("lead-sa-1").anchor == "T1.2.1"
    assert grandchild.create("Dataclasses").id == "T1.2.1.2"
    # rejoining (a restarted child) keeps the first anchor
    lead.start("T1.1")
    assert child.join("lead").anchor == "T1.2"
    # a child may not change its parent's task, nor a sibling's
    with pytest.raises(TaskOwnershipError):
        child.done("T1.2")
    with pytest.raises(TaskOwnershipError):
        child.abandon("T1.2", "not mine to drop")
    with pytest.raises(TaskOwnershipError):
        grandchild.abandon("T1.2.1", "nor my parent's")
    with pytest.raises(TaskOwnershipError):
        TaskLedger(tasks_dir, "stranger").create("x", parent="T1.2")
    # the parent cleans up what a dead child left open, then finishes its own task
    for tid in ("T1.2.1.2", "T1.2.1.1", "T1.2.1"):
        lead.abandon(tid, "the subagent died")
    assert lead.done("T1.2", "done").status is TaskStatus.DONE
    assert "      - [-] T1.2.1.1 Visitor" in lead.render_ledger()


def test_subagent_without_parent_task_goes_top_level(tmp_path: Path) -> None:
    child = TaskLedger(tmp_path / "tasks", "lead-sa-1")
    assert child.join("lead").anchor is None
    assert child.create("Look around").id == "T1"


def _session(workspace: Path, sid: str) -> Path:
    sdir = session_dir(workspace, sid)
    sdir.mkdir(parents=True)
    (workspace / ".git").mkdir(exist_ok=True)
    return sdir


def test_crew_tasks_while_written_and_after_death(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``crew tasks --json`` reads a whole tree while a writer is busy, and after it died."""
    workspace = tmp_path / "proj"
    sdir = _session(workspace, "s-live")
    proc = _writer(sdir / "tasks", "lead", 0, 10_000)
    assert proc.stdout is not None
    proc.stdout.readline()
    seen = 0
    deadline = time.monotonic() + 2.0
    try:
        while time.monotonic() < deadline:
            assert show_tasks("s-live", True, cwd=workspace) == 0
            out = json.loads(capsys.readouterr().out)
            assert out["session"] == "s-live"
            seen = max(seen, len(out["tasks"]))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert seen >= 1
    assert show_tasks("s-live", False, cwd=workspace) == 0
    text = capsys.readouterr().out
    assert text.startswith("session s-live\n")
    assert "- [x] T1 lead step 0 — finished 0" in text


# -- end to end: a real session killed between two task-tool calls, then resumed ------------


def tool(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


GOAL = "Ship the CSV export, tracked as a task tree."
BEFORE_KILL = [
    tool("tasks", action="create", title="Ship the CSV export"),
    tool("tasks", action="create", title="Write the exporter", parent="T1"),
    tool("tasks", action="start", id="T1"),
    tool("tasks", action="start", id="T1.1"),
    tool("tasks", action="progress", id="T1.1", note="halfway: to_csv written"),
]
AFTER_KILL = [
    tool("tasks", action="create", title="Test the exporter", parent="T1"),
    tool("tasks", action="done", id="T1.1", note="exporter written"),
    tool("tasks", action="start", id="T1.2"),
    tool("tasks", action="done", id="T1.2", note="tests pass"),
    tool("tasks", action="done", id="T1", note="shipped"),
    {"text": "Shipped."},
]


def _events(log: Path) -> list[Envelope]:
    return list(read_events(log))


def _kill_supervisor() -> None:
    """``kill -9`` the supervisor's process, then reconnect as the CLI would: the restarted
    (or, if Ray gave up on it, re-bootstrapped) supervisor recovers the session first."""
    from stagecrew.orchestrator import runtime

    old = int(runtime.connect().call("ping")["pid"])
    os.kill(old, signal.SIGKILL)
    assert wait_for(lambda: runtime.connect().call("ping")["pid"] != old, timeout=90)


@pytest.mark.ray
@pytest.mark.parametrize("victim", ["agent_host", "supervisor"])
def test_kill_9_between_task_calls_then_resume_continues_the_tree(
    ray_head: Any, git_repo: Path, tmp_path: Path, victim: str
) -> None:
    kill_at = len(BEFORE_KILL) + 1  # the model request after the fifth task call, in flight
    script = [*BEFORE_KILL, {**AFTER_KILL[0], "hang": True}, *AFTER_KILL]
    with ScriptedLLM({"main": script}, hang_cap=30) as llm:
        (git_repo / ".stagecrew").mkdir()
        (git_repo / ".stagecrew" / "config.json").write_text(
            json.dumps({"models": {"primary": {"model": "openai/main", "api_base": llm.base_url}}})
        )
        out = (tmp_path / "run.out").open("w")
        cli = subprocess.Popen(
            [sys.executable, "-m", "stagecrew.cli.main", "run", GOAL],
            cwd=git_repo,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            llm.wait_for_requests(kill_at, timeout=90)
            log = next((git_repo / ".stagecrew" / "state" / "sessions").glob("*/events.jsonl"))
            sid = log.parent.name

            def host() -> ActorStarted | None:
                events = _events(log)
                asked = any(
                    e.body.kind == "model_requested" and e.body.step == kill_at for e in events
                )
                starts = [e.body for e in events if isinstance(e.body, ActorStarted)]
                return starts[0] if asked and starts else None

            actor = wait_for(host, timeout=30)
            assert isinstance(actor, ActorStarted) and actor.pid
            cli.send_signal(signal.SIGKILL)
            if victim == "agent_host":
                os.kill(actor.pid, signal.SIGKILL)
            else:
                _kill_supervisor()
        finally:
            if cli.poll() is None:
                cli.kill()
            cli.wait()
            out.close()
        wait_for(lambda: _events(log)[-1].body.kind == "session_finished", timeout=90)
        assert _events(log)[-1].body.stop_reason == "error"

        # The ledger as the last task call left it: nothing lost, nothing doubled.
        ledger = TaskLedger(session_dir(git_repo, sid) / "tasks")
        _check_consistent(ledger)
        tasks = {t.id: t for t in ledger.tasks()}
        assert list(tasks) == ["T1", "T1.1"]
        assert tasks["T1"].status is TaskStatus.IN_PROGRESS
        assert tasks["T1.1"].status is TaskStatus.IN_PROGRESS
        assert tasks["T1.1"].last_note == "halfway: to_csv written"
        tree = ledger.render_ledger()
        dead = crew("tasks", sid, cwd=git_repo)  # the session is dead: read from disk
        assert dead.returncode == 0 and tree in dead.stdout

        resumed = crew("resume", "--output-format", "json", cwd=git_repo)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["result"] == "Shipped."
        requests = [r for r in llm.chat_requests if r.model == "main"]

    # The resumed run's first request carries the tree exactly as the killed run wrote it.
    first = requests[kill_at]
    context = next(m["content"] for m in first.messages if CONTEXT_MARKER in str(m.get("content")))
    assert "<task_ledger>" in context
    assert tree in context, (tree, context)
    # ... and it went on from there: same ids, every status as last written, no twins.
    tasks = {t.id: t for t in TaskLedger(session_dir(git_repo, sid) / "tasks").tasks()}
    assert list(tasks) == ["T1", "T1.1", "T1.2"]
    assert all(t.status is TaskStatus.DONE for t in tasks.values())
    assert {t.owner for t in tasks.values()} == {f"{sid}-r1"}  # adopted by the resumed run
    shown = json.loads(crew("tasks", sid, "--json", cwd=git_repo).stdout)
    assert [(t["id"], t["status"]) for t in shown["tasks"]] == [
        ("T1", "done"),
        ("T1.1", "done"),
        ("T1.2", "done"),
    ]


@pytest.mark.ray
def test_a_subagents_tasks_nest_under_the_parents_current_task(
    ray_head: Any, git_repo: Path
) -> None:
    script = {
        "root": [
            tool("tasks", action="create", title="Build the parser"),
            tool("tasks", action="start", id="T1"),
            tool("task", prompt="Write the tokenizer and track it.", description="tokenizer"),
            tool("tasks", action="done", id="T1", note="parser built"),
            {"text": "Built."},
        ],
        "mid": [
            tool("tasks", action="create", title="Tokenizer"),
            tool("tasks", action="start", id="T1.1"),
            tool("tasks", action="done", id="T1.1", note="tokens ok"),
            {"text": "Tokenizer done as T1.1."},
        ],
    }
    with ScriptedLLM(script) as llm:
        (git_repo / ".stagecrew").mkdir()
        (git_repo / ".stagecrew" / "config.json").write_text(
            json.dumps(
                {
                    "models": {
                        "primary": {"model": "openai/root", "api_base": llm.base_url},
                        "subagent": {"model": "openai/mid", "api_base": llm.base_url},
                    }
                }
            )
        )
        run = crew("run", "Build the parser.", "--output-format", "json", cwd=git_repo)
        assert run.returncode == 0, run.stderr
        sid = json.loads(run.stdout)["session_id"]
        mid = [r for r in llm.chat_requests if r.model == "mid"]
    assert json.loads(run.stdout)["result"] == "Built."
    tasks = {t.id: t for t in TaskLedger(session_dir(git_repo, sid) / "tasks").tasks()}
    assert list(tasks) == ["T1", "T1.1"]
    assert tasks["T1"].owner == f"{sid}-primary"
    assert tasks["T1.1"].owner.startswith(f"{sid}-sa-") and tasks["T1.1"].parent == "T1"
    assert all(t.status is TaskStatus.DONE for t in tasks.values())
    # The child was told the tree with its task under the parent's.
    assert "T1.1 Tokenizer" in json.dumps(mid[-1].messages)
    shown = json.loads(crew("tasks", sid, "--json", cwd=git_repo).stdout)
    assert shown["subagents"] == {tasks["T1.1"].owner: {"parent": f"{sid}-primary", "anchor": "T1"}}
