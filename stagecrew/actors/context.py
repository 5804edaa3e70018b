"""The agent's context manager: how full the window is, checkpoints, rebuilds, resume.

The memory library (``stagecrew.memory``) knows *how* to count tokens, merge a checkpoint and
rebuild a context under a budget; this module decides *when*, for one running agent, and does
the I/O around it. Each step, before the model call, ``ContextManager.prepare``:

* counts the request (messages plus tool schemas, which are sent every time) with an estimate
  that is calibrated by the ``prompt_tokens`` the provider reports for every answer;
* at the checkpoint fractions of the usable window (40/60/80 %) hands the messages since the
  last checkpoint to the checkpoint writer, fire-and-forget: the writer is another actor with
  its own (cheap) model, and nothing it does or fails to do may slow or stop this agent;
* near the limit (90 %) rebuilds the context from memory (``memory.context.rebuild_context``)
  and archives everything that left it into the FTS5 index, so the ``memory`` tool can find
  it again. The rebuilt list never exceeds its budget as this counter counts it.

The system prompt the model sees is composed once per run — the profile's prompt, then the
person's instruction files (AGENTS.md, CLAUDE.md, their imports and rules:
``memory/instructions.py``), project memory and global memory — and then kept byte for byte,
through rebuilds too, so providers' prompt caches keep hitting. Layers already in it are not
repeated in a rebuilt context unless they changed on disk since. Composing it is the start of a
run: the primary agent then reports each problem with an instruction file as a ``Notice`` and,
when ``memory.cc_index`` is on, mirrors Claude Code's own project memory into the index.
Instruction files in subdirectories come later, appended to the result of the first file tool
call below them (``nested_instructions``).

``SessionHistory`` / ``history_from_events`` turn a session's event log back into a transcript
(``crew resume``), and ``resume_context`` runs the same rebuild over it.

Nothing here imports ray or litellm: the CLI uses the resume half, the agent host the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from stagecrew.memory.context import (
    INSTRUCTIONS_HINT,
    ContextBudgetError,
    ContextInputs,
    RebuildConfig,
    compact_markdown,
    fit_markdown,
    rebuild_context,
)
from stagecrew.memory.index import (
    CLAUDE_KIND,
    Hit,
    MemoryIndex,
    SyncStats,
    claude_memory_sources,
)
from stagecrew.memory.instructions import Instructions, InstructionTracker, load_instructions
from stagecrew.memory.layers import Checkpoint, MemoryPaths, read_text, unquote
from stagecrew.memory.messages import Message, content_text
from stagecrew.memory.tasks import TaskLedger
from stagecrew.memory.tokens import (
    CalibratedCounter,
    ContextWindow,
    EstimateCounter,
    should_checkpoint,
    should_rebuild,
)
from stagecrew.messages import (
    ActorRole,
    ActorStarted,
    AssistantMessage,
    CheckpointRequest,
    Envelope,
    Notice,
    SessionStarted,
    ToolFinished,
    Usage,
    UserInput,
)
from stagecrew.rewind.conversation import conversation_events

if TYPE_CHECKING:
    from stagecrew.actors.spec import AgentSpec, EventSink

# Tool outputs travel to the checkpoint writer cut to this: the writer shows the model 1,500
# characters of each anyway, and literals are taken from what was said and called, not outputs.
CHECKPOINT_OUTPUT_CHARS = 4_000
# How long a rebuild waits for a checkpoint already being written (a fresher checkpoint is
# worth a few seconds once per rebuild), and how long the end of a run waits for the last one.
REBUILD_WAIT_S = 15.0
DRAIN_WAIT_S = 30.0
ARCHIVE_LIMIT = 8

_INTERRUPTED = "[interrupted: no result]"
INSTRUCTIONS_TITLE = (
    "Project instructions (AGENTS.md, CLAUDE.md, rules and imports; each block names its file): "
    "the person's standing directives"
)


class CheckpointPort(Protocol):
    """The checkpoint writer as the agent sees it (an actor, or the plain class in-process).

    ``request`` returns as soon as the work is queued: one update runs at a time, and a newer
    request joins the one still waiting. ``save_memory`` is the single writer of MEMORY.md.
    """

    async def request(self, reason: str, new_messages: list[Message], person_goal: str) -> None:
        """Queue a checkpoint update with the messages since the last one."""
        ...

    async def save_memory(self, section: str, text: str) -> str:
        """Add an entry to project memory; raises ``ValueError`` for bad input."""
        ...

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no update is running or queued; False on timeout."""
        ...


