"""Parallel subagents: wall time of the ``task`` call for 1 vs 4 subagents, each waiting 2 s on
its model, in one run, with the default warm pool (2) and with a pool as large as the fan-out.

Run: ``scripts/offline .venv/bin/python benchmarks/bench_fanout.py``
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback: no 8.8.8.8 probe
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

LATENCY_S = 2.0


def task_seconds(repo: Path, n: int) -> float:
    from conftest import follow, start_session

    from stagecrew.testing.scripted_llm import ScriptedLLM

    tasks = [{"prompt": f"part {i}"} for i in range(n)]
    script = {
        "root": [{"tool_calls": [{"name": "task", "arguments": {"tasks": tasks}}]}, {"text": "ok"}],
        "mid": [{"text": "done", "delay": LATENCY_S, "repeat": n}],
    }
    with ScriptedLLM(script) as llm:
        cfg = {
            "models": {
                "primary": {"model": "openai/root", "api_base": llm.base_url},
                "subagent": {"model": "openai/mid", "api_base": llm.base_url},
            }
        }
        client, sid = start_session(repo, "fan out", {}, config_json=cfg)
        events = follow(client, sid)
    done = next(e.body for e in events if e.body.kind == "tool_finished" and e.body.tool == "task")
    return done.duration_ms / 1000


def main(rounds: int = 3) -> None:
    from stagecrew.orchestrator import runtime

    rows = []
    for pool in (2, 4):
        home = Path(tempfile.mkdtemp(prefix="sc-bench-fan-"))
        os.environ["STAGECREW_HOME"] = str(home / "state")
        os.environ["STAGECREW_CONFIG_DIR"] = str(home / "config")
        repo = home / "repo"
        repo.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        runtime.connect(pool_size=pool)
        try:
            time.sleep(3 + pool)
            one, four = [], []
            for _ in range(rounds):
                one.append(task_seconds(repo, 1))
                time.sleep(4)  # refill between runs, as between a person's requests
                four.append(task_seconds(repo, 4))
                time.sleep(4 + pool)
        finally:
            runtime.down()
        m1, m4 = statistics.median(one), statistics.median(four)
        rows.append((pool, m1, m4, m4 / m1))
    print(f"each subagent waits {LATENCY_S:g} s on its model; median of {rounds} runs")
    print(f"{'pool size':<10} {'1 subagent':>12} {'4 subagents':>12} {'ratio 4/1':>10}")
    for pool, m1, m4, ratio in rows:
        print(f"{pool:<10} {m1:>11.2f}s {m4:>11.2f}s {ratio:>10.2f}")


if __name__ == "__main__":
    main(rounds=1 if "--quick" in sys.argv else 3)
