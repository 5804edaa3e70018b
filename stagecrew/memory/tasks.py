"""The task tree: a ledger of what the session is doing, with ids like T1, T1.1, T1.1.2.

Why a ledger and not a todo list in the prompt: it survives context rebuilds and restarts
(``<session>/tasks/ledger.json``), several actors can share it, and each task keeps its own
append-only ``progress.md`` so the story of a task can be found and re-read later.

Rules the ledger enforces, so a model gets a clear error instead of a silently wrong tree:

* ids are assigned here, never chosen by the model, and never reused;
* statuses move along ``pending → in_progress → done``; ``blocked`` can be resumed;
  ``done`` and ``abandoned`` are final;
* a parent cannot be marked done while a child is still open;
* only a task's owner (the actor that created it, or was handed it with ``assign``) may
  change it or write its progress; another actor is refused.

Writes under faults. Every change re-reads ``ledger.json`` under an exclusive ``flock``,
applies itself, and writes the whole file back as temp file + ``fsync`` + ``rename`` (+ an
``fsync`` of the directory). The lock is what makes "one owner per task" hold when writers race:
subagents run in their own processes and write the same session's ledger, and the lock
serialises them so two actors changing different tasks at once both keep their change. A
``kill -9`` of any writer (agent host, supervisor) at any instant leaves the old file or the new
one, never a torn one, and the kernel drops a dead holder's ``flock``. A snapshot was chosen over
an append-only journal because the tree is small (tens of tasks), every reader (the rebuilt
context, ``crew tasks``, the checkpoint writer) wants the whole tree, and a snapshot needs no
replay code that could disagree with the live rules.

A ``create`` that repeats an open task of the same owner, title and parent returns that task
instead of adding a twin: a run killed after the ledger write but before its tool result
reached the event log is resumed with the call missing from the transcript, and a model that
makes the call again must not duplicate the task.

Subagents: a subagent ``join``s the ledger when it starts, recording its parent actor and the
parent's current task (the *anchor*). The subagent's top-level tasks are created under the
anchor (``T1.2`` → ``T1.2.1``); it may add subtasks anywhere under its anchor but change only
its own tasks. An actor may abandon its descendants' tasks: a parent can close what a dead
child left open under its task, and then finish that task.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from stagecrew.memory.layers import atomic_write_text, read_text, utc_stamp

_TID = re.compile(r"^T[1-9]\d*(\.[1-9]\d*)*$")
LEDGER_VERSION = 1


class TaskStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    BLOCKED = "blocked"
    ABANDONED = "abandoned"


FINAL = frozenset({TaskStatus.DONE, TaskStatus.ABANDONED})
MARKS = {
    TaskStatus.PENDING: "[ ]",
    TaskStatus.IN_PROGRESS: "[~]",
    TaskStatus.DONE: "[x]",
    TaskStatus.BLOCKED: "[!]",
    TaskStatus.ABANDONED: "[-]",
}
# Which target statuses each status may move to (``start`` on a running task is a no-op).
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset(
        {TaskStatus.IN_PROGRESS, TaskStatus.DONE, TaskStatus.BLOCKED, TaskStatus.ABANDONED}
    ),
    TaskStatus.IN_PROGRESS: frozenset(
        {TaskStatus.IN_PROGRESS, TaskStatus.DONE, TaskStatus.BLOCKED, TaskStatus.ABANDONED}
    ),
    TaskStatus.BLOCKED: frozenset(
        {TaskStatus.IN_PROGRESS, TaskStatus.DONE, TaskStatus.ABANDONED, TaskStatus.BLOCKED}
    ),
    TaskStatus.DONE: frozenset(),
    TaskStatus.ABANDONED: frozenset(),
}


class TaskError(ValueError):
    """A request the ledger refuses; the message tells a model what to do instead."""


class TaskOwnershipError(TaskError):
    """Another actor owns the task."""


@dataclass
class Task:
    id: str
    title: str
    owner: str
    status: TaskStatus = TaskStatus.PENDING
    parent: str | None = None
    created: str = ""
    updated: str = ""
    summary: str = ""  # why it ended: done summary or abandon reason
    blocked_reason: str = ""
    last_note: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["status"] = TaskStatus(known.get("status", "pending"))
        return cls(**known)


def _sort_key(tid: str) -> tuple[int, ...]:
    return tuple(int(p) for p in tid[1:].split("."))


def check_task_id(tid: str) -> str:
    tid = (tid or "").strip()
    if not _TID.match(tid):
        raise TaskError(f"'{tid}' is not a task id; ids look like T1, T1.2, T1.2.3.")
    return tid


def _one_line(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Member:
    """A subagent known to the ledger: who spawned it and which task its own tasks go under."""

    parent: str
    anchor: str | None = None


@dataclass
class _State:
    tasks: dict[str, Task] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    # progress lines to append once the ledger holding their change is on disk
    progress: list[tuple[Task, str]] = field(default_factory=list)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (power loss; a killed process needs only the rename)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class TaskLedger:
    """The ledger of one session (``<session>/tasks``), acting on behalf of ``agent_id``.

    Reads always come from disk, so an instance never holds a stale view of the tree
    another actor just changed.
    """

    tasks_dir: Path
    agent_id: str = "agent"
    _tasks: dict[str, Task] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.tasks_dir = Path(self.tasks_dir)

    @property
    def ledger_path(self) -> Path:
        return self.tasks_dir / "ledger.json"

    def progress_path(self, tid: str) -> Path:
        return self.tasks_dir / check_task_id(tid) / "progress.md"

    # -- persistence

    def _load(self) -> dict[str, Task]:
        return self._load_state().tasks

    def _load_state(self) -> _State:
        text = read_text(self.ledger_path)
        if not text.strip():
            return _State()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaskError(
                f"{self.ledger_path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                "fix or delete it by hand."
            ) from exc
        return _State(
            tasks={t["id"]: Task.from_json(t) for t in data.get("tasks", [])},
            members={
                actor: Member(str(m.get("parent", "")), m.get("anchor"))
                for actor, m in (data.get("members") or {}).items()
            },
        )

    def _save(self, state: _State) -> None:
        ordered = sorted(state.tasks.values(), key=lambda t: _sort_key(t.id))
        data: dict[str, Any] = {
            "version": LEDGER_VERSION,
            "tasks": [t.to_json() for t in ordered],
        }
        if state.members:
            data["members"] = {a: asdict(m) for a, m in sorted(state.members.items())}
        atomic_write_text(self.ledger_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        _fsync_dir(self.tasks_dir)

    @contextmanager
    def _locked(self) -> Iterator[_State]:
        """Exclusive lock, fresh read, and a write-back when the block finishes cleanly.

        Progress lines queued in ``state.progress`` are appended after the ledger is saved and
        before the lock is released: a task's ``progress.md`` gets its lines in the order its
        changes were made, and a writer killed in between loses a line of narrative, never
        records one for a change the ledger does not hold.
        """
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        with open(self.tasks_dir / ".ledger.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._load_state()
                yield state
                self._save(state)
                for task, text in state.progress:
                    self._append_progress(task, text)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- subagents

    def join(self, parent_actor: str) -> Member:
        """Record this actor as a subagent of ``parent_actor``, anchored at the parent's
        current task (its deepest in-progress one), so the child's tasks nest under it.

        Joining again keeps the first anchor: a restarted child must not move its tasks.
        """
        with self._locked() as state:
            member = state.members.get(self.agent_id)
            if member is None:
                running = [
                    t
                    for t in state.tasks.values()
                    if t.owner in self._lineage(state, parent_actor)
                    and t.status is TaskStatus.IN_PROGRESS
                ]
                anchor = max(running, key=lambda t: (t.id.count("."), t.updated), default=None)
                member = Member(parent_actor, anchor.id if anchor else None)
                state.members[self.agent_id] = member
            return member

    @staticmethod
    def _lineage(state: _State, actor: str) -> list[str]:
        """``actor`` and its ancestors, nearest first (cycles cut)."""
        chain = [actor]
        while (m := state.members.get(chain[-1])) is not None and m.parent not in chain:
            chain.append(m.parent)
        return chain

    def _given(self, state: _State, tid: str) -> bool:
        """Whether ``tid`` lies in the subtree this actor (or an ancestor) was anchored at."""
        for actor in self._lineage(state, self.agent_id):
            member = state.members.get(actor)
            if (
                member
                and member.anchor
                and (tid == member.anchor or tid.startswith(f"{member.anchor}."))
            ):
                return True
        return False

    # -- reading

    def tasks(self) -> list[Task]:
        """All tasks in tree order (T1, T1.1, T1.2, T2 …)."""
        return sorted(self._load().values(), key=lambda t: _sort_key(t.id))

    def members(self) -> dict[str, Member]:
        """The subagents that joined the ledger: parent actor and anchor task of each."""
        return self._load_state().members

    def get(self, tid: str) -> Task:
        tid = check_task_id(tid)
        tasks = self._load()
        if tid not in tasks:
            raise TaskError(self._unknown(tid, tasks))
        return tasks[tid]

    def current(self) -> Task | None:
        """The deepest in-progress task (what the agent is working on right now)."""
        running = [t for t in self.tasks() if t.status is TaskStatus.IN_PROGRESS]
        return max(running, key=lambda t: (t.id.count("."), t.updated), default=None)

    # -- changing

    @staticmethod
    def _unknown(tid: str, tasks: dict[str, Task]) -> str:
        known = ", ".join(sorted(tasks, key=_sort_key)[:20]) or "none yet"
        return f"No task {tid}. Known tasks: {known}. Use action 'list' to see the tree."

    def _owned(
        self, state: _State, tid: str, ancestors_ok: bool = False, anchor_ok: bool = False
    ) -> Task:
        """The task if this actor may change it: its owner; with ``ancestors_ok`` (abandon,
        create under) an ancestor of its owner; with ``anchor_ok`` (create under) a subagent
        anchored at it or above it."""
        tid = check_task_id(tid)
        tasks = state.tasks
        if tid not in tasks:
            raise TaskError(self._unknown(tid, tasks))
        task = tasks[tid]
        if task.owner == self.agent_id:
            return task
        if ancestors_ok and self.agent_id in self._lineage(state, task.owner)[1:]:
            return task
        if anchor_ok and self._given(state, tid):
            return task
        raise TaskOwnershipError(
            f"{tid} belongs to {task.owner}; only its owner may change it or write its "
            f"progress (you are {self.agent_id})."
        )

    def create(self, title: str, parent: str | None = None) -> Task:
        """Add a pending task owned by this agent: under ``parent`` if given, else at the top
        (a subagent's top is its anchor). An open twin (same owner, title, parent) is returned
        instead of a duplicate; see the module docstring."""
        title = _one_line(title or "", 200)
        if not title:
            raise TaskError("A task needs a title.")
        with self._locked() as state:
            tasks = state.tasks
            member = state.members.get(self.agent_id)
            if not parent and member is not None and member.anchor in tasks:
                parent = member.anchor
            if parent:
                p = self._owned(state, parent, ancestors_ok=True, anchor_ok=True)
                if p.status in FINAL:
                    raise TaskError(f"{p.id} is {p.status.value}; add the task elsewhere.")
                parent = p.id
                prefix, siblings = f"{p.id}.", [t for t in tasks if t.startswith(f"{p.id}.")]
                siblings = [t for t in siblings if t.count(".") == p.id.count(".") + 1]
            else:
                prefix, siblings = "T", [t for t in tasks if "." not in t]
            key = title.casefold()
            for sib in sorted(siblings, key=_sort_key):
                twin = tasks[sib]
                if (
                    twin.owner == self.agent_id
                    and twin.title.casefold() == key
                    and twin.status not in FINAL
                ):
                    return twin
            nums = [_sort_key(t)[-1] for t in siblings]
            tid = f"{prefix}{max(nums, default=0) + 1}"
            now = utc_stamp()
            task = Task(tid, title, self.agent_id, parent=parent, created=now, updated=now)
            tasks[tid] = task
            state.progress.append((task, f"created by {self.agent_id}: {title}"))
        return task

    def _move(self, tid: str, target: TaskStatus, text: str, verb: str) -> Task:
        with self._locked() as state:
            tasks = state.tasks
            task = self._owned(state, tid, ancestors_ok=target is TaskStatus.ABANDONED)
            if target not in TRANSITIONS[task.status]:
                raise TaskError(
                    f"Cannot {verb} {task.id}: it is already {task.status.value}"
                    + (" (final). Create a new task instead." if task.status in FINAL else ".")
                )
            if target is TaskStatus.DONE:
                open_kids = [
                    t.id
                    for t in tasks.values()
                    if t.id.startswith(f"{task.id}.") and t.status not in FINAL
                ]
                if open_kids:
                    kids = ", ".join(sorted(open_kids, key=_sort_key))
                    raise TaskError(
                        f"Cannot finish {task.id}: subtasks still open ({kids}). "
                        "Finish or abandon them first."
                    )
            unchanged = task.status is target and target is TaskStatus.IN_PROGRESS
            task.status = target
            task.updated = utc_stamp()
            if target is TaskStatus.BLOCKED:
                task.blocked_reason = _one_line(text, 300)
            elif target is TaskStatus.IN_PROGRESS:
                task.blocked_reason = ""
            elif target in FINAL:
                task.summary = _one_line(text, 300)
            if not unchanged:
                state.progress.append((task, f"{verb}" + (f": {text}" if text else "")))
        return task

    def start(self, tid: str) -> Task:
        """Mark in progress (also resumes a blocked task; a no-op when already running)."""
        return self._move(tid, TaskStatus.IN_PROGRESS, "", "start")

    def done(self, tid: str, summary: str = "") -> Task:
        return self._move(tid, TaskStatus.DONE, summary, "done")

    def block(self, tid: str, reason: str) -> Task:
        if not reason or not reason.strip():
            raise TaskError("Say why the task is blocked (reason).")
        return self._move(tid, TaskStatus.BLOCKED, reason, "blocked")

    def abandon(self, tid: str, reason: str) -> Task:
        if not reason or not reason.strip():
            raise TaskError("Say why the task is abandoned (reason).")
        return self._move(tid, TaskStatus.ABANDONED, reason, "abandoned")

    def progress(self, tid: str, note: str) -> Task:
        """Append a note to the task's ``progress.md`` (owner only, not on final tasks)."""
        if not note or not note.strip():
            raise TaskError("A progress note needs text.")
        with self._locked() as state:
            task = self._owned(state, tid)
            if task.status in FINAL:
                raise TaskError(f"{task.id} is {task.status.value}; it takes no more progress.")
            task.last_note = _one_line(note, 200)
            task.updated = utc_stamp()
            state.progress.append((task, note))
        return task

    def assign(self, tid: str, new_owner: str) -> Task:
        """Hand a task to another actor (e.g. a sub-agent); only the current owner may."""
        with self._locked() as state:
            task = self._owned(state, tid)
            task.owner = new_owner
            task.updated = utc_stamp()
            state.progress.append((task, f"assigned to {new_owner} by {self.agent_id}"))
        return task

    def _append_progress(self, task: Task, text: str) -> None:
        """Append to ``progress.md`` (under the ledger lock, after the change was saved).

        One ``O_APPEND`` write per entry: a killed writer leaves whole entries, and an append
        never rewrites lines other writers already made durable.
        """
        path = self.progress_path(task.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        head = ""
        if not read_text(path).strip():
            head = f"# {task.id} {task.title}\n\nowner: {task.owner}\n"
        lines = text.strip().split("\n")
        entry = f"- {utc_stamp()} [{self.agent_id}] {lines[0]}"
        entry += "".join(f"\n  {line}" if line else "\n" for line in lines[1:])
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (head + entry + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- rendering

    def render_ledger(self, collapse_done: bool = False, max_title: int = 80) -> str:
        """The tree as compact markdown for the model and ``crew tasks``.

        ``- [x] T1 Build parser — summary`` / ``  - [~] T1.1 Tokenizer``. With
        ``collapse_done`` a finished subtree shows as one line, which keeps a long session's
        ledger small in the rebuilt context.
        """
        tasks = self.tasks()
        if not tasks:
            return "(no tasks yet)"
        lines: list[str] = []
        hidden_under: set[str] = set()
        for t in tasks:  # tree order: a parent always comes before its children
            if t.parent in hidden_under:
                hidden_under.add(t.id)
                continue
            depth = t.id.count(".")
            line = f"{'  ' * depth}- {MARKS[t.status]} {t.id} {_one_line(t.title, max_title)}"
            kids = [k for k in tasks if k.id.startswith(f"{t.id}.")]
            if (
                collapse_done
                and t.status in FINAL
                and kids
                and all(k.status in FINAL for k in kids)
            ):
                line += f" ({len(kids)} subtasks closed)"
                hidden_under.add(t.id)
            if t.status is TaskStatus.BLOCKED and t.blocked_reason:
                line += f" — blocked: {_one_line(t.blocked_reason, max_title)}"
            elif t.status in FINAL and t.summary:
                line += f" — {_one_line(t.summary, max_title)}"
            elif t.status is TaskStatus.IN_PROGRESS and t.last_note:
                line += f" — {_one_line(t.last_note, max_title)}"
            lines.append(line)
        return "\n".join(lines)
