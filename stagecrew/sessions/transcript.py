"""A session's transcript, rebuilt from its event log alone.

``build_transcript`` turns the envelopes of ``events.jsonl`` into ``Entry`` items in log order:
the person's prompts, the assistant's text, each tool call folded into one item (name, short
arguments, ok or error, duration, and its output for exports), and the events a person should
see beside them (notices, hooks, services, checkpoints, judge verdicts, Max Mode candidates,
failures). Streaming deltas, heartbeats and usage are left out: the assistant's whole turn is
in ``assistant_message``, and the numbers are in the session's summary.

Steps are counted across the whole session, over the primary agent's turns only (a resumed
run goes on counting where the last one stopped), so a number a person reads in ``crew show``
is the number ``crew fork --at`` takes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from stagecrew.messages import (
    ActorFailed,
    ActorFinished,
    ActorRole,
    ActorStarted,
    AssistantMessage,
    Envelope,
    ModelDelta,
    SessionFinished,
    SessionStarted,
    ToolFinished,
    ToolStarted,
    TurnFinished,
    UserInput,
)
from stagecrew.sessions.events import Level, describe, shorten, summarise_args
from stagecrew.sessions.origin import fork_origin

EntryKind = Literal["header", "prompt", "text", "tool", "event", "finish"]

INTERRUPTED = "no result (the run ended first)"


@dataclass
class ToolFold:
    """One tool call, start to result. ``ok`` is None when no result was ever logged."""

    call_id: str
    tool: str
    arguments: str
    ok: bool | None = None
    duration_ms: float = 0.0
    content: str = ""

    @property
    def summary(self) -> str:
        return summarise_args(self.tool, self.arguments, 70)

    @property
    def outcome(self) -> str:
        """``ok · 12 lines`` / ``error: <first line>`` / the interrupted note."""
        if self.ok is None:
            return INTERRUPTED
        if not self.ok:
            first = self.content.strip().splitlines()[0] if self.content.strip() else "error"
            return f"error: {shorten(first, 100)}"
        lines = self.content.count("\n") + 1 if self.content else 0
        return f"ok · {lines} line{'s' if lines != 1 else ''}"


@dataclass
class Entry:
    """One item of a transcript. ``actor`` is empty for the primary agent, else a label such as
    ``subagent s-sa-1a2b3c``; ``step`` is the primary's step the item belongs to."""

    kind: EntryKind
    ts: float
    seq: int
    text: str = ""
    level: Level = "info"
    step: int | None = None
    actor: str = ""
    tool: ToolFold | None = None


@dataclass
class Transcript:
    session: str
    entries: list[Entry] = field(default_factory=list)
    steps: int = 0


class StepCounter:
    """Numbers the primary agent's turns across a whole log (resumed runs go on counting): the
    one definition of "step" for ``crew show``, ``crew sessions`` and ``crew fork --at``."""

    def __init__(self) -> None:
        self.primaries: set[str] = set()
        self.steps = 0

    def feed(self, env: Envelope) -> int | None:
        """The step number when ``env`` is a primary turn, else None."""
        body = env.body
        if isinstance(body, ActorStarted) and body.role == ActorRole.PRIMARY:
            self.primaries.add(body.actor_id)
        elif isinstance(body, AssistantMessage) and body.actor_id in self.primaries:
            self.steps += 1
            return self.steps
        return None


