"""The four memory layers, as markdown files a person can read and edit.

Files are the truth: the SQLite index, the rebuilt context and every prompt are derived from
them and can be thrown away. Each file has exactly one writer, which is what makes plain
read-modify-write safe without locks:

* project memory ``<project>/.stagecrew/memory/MEMORY.md`` - written only by
  ``ProjectMemoryWriter`` (the lead routes it through the checkpoint-writer actor);
* global memory ``<user_config_dir>/MEMORY.md`` - written only by the person; agents get no
  write API for it at all, so a confused agent cannot damage memory shared by every project;
* ``<session>/checkpoint.md`` - written only by the checkpoint writer;
* ``<session>/notes.md`` - appended only by the session's agent;
* ``<session>/tasks/<TID>/progress.md`` - appended only by the task's owner (see ``tasks.py``).

A person may edit any of them at any time, so parsing is forgiving: unknown sections survive
(in place), missing sections read as empty, headings match case-insensitively, and ``##`` lines
inside fenced code blocks are not headings. Every write goes to a temp file in the same
directory and is moved over the target with ``os.replace``, so a crash or a concurrent reader
never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, NamedTuple, Self

from stagecrew import layout

CHECKPOINT_SECTIONS: tuple[str, ...] = (
    "Active intent",
    "Next action",
    "Directives",
    "Task tree",
    "Current work",
    "Files touched",
    "Discovered knowledge",
    "Errors and fixes",
    "Live resources",
    "Decisions",
    "Open notes",
)

MEMORY_SECTIONS: tuple[str, ...] = (
    "Project context",
    "Rules",
    "Architecture decisions",
    "Durable knowledge",
)

SOURCE_KINDS: tuple[str, ...] = (
    "memory",
    "global",
    "checkpoint",
    "notes",
    "progress",
    "archive",
    "claude",
)

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")


# ----------------------------------------------------------------------------- file primitives


def atomic_write_text(path: Path | str, text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old file or the new one, never a mix.

    The temp file lives in the target directory because ``os.replace`` is only atomic within
    one filesystem. Bytes are written as-is (no newline translation) so literals survive.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_text(path: Path | str) -> str:
    """The file's text, or ``""`` when it does not exist yet (every layer starts empty)."""
    try:
        return Path(path).read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def utc_stamp(when: datetime | None = None) -> str:
    """A compact UTC timestamp for entries a person will read (``2025-01-31 14:02:09Z``)."""
    when = when or datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ----------------------------------------------------------------------------- sections


