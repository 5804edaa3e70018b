"""Start-up and routing costs of stagecrew's runtime, next to raw Ray, measured in one run.

Prints a table of: ``crew --help`` wall time; connecting to a running head vs starting one
cold; time from ``crew run`` start to the first model request with a warm head; and the
supervisor round trip (control channel and Ray call) next to a raw Ray actor call.

Run: ``scripts/offline .venv/bin/python benchmarks/bench_runtime.py`` (uses a private state
dir and stops the head it started).
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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed_cmd(args: list[str], runs: int, cwd: Path | None = None) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(args, cwd=cwd, capture_output=True, check=True)
        out.append(time.perf_counter() - t0)
    return out


def main(quick: bool = False) -> list[tuple[str, str, str]]:
    home = Path(tempfile.mkdtemp(prefix="sc-bench-"))
    os.environ["STAGECREW_HOME"] = str(home / "state")
    os.environ["STAGECREW_CONFIG_DIR"] = str(home / "config")
    from stagecrew.orchestrator import runtime
    from stagecrew.testing.scripted_llm import ScriptedLLM

    rows: list[tuple[str, str, str]] = []
    crew = [sys.executable, "-m", "stagecrew.cli.main"]
    crew_bin = Path(sys.executable).parent / "crew"
    help_cmd = [str(crew_bin), "--help"] if crew_bin.exists() else [*crew, "--help"]
    helps = timed_cmd(help_cmd, 3 if quick else 7)
    rows.append(
        ("crew --help (wall, median)", f"{statistics.median(helps) * 1000:.0f} ms", "≤ 300 ms")
    )

    t0 = time.perf_counter()
    runtime.connect()
    cold = time.perf_counter() - t0
    try:
        time.sleep(3)  # let the pool and the gateway finish warming
        attaches = []
        for _ in range(20):
            t0 = time.perf_counter()
            runtime.connect()
            attaches.append(time.perf_counter() - t0)
        rows.append(
            (
                "attach to running head (median)",
                f"{statistics.median(attaches) * 1000:.1f} ms",
                "≤ 200 ms",
            )
        )
        rows.append(("cold start: ray head + supervisor", f"{cold:.1f} s", "(once per machine)"))
        ray_attach = timed_cmd(
            [
                sys.executable,
                "-c",
                "import ray; ray.init(address="
                f"'{runtime.read_record().gcs_address}', log_to_driver=False)",
            ],
            1 if quick else 3,
        )
        rows.append(
            (
                "  vs python + import ray + ray.init(address)",
                f"{statistics.median(ray_attach) * 1000:.0f} ms",
                "(what the control channel avoids)",
            )
        )

        repo = home / "repo"
        repo.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        firsts = []
        with ScriptedLLM([{"text": "hi", "repeat": "forever"}]) as llm:
            for _ in range(2 if quick else 5):
                time.sleep(1.5)  # the pool refills between runs, as between a person's commands
                n = len(llm.requests)
                t0 = time.time()
                subprocess.run(
                    [
                        str(crew_bin) if crew_bin.exists() else sys.executable,
                        *([] if crew_bin.exists() else ["-m", "stagecrew.cli.main"]),
                        "run",
                        "hi",
                        "--model",
                        "openai/s",
                        "--api-base",
                        llm.base_url,
                    ],
                    cwd=repo,
                    capture_output=True,
                    check=True,
                )
                firsts.append(llm.requests[n].ts - t0)
        rows.append(
            (
                "crew run → first model request, warm (median)",
                f"{statistics.median(firsts) * 1000:.0f} ms",
                "≤ 1000 ms",
            )
        )

        import ray

        record = runtime.read_record()
        ray.init(
            address=record.gcs_address,
            namespace="stagecrew",
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
        client = record.client()
        n = 200 if quick else 1000
        ctl = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.call("ping")
            ctl.append(time.perf_counter() - t0)
        sup = ray.get_actor("stagecrew-supervisor")
        via_ray = []
        for _ in range(n):
            t0 = time.perf_counter()
            ray.get(sup.ping.remote())
            via_ray.append(time.perf_counter() - t0)

        @ray.remote(num_cpus=0)
        class Raw:
            def ping(self) -> int:
                return 1

        raw = Raw.remote()
        ray.get(raw.ping.remote())
        raw_t = []
        for _ in range(n):
            t0 = time.perf_counter()
            ray.get(raw.ping.remote())
            raw_t.append(time.perf_counter() - t0)
        for label, vals in (
            ("supervisor round trip, control channel", ctl),
            ("supervisor round trip, Ray call", via_ray),
            ("raw Ray actor call (baseline)", raw_t),
        ):
            rows.append(
                (
                    label,
                    f"p50 {pct(vals, 0.5) * 1000:.2f} ms / p99 {pct(vals, 0.99) * 1000:.2f} ms",
                    "p50 ≤ 2 ms",
                )
            )
        ray.kill(raw)
        ray.shutdown()
    finally:
        runtime.down()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'value':<34} goal")
    print("-" * (width + 50))
    for label, value, goal in rows:
        print(f"{label.ljust(width)}  {value:<34} {goal}")
    return rows


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
