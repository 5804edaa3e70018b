"""An exception as the one line a person reads (never a multi-line dump on the terminal)."""

from __future__ import annotations


def one_line(exc: BaseException, *, limit: int = 300, last: bool = False) -> str:
    """The first line of ``exc``'s message (``last``: its last line, where the cause is for
    exceptions re-raised across Ray, whose first line names the remote call), cut at
    ``limit``; the exception's type name when it has no message."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return (lines[-1] if last else lines[0])[:limit]
