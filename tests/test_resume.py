"""Resume: a session killed mid-flight — the CLI and the agent's actor process both SIGKILLed —
continues with ``crew resume`` in the same log, with its task tree intact; ``crew run
--continue`` adds the person's next message to it. Real CLI subprocesses, a real Ray head, the
scripted model over HTTP; assertions on what the model was sent and on the files left behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import crew, wait_for

from stagecrew.actors.context import history_from_events, pair_tool_calls
from stagecrew.memory.context import CONTEXT_MARKER
from stagecrew.memory.tasks import TaskLedger, TaskStatus
from stagecrew.messages import (
    ActorRole,
    ActorStarted,
    AssistantMessage,
    Envelope,
    SessionStarted,
    ToolCall,
    ToolFinished,
    UserInput,
)
from stagecrew.orchestrator.eventlog import read_events, session_dir
from stagecrew.testing.scripted_llm import ScriptedLLM

PROMPT = "Add a CSV export (export.py) with a unit test, tracked as a task tree."
EXPORT = (
    "import csv, io\n\ndef to_csv(rows):\n    out = io.StringIO()\n"
    "    csv.writer(out).writerows(rows)\n    return out.getvalue()\n"
)
TEST = (
    "import unittest\nfrom export import to_csv\n\n"
    "class T(unittest.TestCase):\n"
    "    def test_rows(self):\n        self.assertEqual(to_csv([[1, 2]]), '1,2\\r\\n')\n"
)


def tool(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


SESSION = [
    tool("tasks", action="create", title="Ship the CSV export"),
    tool("tasks", action="create", title="Write the exporter", parent="T1"),
    tool("tasks", action="create", title="Test the exporter", parent="T1"),
    tool("tasks", action="start", id="T1.1"),
    tool("write", file_path="export.py", content=EXPORT),
    tool("tasks", action="done", id="T1.1", note="exporter written"),
    tool("tasks", action="start", id="T1.2"),
    tool("write", file_path="test_export.py", content=TEST),
    tool("bash", command=f"{sys.executable} -m unittest -q"),
    tool("tasks", action="done", id="T1.2", note="test passes"),
    tool("tasks", action="done", id="T1", note="shipped"),
    {"text": "CSV export shipped."},
]


def env(sid: str, seq: int, body: Any, sender: str = "x") -> Envelope:
    return Envelope(session=sid, sender=sender, seq=seq, body=body)


def test_history_from_events_pairs_calls_and_keeps_only_the_primary() -> None:
    """The transcript a resume starts from, on a log with a killed run and a subagent."""
    calls = [ToolCall(id="c1", name="ls"), ToolCall(id="c2", name="bash")]
    log = [
        SessionStarted(prompt="Fix it.", workspace="/w", profile="build", model="m"),
        ActorStarted(actor_id="s-primary", role=ActorRole.PRIMARY),
        AssistantMessage(actor_id="s-primary", step=1, text="Looking.", tool_calls=calls),
        ToolFinished(actor_id="s-primary", call_id="c1", tool="ls", content="a.py"),
        ActorStarted(actor_id="s-sa-1", role=ActorRole.SUBAGENT, parent="s-primary"),
        AssistantMessage(actor_id="s-sa-1", step=1, text="subagent talk"),
        # killed here: c2 never finished
        SessionStarted(prompt="", workspace="/w", profile="build", model="m"),  # a resume
        ActorStarted(actor_id="s-r1", role=ActorRole.PRIMARY),
        ToolFinished(actor_id="s-r1", call_id="zz", tool="ls", content="orphan"),
        UserInput(text="Also add docs."),
        AssistantMessage(actor_id="s-r1", step=1, text="Done."),
    ]
    history = history_from_events(env("s", i + 1, b) for i, b in enumerate(log))
    assert history.primaries == ["s-primary", "s-r1"]
    assert history.goal == "Fix it.\n\nAlso add docs."
    assert history.profile == "build" and history.last_seq == len(log)
    assert [(m["role"], m.get("content")) for m in history.messages] == [
        ("user", "Fix it."),
        ("assistant", "Looking."),
        ("tool", "a.py"),
        ("tool", "[interrupted: no result]"),
        ("user", "Also add docs."),
        ("assistant", "Done."),
    ]
    assert [m.get("tool_call_id") for m in history.messages if m["role"] == "tool"] == [
        "c1",
        "c2",
    ]
    # Results out of place or answering nothing are dropped; a duplicate answer counts once.
    messy = [
        {"role": "tool", "tool_call_id": "x", "content": "orphan"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "a", "function": {}}]},
        {"role": "tool", "tool_call_id": "a", "content": "1"},
        {"role": "tool", "tool_call_id": "a", "content": "again"},
    ]
    assert pair_tool_calls(messy) == messy[1:3]


def _events(log: Path) -> list[Envelope]:
    return list(read_events(log))


@pytest.mark.ray
def test_kill_cli_and_actor_mid_session_then_resume_completes_with_the_tree(
    ray_head: object, git_repo: Path, tmp_path: Path
) -> None:
    seed = int(os.environ.get("STAGECREW_RESUME_SEED", "20250131"))
    kill_at = random.Random(seed).randint(1, len(SESSION))  # 1-based model request
    script = list(SESSION)
    # The request the kill interrupts hangs (so it is in flight when the processes die); the
    # resumed agent gets the same turn again, as a real model would answer the same context.
    script.insert(kill_at - 1, {**SESSION[kill_at - 1], "hang": True})
    with ScriptedLLM({"main": script}, hang_cap=30) as llm:
        (git_repo / ".stagecrew").mkdir()
        (git_repo / ".stagecrew" / "config.json").write_text(
            json.dumps({"models": {"primary": {"model": "openai/main", "api_base": llm.base_url}}})
        )
        out = (tmp_path / "run.out").open("w")
        cli = subprocess.Popen(
            [sys.executable, "-m", "stagecrew.cli.main", "run", PROMPT],
            cwd=git_repo,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            llm.wait_for_requests(kill_at, timeout=90)
            sessions = git_repo / ".stagecrew" / "state" / "sessions"
            log = next(sessions.glob("*/events.jsonl"))
            sid = log.parent.name

            def agent_asked() -> ActorStarted | None:
                events = _events(log)
                asked = any(
                    e.body.kind == "model_requested" and e.body.step == kill_at for e in events
                )
                starts = [e.body for e in events if isinstance(e.body, ActorStarted)]
                return starts[0] if asked and starts else None

            actor = wait_for(agent_asked, timeout=30)
            assert isinstance(actor, ActorStarted) and actor.pid
            cli.send_signal(signal.SIGKILL)
            os.kill(actor.pid, signal.SIGKILL)
        finally:
            if cli.poll() is None:
                cli.kill()
            cli.wait()
            out.close()
        wait_for(lambda: _events(log)[-1].body.kind == "session_finished", timeout=60)
        died = _events(log)
        assert died[-1].body.stop_reason == "error"  # the supervisor saw the actor die
        ledger_before = TaskLedger(session_dir(git_repo, sid) / "tasks").render_ledger()

        resumed = crew("resume", "--output-format", "json", cwd=git_repo)
        requests = [r for r in llm.chat_requests if r.model == "main"]
        assert resumed.returncode == 0, (kill_at, resumed.stderr)
        result = json.loads(resumed.stdout)
        assert result["session_id"] == sid and result["result"] == "CSV export shipped."
        assert f"resuming session {sid}" in resumed.stderr

        # `crew run --continue`: the person's next message, same session, same tree.
        llm.add_turns(
            [tool("tasks", action="create", title="Add a header row"), {"text": "Planned."}],
            queue="main",
        )
        more = crew(
            "run", "--continue", "Also plan a header row.", "--output-format", "json", cwd=git_repo
        )
        continued = [r for r in llm.chat_requests if r.model == "main"][len(requests) :]
        assert more.returncode == 0, more.stderr
        assert json.loads(more.stdout)["result"] == "Planned."

    # The work is done, on disk, and the tests it wrote pass.
    assert (git_repo / "export.py").read_text() == EXPORT
    check = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=git_repo)
    assert check.returncode == 0

    # The task tree survived the kill: every task the first run created is still there, and
    # the resumed run finished the ones that were open (it adopted them).
    tasks = {t.id: t for t in TaskLedger(session_dir(git_repo, sid) / "tasks").tasks()}
    assert [tid for tid in tasks] == ["T1", "T1.1", "T1.2", "T2"], (kill_at, tasks)
    assert all(tasks[t].status is TaskStatus.DONE for t in ("T1", "T1.1", "T1.2"))
    assert tasks["T2"].status is TaskStatus.PENDING
    shown = crew("tasks", cwd=git_repo)
    assert (
        "[x] T1 Ship the CSV export" in shown.stdout and "[ ] T2 Add a header row" in shown.stdout
    )

    # What the resumed model was sent: the context rebuilt from memory — the tree as the
    # killed run left it, the person's goal — and the verbatim history, every call answered.
    first = requests[kill_at]  # request kill_at (0-based) is the resumed run's first
    sent = first.messages
    assert sent[0]["role"] == "system" and sent[0] == requests[0].messages[0]
    context = next(m["content"] for m in sent if CONTEXT_MARKER in str(m.get("content")))
    assert PROMPT in context
    if ledger_before != "(no tasks yet)":
        assert "<task_ledger>" in context and "T1 Ship the CSV export" in context
    assert {"role": "user", "content": PROMPT} in sent
    calls = [c["id"] for m in sent if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    answered = [m["tool_call_id"] for m in sent if m["role"] == "tool"]
    assert calls == answered and len(calls) == kill_at - 1
    # --continue sent the new words last, after the whole earlier conversation.
    assert continued[0].messages[-1] == {"role": "user", "content": "Also plan a header row."}
    assert any(m.get("content") == "CSV export shipped." for m in continued[0].messages)

    # One log for the whole story, in order: run, death, resume, continue.
    events = _events(log)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    kinds = [e.body.kind for e in events]
    assert kinds.count("session_started") == 3 and kinds.count("session_finished") == 3
    primaries = [e.body.actor_id for e in events if isinstance(e.body, ActorStarted)]
    assert primaries == [f"{sid}-primary", f"{sid}-r1", f"{sid}-r2"]
    ends = [e.body.stop_reason for e in events if e.body.kind == "session_finished"]
    assert ends == ["error", "done", "done"]
