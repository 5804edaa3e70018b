"""Past sessions, from their event logs alone: list, summarise, render, export, fork.

A plain library under the CLI's ``crew sessions``, ``show``, ``replay``, ``export`` and
``fork`` (``cli/sessions_cmd.py``). Not to be confused with ``orchestrator/sessions.py``, the
supervisor's hub of the sessions that are open right now: this package only reads what they
left in ``.stagecrew/state/sessions/<id>/events.jsonl`` (and writes a fork's first lines).

* ``catalog``     summaries, the listing, id prefixes
* ``transcript``  the log as entries (prompts, text, folded tool calls, events), steps
* ``events``      the one line each side event gets (shared with the live view)
* ``text``        entries as terminal lines; ``export``: Markdown and JSON
* ``fork``        cut a log at a step and seed a new session with it; ``origin``: the
                  record of where a fork came from

No ray, no litellm: everything here runs in the CLI process.
"""

from __future__ import annotations

from stagecrew.sessions.catalog import (
    SessionLookupError,
    SessionSummary,
    list_sessions,
    load_summary,
    resolve_session,
    session_ids,
)
from stagecrew.sessions.transcript import Entry, Transcript, build_transcript

__all__ = [
    "Entry",
    "SessionLookupError",
    "SessionSummary",
    "Transcript",
    "build_transcript",
    "list_sessions",
    "load_summary",
    "resolve_session",
    "session_ids",
]