@dataclass
class RebuildReport:
    """What a rebuild did, for the ``Notice`` a person sees and for tests and benchmarks."""

    reason: str
    before: int
    after: int
    budget: int
    archived_messages: int = 0
    archived_chunks: int = 0
    kept_messages: int = 0
    archive_hits: int = 0

    def describe(self, window: int) -> str:
        return (
            f"context rebuilt from memory ({self.reason}): {self.before:,} → {self.after:,} "
            f"tokens (budget {self.budget:,} of a {window:,}-token window); "
            f"{self.archived_messages} messages archived and searchable with the memory tool"
        )


def reserved_output_tokens(window_tokens: int, max_tokens: int | None) -> int:
    """Room kept free for the reply: the configured ``max_tokens`` when it is sensible, else
    8k or a quarter of a small window."""
    if max_tokens is not None and 0 < max_tokens <= window_tokens // 2:
        return max_tokens
    return min(8192, window_tokens // 4)


def _truncate_outputs(messages: Iterable[Message], limit: int) -> list[Message]:
    out: list[Message] = []
    for m in messages:
        text = m.get("content")
        if m.get("role") == "tool" and isinstance(text, str) and len(text) > limit:
            m = {**m, "content": text[:limit] + f"\n[… {len(text) - limit:,} more chars]"}
        out.append(m)
    return out


@dataclass
class _SystemPrompt:
    """The composed system prompt and the layer texts in it (to spot later changes)."""

    text: str
    instructions: str = ""
    project_memory: str = ""
    global_memory: str = ""


class ContextManager:
    """Per-agent context policy; see the module docstring.

    ``index`` is a callable so the SQLite index opens only when first needed (an agent that
    never nears its window never creates ``memory.db``), and so the agent and its ``memory``
    tool share one open index.
    """

    def __init__(
        self,
        *,
        session: str,
        actor_id: str,
        base_system_prompt: str,
        goal: str,
        tool_schemas: list[dict[str, Any]],
        paths: MemoryPaths,
        index: Callable[[], MemoryIndex],
        window: ContextWindow,
        primary: bool = True,
        checkpoint: CheckpointPort | None = None,
        events: EventSink | None = None,
        counter: CalibratedCounter | None = None,
        config: RebuildConfig | None = None,
        rebuild_wait_s: float = REBUILD_WAIT_S,
        home: Path | None = None,
        cc_index: bool = False,
    ) -> None:
        self.session = session
        self.actor_id = actor_id
        self.base_system_prompt = base_system_prompt
        self.goal = goal
        self.tool_schemas = tool_schemas
        self.paths = paths
        self._index = index
        self.window = window
        self.primary = primary
        self.checkpoint = checkpoint
        self.events = events
        self.counter = counter or CalibratedCounter(EstimateCounter())
        self.config = config or RebuildConfig()
        self.rebuild_wait_s = rebuild_wait_s
        self.home = home
        self.cc_index = cc_index
        # Called before each rebuild (the agent runs its PreCompact hooks there).
        self.before_rebuild: Callable[[], Awaitable[None]] | None = None
        # What the run read of the person's instruction files (None until composed), and the
        # tracker that adds the ones below the project root as the agent reaches them.
        self.instructions: Instructions | None = None
        self._tracker: InstructionTracker | None = None
        base = self.counter.base
        self._tool_base = base.count_tools(tool_schemas) if isinstance(base, EstimateCounter) else 0
        self._system: _SystemPrompt | None = None
        self._cp_level = 0.0
        self._cp_index = 1  # messages before this went to the checkpoint writer already
        self._cp_requested = False
        self._background: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        self._rebuild_failed_at: int | None = None
        self.last_used = 0
        self.rebuilds: list[RebuildReport] = []
        self.checkpoint_requests: list[str] = []

    @classmethod
    def from_spec(
        cls,
        spec: AgentSpec,
        tool_schemas: list[dict[str, Any]],
        *,
        paths: MemoryPaths,
        index: Callable[[], MemoryIndex],
        checkpoint: CheckpointPort | None = None,
        events: EventSink | None = None,
    ) -> ContextManager:
        reserved = reserved_output_tokens(spec.context_window, spec.model.max_tokens)
        primary = spec.role == ActorRole.PRIMARY
        return cls(
            session=spec.session,
            actor_id=spec.actor_id,
            base_system_prompt=spec.system_prompt,
            # A subagent's goal is its own task (its spec inherits the person's goal field).
            goal=(spec.goal or spec.prompt) if primary else spec.prompt,
            tool_schemas=tool_schemas,
            paths=paths,
            index=index,
            window=ContextWindow(spec.context_window, reserved_output_tokens=reserved),
            primary=primary,
            checkpoint=checkpoint,
            events=events,
            cc_index=primary and spec.cc_index,
        )

    # -- sizes -------------------------------------------------------------------------------

    @property
    def tool_tokens(self) -> int:
        return math.ceil(self._tool_base * self.counter.ratio)

    def tokens(self, messages: list[Message]) -> int:
        """The request's size as this agent estimates it: messages plus tool schemas."""
        return self.counter.count_messages(messages) + self.tool_tokens

    @property
    def message_budget(self) -> int:
        """What a rebuilt message list may use: the rebuild target minus the tool schemas."""
        return self.window.rebuild_budget - self.tool_tokens

    def observe(self, sent: list[Message], usage: Usage) -> None:
        """Calibrate the estimate with what the provider counted for the request just sent."""
        if usage.prompt_tokens > 0:
            self.counter.observe_request(sent, usage.prompt_tokens, self.tool_schemas)

    # -- the system prompt -------------------------------------------------------------------

    def system_prompt(self) -> str:
        """The profile's prompt plus instructions and memory, composed once per run (the
        first call is the run's start; see the module docstring)."""
        if self._system is None:
            self._system = self._compose()
            self._start_run()
        return self._system.text

    def _start_run(self) -> None:
        """Once the run's prompt is composed, the primary agent reports each problem with an
        instruction file (once per run) and mirrors Claude Code's project memory into the
        index; switched off, what an earlier run indexed leaves an existing index."""
        if not self.primary:
            return
        self._instruction_notices(self.instructions.notices if self.instructions else [])
        if self.cc_index or self.paths.index_db.is_file():
            self.index_claude_memory()

    def _instruction_notices(self, notices: list[str]) -> None:
        if self.primary:
            for notice in notices:
                self._notice("warning", f"instructions: {notice}")

    def load_instructions(self) -> Instructions:
        """The person's instruction files as they are on disk now."""
        return load_instructions(
            self.paths.project_root, home=self.home, config_dir=self.paths.user_config_dir
        )

    def nested_instructions(self, tool: str, arguments: dict[str, Any]) -> str:
        """After a file tool succeeded: the instruction files below the project root that now
        apply, labelled, to append to its result (``""`` when none are new). Each comes once
        per run; problems with them are notices, as at the start."""
        if self._tracker is None:
            loaded = self.instructions or Instructions()
            self._tracker = InstructionTracker(loaded, self.paths.project_root, home=self.home)
        try:
            extra = self._tracker.for_tool_call(tool, arguments)
        except Exception as exc:  # a person's files never break a tool result
            self._instruction_notices([f"{type(exc).__name__}: {exc}"])
            return ""
        self._instruction_notices(self._tracker.notices)
        self._tracker.notices.clear()
        return extra

    def index_claude_memory(self) -> SyncStats | None:
        """Mirror Claude Code's memory files of this project into the index (scope
        ``claude``), or with ``cc_index`` off drop what is there; a failure is a warning,
        never the run's end."""
        try:
            sources = (
                claude_memory_sources(self.paths.project_root, home=self.home)
                if self.cc_index
                else []
            )
            return self._index().sync_kind(CLAUDE_KIND, sources)
        except Exception as exc:
            self._notice("warning", f"could not index Claude Code's project memory: {exc}")
            return None

    def _compose(self) -> _SystemPrompt:
        """Each layer is fitted under the rebuild's cap for it, so the (never trimmed) system
        prompt cannot crowd out the conversation however big the files grow."""
        budget = max(self.message_budget, 0)
        count = self.counter.count_text
        cfg = self.config
        self.instructions = self.load_instructions()
        instructions = fit_markdown(
            self.instructions.text,
            int(budget * cfg.instructions),
            count,
            hint=INSTRUCTIONS_HINT,
        )
        memory = fit_markdown(
            compact_markdown(read_text(self.paths.project_memory)),
            int(budget * cfg.project_memory),
            count,
            hint="MEMORY.md",
        )
        global_memory = fit_markdown(
            compact_markdown(read_text(self.paths.global_memory)),
            int(budget * cfg.global_memory),
            count,
            hint="global MEMORY.md",
        )
        blocks = []
        for tag, title, text in (
            ("project_instructions", INSTRUCTIONS_TITLE, instructions),
            (
                "project_memory",
                "Project memory (.stagecrew/memory/MEMORY.md; add to it with the memory tool)",
                memory,
            ),
            ("global_memory", "Global memory (read-only)", global_memory),
        ):
            if text.strip():
                blocks.append(f"<{tag}>\n# {title}\n\n{text.strip()}\n</{tag}>")
        text = "\n\n".join([self.base_system_prompt, *blocks])
        return _SystemPrompt(text, instructions, memory, global_memory)

    def initial_messages(self, prompt: str) -> list[Message]:
        return [
            {"role": "system", "content": self.system_prompt()},
            {"role": "user", "content": prompt},
        ]

    def adopt(self, messages: list[Message]) -> list[Message]:
        """A transcript handed in (next turn, resume): put this run's system prompt first.

        A leading system message that is the profile's prompt (as the supervisor writes it)
        or an earlier composition of it is replaced; a transcript without one gets one.
        """
        out = list(messages)
        prompt = self.system_prompt()
        if out and out[0].get("role") == "system":
            text = content_text(out[0].get("content"))
            if text.startswith(self.base_system_prompt) or not text.strip():
                out[0] = {"role": "system", "content": prompt}
        else:
            out.insert(0, {"role": "system", "content": prompt})
        # What came before was the writer's business in earlier runs; the person's newest
        # message (if that is what ends the list) is news for the next checkpoint.
        last_is_user = len(out) > 1 and out[-1].get("role") == "user"
        self._cp_index = len(out) - 1 if last_is_user else len(out)
        return out

    # -- each step ---------------------------------------------------------------------------

    async def prepare(self, messages: list[Message]) -> list[Message]:
        """Before a model call: checkpoint or rebuild as the window fills; returns the list to
        send (the same list, or a rebuilt one that replaces it)."""
        used = self.tokens(messages)
        self.last_used = used
        if should_rebuild(used, self.window) and self._rebuild_failed_at != len(messages):
            frac = self.window.fraction(used)
            rebuilt = await self._rebuild_async(messages, f"{frac:.0%} of the usable window")
            if rebuilt is not None:
                self.last_used = self.tokens(rebuilt)
                return rebuilt
            return messages
        level = should_checkpoint(used, self.window, self._cp_level)
        if level is not None:
            self._cp_level = level
            self.request_checkpoint(f"{level:.0%} of the context window", messages)
        return messages

    def request_checkpoint(self, reason: str, messages: list[Message]) -> None:
        """Hand the messages since the last request to the writer, without waiting for it."""
        if self.checkpoint is None or not self.primary:
            return
        new = _truncate_outputs(messages[self._cp_index :], CHECKPOINT_OUTPUT_CHARS)
        self._cp_index = len(messages)
        if not new:
            return
        self.checkpoint_requests.append(reason)
        self._cp_requested = True
        if self.events is not None:  # logged, so a person (and a test) sees when and why
            self.events.emit(
                CheckpointRequest(
                    reason=reason,
                    used_tokens=self.last_used,
                    window_tokens=self.window.window_tokens,
                )
            )
        task = asyncio.get_running_loop().create_task(self._send_checkpoint(reason, new))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send_checkpoint(self, reason: str, new: list[Message]) -> None:
        """One request at a time, in order: batches are increments, and two calls in flight
        to an actor may arrive in either order (the writer returns as soon as it queued the
        work, so waiting for the previous send costs a round trip, not a model call)."""
        assert self.checkpoint is not None
        async with self._send_lock:
            try:
                await self.checkpoint.request(reason, new, self.goal)
            except Exception as exc:  # the writer's troubles never reach the agent
                self._notice("warning", f"could not reach the checkpoint writer: {exc}")

    async def drain(self, timeout_s: float = DRAIN_WAIT_S) -> bool:
        """At the end of a run: let the last checkpoint land before the session closes (the
        supervisor stops the writer with the session). Bounded; True if it did."""
        if not self._cp_requested or self.checkpoint is None:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                if self._background:
                    await asyncio.gather(*self._background, return_exceptions=True)
                return await self.checkpoint.wait_idle(timeout_s)
        except (TimeoutError, Exception):
            return False

    # -- rebuilding --------------------------------------------------------------------------

    async def _rebuild_async(self, messages: list[Message], reason: str) -> list[Message] | None:
        if self.before_rebuild is not None:  # Claude Code's PreCompact hooks
            await self.before_rebuild()
        if self._cp_requested and self.checkpoint is not None and self.primary:
            with contextlib.suppress(Exception):
                if self._background:
                    await asyncio.wait(list(self._background), timeout=self.rebuild_wait_s)
                await self.checkpoint.wait_idle(self.rebuild_wait_s)
        try:
            rebuilt, report = await asyncio.to_thread(self.rebuild, messages, reason)
        except Exception as exc:  # budget too small, or memory unreadable: go on as is
            self._rebuild_failed_at = len(messages)
            why = "impossible" if isinstance(exc, ContextBudgetError) else "failed"
            self._notice("warning", f"context rebuild {why}: {type(exc).__name__}: {exc}")
            return None
        # What was said since the last checkpoint is in the tail or the archive; hand it to
        # the writer too, so the next rebuild's checkpoint covers it.
        self.request_checkpoint("context rebuilt", messages)
        self._cp_index = len(rebuilt)
        # Thresholds the rebuilt context already sits above were just covered by that request.
        frac = self.window.fraction(self.tokens(rebuilt))
        self._cp_level = max((t for t in self.window.checkpoint_thresholds if t <= frac), default=0)
        self._notice("info", report.describe(self.window.window_tokens))
        return rebuilt

    def rebuild(self, messages: list[Message], reason: str) -> tuple[list[Message], RebuildReport]:
        """Rebuild ``messages`` from memory under the budget and archive what leaves (blocking
        I/O: the agent runs it in a thread)."""
        before = self.tokens(messages)
        system = self.system_prompt()
        if messages and messages[0].get("role") == "system":
            system = content_text(messages[0].get("content"))
        inputs = self._gather(messages, system)
        budget = self.message_budget
        if budget <= 0:
            raise ContextBudgetError(
                f"the tool schemas alone ({self.tool_tokens} tokens) exceed the rebuild budget"
            )
        result = rebuild_context(inputs, budget, self.counter, self.config)
        chunks = 0
        if result.dropped:
            chunks = self._index().archive(self.session, result.dropped)
        report = RebuildReport(
            reason=reason,
            before=before,
            after=result.tokens + self.tool_tokens,
            budget=budget + self.tool_tokens,
            archived_messages=len(result.dropped),
            archived_chunks=chunks,
            kept_messages=len(result.messages),
            archive_hits=len(inputs.archive_hits),
        )
        self.rebuilds.append(report)
        return result.messages, report

    def _gather(self, messages: list[Message], system: str) -> ContextInputs:
        """Read the layers for a rebuild; skip what the system prompt already carries."""
        paths = self.paths
        composed = self._system if self._system and self._system.text == system else None
        has_session = paths.session_id is not None
        checkpoint_text = read_text(paths.checkpoint) if has_session and self.primary else ""
        notes = read_text(paths.notes) if has_session and self.primary else ""
        ledger_text, current_title = "", ""
        if has_session and paths.ledger.is_file():
            ledger = TaskLedger(paths.tasks_dir)
            ledger_text = ledger.render_ledger(collapse_done=True)
            current = ledger.current()
            current_title = current.title if current else ""
        # The person's goal must survive every rebuild, checkpoint or not: Active intent is the
        # one section the rebuild never cuts.
        checkpoint = Checkpoint.parse(checkpoint_text)
        if self.goal.strip() and not checkpoint.active_intent.strip():
            checkpoint.set_active_intent(self.goal)
            checkpoint_text = checkpoint.render()
        project_memory = compact_markdown(read_text(paths.project_memory))
        global_memory = compact_markdown(read_text(paths.global_memory))
        if composed is not None:
            if project_memory == composed.project_memory:
                project_memory = ""
            if global_memory == composed.global_memory:
                global_memory = ""
            instructions = ""
        else:
            instructions = self.load_instructions().text
        query = " ".join(
            part
            for part in (
                unquote(checkpoint.get("Active intent")),
                current_title,
                checkpoint.get("Next action"),
            )
            if part.strip()
        )
        return ContextInputs(
            system_prompt=system,
            instructions=instructions,
            task_ledger=ledger_text,
            checkpoint=checkpoint_text,
            project_memory=project_memory,
            global_memory=global_memory,
            notes=notes,
            archive_hits=self._search(query) if query.strip() else [],
            messages=messages,
        )

    def _search(self, query: str) -> list[Hit]:
        """Archive and past-session hits for the current task; files already in the context
        (this session's checkpoint and notes, both memories) are left out."""
        paths = self.paths
        index = self._index()
        index.sync_files(paths.sources())
        skip = {str(p.absolute()) for p in (paths.project_memory, paths.global_memory)}
        if paths.session_id is not None:
            skip |= {str(paths.checkpoint.absolute()), str(paths.notes.absolute())}
        hits = index.search(query, limit=ARCHIVE_LIMIT + len(skip))
        return [h for h in hits if h.source not in skip][:ARCHIVE_LIMIT]

    def _notice(self, level: Literal["info", "warning", "error"], text: str) -> None:
        if self.events is not None:
            self.events.emit(Notice(actor_id=self.actor_id, level=level, text=text))


# ----------------------------------------------------------------------------- resume


@dataclass
class SessionHistory:
    """A session's transcript as its event log tells it (see ``history_from_events``)."""

    messages: list[Message] = field(default_factory=list)
    person_messages: list[str] = field(default_factory=list)
    primaries: list[str] = field(default_factory=list)
    profile: str | None = None
    last_seq: int = 0
    finished: bool = False

    @property
    def goal(self) -> str:
        """The person's goal in their own words: everything they asked, oldest first."""
        return "\n\n".join(t for t in self.person_messages if t.strip())


def history_from_events(envelopes: Iterable[Envelope]) -> SessionHistory:
    """Rebuild the primary agent's transcript from ``events.jsonl``.

    The person's words come from ``session_started`` (the first one's prompt; a later one —
    a resume — only when it carried new words) and ``user_input``; the agent's turns from
    ``assistant_message`` and its tool results from ``tool_finished``, only for actors started
    as ``primary`` (subagents keep their own transcripts). A run killed mid-tool leaves calls
    without results; those are closed with an explicit interrupted result, so a call is never
    separated from its results.
    """
    history = SessionHistory()
    primaries: set[str] = set()
    started = False
    for env in conversation_events(envelopes):  # what a `crew rewind --conversation` kept
        history.last_seq = max(history.last_seq, env.seq)
        body = env.body
        history.finished = body.kind == "session_finished"
        if isinstance(body, SessionStarted):
            if not started:
                history.profile = body.profile
            if body.prompt.strip():
                history.messages.append({"role": "user", "content": body.prompt})
                history.person_messages.append(body.prompt)
            started = True
        elif isinstance(body, UserInput):
            history.messages.append({"role": "user", "content": body.text})
            history.person_messages.append(body.text)
        elif isinstance(body, ActorStarted) and body.role == ActorRole.PRIMARY:
            primaries.add(body.actor_id)
            history.primaries.append(body.actor_id)
        elif isinstance(body, AssistantMessage) and body.actor_id in primaries:
            message: Message = {"role": "assistant", "content": body.text or None}
            if body.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in body.tool_calls
                ]
            history.messages.append(message)
        elif isinstance(body, ToolFinished) and body.actor_id in primaries:
            history.messages.append(
                {"role": "tool", "tool_call_id": body.call_id, "content": body.content}
            )
    history.messages = pair_tool_calls(history.messages)
    return history


