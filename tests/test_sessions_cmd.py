"""``crew sessions``, ``show``, ``replay``, ``export`` and ``fork`` end to end: one real session
(a subprocess ``crew run`` on a real Ray head, the scripted model over HTTP, a hook, a goal
judged by the judge actor), then every command through the real CLI on its log. The fork is
checked on what its model was sent: the transcript up to the step asked for, nothing after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import crew, git

from stagecrew.layout import session_log
from stagecrew.messages import (
    ActorRole,
    ActorStarted,
    AssistantMessage,
    CheckpointWritten,
    Envelope,
    ModelDelta,
    SessionFinished,
    SessionStarted,
    StopReason,
    ToolCall,
    ToolFinished,
    ToolStarted,
    Usage,
)
from stagecrew.orchestrator.eventlog import EventLog, read_events
from stagecrew.sessions import build_transcript, list_sessions, resolve_session
from stagecrew.sessions.catalog import SessionLookupError
from stagecrew.sessions.fork import fork_point
from stagecrew.sessions.text import render_lines
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.ray

PROMPT = "Write the notes file\nthen check it."
STEP_ONE = "ALPHA-STEP-ONE"
STEP_TWO = "BETA-STEP-TWO"
STEP_THREE = "GAMMA-STEP-THREE"


def tool(name: str, **arguments: object) -> dict[str, object]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


SCRIPT: dict[str, list[dict[str, Any]]] = {
    "agent": [
        tool("write", file_path="notes.txt", content=f"{STEP_ONE}\n"),
        tool("bash", command=f"echo {STEP_TWO}"),
        {"text": f"All done {STEP_THREE}."},
    ],
    "judge": [{"text": json.dumps({"met": True, "reason": "notes.txt exists", "missing": []})}],
}


@dataclass
class Done:
    repo: Path
    sid: str
    stdout: str


def _config(llm: ScriptedLLM) -> dict[str, Any]:
    spec = {"api_base": llm.base_url, "num_retries": 0}
    return {
        "models": {
            "primary": {"model": "openai/agent", **spec},
            "judge": {"model": "openai/judge", **spec},
        },
        "verify_commands": ["test -f notes.txt"],
        "hooks": {
            "PostToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "true"}]}]
        },
    }


@pytest.fixture(scope="module")
def done(ray_head: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Done]:
    """One finished session with a tool call per step, a hook and a judge verdict."""
    repo = tmp_path_factory.mktemp("sessions") / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# r\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    with ScriptedLLM(SCRIPT) as llm:
        (repo / ".stagecrew").mkdir()
        (repo / ".stagecrew" / "config.json").write_text(json.dumps(_config(llm)))
        proc = crew(
            "run", PROMPT, "--goal", "notes.txt exists", "--output-format", "json", cwd=repo
        )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["stop_reason"] == "goal_met"
    yield Done(repo, result["session_id"], proc.stdout)


def test_sessions_lists_the_session_newest_first(done: Done) -> None:
    proc = crew("sessions", "--json", cwd=done.repo)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    (row,) = [s for s in listing["sessions"] if s["id"] == done.sid]
    assert row["title"] == "Write the notes file"
    assert row["stop_reason"] == "goal_met" and row["state"] == "goal_met"
    assert row["agent"] == "build" and row["model"] == "openai/agent"
    assert row["steps"] == 3 and row["runs"] == 1 and row["tokens"] > 0
    assert row["duration_s"] > 0 and row["started"] <= time.time()
    assert row["forked_from"] is None
    assert set(row) >= {"cost_usd", "log"}

    text = crew("sessions", cwd=done.repo, env={"COLUMNS": "80"})
    assert text.returncode == 0, text.stderr
    assert done.sid in text.stdout  # whole, in 80 columns
    assert "goal_met" in text.stdout
    assert all(len(line) <= 80 for line in text.stdout.splitlines())


def test_show_folds_tool_calls_and_shows_hidden_events(done: Done) -> None:
    proc = crew("show", done.sid[:6], cwd=done.repo)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    lines = out.splitlines()
    assert lines[0].startswith(f"── session {done.sid} · openai/agent · agent build")
    assert lines[1] == "❯ Write the notes file"
    assert any(line.startswith("[1] ⏺ write(notes.txt) · ok") for line in lines), out
    assert any(line.startswith(f"[2] ⏺ bash(echo {STEP_TWO}) · ok · 2 lines ·") for line in lines)
    assert f"[3] All done {STEP_THREE}." in lines
    # What the live view used to hide: the hook that ran, the judge's verdict.
    assert any("⚙ hook PostToolUse[Bash] `true` → exit 0 (" in line for line in lines), out
    assert "⚙ service judge running: judge started" in lines
    assert any("⚖ judge round 1 (model): met — notes.txt exists" in line for line in lines), out
    assert lines[-1].startswith("✓ goal_met · 3 steps")
    # Each tool call is one line, its output is not printed.
    assert STEP_ONE not in out.replace("write(notes.txt)", "")


def test_replay_prints_the_same_lines_faster(done: Done) -> None:
    show = crew("show", done.sid, cwd=done.repo)
    started = time.monotonic()
    replay = crew("replay", done.sid, "--speed", "100", cwd=done.repo)
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout == show.stdout
    assert time.monotonic() - started < 15


def test_replay_stops_cleanly_on_ctrl_c(done: Done) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stagecrew.cli.main", "replay", done.sid, "--speed", "0.01"],
        cwd=done.repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline() if proc.stdout else ""
        assert first.startswith("── session")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "replay stopped" in err and "Traceback" not in err


def test_export_markdown_and_json(done: Done, tmp_path: Path) -> None:
    md = crew("export", done.sid, "--format", "md", cwd=done.repo)
    assert md.returncode == 0, md.stderr
    assert md.stdout.startswith("# Write the notes file\n")
    assert f"| Session | `{done.sid}` |" in md.stdout
    assert "### You ·" in md.stdout and "> then check it." in md.stdout
    assert f"All done {STEP_THREE}." in md.stdout
    assert f"**[2]** `⏺ bash(echo {STEP_TWO}) · ok" in md.stdout
    assert STEP_ONE in md.stdout  # the write's arguments are in the details fold
    assert "judge round 1" in md.stdout

    out = tmp_path / "events.json"
    js = crew("export", done.sid, "--format", "json", "-o", str(out), cwd=done.repo)
    assert js.returncode == 0, js.stderr and js.stdout == ""
    events = json.loads(out.read_text())
    log_lines = session_log(done.repo, done.sid).read_text().splitlines()
    assert events == [json.loads(line) for line in log_lines]
    assert events[0]["body"]["kind"] == "session_started"


def test_unknown_and_ambiguous_ids_are_usage_errors(done: Done) -> None:
    proc = crew("show", "zzzz", cwd=done.repo)
    assert proc.returncode == 2 and "no session 'zzzz'" in proc.stderr
    other = session_log(done.repo, done.sid[:4] + "ffffffff")
    other.parent.mkdir(parents=True)
    other.write_text(
        Envelope(
            session=other.parent.name,
            sender="t",
            seq=1,
            body=SessionStarted(prompt="x", workspace=str(done.repo), profile="build", model="m"),
        ).to_json()
        + "\n"
    )
    try:
        proc = crew("show", done.sid[:4], cwd=done.repo)
        assert proc.returncode == 2 and "matches 2 sessions" in proc.stderr
        # Its own listing: no stop record, and no head knows it.
        listing = json.loads(crew("sessions", "--json", cwd=done.repo).stdout)
        (row,) = [s for s in listing["sessions"] if s["id"] == other.parent.name]
        assert row["stop_reason"] is None and row["state"] == "no stop record"
    finally:
        other.unlink()
        other.parent.rmdir()


def test_fork_starts_from_the_step_asked_for(done: Done) -> None:
    with ScriptedLLM({"agent": [{"text": "Forked and finished."}]}) as llm:
        proc = crew(
            "fork",
            done.sid,
            "Use another name instead.",
            "--at",
            "1",
            "--api-base",
            llm.base_url,
            "--output-format",
            "json",
            cwd=done.repo,
        )
        requests = llm.chat_requests
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    fork = result["session_id"]
    assert fork != done.sid and result["stop_reason"] == "done"
    assert f"from {done.sid} at step 1 of 3" in proc.stderr

    first = json.dumps(requests[0].body["messages"])
    assert STEP_ONE in first  # step 1's call and its result
    assert STEP_TWO not in first and STEP_THREE not in first  # nothing after it
    assert requests[0].body["messages"][-1]["content"] == "Use another name instead."
    roles = [m["role"] for m in requests[0].body["messages"]]
    assert roles.count("tool") == 1

    # The source is untouched; the fork is a session of its own, and says where it came from.
    listing = json.loads(crew("sessions", "--json", cwd=done.repo).stdout)["sessions"]
    by_id = {s["id"]: s for s in listing}
    assert by_id[fork]["forked_from"] == f"{done.sid}@1"
    # Its own run only (the copied part is the source's), its steps numbered on from step 1.
    assert by_id[fork]["steps"] == 2 and by_id[fork]["runs"] == 1
    assert by_id[fork]["started"] > by_id[done.sid]["started"]
    assert by_id[fork]["title"] == by_id[done.sid]["title"]
    assert by_id[done.sid]["steps"] == 3 and by_id[done.sid]["forked_from"] is None
    assert listing[0]["id"] == fork  # the most recently active first
    shown = crew("show", fork, cwd=done.repo).stdout
    assert f"• forked from session {done.sid} at step 1 of 3" in shown
    assert "[2] Forked and finished." in shown and STEP_TWO not in shown
    assert "── forked · openai/agent · agent build ·" in shown


def test_fork_rejects_a_step_out_of_range(done: Done) -> None:
    proc = crew("fork", done.sid, "--at", "9", cwd=done.repo)
    assert proc.returncode == 2
    assert "has steps 1 to 3" in proc.stderr


# -- the library on hand-made logs (no Ray) ---------------------------------------------------


def _log(path: Path, sid: str, bodies: list[Any], start: float = 1000.0) -> None:
    log = EventLog(path)
    for i, body in enumerate(bodies):
        log.append(Envelope(session=sid, sender="t", ts=start + i, body=body))
    log.close()


def test_transcript_of_a_killed_run_and_a_checkpoint(tmp_path: Path) -> None:
    """A run killed mid-call and mid-stream: its call says it got no result, its text is
    marked cut off, and the listing says there is no stop record."""
    sid = "abc123abc123"
    call = ToolCall(id="c1", name="bash", arguments='{"command": "sleep 100"}')
    _log(
        session_log(tmp_path, sid),
        sid,
        [
            SessionStarted(prompt="Go.", workspace=str(tmp_path), profile="plan", model="m"),
            ActorStarted(actor_id=f"{sid}-primary", role=ActorRole.PRIMARY),
            AssistantMessage(actor_id=f"{sid}-primary", step=1, tool_calls=[call]),
            ToolStarted(actor_id=f"{sid}-primary", call_id="c1", tool="bash", arguments="{}"),
            CheckpointWritten(path="checkpoint.md", reason="40% of the window", chars=1234),
            ModelDelta(actor_id=f"{sid}-primary", text="half a sen"),
        ],
    )
    envelopes = list(read_events(session_log(tmp_path, sid)))
    lines = [line.text for line in render_lines(build_transcript(sid, envelopes).entries)]
    assert "✎ checkpoint written (40% of the window, 1,234 chars): checkpoint.md" in lines
    assert "half a sen [cut off]" in lines
    assert "[1] … bash({}) · no result (the run ended first)" in lines
    (summary,) = list_sessions(tmp_path)
    assert summary.stop_reason is None and summary.duration_s == 5.0 and summary.agent == "plan"


def test_fork_point_includes_the_step_results_and_stops_before_the_next(tmp_path: Path) -> None:
    sid = "def456def456"
    primary = f"{sid}-primary"
    calls = [ToolCall(id="a", name="ls"), ToolCall(id="b", name="ls")]
    bodies = [
        SessionStarted(prompt="Go.", workspace=str(tmp_path), profile="build", model="m"),
        ActorStarted(actor_id=primary, role=ActorRole.PRIMARY),
        AssistantMessage(actor_id=primary, step=1, tool_calls=calls),
        ToolFinished(actor_id=primary, call_id="b", tool="ls", content="B"),
        ToolFinished(actor_id=primary, call_id="a", tool="ls", content="A"),
        ModelDelta(actor_id=primary, text="next"),
        AssistantMessage(actor_id=primary, step=2, text="next turn"),
        SessionFinished(stop_reason=StopReason.DONE, usage=Usage()),
    ]
    _log(session_log(tmp_path, sid), sid, bodies)
    point = fork_point(tmp_path, sid, 1)
    assert [e.body.kind for e in point.envelopes][-2:] == ["tool_finished", "tool_finished"]
    assert (point.step, point.steps) == (1, 2)
    assert len(fork_point(tmp_path, sid, None).envelopes) == len(bodies)
    assert resolve_session(tmp_path, "def4") == sid
    with pytest.raises(SessionLookupError):
        resolve_session(tmp_path, "nope")


def test_listing_is_newest_first_and_limited(tmp_path: Path) -> None:
    for i, sid in enumerate(["aaaa00000001", "aaaa00000002", "aaaa00000003"]):
        body = SessionStarted(prompt=f"task {i}", workspace=str(tmp_path), profile="b", model="m")
        _log(session_log(tmp_path, sid), sid, [body], start=1000.0 + i * 100)
        os.utime(session_log(tmp_path, sid), (2000.0 + i, 2000.0 + i))
    assert [s.id for s in list_sessions(tmp_path)] == [
        "aaaa00000003",
        "aaaa00000002",
        "aaaa00000001",
    ]
    assert [s.title for s in list_sessions(tmp_path, 2)] == ["task 2", "task 1"]
    assert os.path.isdir(tmp_path / ".stagecrew" / "state" / "sessions")


def test_live_text_shows_the_events_it_used_to_hide() -> None:
    """``crew run``'s text output: judge verdicts, candidates, checkpoints, hooks that acted
    and services that failed get their line; routine hooks and service starts do not."""
    import io

    from stagecrew.cli.render import TextRenderer
    from stagecrew.messages import CandidateFinished, HookRan, JudgeVerdict, ServiceEvent

    out = io.StringIO()
    renderer = TextRenderer(out=out, color=False)
    for body in [
        JudgeVerdict(round=2, met=False, reason="no test", missing=["a test for mean()"]),
        CandidateFinished(actor_id="s-cand-1", passed=True, patch_bytes=2048),
        CheckpointWritten(path="checkpoint.md", reason="60% of the window", chars=900),
        HookRan(
            event="PreToolUse", matcher="Bash", command="./guard.sh", exit_code=2, decision="block"
        ),
        HookRan(event="PostToolUse", matcher="Bash", command="true", exit_code=0, decision="ok"),
        ServiceEvent(service="mcp", state="starting"),
        ServiceEvent(service="mcp", state="failed", detail="git: exited 1"),
    ]:
        renderer.handle(Envelope(session="s", sender="t", body=body))
    lines = out.getvalue().splitlines()
    assert lines == [
        "⚖ judge round 2 (model): not met — no test; missing: a test for mean()",
        "◆ candidate s-cand-1 passed · patch 2,048 B · 0 tokens · $0.0000",
        "✎ checkpoint written (60% of the window, 900 chars): checkpoint.md",
        "⚙ hook PreToolUse[Bash] `./guard.sh` → exit 2, block (0 ms)",
        "⚙ service mcp failed: git: exited 1",
    ]
