"""Where a session came from, as its log records it.

A fork's log starts with a copy of its source's events (``sessions/fork.py``) followed by one
``Notice`` for people to read; its envelope's ``sender`` is ``crew-fork:<source>@<step>``, the
same fact for programs (the listing's ``forked_from``), so nothing has to parse the notice's
words and the message schema stays as it is.
"""

from __future__ import annotations

from stagecrew.messages import Envelope, Notice

FORK_SENDER = "crew-fork"


def fork_sender(source: str, step: int) -> str:
    """The ``sender`` of the notice that opens a fork of ``source`` after ``step``."""
    return f"{FORK_SENDER}:{source}@{step}"


def fork_origin(env: Envelope) -> str | None:
    """``source@step`` when ``env`` is the notice a fork wrote at the start of its own part."""
    prefix = FORK_SENDER + ":"
    if isinstance(env.body, Notice) and env.sender.startswith(prefix):
        return env.sender[len(prefix) :]
    return None
