"""Rewinding the conversation: where a point sits in a session's log, and which events still
make up the transcript once the person rewound it.

The log is append-only (it is the session's history, and other tools read it), so a rewind
does not cut it: it appends ``ConversationRewound(point, to_seq)``, and whoever rebuilds the
transcript from the log reads it through ``conversation_events``, which drops what the rewound
part said. Only what the transcript is made of is dropped (the person's words, the agent's
messages and tool results); everything else stays, so a resumed run still counts the earlier
runs (its actor id stays unique) and adopts their task tree.

A point's place in the log: a point before a tool call sits at that call's ``ToolStarted``
(the assistant message with the call and the results of the calls before it are in, its own
result is not: a resume sees it as interrupted, which is exactly what rewinding made it); a
point before a turn sits at that run's ``ActorStarted`` (the person's words that started the
turn are in, nothing the agent did with them is).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable

from stagecrew.messages import ActorStarted, ConversationRewound, Envelope, ToolStarted
from stagecrew.rewind.points import Point

# The events a transcript is rebuilt from (see ``actors.context.history_from_events``).
TRANSCRIPT_KINDS = frozenset(
    {"session_started", "user_input", "assistant_message", "tool_finished"}
)

_Chain = tuple[Envelope, "_Chain"] | None


def cut_seq(envelopes: Iterable[Envelope], point: Point) -> int | None:
    """The ``seq`` of the log event the conversation at ``point`` ends with, or None when the
    point has no place in this log (another session's, or taken outside an agent's loop, as
    Max Mode's point before applying its patch)."""
    if not point.actor:
        return None
    for env in envelopes:
        body = env.body
        if point.is_turn:
            if isinstance(body, ActorStarted) and body.actor_id == point.actor:
                return env.seq
        elif (
            isinstance(body, ToolStarted)
            and body.actor_id == point.actor
            and body.call_id == point.call_id
        ):
            return env.seq
    return None


class ConversationRewindError(ValueError):
    """The conversation cannot be rewound to that point; the message says why."""


# A session whose log ends with one of these is not being written to by a running agent.
_ENDED = frozenset({"session_finished", "conversation_rewound"})


def rewind_marker(envelopes: list[Envelope], point: Point) -> ConversationRewound:
    """The event to append to a session's log so its transcript ends at ``point``.

    Refused while the session runs (its agent keeps the transcript in memory, and the log
    has one writer then: the supervisor), and for a point with no place in this log."""
    if not envelopes:
        raise ConversationRewindError("the session's log is empty")
    if envelopes[-1].body.kind not in _ENDED:
        raise ConversationRewindError(
            f"session {envelopes[-1].session} is still running (or was not ended cleanly): "
            "crew cancel it first"
        )
    seq = cut_seq(envelopes, point)
    if seq is None:
        raise ConversationRewindError(
            f"point {point.id} has no place in this session's conversation "
            f"(taken {'by ' + point.tool if not point.actor else 'in another session'})"
        )
    return ConversationRewound(point=point.id, to_seq=seq)


def conversation_events(envelopes: Iterable[Envelope]) -> list[Envelope]:
    """The log as the transcript should read it: at every ``ConversationRewound`` the
    transcript goes back to what it was at ``to_seq`` — even to a part an earlier rewind left
    (so any point can be returned to). Events that are not transcript stay, in order."""
    others: list[Envelope] = []
    chain: _Chain = None
    seqs: list[int] = []
    chains: list[_Chain] = []  # chains[i]: the transcript right after event seqs[i]
    for env in envelopes:
        body = env.body
        if isinstance(body, ConversationRewound):
            i = bisect.bisect_right(seqs, body.to_seq) - 1
            chain = chains[i] if i >= 0 else None
            others.append(env)
        elif body.kind in TRANSCRIPT_KINDS:
            chain = (env, chain)
        else:
            others.append(env)
        if not seqs or env.seq > seqs[-1]:
            seqs.append(env.seq)
            chains.append(chain)
    transcript: list[Envelope] = []
    while chain is not None:
        transcript.append(chain[0])
        chain = chain[1]
    transcript.reverse()
    return list(heapq.merge(transcript, others, key=lambda e: e.seq))


__all__ = [
    "TRANSCRIPT_KINDS",
    "ConversationRewindError",
    "conversation_events",
    "cut_seq",
    "rewind_marker",
]
