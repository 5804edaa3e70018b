"""Recovery times under ``kill -9``, measured on a private local head.

Prints, per measure, the median and worst of ``--reps`` runs:

* gateway kill → the same session's next model request reaches the provider (the request is
  sent again to the node's standby replica; goal ≤ 3 s);
* supervisor kill → its control port answers again on the same endpoint (Ray restarts it;
  goal ≤ 5 s warm);
* supervisor kill → no process of the dead tree left (the tool's grandchild and the agent's
  host), and that moment relative to the port answering (goal ≤ 1 s after the restart; the
  restarted supervisor sweeps before it answers, so it is usually before).

Run: ``scripts/offline .venv/bin/python benchmarks/bench_recovery.py [--reps N]``
"""

from __future__ import annotations

import argparse
import os
import signal
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


def wait_for(predicate, timeout: float = 60.0, every: float = 0.005):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("condition not met")


def gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def gateways(head_id: str) -> list[object]:
    import psutil

    out = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if (
            cmd.startswith("ray::GatewayHost")
            and (proc.info["environ"] or {}).get("STAGECREW_HEAD_ID") == head_id
        ):
            out.append(proc)
    return out


def serving(head_id: str, port: int) -> object | None:
    import psutil

    for proc in gateways(head_id):
        try:
            if any(c.raddr and c.raddr.port == port for c in proc.net_connections("tcp")):
                return proc
        except psutil.Error:
            continue
    return None


def gateway_failover(repo: Path, head_id: str, reps: int) -> list[float]:
    from conftest import follow, start_session

    from stagecrew.testing.scripted_llm import ScriptedLLM

    times = []
    for _ in range(reps):
        wait_for(lambda: len(gateways(head_id)) >= 2, timeout=120, every=0.2)
        time.sleep(6.0)  # a restarted replica imports litellm: let it finish before the kill
        script = [{"text": "slow " * 200, "chunk_delay": 0.2}, {"text": "done"}]
        with ScriptedLLM(script) as llm:
            cfg = {"models": {"primary": {"model": "openai/m", "api_base": llm.base_url}}}
            client, sid = start_session(repo, "answer", {}, config_json=cfg)
            wait_for(lambda: llm.requests, timeout=60)
            victim = wait_for(lambda: serving(head_id, llm.port), timeout=10)
            victim.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
            t0 = time.monotonic()
            wait_for(lambda: len(llm.requests) >= 2, timeout=60)
            times.append(time.monotonic() - t0)
            events = follow(client, sid)
            assert events[-1].body.stop_reason == "done", events[-1].body
    return times


def supervisor_restart(repo: Path, reps: int) -> tuple[list[float], list[float], list[float]]:
    from conftest import start_session

    from stagecrew.orchestrator import runtime
    from stagecrew.testing.scripted_llm import ScriptedLLM

    port_s, orphan_s, after_port = [], [], []
    for i in range(reps):
        pidfile = repo.parent / f"pids-{i}"
        command = f"sleep 300 & echo $! > {pidfile}; wait"
        turn = {"tool_calls": [{"name": "bash", "arguments": {"command": command}}]}
        with ScriptedLLM([turn]) as llm:
            cfg = {"models": {"primary": {"model": "openai/m", "api_base": llm.base_url}}}
            client, sid = start_session(repo, "run it", {}, config_json=cfg)
            wait_for(lambda f=pidfile: f.exists() and f.read_text().strip(), timeout=60)
            tool_pid = int(pidfile.read_text())
            host_pid = next(a["pid"] for a in client.ps(sid)["actors"] if a["role"] == "primary")
            old_pid = client.ping()["pid"]
            record = runtime.read_record()
            assert record is not None
            os.kill(old_pid, signal.SIGKILL)
            t0 = time.monotonic()

            def answers(record: object = record, old_pid: int = old_pid) -> bool:
                try:
                    return record.client().ping(timeout=0.2)["pid"] != old_pid  # type: ignore[attr-defined]
                except Exception:
                    return False

            wait_for(answers, timeout=60, every=0.01)
            t_port = time.monotonic() - t0
            wait_for(lambda t=tool_pid, h=host_pid: gone(t) and gone(h), timeout=60, every=0.005)
            t_clean = time.monotonic() - t0
            port_s.append(t_port)
            orphan_s.append(t_clean)
            after_port.append(t_clean - t_port)
            time.sleep(2.0)  # let the pool refill before the next kill
    return port_s, orphan_s, after_port


def row(name: str, values: list[float], goal: str) -> str:
    med, worst = statistics.median(values), max(values)
    return f"| {name} | {med:.2f} s | {worst:.2f} s | {goal} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    os.environ["STAGECREW_HOME"] = str(home / "state")
    os.environ["STAGECREW_CONFIG_DIR"] = str(home / "config")
    repo = home / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)

    from stagecrew.orchestrator import runtime

    runtime.connect()
    record = runtime.read_record()
    assert record is not None
    try:
        failover = gateway_failover(repo, record.temp_dir, args.reps)
        port_s, orphan_s, after_port = supervisor_restart(repo, args.reps)
    finally:
        runtime.down()
    print(f"\nrecovery under kill -9 ({args.reps} runs each)\n")
    print("| measure | median | worst | goal |")
    print("|---|---|---|---|")
    print(row("gateway kill → next model request of the same session", failover, "≤ 3 s"))
    print(row("supervisor kill → control port answers (same endpoint)", port_s, "≤ 5 s"))
    print(row("supervisor kill → no process of the dead tree left", orphan_s, "—"))
    print(row("…of which after the port answered (negative: before)", after_port, "≤ 1 s"))


if __name__ == "__main__":
    main()