def fenced_lines(lines: list[str]) -> list[bool]:
    """Which lines sit inside a fenced code block (fence lines included).

    An opening fence that is never closed is treated as plain text: a person who types three
    backticks and forgets the fourth line must not make every later heading vanish.
    """
    inside = [False] * len(lines)
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        marker = m.group(1)
        close = re.compile(rf"^ {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if j >= len(lines):  # unclosed: not a fence
            i += 1
            continue
        for k in range(i, j + 1):
            inside[k] = True
        i = j + 1
    return inside


def _strip_blank_edges(text: str) -> str:
    """Drop blank lines at both ends but keep every other byte (trailing spaces included)."""
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def norm_heading(heading: str) -> str:
    """Heading comparison key: case, spacing and a trailing colon do not matter to people."""
    return " ".join(heading.replace("\r", "").lower().split()).rstrip(":").strip()


def parse_sections(text: str, level: int = 2) -> tuple[str, list[tuple[str, str]]]:
    """Split markdown into (preamble, [(heading, body), ...]) at headings of exactly ``level``.

    Deeper headings stay inside their section's body; ``#`` lines in code fences are ignored.
    Bodies lose their blank edge lines only.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    fenced = fenced_lines(lines)
    preamble: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    for line, in_fence in zip(lines, fenced, strict=True):
        m = None if in_fence else _HEADING.match(line)
        if m and len(m.group(1)) == level:
            sections.append((m.group(2).strip(), []))
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return (
        _strip_blank_edges("\n".join(preamble)),
        [(h, _strip_blank_edges("\n".join(body))) for h, body in sections],
    )


def quote_verbatim(text: str) -> str:
    """Quote text as a markdown blockquote that ``unquote`` turns back into the same bytes.

    A blockquote (rather than a code fence) is used because the person's words may contain
    fences themselves, and because a ``## `` line inside a quote can never become a heading.
    """
    return "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))


def unquote(text: str) -> str:
    """Inverse of ``quote_verbatim``; lines a person typed without ``>`` pass through."""
    out = []
    for line in text.split("\n"):
        if line.startswith("> "):
            out.append(line[2:])
        elif line.startswith(">"):
            out.append(line[1:])
        else:
            out.append(line)
    return "\n".join(out)


@dataclass
class SectionDoc:
    """A markdown file with a fixed list of ``##`` sections plus whatever a person added.

    Known sections always render in ``SECTIONS`` order (missing ones as empty headings, so the
    model always sees the full shape). Unknown sections are kept and re-emitted after the known
    section they followed, so a person's own section stays where they put it.
    """

    SECTIONS: ClassVar[tuple[str, ...]] = ()
    DEFAULT_PREAMBLE: ClassVar[str] = ""

    sections: dict[str, str] = field(default_factory=dict)
    # (heading as written, body, canonical name of the known section it followed or None)
    extras: list[tuple[str, str, str | None]] = field(default_factory=list)
    preamble: str | None = None

    def __post_init__(self) -> None:
        for name in list(self.sections):
            canon = self.canonical(name)
            if canon is None:
                raise ValueError(f"unknown section {name!r}; expected one of {self.SECTIONS}")
            if canon != name:
                self.sections[canon] = self.sections.pop(name)

    @classmethod
    def canonical(cls, heading: str) -> str | None:
        """The known section a heading names, or ``None`` for a person's own section."""
        key = norm_heading(heading)
        for name in cls.SECTIONS:
            if norm_heading(name) == key:
                return name
        return None

    @classmethod
    def parse(cls, text: str) -> Self:
        preamble, items = parse_sections(text)
        doc = cls(preamble=preamble if text.strip() else None)
        last_known: str | None = None
        for heading, body in items:
            canon = cls.canonical(heading)
            if canon is None:
                doc.extras.append((heading, body, last_known))
                continue
            if doc.sections.get(canon):  # pasted twice: keep both bodies
                doc.sections[canon] = (doc.sections[canon] + "\n\n" + body).strip("\n")
            else:
                doc.sections[canon] = body
            last_known = canon
        return doc

    @classmethod
    def load(cls, path: Path | str) -> Self:
        return cls.parse(read_text(path))

    def get(self, name: str) -> str:
        canon = self.canonical(name)
        if canon is None:
            for heading, body, _ in self.extras:
                if norm_heading(heading) == norm_heading(name):
                    return body
            return ""
        return self.sections.get(canon, "")

    def set(self, name: str, body: str) -> None:
        canon = self.canonical(name)
        if canon is None:
            raise ValueError(f"unknown section {name!r}; expected one of {self.SECTIONS}")
        self.sections[canon] = _strip_blank_edges(body)

    def append(self, name: str, text: str) -> None:
        """Add ``text`` as a new paragraph/line at the end of a section."""
        body = self.get(name)
        self.set(name, f"{body}\n{text}" if body else text)

    def render(self) -> str:
        preamble = self.DEFAULT_PREAMBLE if self.preamble is None else self.preamble
        parts: list[str] = [preamble] if preamble else []

        def emit(heading: str, body: str) -> None:
            parts.append(f"## {heading}\n\n{body}" if body else f"## {heading}")

        for heading, body, after in self.extras:
            if after is None:
                emit(heading, body)
        for name in self.SECTIONS:
            emit(name, self.sections.get(name, ""))
            for heading, body, after in self.extras:
                if after == name:
                    emit(heading, body)
        return "\n\n".join(parts) + "\n"

    def save(self, path: Path | str) -> None:
        atomic_write_text(path, self.render())

    def section_names(self) -> list[str]:
        """Known section names followed by the extra headings, in render order."""
        return list(self.SECTIONS) + [h for h, _, _ in self.extras]


class Checkpoint(SectionDoc):
    """``checkpoint.md``: where the session stands, in fixed sections the rebuild relies on."""

    SECTIONS = CHECKPOINT_SECTIONS
    DEFAULT_PREAMBLE = "# Session checkpoint"

    @property
    def active_intent(self) -> str:
        """The person's words, unquoted back to the exact bytes they typed."""
        return unquote(self.get("Active intent"))

    def set_active_intent(self, person_words: str) -> None:
        self.sections["Active intent"] = quote_verbatim(person_words) if person_words else ""


class ProjectMemory(SectionDoc):
    """``MEMORY.md``: knowledge about the project that outlives any one session."""

    SECTIONS = MEMORY_SECTIONS
    DEFAULT_PREAMBLE = "# Project memory"


def merge_person_edits(base: SectionDoc, ours: SectionDoc, theirs: SectionDoc) -> SectionDoc:
    """Three-way merge per section, the person's side winning every section they changed.

    ``base`` is the file the writer started from, ``ours`` what it wants to write, ``theirs``
    what is on disk now. A checkpoint update takes seconds (a model call), and a person who
    edits the file in that window must not lose their edit to a blind overwrite. Unknown
    sections are only ever written by people, so the file on disk decides them.
    """
    merged = type(ours)(
        sections=dict(ours.sections), extras=list(ours.extras), preamble=ours.preamble
    )
    for name in ours.SECTIONS:
        if theirs.get(name) != base.get(name):
            merged.sections[name] = theirs.get(name)
    if theirs.preamble != base.preamble:
        merged.preamble = theirs.preamble
    # Sections the writer does not know about are the person's own: theirs are the truth.
    merged.extras = list(theirs.extras)
    return merged


def write_checkpoint(path: Path | str, new: Checkpoint, base_text: str | None = None) -> Checkpoint:
    """Write a checkpoint, keeping person edits made since ``base_text`` was read.

    Pass the text the update started from as ``base_text``; if the file changed since then,
    sections the person touched win (see ``merge_person_edits``). Returns what was written.
    """
    current_text = read_text(path)
    result: Checkpoint = new
    if base_text is not None and current_text != base_text and current_text.strip():
        merged = merge_person_edits(
            Checkpoint.parse(base_text), new, Checkpoint.parse(current_text)
        )
        assert isinstance(merged, Checkpoint)
        result = merged
    result.save(path)
    return result


# ----------------------------------------------------------------------------- notes


def append_note(path: Path | str, text: str, when: datetime | None = None) -> str:
    """Append one timestamped entry to ``notes.md`` and return the entry as written.

    Append-only by contract: nothing in the API edits or removes earlier notes, so the
    scratchpad is a faithful log of what the agent thought at the time.
    """
    text = _strip_blank_edges(text)
    if not text.strip():
        raise ValueError("note is empty")
    entry = f"## {utc_stamp(when)}\n\n{text}\n"
    current = read_text(path)
    if not current.strip():
        current = "# Notes\n"
    atomic_write_text(path, current.rstrip("\n") + "\n\n" + entry)
    return entry


# ----------------------------------------------------------------------------- project memory

_MEMORY_ALIASES = {
    "context": "Project context",
    "project": "Project context",
    "rule": "Rules",
    "architecture": "Architecture decisions",
    "decision": "Architecture decisions",
    "decisions": "Architecture decisions",
    "knowledge": "Durable knowledge",
    "durable": "Durable knowledge",
}


def resolve_memory_section(section: str | None) -> str:
    """Map a model's section name (``rules``, ``Rules``, ``decisions``…) to a real section."""
    if not section or not section.strip():
        return "Durable knowledge"
    canon = ProjectMemory.canonical(section)
    if canon:
        return canon
    alias = _MEMORY_ALIASES.get(norm_heading(section))
    if alias:
        return alias
    raise ValueError(
        f"Unknown project memory section {section!r}. Use one of: " + ", ".join(MEMORY_SECTIONS)
    )


def format_entry(text: str) -> str:
    """A memory entry as one markdown list item (continuation lines indented under it).

    Indenting keeps a ``## `` line inside the entry from turning into a new section.
    """
    lines = _strip_blank_edges(text).split("\n")
    if lines[0].lstrip().startswith(("- ", "* ")):
        lines[0] = lines[0].lstrip()[2:]
    return "\n".join([f"- {lines[0]}"] + [f"  {line}" if line else "" for line in lines[1:]])


MEMORY_MAX_ENTRIES = 60  # per section; beyond it the writer drops its own oldest entries
_ENTRY_START = re.compile(r"\n(?=[-*] )")


def memory_entries(body: str) -> list[str]:
    """A section body cut into entries: each list item with its continuation lines, and any
    text before the first item as one block. Joining them with ``"\\n"`` gives ``body`` back."""
    return [e for e in _ENTRY_START.split(body) if e.strip()] if body.strip() else []


def entry_key(entry: str) -> str:
    """What identifies an entry the writer wrote: its words, whitespace and case squashed."""
    return hashlib.sha256(" ".join(entry.split()).lower().encode("utf-8")).hexdigest()[:20]


class ProjectMemoryWriter:
    """The single writer of project ``MEMORY.md``.

    Agents never write the file themselves: the ``memory`` tool calls whatever callable the
    lead puts in ``ctx.services.memory_writer``, and the lead routes that to the one actor that
    owns this writer. Re-reading the file on every save keeps a person's edits.

    Whose line is whose. The writer records the key of every entry it writes in a sidecar
    (``.MEMORY.writer.json`` beside the file); every other line is the person's and the writer
    never removes or rewrites it. A sidecar, not a marker in the file, keeps ``MEMORY.md``
    plain markdown for the person and the model; a person who edits a writer's entry makes it
    theirs (its key no longer matches). The file is written before the sidecar, so a writer
    killed between the two leaves an entry counted as the person's: kept, never lost.

    The writer bounds each section to ``max_entries``: past it, it drops its own oldest
    entries, never the person's. Saves from concurrent sessions of the project are serialised
    by an ``flock`` beside the file, so neither loses the other's entry.
    """

    def __init__(self, path: Path | str, max_entries: int = MEMORY_MAX_ENTRIES) -> None:
        self.path = Path(path)
        self.max_entries = max_entries

    @property
    def owned_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.writer.json")

    def owned(self) -> list[str]:
        """Keys of the writer's entries, oldest first (unreadable sidecar: none, keep all)."""
        try:
            keys = json.loads(read_text(self.owned_path) or "{}").get("entries", [])
        except (json.JSONDecodeError, AttributeError):
            return []
        return [k for k in keys if isinstance(k, str)]

    def census(self) -> dict[str, tuple[int, int]]:
        """Per section of the file: (entries the writer wrote, entries the person wrote)."""
        owned = set(self.owned())
        memory = ProjectMemory.load(self.path)
        counts: dict[str, tuple[int, int]] = {}
        for name in memory.section_names():
            entries = memory_entries(memory.get(name))
            mine = sum(entry_key(e) in owned for e in entries)
            counts[name] = (mine, len(entries) - mine)
        return counts

    def save(self, section: str | None, text: str) -> str:
        canon = resolve_memory_section(section)
        if not text or not text.strip():
            raise ValueError("Nothing to save: 'text' is empty.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._save_locked(canon, text)

    def _save_locked(self, canon: str, text: str) -> str:
        memory = ProjectMemory.load(self.path)
        entries = memory_entries(memory.get(canon))
        entry = format_entry(text)
        key = entry_key(entry)
        if key in {entry_key(e) for e in entries}:
            return f"Already in project memory under '{canon}'; nothing changed."
        owned = [k for k in self.owned() if k != key] + [key]
        entries.append(entry)
        dropped = 0
        for old in owned[:-1]:  # oldest first; the person's entries are never candidates
            if len(entries) <= self.max_entries:
                break
            mine = [i for i, e in enumerate(entries) if entry_key(e) == old]
            for i in reversed(mine):
                del entries[i]
                dropped += 1
        memory.set(canon, "\n".join(entries))
        memory.save(self.path)
        live = {entry_key(e) for n in memory.section_names() for e in memory_entries(memory.get(n))}
        atomic_write_text(
            self.owned_path,
            json.dumps({"version": 1, "entries": [k for k in owned if k in live]}) + "\n",
        )
        note = f"; dropped {dropped} older saved entries" if dropped else ""
        return f"Saved to project memory under '{canon}' ({self.path}){note}."

    async def __call__(self, section: str | None, text: str) -> str:
        return self.save(section, text)


def read_global_memory(paths: MemoryPaths) -> str:
    """Global memory, read-only: there is deliberately no agent-facing writer for it."""
    return read_text(paths.global_memory)


# ----------------------------------------------------------------------------- paths


class IndexSource(NamedTuple):
    """A markdown file the search index mirrors: what kind of layer, where, which session."""

    kind: str
    path: Path
    session: str | None = None


def check_id(value: str, what: str = "session id") -> str:
    """Refuse ids that could escape their directory (``..``, slashes, empty)."""
    if not _SAFE_ID.match(value) or ".." in value:
        raise ValueError(f"invalid {what} {value!r}: use letters, digits, '.', '_' and '-'")
    return value


@dataclass(frozen=True)
class MemoryPaths:
    """Every memory path, computed in one place from (project root, session, config dir).

    ``sessions_root`` overrides ``<project>/.stagecrew/state/sessions`` for callers whose
    session directories live elsewhere (the tools derive it from ``ToolContext.session_dir``).
    ``user_config_dir`` defaults to platformdirs' per-user config dir for ``stagecrew``.
    """

    project_root: Path
    session_id: str | None = None
    user_config_dir: Path | None = None
    sessions_root: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "project_root", Path(self.project_root))
        if self.session_id is not None:
            check_id(self.session_id)
        if self.user_config_dir is None:
            import platformdirs

            object.__setattr__(
                self, "user_config_dir", Path(platformdirs.user_config_dir("stagecrew"))
            )
        else:
            object.__setattr__(self, "user_config_dir", Path(self.user_config_dir))
        if self.sessions_root is not None:
            object.__setattr__(self, "sessions_root", Path(self.sessions_root))

    @classmethod
    def for_session_dir(
        cls, project_root: Path, session_dir: Path | None, user_config_dir: Path | None = None
    ) -> MemoryPaths:
        """Paths for an agent that was handed its session directory directly."""
        if session_dir is None:
            return cls(project_root, None, user_config_dir)
        session_dir = Path(session_dir)
        return cls(project_root, session_dir.name, user_config_dir, session_dir.parent)

    @property
    def stagecrew_dir(self) -> Path:
        return layout.project_dir(self.project_root)

    @property
    def memory_dir(self) -> Path:
        return layout.memory_dir(self.project_root)

    @property
    def project_memory(self) -> Path:
        return self.memory_dir / "MEMORY.md"

    @property
    def global_memory(self) -> Path:
        assert self.user_config_dir is not None
        return self.user_config_dir / "MEMORY.md"

    @property
    def state_dir(self) -> Path:
        return layout.state_dir(self.project_root)

    @property
    def index_db(self) -> Path:
        return self.state_dir / "memory.db"

    @property
    def sessions_dir(self) -> Path:
        return self.sessions_root or layout.sessions_dir(self.project_root)

    @property
    def session_dir(self) -> Path:
        if self.session_id is None:
            raise ValueError("no session: these MemoryPaths were made without a session_id")
        return self.sessions_dir / self.session_id

    @property
    def checkpoint(self) -> Path:
        return self.session_dir / "checkpoint.md"

    @property
    def notes(self) -> Path:
        return self.session_dir / "notes.md"

    @property
    def tasks_dir(self) -> Path:
        return self.session_dir / "tasks"

    @property
    def ledger(self) -> Path:
        return self.tasks_dir / "ledger.json"

    def task_dir(self, task_id: str) -> Path:
        return self.tasks_dir / check_id(task_id, "task id")

    def progress(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "progress.md"

    def session_sources(self, session_dir: Path) -> list[IndexSource]:
        """Existing markdown files of one session directory."""
        sid = session_dir.name
        out = [
            IndexSource(kind, session_dir / name, sid)
            for kind, name in (("checkpoint", "checkpoint.md"), ("notes", "notes.md"))
            if (session_dir / name).is_file()
        ]
        tasks = session_dir / "tasks"
        if tasks.is_dir():
            out.extend(IndexSource("progress", p, sid) for p in sorted(tasks.glob("*/progress.md")))
        return out

    def sources(self, all_sessions: bool = True) -> list[IndexSource]:
        """Every existing markdown layer the index should mirror.

        With ``all_sessions`` (the default) past sessions are included: their checkpoints and
        notes are exactly the cross-session memory a new session needs to find.
        """
        out: list[IndexSource] = []
        if self.project_memory.is_file():
            out.append(IndexSource("memory", self.project_memory))
        if self.global_memory.is_file():
            out.append(IndexSource("global", self.global_memory))
        session_dirs: list[Path] = []
        if self.session_id is not None and self.session_dir.is_dir():
            session_dirs.append(self.session_dir)
        if all_sessions and self.sessions_dir.is_dir():
            session_dirs.extend(
                d
                for d in sorted(self.sessions_dir.iterdir())
                if d.is_dir() and (self.session_id is None or d.name != self.session_id)
            )
        for d in session_dirs:
            out.extend(self.session_sources(d))
        return out
