"""bash / bash_output / kill_shell: real processes, real process groups, nothing left behind."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from stagecrew.envutil import INJECTED_ENV_VAR
from stagecrew.tools import shell
from stagecrew.tools.base import ToolContext, ToolResult, execute
from stagecrew.tools.registry import default_tools
from stagecrew.tools.shell import OutputCapture, tool_subprocess_env

TOOLS = default_tools()


@pytest.fixture(autouse=True)
def quick_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shell, "KILL_GRACE_S", 0.3)
    monkeypatch.setattr(shell, "DRAIN_GRACE_S", 0.3)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    w = tmp_path / "ws"
    (w / "sub" / "deeper").mkdir(parents=True)
    return w


@pytest.fixture
def ctx(ws: Path, tmp_path: Path) -> Iterator[ToolContext]:
    c = ToolContext(workspace=ws, session_dir=tmp_path / "session")
    yield c
    leftovers = [pg for pg in c.processes.pgids if shell.group_alive(pg)]
    c.processes.kill_all()
    for job in c.state.get("bash_jobs", {}).values():
        job.popen.wait(timeout=5)
    assert not leftovers, f"process groups left running: {leftovers}"


def marker_procs(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(
                p.info["cmdline"] or []
            ):
                found.append(p)
        except psutil.Error:
            pass
    return found


async def bash(ctx: ToolContext, command: str, **kw: Any) -> ToolResult:
    return await execute(TOOLS, "bash", {"command": command, **kw}, ctx)


async def test_output_and_exit_code(ctx: ToolContext) -> None:
    r = await bash(ctx, "echo out; echo err >&2; exit 3")
    assert not r.is_error  # a failing command is information, not a tool error
    assert r.content == "out\nerr\n[exit code 3]"
    assert r.metadata["exit_code"] == 3
    r = await bash(ctx, "true")
    assert r.content == "(no output)\n[exit code 0]"


async def test_cwd_persists_and_stays_inside(ctx: ToolContext, ws: Path) -> None:
    r = await bash(ctx, "cd sub/deeper")
    assert "working directory is now sub/deeper" in r.content
    assert ctx.cwd == ws / "sub" / "deeper"
    r = await bash(ctx, "pwd")
    assert r.content.splitlines()[0] == str(ws / "sub" / "deeper")
    r = await bash(ctx, "cd .. && exit 4")  # the trap still records where it ended
    assert ctx.cwd == ws / "sub" and "[exit code 4]" in r.content
    r = await bash(ctx, "cd /tmp")
    assert "outside the workspace" in r.content and ctx.cwd == ws
    r = await bash(ctx, "pwd")
    assert r.content.splitlines()[0] == str(ws)


async def test_vanished_cwd_is_reset(ctx: ToolContext, ws: Path) -> None:
    await bash(ctx, "cd sub/deeper")
    (ws / "sub" / "deeper").rmdir()
    r = await bash(ctx, "pwd")
    assert "gone or outside" in r.content and r.content.startswith(str(ws))


async def test_syntax_error_reported(ctx: ToolContext) -> None:
    r = await bash(ctx, "if then")
    assert not r.is_error and "syntax error" in r.content and "[exit code 2]" in r.content


async def test_timeout_kills_whole_tree(ctx: ToolContext) -> None:
    marker = f"sc-timeout-{os.getpid()}-{time.monotonic_ns()}"
    cmd = (
        f"echo started; (exec -a {marker} sleep 30) & "
        f"setsid bash -c 'exec -a {marker} sleep 30' & "
        "trap '' TERM; sleep 30"
    )
    start = time.monotonic()
    r = await bash(ctx, cmd, timeout=400)
    elapsed = time.monotonic() - start
    assert r.is_error
    assert "started" in r.content and "timed out after 0.4 s" in r.content
    assert elapsed < 5
    await asyncio.sleep(0.1)
    assert marker_procs(marker) == []
    assert not ctx.processes.pgids


async def test_output_capped_head_and_tail(ctx: ToolContext) -> None:
    r = await bash(ctx, "echo FIRST; head -c 200000 /dev/zero | tr '\\0' x; echo; echo LAST")
    assert r.content.startswith("FIRST")
    assert "LAST\n[exit code 0]" in r.content
    assert "output cut" in r.content
    assert len(r.content) < shell.OUTPUT_LIMIT + 500
    assert r.metadata["output_bytes"] > 200_000


def test_output_capture_small_and_multibyte() -> None:
    cap = OutputCapture(limit=10)
    cap.feed("héllo wörld, this is long".encode())
    text = cap.text()
    assert text.startswith("héllo") and "cut" in text
    small = OutputCapture(limit=100)
    small.feed(b"abc")
    assert small.text() == "abc"


async def test_background_ampersand_holding_output_is_stopped(ctx: ToolContext) -> None:
    marker = f"sc-amp-{time.monotonic_ns()}"
    r = await bash(ctx, f"(exec -a {marker} sleep 30) & echo hi")
    assert r.content.startswith("hi") and "kept the output open" in r.content
    await asyncio.sleep(0.1)
    assert marker_procs(marker) == []


async def test_redirected_daemon_survives_until_cancelled(ctx: ToolContext) -> None:
    marker = f"sc-daemon-{time.monotonic_ns()}"
    r = await bash(ctx, f"(exec -a {marker} sleep 30) >/dev/null 2>&1 & echo started")
    assert r.content.startswith("started") and "[exit code 0]" in r.content
    assert len(marker_procs(marker)) == 1
    assert ctx.processes.pgids  # still registered: the agent's shutdown will reap it
    ctx.processes.kill_all()
    await asyncio.sleep(0.1)
    assert marker_procs(marker) == []


async def test_cancellation_kills_process_group(ctx: ToolContext) -> None:
    marker = f"sc-cancel-{time.monotonic_ns()}"
    task = asyncio.create_task(bash(ctx, f"exec -a {marker} sleep 30"))
    for _ in range(50):
        await asyncio.sleep(0.05)
        if marker_procs(marker):
            break
    assert marker_procs(marker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert marker_procs(marker) == []
    assert not ctx.processes.pgids


async def test_timeout_argument_validated(ctx: ToolContext) -> None:
    r = await bash(ctx, "true", timeout=700_000)
    assert r.is_error and "field 'timeout'" in r.content


# ---- environment ---------------------------------------------------------------------------


def test_tool_subprocess_env_restores_user_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INJECTED_ENV_VAR, raising=False)
    base = {
        "PATH": "/bin",
        "HTTP_PROXY": "http://ray-proxy:1",
        "https_proxy": "http://ray-proxy:2",
        "NO_PROXY": "injected",
        INJECTED_ENV_VAR: json.dumps(
            {"HTTP_PROXY": None, "https_proxy": "http://user-proxy:3", "NO_PROXY": None}
        ),
    }
    env = tool_subprocess_env(base)
    assert env == {"PATH": "/bin", "https_proxy": "http://user-proxy:3"}
    assert INJECTED_ENV_VAR in base  # the caller's dict is not modified


def test_tool_subprocess_env_from_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://ray-proxy:1")
    monkeypatch.setenv(INJECTED_ENV_VAR, json.dumps({"HTTPS_PROXY": None}))
    assert "HTTPS_PROXY" not in tool_subprocess_env(None)
    assert INJECTED_ENV_VAR not in tool_subprocess_env(None)
    # An explicit env that copied the injected value loses it; one that chose its own keeps it.
    assert "HTTPS_PROXY" not in tool_subprocess_env({"HTTPS_PROXY": "http://ray-proxy:1"})
    chosen = tool_subprocess_env({"HTTPS_PROXY": "http://mine:9"})
    assert chosen["HTTPS_PROXY"] == "http://mine:9"
    monkeypatch.setenv(INJECTED_ENV_VAR, "not json")
    assert tool_subprocess_env({"A": "1"}) == {"A": "1"}


async def test_command_sees_user_env(ctx: ToolContext) -> None:
    ctx.env = {
        "PATH": os.environ["PATH"],
        "HTTPS_PROXY": "http://injected:1",
        "KEEP": "yes",
        INJECTED_ENV_VAR: json.dumps({"HTTPS_PROXY": None}),
    }
    r = await bash(ctx, 'echo "${HTTPS_PROXY-unset} $KEEP ${STAGECREW_INJECTED_ENV-gone}"')
    assert r.content.splitlines()[0] == "unset yes gone"


# ---- background jobs -----------------------------------------------------------------------


async def wait_exit(ctx: ToolContext, job_id: str) -> None:
    for _ in range(100):
        if ctx.state["bash_jobs"][job_id].popen.poll() is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("job did not finish")


async def test_background_job_output_and_status(ctx: ToolContext, ws: Path) -> None:
    await bash(ctx, "cd sub")
    r = await bash(ctx, "echo one; echo two; pwd; exit 5", run_in_background=True)
    assert not r.is_error and "bash_1" in r.content
    await wait_exit(ctx, "bash_1")
    out = await execute(TOOLS, "bash_output", {"bash_id": "bash_1"}, ctx)
    assert out.content.splitlines() == [
        "[bash_1: exited: exit code 5]",
        "one",
        "two",
        str(ws / "sub"),
    ]
    again = await execute(TOOLS, "bash_output", {"bash_id": "bash_1"}, ctx)
    assert "(no new output)" in again.content
    assert (ctx.session_dir / "bash-jobs").is_dir()


async def test_background_filter_and_kill(ctx: ToolContext) -> None:
    marker = f"sc-bg-{time.monotonic_ns()}"
    r = await bash(
        ctx,
        f"echo keep-1; echo drop; echo keep-2; exec -a {marker} sleep 30",
        run_in_background=True,
    )
    job_id = r.metadata["bash_id"]
    for _ in range(50):
        if marker_procs(marker):
            break
        await asyncio.sleep(0.05)
    # The job's output reaches its log through a reader; poll until both lines are in
    # (bash_output returns what is new since the last call).
    kept: list[str] = []
    for _ in range(100):
        out = await execute(TOOLS, "bash_output", {"bash_id": job_id, "filter": "^keep"}, ctx)
        kept += [ln for ln in out.content.splitlines()[1:] if ln != "(no new output)"]
        if len(kept) >= 2:
            break
        await asyncio.sleep(0.05)
    assert kept == ["keep-1", "keep-2"]
    assert "running" in out.content
    bad = await execute(TOOLS, "bash_output", {"bash_id": job_id, "filter": "("}, ctx)
    assert bad.is_error and "Invalid filter regex" in bad.content
    k = await execute(TOOLS, "kill_shell", {"shell_id": job_id}, ctx)
    assert not k.is_error and "Stopped" in k.content
    assert marker_procs(marker) == []
    k2 = await execute(TOOLS, "kill_shell", {"shell_id": job_id}, ctx)
    assert "nothing to stop" in k2.content
    unknown = await execute(TOOLS, "bash_output", {"bash_id": "bash_99"}, ctx)
    assert unknown.is_error and job_id in unknown.content


# ---- read-only (plan) mode -----------------------------------------------------------------


async def test_readonly_without_sandbox_module_refuses(
    ctx: ToolContext, ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "stagecrew.tools.sandbox", None)
    ctx.read_only = True
    r = await bash(ctx, "touch created-in-plan-mode")
    assert r.is_error and "never run unsandboxed" in r.content
    assert not (ws / "created-in-plan-mode").exists()


async def test_readonly_refusal_and_argv(
    ctx: ToolContext, ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = types.ModuleType("stagecrew.tools.sandbox")

    class SandboxRefused(Exception):
        pass

    seen: list[tuple[str, Path | None]] = []

    def readonly_argv(command: str, c: ToolContext) -> list[str]:
        seen.append((command, c.cwd))
        if "rm" in command:
            raise SandboxRefused("'rm' is not on the read-only allowlist")
        return ["/bin/bash", "-c", f"echo SANDBOXED; {command}"]

    fake.SandboxRefused = SandboxRefused  # type: ignore[attr-defined]
    fake.readonly_argv = readonly_argv  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stagecrew.tools.sandbox", fake)
    ctx.read_only = True
    r = await bash(ctx, "rm -rf sub")
    assert r.is_error and "Refused in read-only (plan) mode: 'rm'" in r.content
    assert (ws / "sub").is_dir()
    r = await bash(ctx, "pwd")
    assert r.content.splitlines()[:2] == ["SANDBOXED", str(ws)]
    assert seen[-1] == ("pwd", ws)  # the raw command, not our cwd-tracking wrapper
    r = await bash(ctx, "sleep 1", run_in_background=True)
    assert r.is_error and "not allowed in read-only" in r.content


async def test_readonly_with_real_sandbox_changes_nothing(ctx: ToolContext, ws: Path) -> None:
    pytest.importorskip("stagecrew.tools.sandbox")
    ctx.read_only = True
    r = await bash(ctx, "touch made-in-plan-mode; echo done")
    assert not (ws / "made-in-plan-mode").exists(), r.content