def clock(ts: float) -> str:
    """A local wall-clock time for people: ``2025-06-01 14:03:07``."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


class _Builder:
    """The state one pass over a log needs: who is primary, which step, which calls are open."""

    def __init__(self, session: str) -> None:
        self.out = Transcript(session=session)
        self.counter = StepCounter()
        self.primaries = self.counter.primaries
        self.labels: dict[str, str] = {}
        self.call_steps: dict[str, int] = {}
        self.open_calls: dict[str, tuple[ToolFold, str, int | None]] = {}
        self.partial: dict[str, str] = {}
        self.runs = 0
        self.forked = False  # the next run is a fork's first (see ``sessions/fork.py``)
        self.last: Envelope | None = None

    def label(self, actor_id: str | None) -> str:
        if actor_id is None or actor_id in self.primaries:
            return ""
        return self.labels.get(actor_id, actor_id)

    def add(
        self,
        env: Envelope,
        kind: EntryKind,
        text: str = "",
        *,
        level: Level = "info",
        step: int | None = None,
        actor: str = "",
        tool: ToolFold | None = None,
    ) -> None:
        self.out.entries.append(Entry(kind, env.ts, env.seq, text, level, step, actor, tool))

    def feed(self, env: Envelope) -> None:
        body = env.body
        step = self.counter.feed(env)
        if isinstance(body, ModelDelta):
            self.partial[body.actor_id] = self.partial.get(body.actor_id, "") + body.text
        elif isinstance(body, SessionStarted):
            self._started(env, body)
        elif isinstance(body, UserInput):
            self.add(env, "prompt", body.text)
        elif isinstance(body, ActorStarted):
            self._actor_started(env, body)
        elif isinstance(body, AssistantMessage):
            self._assistant(env, body, step)
        elif isinstance(body, ToolStarted):
            fold = ToolFold(body.call_id, body.tool, body.arguments)
            self.open_calls[body.call_id] = (fold, body.actor_id, self.call_steps.get(body.call_id))
        elif isinstance(body, ToolFinished):
            self._tool_finished(env, body)
        elif isinstance(body, ActorFinished):
            self._close_actor(body.actor_id, env)
            if body.actor_id not in self.primaries:
                summary = f" · {shorten(body.summary, 100)}" if body.summary else ""
                level: Level = "dim" if body.stop_reason.success else "warning"
                text = f"↳ {self.label(body.actor_id)} finished: {body.stop_reason.value}{summary}"
                self.add(env, "event", text, level=level)
        elif isinstance(body, SessionFinished):
            self.close(env)
            self._finished(env, body)
        else:
            self.forked = self.forked or fork_origin(env) is not None
            if isinstance(body, ActorFailed | TurnFinished):
                self._close_actor(body.actor_id, env)
            line = describe(body)
            if line is not None:
                actor = self.label(getattr(body, "actor_id", None))
                self.add(env, "event", line.text, level=line.level, actor=actor)

    def _started(self, env: Envelope, body: SessionStarted) -> None:
        self.runs += 1
        what = f"{body.model} · agent {body.profile} · {clock(env.ts)}"
        if self.runs == 1:
            self.add(env, "header", f"session {env.session} · {what}")
        else:
            self.add(env, "header", f"{'forked' if self.forked else 'resumed'} · {what}")
        self.forked = False
        if body.prompt.strip():
            self.add(env, "prompt", body.prompt)
        if body.goal:
            self.add(env, "event", f"◎ goal: {body.goal}", level="info")

    def _actor_started(self, env: Envelope, body: ActorStarted) -> None:
        if body.role == ActorRole.PRIMARY:
            return
        self.labels[body.actor_id] = f"{body.role.value} {body.actor_id}"
        details = ", ".join(x for x in (body.profile, body.model) if x)
        text = f"↳ {body.role.value} {body.actor_id} started" + (f" ({details})" if details else "")
        self.add(env, "event", text, level="dim")

    def _assistant(self, env: Envelope, body: AssistantMessage, step: int | None) -> None:
        self.partial.pop(body.actor_id, None)
        if step is not None:
            self.out.steps = step
            for call in body.tool_calls:
                self.call_steps[call.id] = step
        if body.text.strip():
            self.add(env, "text", body.text.strip(), step=step, actor=self.label(body.actor_id))

    def _tool_finished(self, env: Envelope, body: ToolFinished) -> None:
        fold, actor_id, step = self.open_calls.pop(
            body.call_id, (ToolFold(body.call_id, body.tool, "{}"), body.actor_id, None)
        )
        if step is None:
            step = self.call_steps.get(body.call_id)
        fold.ok = not body.is_error
        fold.duration_ms = body.duration_ms
        fold.content = body.content
        level: Level = "error" if body.is_error else "info"
        self.add(env, "tool", step=step, actor=self.label(actor_id), tool=fold, level=level)

    def _close_actor(self, actor_id: str, env: Envelope) -> None:
        """A run that ended mid-stream or mid-call (``env`` is its ending): the text it was
        streaming and the calls it never saw the result of, said so."""
        partial = self.partial.pop(actor_id, "").strip()
        if partial:  # a turn that never completed has no step number: fork cannot stop in it
            self.add(env, "text", partial + " [cut off]", actor=self.label(actor_id))
        for call_id, (fold, owner, step) in list(self.open_calls.items()):
            if owner == actor_id:
                del self.open_calls[call_id]
                label = self.label(owner)
                self.add(env, "tool", step=step, actor=label, tool=fold, level="warning")

    def close(self, env: Envelope | None = None) -> None:
        """End every run still open (at the session's stop record, or the end of the log)."""
        env = env or self.last
        if env is None:
            return
        for actor_id in [*self.partial, *(owner for _, owner, _ in self.open_calls.values())]:
            self._close_actor(actor_id, env)

    def _finished(self, env: Envelope, body: SessionFinished) -> None:
        mark = "✓" if body.stop_reason.success else "✗"
        text = (
            f"{mark} {body.stop_reason.value} · {body.steps} steps · "
            f"{body.usage.total_tokens:,} tokens · ${body.usage.cost_usd:.4f} · "
            f"{body.duration_s:.1f} s"
        )
        self.add(env, "finish", text, level="ok" if body.stop_reason.success else "error")
        if body.error:
            self.add(env, "event", body.error, level="error")


def build_transcript(session: str, envelopes: Iterable[Envelope]) -> Transcript:
    """The transcript of ``session`` from its envelopes, oldest first."""
    builder = _Builder(session)
    for env in envelopes:
        builder.last = env
        builder.feed(env)
    builder.close()
    return builder.out