def pair_tool_calls(messages: list[Message]) -> list[Message]:
    """Every tool call followed by exactly its results; missing results filled in, results
    without a call (or answering a call twice) dropped. Providers reject anything else."""
    out: list[Message] = []
    i = 0
    while i < len(messages):
        msg = messages[i]
        if msg.get("role") == "tool":  # not right after its call: an orphan
            i += 1
            continue
        out.append(msg)
        i += 1
        calls = msg.get("tool_calls") if msg.get("role") == "assistant" else None
        if not calls:
            continue
        ids = [c.get("id") for c in calls]
        results: dict[str, Message] = {}
        while i < len(messages) and messages[i].get("role") == "tool":
            tcid = messages[i].get("tool_call_id")
            if tcid in ids and tcid not in results:
                results[tcid] = messages[i]
            i += 1
        for cid in ids:
            out.append(
                results.get(cid) or {"role": "tool", "tool_call_id": cid, "content": _INTERRUPTED}
            )
    return out


def resume_context(
    spec: AgentSpec, index: MemoryIndex | None = None
) -> tuple[list[Message], RebuildReport]:
    """The context a resumed run starts from: ``spec.messages`` (the transcript from the log,
    plus any new words) rebuilt from the session's memory files, exactly as the agent would
    rebuild it near its limit. What leaves is archived in the project's index.
    """
    from stagecrew.tools.providers import BuiltinTools, ToolSet
    from stagecrew.tools.registry import default_tools

    tools = ToolSet([BuiltinTools(default_tools())], spec.tools)
    paths = agent_memory_paths(spec)
    own = index is None
    idx = index if index is not None else MemoryIndex(paths.index_db)
    try:
        manager = ContextManager.from_spec(spec, tools.schemas(), paths=paths, index=lambda: idx)
        messages = manager.adopt(spec.messages)
        return manager.rebuild(messages, "resume")
    finally:
        if own:
            idx.close()


