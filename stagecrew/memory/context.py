"""Rebuild a model's context from memory instead of losing it.

When the live context nears the window, the agent does not summarise-and-pray: it rebuilds
the context from the memory layers (which the checkpoint writer has kept current) plus a
verbatim tail of the most recent conversation, and archives everything that leaves.

``rebuild_context`` is a pure function of its inputs - no clock, no randomness, no I/O - so
the same inputs give byte-identical messages. Layout, most stable first so providers' prompt
caches keep hitting across rebuilds:

1. ``system``: the system prompt, byte for byte, never trimmed;
2. ``system``: the person's instruction files (AGENTS.md, CLAUDE.md, their imports …; see
   ``memory/instructions.py``), their standing directives, trimmed only if over their cap;
3. one context message (``user`` by default): task ledger, checkpoint, project memory,
   global memory, notes and archive hits relevant to the current task, each under its own
   token cap and trimmed by importance within it;
4. the verbatim tail: the newest messages that fit, always including the person's last
   message, a tool call always together with all of its results, older tool outputs masked.

The result never exceeds ``budget_tokens`` as counted by the given counter: every step is
verified against the counter's count of the *whole* message list (counters need not be
additive), and the fallbacks shrink the memory sections, then the tail, then truncate the
person's last message, before giving up with ``ContextBudgetError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from stagecrew.memory.index import Hit, MemoryIndex
from stagecrew.memory.instructions import load_instructions
from stagecrew.memory.layers import (
    Checkpoint,
    MemoryPaths,
    parse_sections,
    read_global_memory,
    read_text,
    unquote,
)
from stagecrew.memory.messages import (
    Message,
    MessageGroup,
    content_text,
    group_messages,
    tool_labels_by_id,
)
from stagecrew.memory.tasks import TaskLedger
from stagecrew.memory.tokens import ContextWindow, TokenCounter, should_checkpoint, should_rebuild

__all__ = [
    "CONTEXT_MARKER",
    "ContextBudgetError",
    "ContextInputs",
    "ContextWindow",
    "RebuildConfig",
    "RebuildResult",
    "gather_inputs",
    "rebuild_context",
    "should_checkpoint",
    "should_rebuild",
]

# First line of every rebuilt context message; lets a later rebuild recognise (and not
# re-archive) the context message an earlier rebuild produced.
CONTEXT_MARKER = "[stagecrew: context rebuilt from memory]"
INSTRUCTIONS_MARKER = "[stagecrew: project instructions]"
# The instruction files are the person's standing directives: said once, binding all session.
INSTRUCTIONS_NOTE = (
    "The person's instruction files (AGENTS.md, CLAUDE.md, their imports and rules): "
    "standing directives for the whole session."
)
INSTRUCTIONS_HINT = "the instruction files"

_CHECKPOINT_PRIORITY = {
    "active intent": 100,
    "next action": 100,
    "directives": 9,
    "current work": 8,
    "errors and fixes": 7,
    "live resources": 7,
    "decisions": 6,
    "task tree": 4,  # the ledger section already shows the tree
    "files touched": 5,
    "discovered knowledge": 5,
    "open notes": 3,
}
_MEMORY_PRIORITY = {
    "rules": 9,
    "project context": 8,
    "architecture decisions": 6,
    "durable knowledge": 5,
}
_PROTECTED = frozenset({"active intent", "next action"})
_UNKNOWN_PRIORITY = 4
_LEDGER_PRIORITY = {"[~]": 5, "[!]": 4, "[ ]": 3, "[x]": 1, "[-]": 0}


class ContextBudgetError(ValueError):
    """Even the system prompt plus a minimal last message do not fit the budget."""


@dataclass
class ContextInputs:
    """Everything a rebuild needs, already read from disk (see ``gather_inputs``)."""

    system_prompt: str
    instructions: str = ""
    task_ledger: str = ""
    checkpoint: str = ""
    project_memory: str = ""
    global_memory: str = ""
    notes: str = ""
    archive_hits: list[Hit] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)


@dataclass(frozen=True)
class RebuildConfig:
    """Per-section caps as fractions of the budget, and tail behaviour.

    Caps are ceilings, not reservations: whatever a section does not use goes to the tail.
    The defaults leave the tail at least 48% of the budget. ``context_role`` is ``user``
    because several providers accept only one leading system block; instructions go in a
    second system message so they join the cacheable prefix.
    """

    instructions: float = 0.10
    task_ledger: float = 0.05
    checkpoint: float = 0.15
    project_memory: float = 0.07
    global_memory: float = 0.03
    notes: float = 0.05
    archive: float = 0.07
    keep_tool_outputs: int = 3
    mask_min_chars: int = 300
    archive_hit_chars: int = 900
    context_role: str = "user"


@dataclass
class RebuildResult:
    """The rebuilt messages plus what left the live context.

    ``dropped`` holds original messages in conversation order: whole groups that did not fit,
    the verbatim originals of masked tool outputs (with ``name`` set to the call's label so
    the archive can file them), orphan tool results, and the full last message if it had to
    be shortened. Pass it to ``MemoryIndex.archive`` - the masks promise it is searchable.
    """

    messages: list[Message]
    dropped: list[Message]
    tokens: int
    section_tokens: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------- trimming

Count = Callable[[str], int]


def _trim_lines(text: str, fits: Callable[[str], bool], marker: Callable[[int], str]) -> str:
    """Longest head of ``text`` (whole lines) that fits, followed by a marker; "" if none."""
    lines = text.split("\n")
    lo, hi = 0, len(lines)  # invariant: lines[:lo] (+marker) fits or lo == 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        cand = "\n".join(lines[:mid]) + "\n" + marker(len(lines) - mid)
        if fits(cand):
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        only = marker(len(lines))
        return only if fits(only) else ""
    if lo == len(lines):
        return text
    return "\n".join(lines[:lo]) + "\n" + marker(len(lines) - lo)


def fit_markdown(
    text: str,
    cap: int,
    count: Count,
    priorities: dict[str, int] | None = None,
    protected: frozenset[str] = frozenset(),
    hint: str = "the file",
) -> str:
    """Fit a ``##``-sectioned markdown document under ``cap`` tokens, by importance.

    Untouched when it fits (so unchanged files render byte-identically). Otherwise the least
    important sections (per ``priorities``; unknown ones rank 4, later before earlier) are cut
    first: each keeps its heading and as many leading lines as fit, else just a marker.
    ``protected`` sections are never cut here - they may overflow the cap, and the caller's
    global budget check deals with that.
    """
    if not text.strip():
        return ""
    if count(text) <= cap:
        return text
    preamble, items = parse_sections(text)
    if not items:  # no sections: one block, keep its head
        return _trim_lines(
            preamble, lambda t: count(t) <= cap, lambda n: f"[… {n} more lines in {hint}]"
        )
    prio = priorities or {}
    bodies = [body for _, body in items]

    def key(h: str) -> str:
        return " ".join(h.lower().split())

    def render() -> str:
        parts = [preamble] if preamble else []
        for (heading, _), body in zip(items, bodies, strict=True):
            parts.append(f"## {heading}\n\n{body}" if body else f"## {heading}")
        return "\n\n".join(parts)

    order = sorted(
        range(len(items)), key=lambda i: (prio.get(key(items[i][0]), _UNKNOWN_PRIORITY), -i)
    )
    for i in order:
        if key(items[i][0]) in protected:
            continue
        if count(render()) <= cap:
            break
        original = items[i][1]
        if not original.strip():
            continue

        def fits(candidate: str, i: int = i) -> bool:
            bodies[i] = candidate
            return count(render()) <= cap

        bodies[i] = _trim_lines(original, fits, lambda n: f"[… {n} more lines in {hint}]")
        if not bodies[i]:
            n = original.count("\n") + 1
            bodies[i] = f"[… {n} lines in {hint}]"
    return render()


def fit_ledger(text: str, cap: int, count: Count) -> str:
    """Fit the rendered task tree: finished tasks go first, running ones last."""
    if not text.strip() or count(text) <= cap:
        return text
    lines = text.split("\n")

    def prio(line: str) -> int:
        m = re.match(r"\s*- (\[.\])", line)
        return _LEDGER_PRIORITY.get(m.group(1), 2) if m else 2

    # finished: oldest (top) first; pending/blocked/running: furthest (bottom) first
    order = sorted(
        range(len(lines)), key=lambda i: (prio(lines[i]), i if prio(lines[i]) < 2 else -i)
    )
    keep = [True] * len(lines)

    def render() -> str:
        hidden = keep.count(False)
        kept = [line for line, k in zip(lines, keep, strict=True) if k]
        if hidden:
            kept.append(f"(… {hidden} more tasks; the tasks tool lists them all)")
        return "\n".join(kept)

    for i in order:
        if count(render()) <= cap:
            break
        keep[i] = False
    out = render()
    return out if count(out) <= cap else ""


def fit_notes(text: str, cap: int, count: Count) -> str:
    """Fit ``notes.md``: the newest entries win (a scratchpad's latest thought matters most)."""
    if not text.strip() or count(text) <= cap:
        return text
    preamble, items = parse_sections(text)
    kept: list[str] = []
    for heading, body in reversed(items):
        entry = f"## {heading}\n\n{body}" if body else f"## {heading}"
        cand = [entry, *kept]
        marker = f"(… {len(items) - len(cand)} older notes in notes.md)"
        if count("\n\n".join([marker, *cand])) > cap:
            if not kept:  # the newest note alone is too big: keep its head
                return _trim_lines(
                    entry, lambda t: count(t) <= cap, lambda n: f"[… {n} more lines in notes.md]"
                )
            break
        kept = cand
    hidden = len(items) - len(kept)
    head = [f"(… {hidden} older notes in notes.md)"] if hidden else ([preamble] if preamble else [])
    return "\n\n".join(head + kept)


def format_hits(hits: Sequence[Hit], cap: int, count: Count, max_chars: int) -> str:
    """Archive hits, best first, each cut to ``max_chars``, as many as fit."""
    out: list[str] = []
    for hit in hits:
        where = f"{hit.kind}" + (f" · session {hit.session}" if hit.session else "")
        body = hit.text if len(hit.text) <= max_chars else hit.text[: max_chars - 1] + "…"
        body = "\n".join(f"  {line}" for line in body.split("\n"))
        entry = f"- [{where} · {hit.heading}]\n{body}"
        if count("\n".join([*out, entry])) > cap:
            break
        out.append(entry)
    return "\n".join(out)


# ----------------------------------------------------------------------------- the tail


def _mask_text(label: str, chars: int) -> str:
    return f"[tool output of {label} masked: {chars:,} chars; archived, search memory for it]"


def is_context_message(message: Message) -> bool:
    """True for a context message an earlier rebuild produced."""
    text = message.get("content")
    return isinstance(text, str) and (
        text.startswith(CONTEXT_MARKER) or text.startswith(INSTRUCTIONS_MARKER)
    )


@dataclass
class _Unit:
    """One tail group in two forms: ``full`` (only old outputs masked) and all-masked."""

    group: MessageGroup
    full: list[Message]
    masked: list[Message]
    pinned: bool = False  # the person's last message: always kept


def _prepare_tail(
    conv: list[Message], config: RebuildConfig
) -> tuple[list[_Unit], list[tuple[int, Message]]]:
    """Group the conversation, mask old tool outputs, and set aside unsendable messages."""
    labels = tool_labels_by_id(conv)
    groups = group_messages(conv)
    tool_positions = [
        (gi, mi)
        for gi, g in enumerate(groups)
        if not g.orphan
        for mi, m in enumerate(g.messages)
        if m.get("role") == "tool"
    ]
    keep = max(0, config.keep_tool_outputs)
    recent = set(tool_positions[len(tool_positions) - keep :]) if keep else set()
    orphans: list[tuple[int, Message]] = []
    units: list[_Unit] = []
    last_user = max((i for i, g in enumerate(groups) if g.role == "user"), default=None)

    def masked_copy(m: Message) -> Message | None:
        text = content_text(m.get("content"))
        if len(text) < config.mask_min_chars:
            return None
        label = labels.get(str(m.get("tool_call_id")), str(m.get("name") or "tool"))
        out = dict(m)
        out["content"] = _mask_text(label, len(text))
        return out

    for gi, g in enumerate(groups):
        if g.orphan:
            orphans.extend((g.start, m) for m in g.messages)
            continue
        full: list[Message] = []
        masked: list[Message] = []
        for mi, m in enumerate(g.messages):
            mk = masked_copy(m) if m.get("role") == "tool" else None
            masked.append(mk or m)
            full.append(mk if mk is not None and (gi, mi) not in recent else m)
        units.append(_Unit(g, full, masked, pinned=gi == last_user))
    return units, orphans


def _shorten_message(message: Message, keep_chars: int) -> Message:
    """The message with its middle elided so about ``keep_chars`` characters remain.

    Head and tail survive because that is where people put the request and the question; a
    multi-part message becomes plain text (its original goes to the archive whole).
    """
    text = content_text(message.get("content"))
    keep_chars = max(0, min(keep_chars, len(text)))
    head = text[: keep_chars * 2 // 3]
    tail = text[len(text) - (keep_chars - len(head)) :] if keep_chars > len(head) else ""
    elided = len(text) - len(head) - len(tail)
    out = dict(message)
    out["content"] = (
        f"{head}\n[… {elided:,} chars elided to fit the context; the full message is archived, "
        f"search memory for it]\n{tail}"
    )
    return out


# ----------------------------------------------------------------------------- rebuild


def compact_markdown(text: str) -> str:
    """Drop a lone ``# Title`` preamble and empty ``##`` sections before text enters a prompt.

    The files keep their full fixed shape for people; in the context an empty heading is
    just tokens, and the section tag already names the document.
    """
    preamble, items = parse_sections(text)
    if re.fullmatch(r"#[ \t][^\n]*", preamble.strip()):
        preamble = ""
    parts = [preamble] if preamble.strip() else []
    parts += [f"## {h}\n\n{b}" for h, b in items if b.strip()]
    return "\n\n".join(parts)


def _sections(
    inputs: ContextInputs, budget: int, config: RebuildConfig, count: Count, scale: float
) -> dict[str, str]:
    """Each memory section fitted under its cap (``scale`` shrinks every cap)."""

    def cap(frac: float) -> int:
        return int(budget * frac * scale)

    checkpoint = compact_markdown(inputs.checkpoint)
    out = {
        "task_ledger": fit_ledger(inputs.task_ledger, cap(config.task_ledger), count),
        "checkpoint": fit_markdown(
            checkpoint,
            cap(config.checkpoint),
            count,
            _CHECKPOINT_PRIORITY,
            _PROTECTED,
            "checkpoint.md",
        ),
        "project_memory": fit_markdown(
            compact_markdown(inputs.project_memory),
            cap(config.project_memory),
            count,
            _MEMORY_PRIORITY,
            hint="MEMORY.md",
        ),
        "global_memory": fit_markdown(
            compact_markdown(inputs.global_memory),
            cap(config.global_memory),
            count,
            hint="global MEMORY.md",
        ),
        "notes": fit_notes(compact_markdown(inputs.notes), cap(config.notes), count),
        "archive": format_hits(
            inputs.archive_hits, cap(config.archive), count, config.archive_hit_chars
        ),
    }
    if scale == 0:  # last resort: only the two sections a rebuild must never lose
        cp = Checkpoint.parse(inputs.checkpoint) if inputs.checkpoint.strip() else None
        out = dict.fromkeys(out, "")
        if cp is not None:
            keep = [
                f"## {name}\n\n{cp.get(name)}"
                for name in ("Active intent", "Next action")
                if cp.get(name)
            ]
            out["checkpoint"] = "\n\n".join(keep)
    return out


_SECTION_TAGS = (
    ("task_ledger", "task_ledger", "Task ledger (ids for the tasks tool)"),
    ("checkpoint", "checkpoint", "Session checkpoint (checkpoint.md)"),
    ("project_memory", "project_memory", "Project memory (.stagecrew/memory/MEMORY.md)"),
    ("global_memory", "global_memory", "Global memory (read-only)"),
    ("notes", "notes", "Your notes (notes.md, newest last)"),
    ("archive", "archive_hits", "Archived conversation relevant to the current task"),
)


def _context_message(sections: dict[str, str], role: str) -> tuple[Message, bool]:
    """The context message, and whether it has any section (else it only carries the note)."""
    blocks = []
    for key, tag, title in _SECTION_TAGS:
        if sections.get(key, "").strip():
            blocks.append(f"<{tag}>\n# {title}\n\n{sections[key].strip()}\n</{tag}>")
    intro = (
        f"{CONTEXT_MARKER}\nThe conversation was too long for the context window, so it was "
        "rebuilt from memory: the sections below are current, the messages after this one "
        "are the verbatim recent tail."
    )
    content = intro + "".join(f"\n\n{b}" for b in blocks)
    return {"role": role, "content": content}, bool(blocks)


def rebuild_context(
    inputs: ContextInputs,
    budget_tokens: int,
    counter: TokenCounter,
    config: RebuildConfig | None = None,
) -> RebuildResult:
    """Rebuild the message list under ``budget_tokens``; see the module docstring.

    ``inputs.messages`` is the live conversation; leading system messages and earlier rebuilt
    context messages in it are ignored (they are regenerated). When things do not fit, in
    order: memory sections shrink (caps x0.5, x0.25), then the person's last message is
    shortened in the middle, then sections shrink to nothing but Active intent and Next
    action, then instructions and finally the context message go. Raises
    ``ContextBudgetError`` only when the system prompt plus a marker-only last message cannot
    fit.
    """
    config = config or RebuildConfig()
    budget = int(budget_tokens)
    system: Message = {"role": "system", "content": inputs.system_prompt}
    system_tokens = counter.count_messages([system])
    if system_tokens > budget:
        raise ContextBudgetError(
            f"The system prompt alone ({system_tokens} tokens) exceeds the budget ({budget})."
        )

    conv = list(inputs.messages)
    while conv and conv[0].get("role") == "system":
        conv.pop(0)
    conv = [m for m in conv if not is_context_message(m)]
    units, orphans = _prepare_tail(conv, config)
    pinned = next((u for u in units if u.pinned), None)

    attempts = [
        (1.0, True, True, False),
        (0.5, True, True, False),
        (0.25, True, True, False),
        (0.25, True, True, True),
        (0.1, True, True, True),
        (0.0, True, True, True),
        (0.0, False, True, True),
        (0.0, False, False, True),
    ]
    for scale, with_instructions, with_context, may_shorten in attempts:
        prefix, ctx_msg, sections = _build_prefix(
            inputs, budget, config, counter, system, scale, with_instructions, with_context
        )
        tail = _Tail(prefix, ctx_msg, units, pinned, budget, counter)
        if tail.fill(may_shorten):
            break
    else:
        raise ContextBudgetError(
            f"Budget {budget} cannot hold the system prompt and the last message, even shortened."
        )
    messages = tail.assemble()
    dropped = _collect_dropped(units, tail.chosen, orphans, tail.shortened)
    section_tokens = {k: counter.count_text(v) for k, v in sections.items() if v}
    return RebuildResult(messages, dropped, counter.count_messages(messages), section_tokens)


def _build_prefix(
    inputs: ContextInputs,
    budget: int,
    config: RebuildConfig,
    counter: TokenCounter,
    system: Message,
    scale: float,
    with_instructions: bool,
    with_context: bool,
) -> tuple[list[Message], tuple[Message, bool] | None, dict[str, str]]:
    prefix: list[Message] = [system]
    sections: dict[str, str] = {}
    if with_instructions and inputs.instructions.strip():
        cap = int(budget * config.instructions * scale)
        text = fit_markdown(inputs.instructions, cap, counter.count_text, hint=INSTRUCTIONS_HINT)
        if text.strip():
            content = f"{INSTRUCTIONS_MARKER}\n{INSTRUCTIONS_NOTE}\n\n{text}"
            prefix.append({"role": "system", "content": content})
            sections["instructions"] = text
    ctx_msg = None
    if with_context:
        fitted = _sections(inputs, budget, config, counter.count_text, scale)
        msg, has_sections = _context_message(fitted, config.context_role)
        ctx_msg = (msg, has_sections)
        sections.update(fitted)
    return prefix, ctx_msg, sections


class _Tail:
    """Chooses the verbatim tail for one prefix; every check counts the whole message list.

    Counting the whole list (not summing parts) is what makes the budget guarantee hold for
    any counter, additive or not. The greedy pass uses per-unit counts to skip hopeless
    candidates cheaply, then confirms with a full count.
    """

    def __init__(
        self,
        prefix: list[Message],
        ctx_msg: tuple[Message, bool] | None,
        units: list[_Unit],
        pinned: _Unit | None,
        budget: int,
        counter: TokenCounter,
    ) -> None:
        self.prefix = prefix
        self.ctx_msg = ctx_msg
        self.units = units
        self.pinned = pinned
        self.budget = budget
        self.counter = counter
        self.chosen: dict[int, list[Message]] = {}
        self.shortened: Message | None = None
        self.total_messages = sum(len(u.group.messages) for u in units)

    def assemble(self) -> list[Message]:
        """Prefix, context message (noting how much was archived), chosen units in order."""
        kept = masked = 0
        for u in self.units:
            form = self.chosen.get(id(u))
            if form is not None:
                kept += len(form)
                masked += sum(1 for a, b in zip(u.group.messages, form, strict=True) if a is not b)
        msgs = list(self.prefix)
        if self.ctx_msg is not None:
            ctx, has_sections = self.ctx_msg
            note = self.total_messages - kept + masked
            if note:
                msgs.append(_with_archive_note(ctx, note))
            elif has_sections:  # without sections or archived messages it says nothing
                msgs.append(ctx)
        for u in self.units:
            if id(u) in self.chosen:
                msgs.extend(self.chosen[id(u)])
        return msgs

    def fits(self) -> bool:
        return self.counter.count_messages(self.assemble()) <= self.budget

    def fill(self, may_shorten: bool) -> bool:
        """Choose units; False when the minimum (prefix + last person message) cannot fit.

        Newest first, each unit verbatim or else with its outputs masked, stopping at the first
        that fits neither way (the tail stays contiguous). Sums of per-unit counts steer the
        walk; the whole list is recounted whenever the sum comes near the budget, and at the
        end the oldest units are removed until the exact count fits. So a slow exact counter
        is called a handful of times, not once per message.
        """
        self.chosen = {}
        self.shortened = None
        if self.pinned is not None:
            self.chosen[id(self.pinned)] = self.pinned.full
            if not self.fits() and not (may_shorten and self._shorten_pinned()):
                return False
        elif not self.fits():
            return False
        used = self.counter.count_messages(self.assemble())
        slack = max(64, self.budget // 50)
        order: list[_Unit] = []
        for unit in reversed(self.units):  # newest first
            if unit is self.pinned:
                continue
            placed = False
            for form in (unit.full, unit.masked):
                cost = self.counter.count_messages(form)
                if used + cost > self.budget + slack:
                    continue
                self.chosen[id(unit)] = form
                if used + cost <= self.budget - slack:
                    used += cost
                    placed = True
                    break
                if self.fits():  # close to the limit: ask the counter about the whole list
                    used = self.counter.count_messages(self.assemble())
                    placed = True
                    break
                del self.chosen[id(unit)]
            if not placed:
                break
            order.append(unit)
        while not self.fits():
            if not order:
                return False
            del self.chosen[id(order.pop())]  # the oldest chosen unit goes first
        return True

    def _shorten_pinned(self) -> bool:
        """Elide the middle of the last person message until everything fits."""
        assert self.pinned is not None
        original = self.pinned.group.messages[0]
        lo, hi, best = 0, len(content_text(original.get("content"))), None
        while lo <= hi:
            mid = (lo + hi) // 2
            self.chosen[id(self.pinned)] = [_shorten_message(original, mid)]
            if self.fits():
                best, lo = self.chosen[id(self.pinned)], mid + 1
            else:
                hi = mid - 1
        if best is None:
            del self.chosen[id(self.pinned)]
            return False
        self.chosen[id(self.pinned)] = best
        self.shortened = original
        return True


def _with_archive_note(ctx_msg: Message, archived: int) -> Message:
    head, sep, rest = str(ctx_msg["content"]).partition("\n\n")
    head += (
        f" {archived} earlier messages or tool outputs were archived; search them with the "
        "memory tool when you need their details."
    )
    return {**ctx_msg, "content": f"{head}{sep}{rest}"}


def _collect_dropped(
    units: list[_Unit],
    chosen: dict[int, list[Message]],
    orphans: list[tuple[int, Message]],
    shortened: Message | None,
) -> list[Message]:
    """Originals that left the live context, in conversation order, each once."""
    out: list[tuple[int, Message]] = list(orphans)
    labels = tool_labels_by_id([m for u in units for m in u.group.messages])
    for u in units:
        form = chosen.get(id(u))
        for k, original in enumerate(u.group.messages):
            pos = u.group.start + k
            if form is None or original is shortened:
                out.append((pos, original))
            elif form[k] is not original:  # masked: archive the verbatim output, labelled
                named = dict(original)
                label = labels.get(str(original.get("tool_call_id")))
                if label and not named.get("name"):
                    named["name"] = label
                out.append((pos, named))
    out.sort(key=lambda x: x[0])
    return [m for _, m in out]


# ----------------------------------------------------------------------------- inputs


def gather_inputs(
    paths: MemoryPaths,
    messages: list[Message],
    system_prompt: str,
    index: MemoryIndex | None = None,
    instructions: str | None = None,
    archive_limit: int = 8,
) -> ContextInputs:
    """Read every layer from disk and search the index for the current task.

    The archive query is the person's active intent plus the current task's title and the
    checkpoint's next action: what the agent is about to do decides what it needs back.
    Hits from files already in the context (this session's checkpoint and notes, project
    and global memory) are skipped.
    """
    checkpoint = read_text(paths.checkpoint) if paths.session_id else ""
    notes = read_text(paths.notes) if paths.session_id else ""
    ledger_text = ""
    current_title = ""
    if paths.session_id and paths.ledger.is_file():
        ledger = TaskLedger(paths.tasks_dir)
        ledger_text = ledger.render_ledger(collapse_done=True)
        current = ledger.current()
        current_title = current.title if current else ""
    hits: list[Hit] = []
    if index is not None:
        cp = Checkpoint.parse(checkpoint)
        query = " ".join(
            part
            for part in (unquote(cp.get("Active intent")), current_title, cp.get("Next action"))
            if part
        )
        if query.strip():
            index.sync_files(paths.sources())
            skip = {str(p.absolute()) for p in (paths.project_memory, paths.global_memory)}
            if paths.session_id:
                skip |= {str(paths.checkpoint.absolute()), str(paths.notes.absolute())}
            hits = [
                h
                for h in index.search(query, limit=archive_limit + len(skip))
                if h.source not in skip
            ][:archive_limit]
    return ContextInputs(
        system_prompt=system_prompt,
        instructions=load_instructions(paths.project_root, config_dir=paths.user_config_dir).text
        if instructions is None
        else instructions,
        task_ledger=ledger_text,
        checkpoint=checkpoint,
        project_memory=read_text(paths.project_memory),
        global_memory=read_global_memory(paths),
        notes=notes,
        archive_hits=hits,
        messages=messages,
    )
