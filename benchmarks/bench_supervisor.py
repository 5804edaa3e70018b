"""Supervisor costs next to raw Ray, measured in one run on a private local head.

Prints: subagent start latency from the warm pool vs cold (task tool call → the child's first
model request, read from the event log) next to a raw cold/warm Ray actor; cancel →
acknowledged and cancel → tool processes gone, next to ray.cancel/ray.kill on a raw actor;
supervisor routing (post of one envelope) vs a raw actor call; RSS/USS per idle agent host for
8 and 32 hosts vs a raw idle actor.

Run: ``scripts/offline .venv/bin/python benchmarks/bench_supervisor.py [--quick]``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback: no 8.8.8.8 probe
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(v: float) -> str:
    return f"{v * 1000:.1f} ms"


def make_repo(home: Path) -> Path:
    repo = home / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    return repo


def spawn_latencies(repo: Path, rounds: int) -> tuple[list[float], list[float]]:
    """Per child: parent's task call → child's first model request; split by pool/cold."""
    from conftest import follow, start_session

    from stagecrew.testing.scripted_llm import ScriptedLLM

    pool, cold = [], []
    fanout = {
        "tool_calls": [
            {"name": "task", "arguments": {"tasks": [{"prompt": f"part {i}"} for i in range(4)]}}
        ]
    }
    for _ in range(rounds):
        script = {"root": [fanout, {"text": "ok"}], "mid": [{"text": "done", "repeat": 4}]}
        with ScriptedLLM(script) as llm:
            cfg = {
                "models": {
                    "primary": {"model": "openai/root", "api_base": llm.base_url},
                    "subagent": {"model": "openai/mid", "api_base": llm.base_url},
                }
            }
            client, sid = start_session(repo, "fan out", {}, config_json=cfg)
            events = follow(client, sid)
        called = next(
            e.ts for e in events if e.body.kind == "tool_started" and e.body.tool == "task"
        )
        started = {
            e.body.actor_id: e.body.from_pool
            for e in events
            if e.body.kind == "actor_started" and e.body.role == "subagent"
        }
        first = {}
        for e in events:
            if (
                e.body.kind == "model_requested"
                and e.body.actor_id in started
                and e.body.actor_id not in first
            ):
                first[e.body.actor_id] = e.ts - called
        for actor_id, from_pool in started.items():
            (pool if from_pool else cold).append(first[actor_id])
        time.sleep(6)  # let the pool refill, as between a person's requests
    return pool, cold


def _two_pids(pidfile: Path) -> bool:
    return pidfile.exists() and len(pidfile.read_text().split()) == 2


def cancel_latencies(repo: Path, rounds: int) -> tuple[list[float], list[float]]:
    import psutil
    from conftest import start_session, wait_for

    from stagecrew.testing.scripted_llm import ScriptedLLM

    acks, gone = [], []
    for i in range(rounds):
        pidfile = repo.parent / f"pids-{i}"
        cmd = f"sleep 300 & echo $! > {pidfile}; sleep 300 & echo $! >> {pidfile}; wait"
        with ScriptedLLM(
            {
                "root": [
                    {
                        "tool_calls": [
                            {"name": "bash", "arguments": {"command": cmd, "timeout": 600000}}
                        ]
                    }
                ]
            }
        ) as llm:
            cfg = {"models": {"primary": {"model": "openai/root", "api_base": llm.base_url}}}
            client, sid = start_session(repo, "long job", {}, config_json=cfg)
            wait_for(partial(_two_pids, pidfile), 60)
            pids = [int(p) for p in pidfile.read_text().split()]
            t0 = time.perf_counter()
            client.call("cancel", target=sid)
            acks.append(time.perf_counter() - t0)
            while any(
                psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids
            ):
                time.sleep(0.002)
            gone.append(time.perf_counter() - t0)
        time.sleep(3)
    return acks, gone


def main(quick: bool = False) -> None:
    home = Path(tempfile.mkdtemp(prefix="sc-bench-sup-"))
    os.environ["STAGECREW_HOME"] = str(home / "state")
    os.environ["STAGECREW_CONFIG_DIR"] = str(home / "config")
    import psutil
    import ray

    from stagecrew.orchestrator import runtime

    rows: list[tuple[str, str, str, str]] = []
    runtime.connect()
    try:
        time.sleep(4)
        repo = make_repo(home)
        record = runtime.read_record()
        ray.init(
            address=record.gcs_address,
            namespace="stagecrew",
            log_to_driver=False,
            logging_level=logging.ERROR,
            _node_ip_address="127.0.0.1",
        )

        @ray.remote(num_cpus=0)
        class Raw:
            def ping(self) -> int:
                return os.getpid()

            async def sleep(self) -> None:
                await asyncio.sleep(300)

        cold_raw = []
        for _ in range(2 if quick else 4):
            t0 = time.perf_counter()
            a = Raw.remote()
            ray.get(a.ping.remote())
            cold_raw.append(time.perf_counter() - t0)
            ray.kill(a)
        warm = Raw.remote()
        ray.get(warm.ping.remote())
        warm_raw = []
        for _ in range(200):
            t0 = time.perf_counter()
            ray.get(warm.ping.remote())
            warm_raw.append(time.perf_counter() - t0)

        pool, cold = spawn_latencies(repo, 1 if quick else 3)
        rows.append(
            (
                "subagent start, from the pool (median)",
                ms(statistics.median(pool)),
                f"raw warm actor call {ms(statistics.median(warm_raw))}",
                "≤ 100 ms",
            )
        )
        if cold:
            rows.append(
                (
                    "subagent start, cold (median)",
                    ms(statistics.median(cold)),
                    f"raw cold actor {ms(statistics.median(cold_raw))}",
                    "(pool miss)",
                )
            )

        acks, gone = cancel_latencies(repo, 2 if quick else 5)
        ray_cancel, ray_kill = [], []
        for _ in range(3):
            ref = warm.sleep.remote()
            time.sleep(0.2)
            t0 = time.perf_counter()
            ray.cancel(ref)
            with contextlib.suppress(Exception):
                ray.get(ref)
            ray_cancel.append(time.perf_counter() - t0)
        for _ in range(2):
            victim = Raw.remote()
            ray.get(victim.ping.remote())
            ref = victim.sleep.remote()
            time.sleep(0.2)
            t0 = time.perf_counter()
            ray.kill(victim)
            with contextlib.suppress(Exception):
                ray.get(ref)
            ray_kill.append(time.perf_counter() - t0)
        rows.append(
            (
                "cancel → acknowledged (median / max)",
                f"{ms(statistics.median(acks))} / {ms(max(acks))}",
                f"ray.cancel → caller {ms(statistics.median(ray_cancel))}",
                "≤ 100 ms",
            )
        )
        rows.append(
            (
                "cancel → tool processes gone (median / max)",
                f"{ms(statistics.median(gone))} / {ms(max(gone))}",
                f"ray.kill → caller {ms(statistics.median(ray_kill))}",
                "≤ 1000 ms",
            )
        )

        from stagecrew.messages import Envelope, Notice

        sup = ray.get_actor("stagecrew-supervisor")
        env = [Envelope(session="none", sender="bench", body=Notice(text="x"))]
        route = []
        for _ in range(300 if quick else 1000):
            t0 = time.perf_counter()
            ray.get(sup.post.remote(env))
            route.append(time.perf_counter() - t0)
        rows.append(
            (
                "supervisor routing: post(envelope) p50 / p99",
                f"{ms(pct(route, 0.5))} / {ms(pct(route, 0.99))}",
                f"raw actor call {ms(pct(warm_raw, 0.5))} / {ms(pct(warm_raw, 0.99))}",
                "p50 ≤ 2 ms",
            )
        )

        from stagecrew.orchestrator.hosts import start_agent_host

        raw_idle = [Raw.remote() for _ in range(8)]
        raw_pids = ray.get([a.ping.remote() for a in raw_idle])
        time.sleep(1)
        raw_rss = statistics.mean(psutil.Process(p).memory_info().rss for p in raw_pids) / 2**20
        for a in raw_idle:
            ray.kill(a)
        for n in (8,) if quick else (8, 32):
            hosts = [start_agent_host() for _ in range(n)]
            t0 = time.perf_counter()
            pids = ray.get([h.ping.remote() for h in hosts], timeout=600)
            ready = time.perf_counter() - t0
            time.sleep(1)
            infos = [psutil.Process(p).memory_full_info() for p in pids]
            rss = statistics.mean(i.rss for i in infos) / 2**20
            uss = statistics.mean(i.uss for i in infos) / 2**20
            rows.append(
                (
                    f"{n} idle agent hosts: RSS / USS per agent",
                    f"{rss:.0f} / {uss:.0f} MiB",
                    f"raw idle actor RSS {raw_rss:.0f} MiB; ready in {ready:.1f} s",
                    "≤ 80 MiB",
                )
            )
            for h in hosts:
                ray.kill(h)
            time.sleep(2)
        ray.shutdown()
    finally:
        runtime.down()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'stagecrew':<22} {'raw Ray baseline':<42} goal")
    print("-" * (width + 80))
    for label, value, base, goal in rows:
        print(f"{label.ljust(width)}  {value:<22} {base:<42} {goal}")
    print(json.dumps({"rows": rows}), file=sys.stderr)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