def resumed_spec(
    spec: AgentSpec, history: SessionHistory, prompt: str | None = None
) -> tuple[AgentSpec, RebuildReport]:
    """The spec of a run that continues a session: its transcript from the log (``history``),
    the person's new words if any, and the context rebuilt from the session's memory. One
    owner for ``crew resume``, ``crew run --continue`` and the supervisor's automatic resume
    after a dead agent host. ``spec`` is a fresh spec for the session (its profile, models,
    limits); its ``session_dir`` must name the session's directory."""
    messages = [{"role": "system", "content": spec.system_prompt}, *history.messages]
    person = list(history.person_messages)
    if prompt:
        messages.append({"role": "user", "content": prompt})
        person.append(prompt)
    spec = spec.model_copy(
        update={
            "actor_id": f"{spec.session}-r{len(history.primaries)}",
            "messages": messages,
            "goal": "\n\n".join(p for p in person if p.strip()) or None,
            "adopt_tasks_from": history.primaries,
        }
    )
    rebuilt, report = resume_context(spec)
    return spec.model_copy(update={"messages": rebuilt}), report


def agent_memory_paths(spec: AgentSpec) -> MemoryPaths:
    """Where an agent's memory layers live (the person's config dir for global memory)."""
    from stagecrew.config import user_config_dir

    config_dir = Path(spec.user_config_dir) if spec.user_config_dir else user_config_dir()
    workspace = Path(os.path.realpath(spec.workspace))
    session_dir = Path(spec.session_dir) if spec.session_dir else None
    return MemoryPaths.for_session_dir(workspace, session_dir, config_dir)
