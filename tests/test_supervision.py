"""Supervision under ``kill -9``, through the real ``crew`` command and a real Ray head.

Each actor kind is killed the way a person (or the OOM killer) would kill it, in the middle
of a session: the model gateway mid-stream, the supervisor while a tool runs. What must hold
is what the issue asks: the session survives or ends with one clear line and a stop record,
nothing of the dead tree keeps running, and the next command works.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import crew, marked_pids, wait_for

from stagecrew.orchestrator import runtime
from stagecrew.orchestrator.eventlog import read_events, session_dir
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.ray


def _config(repo: Path, llm: ScriptedLLM, model: str = "m") -> None:
    (repo / ".stagecrew").mkdir(exist_ok=True)
    cfg = {"models": {"primary": {"model": f"openai/{model}", "api_base": llm.base_url}}}
    (repo / ".stagecrew" / "config.json").write_text(json.dumps(cfg))


def _crew_popen(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stagecrew.cli.main", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _gateways() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith("ray::GatewayHost"):
            found.append(proc)
    return found


def _talking_to(port: int) -> psutil.Process:
    """The process with an open connection to the scripted server (the serving gateway)."""
    for proc in _gateways():
        try:
            if any(c.raddr and c.raddr.port == port for c in proc.net_connections("tcp")):
                return proc
        except psutil.Error:
            continue
    raise AssertionError("no gateway is talking to the model server")


def _events(repo: Path, sid: str) -> list[object]:
    return list(read_events(session_dir(repo, sid) / "events.jsonl"))


def _sid_from(stderr: str) -> str:
    line = next(ln for ln in stderr.splitlines() if "session log:" in ln)
    return Path(line.split("session log:", 1)[1].strip()).parent.name


def test_gateway_killed_mid_stream_the_session_finishes_done(
    ray_head: object, git_repo: Path
) -> None:
    wait_for(lambda: len(_gateways()) >= 2, timeout=90)  # the standby is up
    script = [
        {"text": "This answer is cut off by the kill " * 20, "chunk_delay": 0.5},
        {"text": "All done: the whole answer."},
    ]
    with ScriptedLLM(script) as llm:
        _config(git_repo, llm)
        proc = _crew_popen("run", "Answer.", cwd=git_repo)
        wait_for(lambda: llm.requests, timeout=60)
        victim = wait_for(lambda: _talking_to(llm.port), timeout=10)
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        elapsed = time.monotonic() - killed_at
    assert proc.returncode == 0, err
    assert "All done: the whole answer." in out
    assert "Traceback" not in err and "ActorDiedError" not in out + err.replace(
        "(ActorDiedError)", ""
    )
    sid = _sid_from(err)
    events = _events(git_repo, sid)
    retries = [e.body for e in events if e.body.kind == "model_retry"]
    assert retries and retries[0].error_kind == "gateway"
    assert events[-1].body.kind == "session_finished"
    assert events[-1].body.stop_reason == "done"
    assert elapsed < 60
    # Ray restarts the killed replica; later sessions work without `crew down`.
    with ScriptedLLM([{"text": "Still fine."}]) as llm:
        _config(git_repo, llm)
        again = crew("run", "Again.", cwd=git_repo)
    assert again.returncode == 0, again.stderr
    assert "Still fine." in again.stdout


def test_supervisor_killed_mid_tool_nothing_survives_and_resume_finishes(
    ray_head: object, git_repo: Path
) -> None:
    marker = f"sc-tool-sleep-{time.monotonic_ns()}"
    command = f"(exec -a {marker} sleep 317) & echo started; wait"
    script = [
        {"tool_calls": [{"name": "bash", "arguments": {"command": command, "timeout": 600000}}]},
        {"text": "Resumed, and finished the job."},
    ]
    client = runtime.connect()
    with ScriptedLLM(script) as llm:
        _config(git_repo, llm)
        proc = _crew_popen("run", "Run the long job.", cwd=git_repo)
        wait_for(lambda: marked_pids(marker), timeout=60)
        [tool_pid] = marked_pids(marker)
        sid = next(s["session"] for s in client.ps()["sessions"] if not s["finished"])
        host_pid = next(a["pid"] for a in client.ps(sid)["actors"] if a["role"] == "primary")
        old = client.ping()
        os.kill(old["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        _out, err = proc.communicate(timeout=120)
        # Nothing of the dead tree is left: the tool's grandchild and the agent's host.
        wait_for(lambda: not psutil.pid_exists(tool_pid) or _zombie(tool_pid), timeout=10)
        wait_for(lambda: not psutil.pid_exists(host_pid) or _zombie(host_pid), timeout=10)
        fresh = runtime.connect()
        info = fresh.ping()
        restart_s = time.monotonic() - killed_at
        assert info["pid"] != old["pid"] and info["restarted"]
        assert sid in info["recovered"]

        assert proc.returncode == 1
        said = [ln for ln in err.splitlines() if ln.startswith("crew:") and "log:" not in ln]
        assert len(said) == 1 and "supervisor" in said[0] and "reconnecting" in said[0], err
        assert "Traceback" not in err
        events = _events(git_repo, sid)
        assert events[-1].body.kind == "session_finished"
        assert events[-1].body.stop_reason == "error"
        assert f"crew resume {sid}" in events[-1].body.error
        assert [e.seq for e in events] == list(range(1, len(events) + 1))

        resumed = crew("resume", sid, cwd=git_repo)
        nxt = crew("ps", cwd=git_repo)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed, and finished the job." in resumed.stdout
    assert "first use" not in resumed.stderr + nxt.stderr
    assert restart_s < 30


def _mcp_servers() -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "mcp_server_time" in " ".join(p.info["cmdline"] or [])
    ]


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def test_crew_down_during_a_session_leaves_a_stop_record(git_repo: Path, tmp_path: Path) -> None:
    """Its own head (its own state home): ``crew down`` must not stop the shared test head."""
    env = {"STAGECREW_HOME": str(tmp_path / "own-head")}
    server = {"command": sys.executable, "args": ["-m", "mcp_server_time"]}
    (git_repo / ".mcp.json").write_text(json.dumps({"mcpServers": {"time": server}}))
    with ScriptedLLM([{"text": "never finished", "delay": 120}]) as llm:
        _config(git_repo, llm)
        started = crew("run", "--background", "Work slowly.", cwd=git_repo, env=env)
        assert started.returncode == 0, started.stderr
        sid = started.stdout.strip()
        wait_for(lambda: llm.requests, timeout=60)
        assert _mcp_servers()  # the session's MCP server runs
        down = crew("down", cwd=git_repo, env=env)
    assert down.returncode == 0, down.stderr
    assert not _mcp_servers()
    events = _events(git_repo, sid)
    last = events[-1].body
    assert last.kind == "session_finished"
    assert last.stop_reason == "cancelled"
    assert "crew down" in (last.error or "")


def test_a_dead_supervisor_at_down_still_gets_stop_records(git_repo: Path, tmp_path: Path) -> None:
    """``crew down`` when the supervisor cannot answer (here: frozen) writes the stop
    records itself, from the session index."""
    env = {"STAGECREW_HOME": str(tmp_path / "own-head")}
    with ScriptedLLM([{"text": "never finished", "delay": 120}]) as llm:
        _config(git_repo, llm)
        started = crew("run", "--background", "Work slowly.", cwd=git_repo, env=env)
        sid = started.stdout.strip()
        wait_for(lambda: llm.requests, timeout=60)
        record = json.loads((tmp_path / "own-head" / "head.json").read_text())
        supervisor = next(
            p
            for p in psutil.process_iter(["cmdline", "environ"])
            if " ".join(p.info["cmdline"] or []).startswith("ray::Supervisor")
            and (p.info["environ"] or {}).get("STAGECREW_HEAD_ID") == record["temp_dir"]
        )
        supervisor.send_signal(signal.SIGSTOP)  # alive to Ray, deaf to the CLI
        down = crew("down", cwd=git_repo, env=env)
    assert down.returncode == 0, down.stderr
    last = _events(git_repo, sid)[-1].body
    assert last.kind == "session_finished" and last.stop_reason == "error"
    assert "crew down" in (last.error or "")


def test_a_dead_agent_host_is_resumed_automatically_when_allowed(
    ray_head: object, git_repo: Path
) -> None:
    script = [
        {"tool_calls": [{"name": "bash", "arguments": {"command": "sleep 300"}}]},
        {"text": "Resumed automatically and finished."},
    ]
    client = runtime.connect()
    with ScriptedLLM(script) as llm:
        _config(git_repo, llm)
        cfg = json.loads((git_repo / ".stagecrew" / "config.json").read_text())
        cfg["runtime"] = {"auto_resume": 1}
        (git_repo / ".stagecrew" / "config.json").write_text(json.dumps(cfg))
        proc = _crew_popen("run", "Run the long job.", cwd=git_repo)
        wait_for(lambda: llm.requests, timeout=60)

        def running_host() -> int | None:
            for s in client.ps()["sessions"]:
                if s["finished"]:
                    continue
                for a in client.ps(s["session"])["actors"]:
                    if a["role"] == "primary" and a["pid"] and a["state"] == "running":
                        return int(a["pid"])
            return None

        host = wait_for(running_host, timeout=30)
        time.sleep(1.0)  # the bash call is running
        os.kill(host, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Resumed automatically and finished." in out
    events = _events(git_repo, _sid_from(err))
    primaries = [e.body for e in events if e.body.kind == "actor_started"]
    assert [p.actor_id.rsplit("-", 1)[1] for p in primaries] == ["primary", "r1"]
    notices = [e.body.text for e in events if e.body.kind == "notice"]
    assert any("resuming the session" in n for n in notices)
    assert events[-1].body.stop_reason == "done"
