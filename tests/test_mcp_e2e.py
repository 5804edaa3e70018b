"""MCP servers from Claude Code's ``.mcp.json``, end to end through ``crew run``: real server
processes in the session's MCP service actor, their tools called by the agent, faults reported
in one line, and no server process left after the session, a cancel or ``crew down``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import crew, wait_for

from stagecrew.orchestrator.eventlog import read_events, session_dir
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.ray


def _servers() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "mcp_server_time" in cmd or "mcp-server-time" in cmd or "mcp_server_git" in cmd:
            found.append(proc)
    return found


def _setup(repo: Path, llm: ScriptedLLM, servers: dict[str, object]) -> None:
    (repo / ".mcp.json").write_text(json.dumps({"mcpServers": servers}))
    (repo / ".stagecrew").mkdir(exist_ok=True)
    cfg = {"models": {"primary": {"model": "openai/m", "api_base": llm.base_url}}}
    (repo / ".stagecrew" / "config.json").write_text(json.dumps(cfg))


def call(name: str, **arguments: object) -> dict[str, object]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def test_mcp_tools_reach_the_model_and_a_broken_server_is_one_line(
    ray_head: object, git_repo: Path
) -> None:
    servers = {
        "time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]},
        "git": {
            "command": sys.executable,
            "args": ["-m", "mcp_server_git", "--repository", "${REPO_DIR}"],
        },
        "broken": {"command": "/nonexistent/mcp-server"},
    }
    script = [
        call("mcp__time__get_current_time", timezone="UTC"),
        call("mcp__git__git_status", repo_path=str(git_repo)),
        {"text": "Checked the time and the tree."},
    ]
    with ScriptedLLM(script) as llm:
        _setup(git_repo, llm, servers)
        proc = crew("run", "What time is it?", cwd=git_repo, env={"REPO_DIR": str(git_repo)})
        requests = list(llm.requests)
    assert proc.returncode == 0, proc.stderr
    offered = {t["function"]["name"] for t in requests[0].body["tools"]}
    assert {"mcp__time__get_current_time", "mcp__git__git_status"} <= offered
    timed = requests[1].messages[-1]
    assert timed["role"] == "tool" and "UTC" in timed["content"]
    status = requests[2].messages[-1]["content"]
    assert "branch" in status.lower() or "On branch" in status
    broken = [ln for ln in proc.stdout.splitlines() + proc.stderr.splitlines() if "broken" in ln]
    assert len(broken) == 1, proc.stdout
    wait_for(lambda: not _servers(), timeout=20)


def test_cancel_ends_the_session_servers(ray_head: object, git_repo: Path) -> None:
    servers = {"time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]}}
    script = [call("mcp__time__get_current_time", timezone="UTC"), {"text": "x", "delay": 120}]
    with ScriptedLLM(script) as llm:
        _setup(git_repo, llm, servers)
        started = crew("run", "--background", "Slow.", cwd=git_repo)
        assert started.returncode == 0, started.stderr
        sid = started.stdout.strip()
        wait_for(lambda: len(llm.requests) >= 2, timeout=60)
        assert _servers()
        cancelled = crew("cancel", sid, cwd=git_repo)
        assert cancelled.returncode == 0
        wait_for(
            lambda: (
                (session_dir(git_repo, sid) / "events.jsonl").exists()
                and list(read_events(session_dir(git_repo, sid) / "events.jsonl"))[-1].body.kind
                == "session_finished"
            ),
            timeout=30,
        )
    t0 = time.monotonic()
    wait_for(lambda: not _servers(), timeout=20)
    assert time.monotonic() - t0 < 20


def _service_pid(server_pid: int) -> int:
    """The MCP service actor's process (Ray titles it ``ray::McpHost``): an ancestor of a
    stdio server it started (through the launcher)."""
    for proc in psutil.Process(server_pid).parents():
        if "McpHost" in " ".join(proc.cmdline()):
            return proc.pid
    raise AssertionError(f"no McpHost process above server {server_pid}")


def _pid_in(message: dict[str, object]) -> int:
    return int(str(message["content"]).strip().splitlines()[0])


def test_a_killed_mcp_service_is_restarted_once_then_reported(
    ray_head: object, git_repo: Path, fault_entry: dict[str, object]
) -> None:
    """kill -9 of the session's MCP service: the supervisor's health check replaces it before
    the agent's next call (logged as restarted), which reaches a new server; a second death is
    final — the model gets an error result, the log says why in one line, and the session
    still finishes."""
    script = [
        call("mcp__f__pid"),
        {**call("mcp__f__pid"), "delay": 15},
        {**call("mcp__f__echo", text="still there?"), "delay": 3},
        {"text": "Done."},
    ]
    with ScriptedLLM(script) as llm:
        _setup(git_repo, llm, {"f": fault_entry})
        started = crew("run", "--background", "Use the server.", cwd=git_repo)
        assert started.returncode == 0, started.stderr
        sid = started.stdout.strip()
        wait_for(lambda: len(llm.requests) >= 2, timeout=60)
        first = _pid_in(llm.requests[1].messages[-1])
        psutil.Process(_service_pid(first)).kill()
        log = session_dir(git_repo, sid) / "events.jsonl"
        wait_for(
            lambda: any(
                e.body.kind == "service_event" and e.body.state == "restarted"
                for e in read_events(log)
            ),
            timeout=12,
        )
        assert len(llm.requests) == 2  # found by the health check, not by the agent
        wait_for(lambda: len(llm.requests) >= 3, timeout=60)
        second = _pid_in(llm.requests[2].messages[-1])
        assert second != first
        psutil.Process(_service_pid(second)).kill()
        wait_for(lambda: len(llm.requests) >= 4, timeout=60)
        echoed = llm.requests[3].messages[-1]
        wait_for(lambda: list(read_events(log))[-1].body.kind == "session_finished", timeout=60)
    assert echoed["role"] == "tool"
    assert "died again" in str(echoed["content"]) and "unavailable" in str(echoed["content"])
    assert "Traceback" not in str(echoed["content"]) and "ray::" not in str(echoed["content"])
    services = [e.body for e in read_events(log) if e.body.kind == "service_event"]
    states = [s.state for s in services]
    assert states[:2] == ["starting", "running"]
    assert "1 of 1 servers up in" in services[1].detail
    assert states.count("restarted") == 1
    assert states.count("failed") == 1
    failed = next(s for s in services if s.state == "failed")
    assert "\n" not in failed.detail and "died again" in failed.detail
    assert list(read_events(log))[-1].body.stop_reason == "done"
