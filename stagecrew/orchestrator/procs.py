"""Finding the processes an actor's tools started, to make sure none outlives the actor.

A tool's subprocesses live in their own sessions (so a timeout can kill a whole group), and if
the actor process dies by SIGKILL they are re-parented to init: the parent link is gone. The
link that survives is the environment: each actor exports ``STAGECREW_ACTOR_ID`` before it
runs, and every process its tools start inherits it. (The tools also ask the kernel to kill
their direct child when the actor dies — ``tools/shell.py`` — which covers the common case
before any sweep runs; the sweep here catches the grandchildren.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from stagecrew.orchestrator.names import HEAD_ID_VAR

ACTOR_ID_VAR = "STAGECREW_ACTOR_ID"


def actor_processes(actor_ids: Iterable[str] | str) -> list[int]:
    """Pids on this node whose environment names one of ``actor_ids``."""
    import psutil

    wanted = {actor_ids} if isinstance(actor_ids, str) else set(actor_ids)
    if not wanted:
        return []
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get(ACTOR_ID_VAR) in wanted:
                found.append(proc.pid)
    return found


def terminate(pids: Iterable[int], grace_s: float = 0.5) -> list[int]:
    """SIGTERM, then SIGKILL what is left after ``grace_s``; returns the pids signalled."""
    import psutil

    procs = []
    for pid in pids:
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


def kill_actor_processes(actor_ids: Iterable[str] | str, grace_s: float = 0.5) -> list[int]:
    """SIGTERM then SIGKILL every process of the actors' tools; returns their pids."""
    return terminate(actor_processes(actor_ids), grace_s)


def same_head_process(pid: int, head_id: str | None, started_before: float) -> bool:
    """Whether ``pid`` is still the process an event named: it carries this head's id and
    was started before the event (a recycled pid fails one or the other)."""
    import psutil

    if not head_id:
        return False
    try:
        proc = psutil.Process(pid)
        return (
            proc.create_time() <= started_before + 1.0
            and proc.environ().get(HEAD_ID_VAR) == head_id
            and proc.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.Error, OSError):
        return False
