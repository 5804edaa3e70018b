"""The checkpoint writer: keeps a session's ``checkpoint.md`` current, in the background.

The primary agent asks for an update at 40/60/80 % of its window and goes on working; this
class asks a (cheap) model, role ``checkpoint``, to fold the new messages into the checkpoint
(``memory.checkpoint.build_checkpoint_prompt``), then merges the answer with
``update_checkpoint``: the person's goal stays verbatim under Active intent and every literal
(path, port, command, flag …) from the new messages appears byte for byte, whatever the model
wrote. If the model fails in any way the deterministic ``checkpoint_without_model`` update is
written instead and the failure is reported as a ``Notice``: the writer's troubles never reach
the agent, which only ever sees its ``request`` return at once. The person's instruction files
(AGENTS.md, CLAUDE.md …) go along with each request: they are standing directives the agent's
system prompt already carries, so the model must neither copy nor contradict them.

Requests coalesce: one update runs at a time and at most one waits; a newer request joins the
waiting one (its messages are appended, its reason and goal win), so a burst of requests costs
two model calls, not one per request, and no message is skipped.

The writer is also the single writer of the project's ``MEMORY.md`` (``save_memory``): one
per session, every agent's ``memory save`` is routed here. It only ever adds entries and drops
its own oldest ones past a section's cap; every line a person wrote stays byte for byte
(``ProjectMemoryWriter`` tells them apart), and concurrent sessions' writers take turns on the
file.

A plain async class: ``orchestrator/checkpoint_host.py`` runs it as a Ray actor, tests and the
long-session benchmark run it in-process with the same model port the agent uses.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from stagecrew.actors.spec import EventSink, ModelPort
from stagecrew.memory.checkpoint import (
    build_checkpoint_prompt,
    extract_literals,
    update_checkpoint,
)
from stagecrew.memory.instructions import load_instructions
from stagecrew.memory.layers import (
    Checkpoint,
    MemoryPaths,
    ProjectMemoryWriter,
    read_text,
    write_checkpoint,
)
from stagecrew.memory.messages import Message
from stagecrew.memory.tasks import TaskLedger
from stagecrew.messages import (
    CheckpointWritten,
    ModelRequest,
    ModelRole,
    ModelSpecWire,
    ModelUsage,
    Notice,
    StreamDone,
    StreamError,
)
from stagecrew.messages import Message as Event


@dataclass
class _Job:
    reason: str
    messages: list[Message]
    goal: str


@dataclass
class WriteRecord:
    """One finished update: why it ran, how big the file is, and what went wrong if anything."""

    reason: str
    chars: int
    messages: int
    problem: str | None = None
    used_model: bool = True


@dataclass
class _NullSink:
    events: list[Event] = field(default_factory=list)

    def emit(self, body: Event) -> None:
        self.events.append(body)


class CheckpointWriter:
    """See the module docstring. ``model_port`` streams like the agent's ``ModelPort``."""

    def __init__(
        self,
        session: str,
        workspace: str | Path,
        session_dir: str | Path,
        model_port: ModelPort,
        model_spec: ModelSpecWire,
        *,
        events: EventSink | None = None,
        actor_id: str | None = None,
        model_timeout_s: float | None = None,
    ) -> None:
        self.session = session
        self.paths = MemoryPaths.for_session_dir(Path(workspace), Path(session_dir))
        self.model_port = model_port
        self.model_spec = model_spec
        self.events: EventSink = events if events is not None else _NullSink()
        self.actor_id = actor_id or f"{session}-checkpoint"
        # Retries happen inside the gateway; this bounds the whole call however it misbehaves.
        self.model_timeout_s = model_timeout_s or (
            model_spec.timeout_s * (model_spec.num_retries + 1) + 30.0
        )
        self.memory_writer = ProjectMemoryWriter(self.paths.project_memory)
        self._memory_lock = asyncio.Lock()
        self._pending: _Job | None = None
        self._worker: asyncio.Task[None] | None = None
        self.history: list[WriteRecord] = []

    @property
    def checkpoint_path(self) -> Path:
        return self.paths.checkpoint

    # -- requests ----------------------------------------------------------------------------

    async def request(self, reason: str, new_messages: list[Message], person_goal: str) -> None:
        """Queue an update and return at once (see the module docstring on coalescing)."""
        job = _Job(reason, list(new_messages), person_goal)
        if self._pending is not None:
            job = _Job(reason, [*self._pending.messages, *job.messages], person_goal)
        self._pending = job
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Wait until nothing runs or waits; False if that took longer than ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._worker is not None and not self._worker.done():
                    await asyncio.shield(self._worker)
        except TimeoutError:
            return False
        return True

    @property
    def busy(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def _run(self) -> None:
        while self._pending is not None:
            job, self._pending = self._pending, None
            try:
                await self._write(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not stop later updates
                problem = f"{type(exc).__name__}: {exc}"
                self.history.append(WriteRecord(job.reason, 0, len(job.messages), problem, False))
                self._notice(f"checkpoint update failed ({job.reason}): {problem}")

    # -- one update --------------------------------------------------------------------------

    async def _write(self, job: _Job) -> None:
        path = self.paths.checkpoint
        base_text = await asyncio.to_thread(read_text, path)
        current = Checkpoint.parse(base_text)
        task_tree = await asyncio.to_thread(self._task_tree)
        literals = extract_literals(job.messages)
        instructions = await asyncio.to_thread(self._instructions)
        prompt = build_checkpoint_prompt(
            base_text, job.messages, job.goal, literals, instructions=instructions
        )
        output, model_problem = await self._ask_model(prompt)
        checkpoint, problem = update_checkpoint(current, job.messages, job.goal, output, task_tree)
        written = await asyncio.to_thread(write_checkpoint, path, checkpoint, base_text)
        chars = len(written.render())
        problem = model_problem or problem
        self.history.append(
            WriteRecord(job.reason, chars, len(job.messages), problem, problem is None)
        )
        self.events.emit(CheckpointWritten(path=str(path), reason=job.reason, chars=chars))
        if problem is not None:
            self._notice(
                f"checkpoint model {self.model_spec.model} failed ({problem}); "
                "checkpoint.md was updated without it"
            )

    def _instructions(self) -> str:
        """The instruction files as they are now (read per update: they are small, and a
        person may edit them mid-session); their problems are the agent's to report."""
        try:
            return load_instructions(self.paths.project_root).text
        except Exception:
            return ""

    def _task_tree(self) -> str | None:
        if not self.paths.ledger.is_file():
            return None
        return TaskLedger(self.paths.tasks_dir).render_ledger(collapse_done=True)

    async def _ask_model(self, prompt: list[Message]) -> tuple[str | None, str | None]:
        """The model's checkpoint text, or ``(None, why)`` when it failed in any way."""
        request = ModelRequest(
            session=self.session,
            actor_id=self.actor_id,
            role=ModelRole.CHECKPOINT,
            spec=self.model_spec,
            messages=prompt,
        )
        try:
            async with asyncio.timeout(self.model_timeout_s):
                stream = self.model_port.stream(request)
                try:
                    async for item in stream:
                        if isinstance(item, StreamError) and not item.retryable:
                            return None, item.message
                        if isinstance(item, StreamDone):
                            self.events.emit(
                                ModelUsage(
                                    actor_id=self.actor_id,
                                    model=item.model or self.model_spec.model,
                                    usage=item.usage,
                                    latency_ms=item.latency_ms,
                                    attempts=item.attempts,
                                )
                            )
                            if not item.text.strip():
                                return None, "the model returned no text"
                            return item.text, None
                finally:
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        with contextlib.suppress(Exception):
                            await aclose()
        except TimeoutError:
            return None, f"no answer within {self.model_timeout_s:g} s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return None, "the model stream ended without a final message"

    # -- project memory ----------------------------------------------------------------------

    async def save_memory(self, section: str | None, text: str) -> str:
        """Add an entry to project ``MEMORY.md``; ``ValueError`` for an unknown section or
        empty text. Serialised, so concurrent saves from several agents all land."""
        async with self._memory_lock:
            return await asyncio.to_thread(self.memory_writer.save, section, text)

    def _notice(self, text: str) -> None:
        self.events.emit(Notice(actor_id=self.actor_id, level="warning", text=text))
