"""Max Mode wall time for N = 1, 2, 4, 8 candidates, and the memory each candidate adds.

Every candidate makes two model turns (an edit, then its final message), each answered by the
scripted model after ``--latency`` seconds (default 2 s, about a hosted model's turn); then its
worktree is verified with ``python -m unittest`` and the winner is applied. Each N runs in a
fresh git repository on the same warm head, and the ratio is to N = 1 *in the same run*, so the
machine's load cancels out as far as it can. The design goal: N = 4 within 1.3x of N = 1.

Two variants per N: ``same`` (every candidate writes the same patch: no judge call) and
``distinct`` (passing patches that differ: the judge model compares them, one extra call with
the same latency; N = 1 never needs it).

Memory: RSS and USS (memory unique to the process: what a candidate really adds, shared
libraries counted once) of each candidate's actor process, sampled at its peak.

Run: ``scripts/offline .venv/bin/python benchmarks/bench_maxmode.py [--latency 2] [--reps 2]
[--pool-size 2] [--ns 1,2,4,8]`` (a private state dir; stops the head it started).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

BUGGY = "def mean(values):\n    return sum(values) / (len(values) + 1)\n"
TEST = (
    "import unittest\nfrom stats import mean\n\n"
    "class T(unittest.TestCase):\n"
    "    def test_mean(self):\n        self.assertEqual(mean([2, 4, 6]), 4)\n"
)
# Passing replacements for "(len(values) + 1)", all different patches.
FIXES = [
    "len(values)",
    "max(len(values), 1)",
    "(len(values) + 0)",
    "(len(values) * 1)",
    "len(list(values))",
    "(len(values) - 0)",
    "max(1, len(values))",
    "len(values or [0])",
]


def git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid"}
    env |= {"GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.invalid"}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def make_repo(base: Path, name: str, config: dict[str, Any]) -> Path:
    repo = base / name
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "stats.py").write_text(BUGGY)
    (repo / "test_stats.py").write_text(TEST)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "buggy")
    (repo / ".stagecrew").mkdir()
    (repo / ".stagecrew" / "config.json").write_text(json.dumps(config))
    return repo


def candidate_script(fix: str, latency: float) -> list[dict[str, Any]]:
    edit = {
        "name": "edit",
        "arguments": {
            "file_path": "stats.py",
            "old_string": "(len(values) + 1)",
            "new_string": fix,
        },
    }
    return [{"tool_calls": [edit], "delay": latency}, {"text": "Fixed.", "delay": latency}]


class PeakMemory:
    """Samples the candidates' actor processes (found through ``ps``) until stopped."""

    def __init__(self, client: Any, sid: str) -> None:
        self.client, self.sid = client, sid
        self.rss: dict[int, int] = {}
        self.uss: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                rows = self.client.call("ps", session=self.sid)["actors"]
            except Exception:
                rows = []
            for row in rows:
                pid = row.get("pid")
                if row["role"] != "candidate" or not pid or row["state"] != "running":
                    continue
                try:
                    info = psutil.Process(pid).memory_full_info()
                except psutil.Error:
                    continue
                self.rss[pid] = max(self.rss.get(pid, 0), info.rss)
                self.uss[pid] = max(self.uss.get(pid, 0), info.uss)
            self._stop.wait(0.25)

    def stop(self) -> tuple[float, float]:
        """(mean peak RSS, mean peak USS) per candidate, in MB."""
        self._stop.set()
        self._thread.join()
        if not self.rss:
            return 0.0, 0.0
        mb = 1024 * 1024
        return statistics.mean(self.rss.values()) / mb, statistics.mean(self.uss.values()) / mb


