"""Finding the processes an actor's tools started, to make sure none outlives the actor.

A tool's subprocesses live in their own sessions (so a timeout can kill a whole group), and if
the actor process dies by SIGKILL they are re-parented to init: the parent link is gone. The
link that survives is the environment: each actor exports ``STAGECREW_ACTOR_ID`` before it
runs, and every process its tools start inherits it.
"""

from __future__ import annotations

import contextlib
import os

ACTOR_ID_VAR = "STAGECREW_ACTOR_ID"


def actor_processes(actor_id: str) -> list[int]:
    """Pids on this node whose environment names ``actor_id`` (the actor's tool processes)."""
    import psutil

    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get(ACTOR_ID_VAR) == actor_id:
                found.append(proc.pid)
    return found


def kill_actor_processes(actor_id: str, grace_s: float = 0.5) -> list[int]:
    """SIGTERM then SIGKILL every process of the actor's tools; returns their pids."""
    import psutil

    procs = []
    for pid in actor_processes(actor_id):
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=1.0)
    return [p.pid for p in procs]
