"""The Ray head stagecrew runs on: up, on which control port, and is its record current.

Read without side effects: the head record is read only if it exists, the supervisor is
pinged on its control port (never started, never waited for: a dead head refuses at once on
loopback) and ray is not imported, so ``crew doctor`` stays fast and answers on a machine
where Ray itself is broken.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from stagecrew import __version__
from stagecrew.doctor.report import Check


def _age(ts: float) -> str:
    seconds = max(0.0, time.time() - ts)
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def head_check(state_home: Path, address: str | None) -> Check:
    """Is the local head up, on which control port, and is its record current? ``state_home``
    is where its record would be (``STAGECREW_HOME``; not created here)."""
    from stagecrew.orchestrator.runtime import head_alive, head_ray_up, read_record

    if address:
        return Check(
            "ray head", "skip", f"cluster address {address}: not checked (crew ps asks it)"
        )
    if not (state_home / "head.json").is_file():
        return Check("ray head", "ok", "none running: the first session starts one (about 10 s)")
    record = read_record()
    if record is None:
        return Check(
            "ray head",
            "warn",
            "the head record is unreadable",
            "crew down (removes it; the next session starts a new head)",
        )
    where = f"control port {record.control_host}:{record.control_port}, GCS {record.gcs_address}"
    if head_alive(record):
        if record.version != __version__:
            return Check(
                "ray head",
                "warn",
                f"running for {_age(record.started_at)} ({where}) but started by stagecrew "
                f"{record.version}; this is {__version__}",
                "crew down, then the next command starts a head of this version",
            )
        return Check("ray head", "ok", f"running for {_age(record.started_at)} ({where})")
    if head_ray_up(record):
        return Check(
            "ray head",
            "warn",
            f"Ray is up but the supervisor does not answer on its control port ({where})",
            "wait a few seconds (Ray restarts it), else crew down and run again",
        )
    if _pid_exists(record.pgid):
        return Check(
            "ray head",
            "warn",
            f"stale head record: process {record.pgid} exists but its ports do not answer "
            "(another network namespace, or hung)",
            "crew down (stops exactly that head's processes)",
        )
    return Check(
        "ray head",
        "warn",
        f"stale head record: the head started {_age(record.started_at)} ago is gone",
        "nothing needed (the next session replaces it); crew down removes it now",
    )
