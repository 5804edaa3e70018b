"""Tool processes die with the agent that started them.

Commands run in their own session (so a timeout can kill the whole group), which also cuts
them loose from their parent: if the agent's process is killed with ``kill -9`` they would
be re-parented to init and run on. On Linux the kernel can be asked to send the child a
signal when its parent dies (``PR_SET_PDEATHSIG``, kept across ``exec``).

``die_with_parent_argv(argv)`` is the way to ask: it prefixes ``setpriv --pdeathsig KILL``
(util-linux) where that exists. A ``preexec_fn`` doing the ``prctl`` itself (the fallback,
``die_with_parent()``) forces Python's slow ``fork`` path: in an agent's process (a Ray
worker of a few hundred MB) every command then costs about 30 ms more, against about 1 ms
for ``setpriv``'s exec. Grandchildren are not covered by the kernel (the setting is not
inherited across ``fork``); the supervisor's sweep by ``STAGECREW_ACTOR_ID`` finds those.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence

PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


# Resolved once, in the parent: the child after fork only calls the function pointer.
_PRCTL = _load_prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess``/``asyncio`` that makes the child get SIGKILL when
    this process dies; ``None`` where the platform has no such thing."""
    if _PRCTL is None:
        return None
    prctl = _PRCTL
    parent = os.getpid()

    def _preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return _preexec


_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def die_with_parent_argv(argv: Sequence[str]) -> tuple[list[str], Callable[[], None] | None]:
    """``argv`` and a ``preexec_fn`` such that the command gets SIGKILL when this process
    dies: ``setpriv --pdeathsig KILL -- argv`` and no preexec where setpriv exists, else the
    argv as is with ``die_with_parent()``."""
    if _SETPRIV is not None:
        return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv], None
    return list(argv), die_with_parent()
