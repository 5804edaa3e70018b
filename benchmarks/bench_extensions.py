"""Extensions' costs, measured in one run on a private local head.

Prints:

* ``crew run`` → the first model request with 0 and with 3 stdio MCP servers configured, next
  to each server's own start time (goal: the servers start in parallel — with 3, no more than
  the slowest server's own start plus 100 ms);
* an MCP tool call's round trip through stagecrew (agent → Ray → the session's MCP service →
  server, from the tool events) next to a direct SDK call to the same server (goal: ≤ 5 ms
  added, p50);
* a no-op PreToolUse hook's cost per tool call (with and without the hook, from the tool
  events) next to the hook process's own start, ``bash -c true`` (goal: ≤ 15 ms + that).

Run: ``scripts/offline .venv/bin/python benchmarks/bench_extensions.py [--reps N]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

TIME_SERVER = {"command": sys.executable, "args": ["-m", "mcp_server_time"]}


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def configure(repo: Path, llm_url: str, servers: dict[str, object], hooks: object = None) -> None:
    (repo / ".stagecrew").mkdir(exist_ok=True)
    (repo / ".stagecrew" / "config.json").write_text(
        json.dumps({"models": {"primary": {"model": "openai/m", "api_base": llm_url}}})
    )
    mcp = repo / ".mcp.json"
    if servers:
        mcp.write_text(json.dumps({"mcpServers": servers}))
    elif mcp.exists():
        mcp.unlink()
    claude = repo / ".claude"
    claude.mkdir(exist_ok=True)
    (claude / "settings.json").write_text(json.dumps({"hooks": hooks} if hooks else {}))


def first_request_s(repo: Path, servers: dict[str, object], reps: int) -> list[float]:
    from stagecrew.testing.scripted_llm import ScriptedLLM

    times = []
    for _ in range(reps):
        with ScriptedLLM([{"text": "ok"}]) as llm:
            configure(repo, llm.base_url, servers)
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "stagecrew.cli.main", "run", "hi"],
                cwd=repo,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while not llm.requests:
                time.sleep(0.002)
            times.append(time.monotonic() - t0)
            proc.wait(timeout=60)
        time.sleep(4.0)  # sessions a few seconds apart: the pool and the spare refill
    return times


async def direct_server_start_and_calls(calls: int) -> tuple[float, list[float]]:
    """One mcp-server-time started with the SDK directly: its start, then ``calls`` calls."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=TIME_SERVER["command"], args=TIME_SERVER["args"])
    t0 = time.monotonic()
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.list_tools()
        start = time.monotonic() - t0
        rounds = []
        for _ in range(calls):
            t1 = time.monotonic()
            await session.call_tool("get_current_time", {"timezone": "UTC"})
            rounds.append(time.monotonic() - t1)
    return start, rounds


async def three_in_parallel() -> float:
    """Three servers started at once by the SDK directly: the floor on this machine's cores."""
    t0 = time.monotonic()
    await asyncio.gather(*(direct_server_start_and_calls(0) for _ in range(3)))
    return time.monotonic() - t0


def tool_durations(
    repo: Path,
    tool_call: dict[str, object],
    n: int,
    servers: dict[str, object],
    hooks: object = None,
) -> list[float]:
    """ToolFinished durations (s) of ``n`` identical calls in one session."""
    from conftest import follow, start_session

    from stagecrew.testing.scripted_llm import ScriptedLLM

    script = [{"tool_calls": [tool_call], "repeat": n}, {"text": "done"}]
    with ScriptedLLM(script) as llm:
        configure(repo, llm.base_url, servers, hooks)
        cfg = json.loads((repo / ".stagecrew" / "config.json").read_text())
        cfg["limits"] = {"max_steps": n + 5}
        client, sid = start_session(repo, "call it", {}, config_json=cfg)
        events = follow(client, sid, timeout=300)
    got = [e.body.duration_ms / 1000 for e in events if e.body.kind == "tool_finished"]
    return got[1:]  # the first call pays one-time costs (imports, connection set-up)


def bash_true(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        subprocess.run(["bash", "-c", "true"], check=True)
        out.append(time.monotonic() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-extensions-"))
    os.environ["STAGECREW_HOME"] = str(home / "state")
    os.environ["STAGECREW_CONFIG_DIR"] = str(home / "config")
    repo = home / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)

    from stagecrew.orchestrator import runtime

    runtime.connect()
    try:
        time.sleep(8.0)  # the standby gateway and the pool come up first
        starts = [asyncio.run(direct_server_start_and_calls(0))[0] for _ in range(args.reps)]
        _, direct = asyncio.run(direct_server_start_and_calls(args.calls))
        parallel = [asyncio.run(three_in_parallel()) for _ in range(args.reps)]
        none = first_request_s(repo, {}, args.reps)
        three = {f"t{i}": TIME_SERVER for i in range(3)}
        # The first MCP session on a head starts its service's process; later ones bind the
        # warm spare that the first one left behind.
        cold, *with_three = first_request_s(repo, three, args.reps + 1)
        through = tool_durations(
            repo,
            {"name": "mcp__t0__get_current_time", "arguments": {"timezone": "UTC"}},
            args.calls,
            {"t0": TIME_SERVER},
        )
        ls_call = {"name": "ls", "arguments": {}}
        plain = tool_durations(repo, ls_call, args.calls, {})
        hook = {
            "PreToolUse": [{"matcher": "LS", "hooks": [{"type": "command", "command": "true"}]}]
        }
        hooked = tool_durations(repo, ls_call, args.calls, {}, hook)
        spawn = bash_true(args.calls)
    finally:
        runtime.down()

    slowest = max(starts)
    print(f"\nextensions ({args.reps} runs, {args.calls} calls; medians)\n")
    print("| measure | stagecrew | baseline | goal |")
    print("|---|---|---|---|")
    print(f"| crew run → first model request, 0 MCP servers | {median_ms(none):.0f} ms | — | — |")
    print(
        f"| … with 3 stdio MCP servers | {median_ms(with_three):.0f} ms "
        f"(+{median_ms(with_three) - median_ms(none):.0f} ms) | one server's own start "
        f"{median_ms(starts):.0f} ms (slowest {slowest * 1000:.0f} ms) | added ≤ slowest + 100 ms |"
    )
    print(
        f"| … 3 servers started at once by the SDK directly | — | {median_ms(parallel):.0f} ms "
        f"(+{median_ms(parallel) - median_ms(starts):.0f} ms over one) | — |"
    )
    print(
        f"| … the head's first MCP session (no spare yet) | {cold * 1000:.0f} ms "
        f"(+{cold * 1000 - median_ms(none):.0f} ms) | — | — |"
    )
    print(
        f"| MCP tool call round trip | {median_ms(through):.1f} ms | direct SDK call "
        f"{median_ms(direct):.1f} ms | ≤ 5 ms added |"
    )
    print(
        f"| tool call with a no-op PreToolUse hook | {median_ms(hooked):.1f} ms "
        f"(+{median_ms(hooked) - median_ms(plain):.1f} ms over {median_ms(plain):.1f} ms) | "
        f"bash -c true {median_ms(spawn):.1f} ms | ≤ 15 ms + that |"
    )


if __name__ == "__main__":
    main()