def one_run(base: Path, n: int, variant: str, latency: float, tag: str) -> dict[str, Any]:
    from stagecrew.actors.builder import prepare_session
    from stagecrew.config import load_config
    from stagecrew.orchestrator import runtime
    from stagecrew.testing.scripted_llm import ScriptedLLM

    names = [f"c{i}" for i in range(n)]
    script: dict[str, Any] = {
        name: candidate_script(
            FIXES[i % len(FIXES)] if variant == "distinct" else FIXES[0], latency
        )
        for i, name in enumerate(names)
    }
    script["judge"] = [
        {"text": json.dumps({"winner": "A", "reason": "A is fine."}), "delay": latency}
    ]
    with ScriptedLLM(script) as llm:

        def model(name: str) -> dict[str, Any]:
            return {"model": f"openai/{name}", "api_base": llm.base_url, "num_retries": 0}

        cfg = {
            "models": {"primary": model("c0"), "judge": model("judge")},
            "verify_commands": [f"{sys.executable} -m unittest -q"],
        }
        repo = make_repo(base, f"{tag}-n{n}-{variant}", cfg)
        config = load_config(repo)
        prepared = prepare_session(config, "Fix the failing test.", repo)
        client = runtime.connect()
        t0 = time.perf_counter()
        reply = client.call(
            "start_max_session",
            spec=prepared.spec.model_dump(mode="json"),
            credentials=prepared.credentials,
            config=config.public_dict(),
            limits=config.limits.session_limits(),
            max={
                "n": n,
                "candidate_models": [model(name) for name in names],
                "verify_commands": config.verify_commands,
            },
        )
        sid = reply["session"]
        memory = PeakMemory(client, sid)
        finished = None
        for msg in client.stream("follow", session=sid, after_seq=0):
            if msg.get("end"):
                break
            if msg["body"]["kind"] == "session_finished":
                finished = msg["body"]
        wall = time.perf_counter() - t0
        rss, uss = memory.stop()
        judge_calls = sum(1 for r in llm.chat_requests if r.model == "judge")
    report = json.loads((repo / ".stagecrew/state/sessions" / sid / "maxmode.json").read_text())
    return {
        "wall": wall,
        "ok": finished is not None and finished["stop_reason"] == "done",
        "passed": sum(1 for c in report["candidates"] if c["passed"]),
        "judge_calls": judge_calls,
        "rss": rss,
        "uss": uss,
    }


def wait_for_pool(pool_size: int, timeout: float = 60) -> None:
    """Start each run with a full warm pool, as a person's second command would."""
    from stagecrew.orchestrator import runtime

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runtime.connect().call("ping")["pool"] >= pool_size:
            return
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per model turn")
    parser.add_argument("--reps", type=int, default=2, help="runs per N (median reported)")
    parser.add_argument("--pool-size", type=int, default=2, help="warm pool of the head")
    parser.add_argument("--ns", default="1,2,4,8")
    parser.add_argument("--variants", default="same,distinct")
    args = parser.parse_args()
    ns = [int(x) for x in args.ns.split(",")]
    variants = args.variants.split(",")

    home = Path(tempfile.mkdtemp(prefix="sc-bench-max-"))
    os.environ["STAGECREW_HOME"] = str(home / "state")
    os.environ["STAGECREW_CONFIG_DIR"] = str(home / "config")
    from stagecrew.orchestrator import runtime

    runtime.connect(pool_size=args.pool_size)
    rows: list[list[str]] = []
    try:
        wait_for_pool(args.pool_size)
        one_run(home, 1, "same", 0.1, "warmup")  # first litellm calls, first verification
        results: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for rep in range(args.reps):
            for variant in variants:
                for n in ns:
                    wait_for_pool(args.pool_size)
                    res = one_run(home, n, variant, args.latency, f"r{rep}")
                    results.setdefault((variant, n), []).append(res)
                    print(
                        f"  rep {rep} {variant:8} N={n}: {res['wall']:.2f} s "
                        f"({res['passed']}/{n} passed, judge calls {res['judge_calls']}, "
                        f"ok={res['ok']})",
                        flush=True,
                    )
        for variant in variants:
            base = statistics.median(r["wall"] for r in results[(variant, ns[0])])
            for n in ns:
                runs = results[(variant, n)]
                wall = statistics.median(r["wall"] for r in runs)
                rows.append(
                    [
                        variant,
                        str(n),
                        f"{wall:.2f} s",
                        f"{wall / base:.2f}x",
                        str(max(r["judge_calls"] for r in runs)),
                        f"{statistics.mean(r['rss'] for r in runs):.0f} MB",
                        f"{statistics.mean(r['uss'] for r in runs):.0f} MB",
                        "yes" if all(r["ok"] for r in runs) else "NO",
                    ]
                )
    finally:
        runtime.down()
    head = ["patches", "N", "wall (median)", f"vs N={ns[0]}", "judge", "RSS/cand", "USS/cand"]
    head.append("done")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print(
        f"\nMax Mode, {args.latency:g} s per model turn, 2 turns per candidate, "
        f"pool {args.pool_size}, {os.cpu_count()} CPUs, {args.reps} rep(s); goal: N=4 ≤ 1.3x N=1"
    )
    for row in [head, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
