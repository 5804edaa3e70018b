"""Logic for the checkpoint writer: prompt a model to update ``checkpoint.md``, then verify.

The checkpoint writer is a separate actor that, at 40/60/80% of the window, reads the new
messages and asks a (cheap) model to update the fixed checkpoint sections. Models paraphrase,
and a paraphrased path or port is a wrong path or port, so the model's output is never trusted
on two points:

* **Active intent** is always the person's own words, verbatim, whatever the model wrote;
* every **literal** (path, port, URL, backticked command, ``--flag``, env var, version) seen in
  the new messages is guaranteed to appear byte for byte in the result - missing ones are
  appended under Live resources or Discovered knowledge.

If the model fails or returns something unusable, ``checkpoint_without_model`` produces a
deterministic update instead; ``update_checkpoint`` wraps both and never raises, because the
writer's failures must never stop the primary agent.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

from stagecrew.memory.layers import (
    CHECKPOINT_SECTIONS,
    Checkpoint,
    fenced_lines,
    norm_heading,
)
from stagecrew.memory.messages import (
    Message,
    content_text,
    message_to_text,
    parse_arguments,
    tool_call_label,
    tool_calls_of,
    tool_labels_by_id,
)

MAX_LITERALS = 200

# ----------------------------------------------------------------------------- literals

_BACKTICK = re.compile(r"(?<!`)`([^`\n]{1,200})`(?!`)")
_URL = re.compile(r"\b(?:https?|wss?|ftp|file)://[^\s<>\"'`)\]}]+")
_HOSTPORT = re.compile(
    r"(?<![\w.:/-])(?:localhost|(?:\d{1,3}\.){3}\d{1,3}|\[[0-9a-fA-F:]+\]|"
    r"[a-zA-Z][\w-]*(?:\.[\w-]+)+):\d{2,5}(?![\w:])"
)
_PORT_WORD = re.compile(r"\bport\s+\d{2,5}\b", re.IGNORECASE)
_PATH = re.compile(r"(?<![\w/.~$@-])(?:~|\.{1,2})?/?(?:[\w.@+-]+/)+[\w.@+-]*(?::\d+(?::\d+)?)?")
_FILE = re.compile(
    r"(?<![\w/.-])[\w-]+(?:\.[\w-]+)*\.(?:py|pyi|js|mjs|ts|tsx|jsx|md|toml|json|ya?ml|ini|cfg"
    r"|txt|sh|rs|go|java|c|h|cc|cpp|hpp|sql|html|css|lock|env|cfg)(?::\d+(?::\d+)?)?(?![\w-])"
)
_FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*(?:=[^\s`'\",;)]+)?")
_ENV = re.compile(
    r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|(?<![\w$])[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+(?:=[^\s`'\",;)]+)?"
)
_VERSION = re.compile(
    r"(?<![\w.])v?\d+\.\d+\.\d+(?:[-+][\w.]+)?(?![\w.])"
    r"|(?<![\w.])v\d+\.\d+(?![\w.])"
    r"|\b(?:[Pp]ython|[Nn]ode|[Vv]ersion)\s?\d+\.\d+(?:\.\d+)?\b"
    r"|(?<![\w.-])[A-Za-z][\w.-]*(?:==|>=|<=|~=)\d+(?:\.\d+)*[\w.+-]*"
)
_SHELL_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*(bash|sh|shell|console|zsh|fish)?\s*$")
_COMMAND_KEYS = ("command", "cmd")
_PATH_KEYS = ("path", "file_path", "filename", "file")
_TRAILING = ".,;:!?)]}>'\""


def _is_resource(literal: str) -> bool:
    """URLs, ``host:port`` and ``port N`` belong under Live resources; ``app.py:42`` does not."""
    if "://" in literal or re.match(r"port\s+\d", literal, re.IGNORECASE):
        return True
    return bool(_HOSTPORT.fullmatch(literal)) and not _FILE.fullmatch(literal)


def _is_path(candidate: str) -> bool:
    """Filter ``and/or``, ``1/2`` and dates out of slash-separated words."""
    if candidate.startswith(("/", "./", "../", "~/")) and len(candidate) > 2:
        return True
    if candidate.endswith("/") and candidate.count("/") >= 2:
        return True
    return bool(re.search(r"/[\w.@+-]*\.[A-Za-z][A-Za-z0-9]{0,7}(?::\d+){0,2}$", candidate))


def _literals_in_text(text: str) -> list[tuple[int, str]]:
    """(offset, literal) pairs found outside code fences, plus shell-fence command lines."""
    found: list[tuple[int, str]] = []
    lines = text.split("\n")
    fenced = fenced_lines(lines)
    outside: list[str] = []
    in_shell = False
    offset = 0
    for line, in_fence in zip(lines, fenced, strict=True):
        if in_fence:
            m = _SHELL_FENCE.match(line)
            if m:  # a fence line: opening (maybe shell) or closing
                in_shell = bool(m.group(2)) and not in_shell
            elif in_shell and 0 < len(line.strip()) <= 160:
                cmd = line.strip().removeprefix("$ ").strip()
                found.append((offset + line.find(cmd), cmd))
            outside.append(" " * len(line))
        else:
            in_shell = False
            outside.append(line)
        offset += len(line) + 1
    plain = "\n".join(outside)
    for m in _BACKTICK.finditer(plain):
        found.append((m.start(1), m.group(1)))
    for m in _URL.finditer(plain):
        found.append((m.start(), m.group().rstrip(_TRAILING)))
    no_urls = _URL.sub(lambda m: " " * len(m.group()), plain)
    for m in _HOSTPORT.finditer(no_urls):
        found.append((m.start(), m.group()))
    for m in _PORT_WORD.finditer(no_urls):
        found.append((m.start(), m.group()))
    for m in _PATH.finditer(no_urls):
        cand = m.group().rstrip(_TRAILING)
        if _is_path(cand):
            found.append((m.start(), cand))
    for m in _FILE.finditer(no_urls):
        found.append((m.start(), m.group()))
    for rx in (_FLAG, _ENV, _VERSION):
        for m in rx.finditer(no_urls):
            found.append((m.start(), m.group().rstrip(_TRAILING)))
    return [(o, lit) for o, lit in found if lit.strip()]


def _strings(value: object) -> Iterable[tuple[str, str]]:
    """(key, string) pairs of a decoded JSON value, depth first."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str):
                yield str(k), v
            else:
                yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def extract_literals(messages: list[Message], limit: int = MAX_LITERALS) -> list[str]:
    """Exact strings from the conversation that a summary must not paraphrase.

    Looks at what the person and the agent *said and did*: user and assistant text, and the
    decoded arguments of tool calls (a bash ``command`` is kept whole when short). Tool
    *outputs* are skipped: a directory listing would flood the checkpoint with paths nobody
    chose, and outputs are archived and searchable anyway. First occurrence order, no
    duplicates; beyond ``limit`` the newest are kept.
    """
    out: dict[str, None] = {}
    for message in messages:
        role = message.get("role")
        if role in ("user", "assistant"):
            text = content_text(message.get("content"))
            for _, lit in sorted(_literals_in_text(text), key=lambda x: x[0]):
                out.setdefault(lit, None)
        for call in tool_calls_of(message):
            args = parse_arguments(call)
            if isinstance(args, str):
                for _, lit in sorted(_literals_in_text(args), key=lambda x: x[0]):
                    out.setdefault(lit, None)
                continue
            for key, value in _strings(args):
                if key in _COMMAND_KEYS and 0 < len(value.strip()) <= 160 and "\n" not in value:
                    out.setdefault(value.strip(), None)
                if key in _PATH_KEYS and value.strip() and "\n" not in value:
                    out.setdefault(value.strip(), None)
                for _, lit in sorted(_literals_in_text(value), key=lambda x: x[0]):
                    out.setdefault(lit, None)
    literals = list(out)
    return literals[-limit:] if len(literals) > limit else literals


def _code_span(literal: str) -> str:
    """Markdown code span that contains ``literal`` byte for byte, backticks included."""
    if "`" not in literal:
        return f"`{literal}`"
    longest = max(len(m) for m in re.findall(r"`+", literal))
    fence = "`" * (longest + 1)
    return f"{fence} {literal} {fence}"


def ensure_literals(checkpoint: Checkpoint, literals: Iterable[str]) -> list[str]:
    """Append every literal missing from the rendered checkpoint; returns those appended.

    Longer literals are placed first so a command that contains a path also covers the path.
    URLs, ``host:port`` and ``port N`` go under Live resources, the rest under Discovered
    knowledge.
    """
    rendered = checkpoint.render()
    unique = [lit for lit in dict.fromkeys(literals) if lit and "\n" not in lit]
    missing: list[str] = []
    covered = rendered
    for lit in sorted(unique, key=len, reverse=True):
        if lit not in covered:
            missing.append(lit)
            covered += "\n" + lit
    order = {lit: i for i, lit in enumerate(unique)}
    missing.sort(key=lambda lit: order[lit])
    resources = [lit for lit in missing if _is_resource(lit)]
    knowledge = [lit for lit in missing if not _is_resource(lit)]
    if resources:
        checkpoint.append("Live resources", "\n".join(f"- {_code_span(x)}" for x in resources))
    if knowledge:
        checkpoint.append(
            "Discovered knowledge", "\n".join(f"- {_code_span(x)}" for x in knowledge)
        )
    return missing


_DECISION = re.compile(
    r"^\s*(?:[-*]\s*)?(?:\*\*)?(?:decision|decided|we decided)(?:\*\*)?\s*[:\-–]\s*(.+?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
MAX_DECISIONS = 10


def extract_decisions(messages: list[Message], limit: int = MAX_DECISIONS) -> list[str]:
    """Decisions the agent or the person stated as such ("Decision: keep the CSV order"), in
    order, each once: a decision said in passing is exactly what a rebuild must not lose, and
    the writer's model may leave it out."""
    found: dict[str, None] = {}
    for m in messages:
        if m.get("role") not in ("assistant", "user"):
            continue
        for match in _DECISION.finditer(content_text(m.get("content"))):
            text = match.group(1).strip().rstrip(".")
            if text:
                found[text] = None
    return list(found)[-limit:]


def ensure_decisions(checkpoint: Checkpoint, decisions: Iterable[str]) -> list[str]:
    """Append each stated decision the checkpoint does not hold yet under Decisions."""
    rendered = checkpoint.render().lower()
    missing = [d for d in decisions if d.lower() not in rendered]
    if missing:
        checkpoint.append("Decisions", "\n".join(f"- {d}" for d in missing))
    return missing


# ----------------------------------------------------------------------------- the prompt

_SECTION_GUIDE = {
    "Active intent": "the person's goal in their own words (it is filled in for you; copy it)",
    "Next action": "the single concrete next step, specific enough to resume cold",
    "Directives": "standing instructions the person gave in the conversation (do/don't), "
    "verbatim where possible; never those of the instruction files",
    "Task tree": "the task ids and their status, as they stand",
    "Current work": "what is in progress right now and how far it got",
    "Files touched": "`path` - what changed or why it matters, one per line",
    "Discovered knowledge": "facts learned about the code/environment that save re-discovery",
    "Errors and fixes": "errors hit and how they were fixed (or that they are still open)",
    "Live resources": "running servers, ports, URLs, background jobs, temp dirs",
    "Decisions": "choices made and why, so they are not re-litigated",
    "Open notes": "anything else worth keeping; questions still open",
}


def render_transcript(
    messages: list[Message], max_chars: int = 60_000, tool_output_chars: int = 1_500
) -> str:
    """Messages as text for the writer model, newest kept when over ``max_chars``."""
    labels = tool_labels_by_id(messages)
    parts = [message_to_text(m, labels, max_chars=tool_output_chars) for m in messages]
    total = 0
    kept: list[str] = []
    for part in reversed(parts):
        if total + len(part) > max_chars and kept:
            kept.append(f"[… {len(parts) - len(kept)} earlier messages omitted]")
            break
        kept.append(part)
        total += len(part) + 2
    return "\n\n".join(reversed(kept))


def _instruction_block(instructions: str, max_chars: int) -> str:
    """The person's instruction files for the writer to check against, cut to ``max_chars``."""
    text = instructions.strip()
    if not text:
        return ""
    if len(text) > max_chars:
        text = text[:max_chars] + f"\n[… {len(text) - max_chars:,} more characters]"
    return f"<instruction_files>\n{text}\n</instruction_files>\n\n"


def build_checkpoint_prompt(
    current_checkpoint: str,
    new_messages: list[Message],
    person_goal: str,
    literals: list[str] | None = None,
    max_transcript_chars: int = 60_000,
    instructions: str = "",
    max_instruction_chars: int = 8_000,
) -> list[Message]:
    """Messages asking a model to return the updated checkpoint, whole, in fixed sections.

    ``instructions`` is the text of the person's instruction files (AGENTS.md, CLAUDE.md …):
    their standing directives, already in the agent's system prompt through every rebuild.
    The writer sees them only to leave them out of Directives and never contradict them.
    """
    literals = extract_literals(new_messages) if literals is None else literals
    guide = "\n".join(f"## {name}\n{_SECTION_GUIDE[name]}" for name in CHECKPOINT_SECTIONS)
    system = (
        "You maintain the checkpoint of a coding agent's session: the document the agent "
        "resumes from when its context is rebuilt. Update it with what the new messages add "
        "or change.\n\n"
        "Return the complete updated checkpoint as markdown and nothing else, with exactly "
        "these `##` sections in this order (leave a section empty rather than dropping it):\n\n"
        f"{guide}\n\n"
        "Rules:\n"
        "- Copy paths, ports, URLs, commands, flags, env vars and versions byte for byte; "
        "never paraphrase them.\n"
        "- Keep what is still true from the current checkpoint; remove what is finished or "
        "no longer true; prefer short bullets.\n"
        "- Sections whose heading is not in the list above were written by the person: "
        "leave them exactly as they are.\n"
        "- Do not invent facts that are not in the checkpoint or the messages.\n"
        "- The person's instruction files (AGENTS.md, CLAUDE.md, their imports and rules) are "
        "standing directives already in the agent's system prompt: do not copy them into the "
        "checkpoint, and never write anything that contradicts them."
    )
    literal_block = "\n".join(f"- {_code_span(lit)}" for lit in literals) or "(none)"
    user = (
        _instruction_block(instructions, max_instruction_chars)
        + f"<person_goal>\n{person_goal}\n</person_goal>\n\n"
        f"<current_checkpoint>\n{current_checkpoint.strip() or '(empty)'}\n"
        "</current_checkpoint>\n\n"
        f"<new_messages>\n{render_transcript(new_messages, max_transcript_chars)}\n"
        "</new_messages>\n\n"
        f"<literals>\nExact strings from the new messages; keep the relevant ones verbatim:\n"
        f"{literal_block}\n</literals>\n\n"
        "Return the updated checkpoint now."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# ----------------------------------------------------------------------------- merging


class CheckpointFormatError(ValueError):
    """The model's output has none of the checkpoint sections: use the fallback instead."""


def _unwrap(model_output: str) -> str:
    """Strip a ```markdown fence a model wrapped the whole answer in, and chatter before it."""
    text = model_output.strip()
    m = re.match(r"^(`{3,}|~{3,})[\w-]*\n(.*)\n\1\s*$", text, re.DOTALL)
    if m:
        text = m.group(2)
    first = re.search(r"^#{1,2} ", text, re.MULTILINE)
    return text[first.start() :] if first else text


def merge_checkpoint(
    model_output: str, current: Checkpoint, literals: Iterable[str], person_goal: str
) -> Checkpoint:
    """The model's checkpoint, corrected: verbatim intent, person sections, every literal.

    Sections the model returned replace the current ones (an empty section clears it); those
    it omitted keep their current text, since omission is more often laziness than intent.
    Sections the person added are theirs and stay as they are; sections the model invented
    are folded into Open notes. Raises ``CheckpointFormatError`` if no known section is found.
    """
    parsed = Checkpoint.parse(_unwrap(model_output or ""))
    if not parsed.sections:
        raise CheckpointFormatError("model output has none of the checkpoint sections")
    result = Checkpoint(
        sections=dict(current.sections), extras=list(current.extras), preamble=current.preamble
    )
    for name, body in parsed.sections.items():
        result.sections[name] = body
    person_sections = {norm_heading(h) for h, _, _ in current.extras}
    invented = [
        f"### {h}\n\n{b}" if b else f"### {h}"
        for h, b, _ in parsed.extras
        if norm_heading(h) not in person_sections and b.strip()
    ]
    if invented:
        result.append("Open notes", "\n\n".join(invented))
    if person_goal.strip():
        result.set_active_intent(person_goal)
    ensure_literals(result, literals)
    return result


_ERROR_START = re.compile(r"^\s*(error\b|traceback|exception|fatal\b|failed\b)", re.IGNORECASE)


def checkpoint_without_model(
    current: Checkpoint,
    new_messages: list[Message],
    person_goal: str,
    literals: Iterable[str] | None = None,
    task_tree: str | None = None,
) -> Checkpoint:
    """A deterministic checkpoint update for when the writer model fails.

    Less insightful than a model, but nothing is lost: the person's goal, the ledger, the
    latest activity, every file a tool call touched, tool errors, and all literals.
    """
    result = Checkpoint(
        sections=dict(current.sections), extras=list(current.extras), preamble=current.preamble
    )
    if person_goal.strip():
        result.set_active_intent(person_goal)
    if task_tree is not None:
        result.set("Task tree", task_tree)
    if not result.get("Next action").strip():
        result.set("Next action", "Continue toward the active intent from the latest messages.")

    labels = tool_labels_by_id(new_messages)
    last_text = next(
        (
            content_text(m.get("content")).strip()
            for m in reversed(new_messages)
            if m.get("role") == "assistant" and content_text(m.get("content")).strip()
        ),
        "",
    )
    calls = [tool_call_label(c) for m in new_messages for c in tool_calls_of(m)][-5:]
    work = ["Updated without the checkpoint model (it failed); latest activity:"]
    if last_text:
        work.append("> " + (last_text[:400] + "…" if len(last_text) > 400 else last_text))
    if calls:
        work.append("Recent tool calls: " + ", ".join(f"`{c}`" for c in calls))
    result.set("Current work", "\n".join(line.replace("\n", " ") for line in work))

    files = result.get("Files touched")
    new_files: list[str] = []
    for m in new_messages:
        for call in tool_calls_of(m):
            args = parse_arguments(call)
            name = (call.get("function") or {}).get("name", "tool")
            if isinstance(args, dict):
                for key in _PATH_KEYS:
                    value = args.get(key)
                    if isinstance(value, str) and value.strip() and value not in files:
                        entry = f"- `{value}` ({name})"
                        if entry not in new_files:
                            new_files.append(entry)
    if new_files:
        result.append("Files touched", "\n".join(new_files))

    errors = []
    for m in new_messages:
        if m.get("role") != "tool":
            continue
        first = content_text(m.get("content")).strip().split("\n", 1)[0]
        if _ERROR_START.match(first):
            label = labels.get(str(m.get("tool_call_id")), "tool")
            errors.append(f"- {label}: {first[:200]}")
    if errors:
        result.append("Errors and fixes", "\n".join(errors[-5:]))

    ensure_literals(result, extract_literals(new_messages) if literals is None else literals)
    return result


def update_checkpoint(
    current: Checkpoint,
    new_messages: list[Message],
    person_goal: str,
    model_output: str | None,
    task_tree: str | None = None,
) -> tuple[Checkpoint, str | None]:
    """Merge the model's answer, or fall back; never raises. Returns (checkpoint, problem).

    ``model_output`` is ``None`` when the model call itself failed. ``problem`` describes why
    the fallback was used (for the writer's log), or is ``None`` when the model's output was
    merged.
    """
    literals = extract_literals(new_messages)
    decisions = extract_decisions(new_messages)
    problem: str | None = None
    if model_output is not None:
        try:
            merged = merge_checkpoint(model_output, current, literals, person_goal)
            if task_tree is not None and not merged.get("Task tree").strip():
                merged.set("Task tree", task_tree)
            ensure_decisions(merged, decisions)
            return merged, None
        except Exception as exc:  # the writer must never take the agent down
            problem = f"{type(exc).__name__}: {exc}"
    else:
        problem = "no model output"
    try:
        fallback = checkpoint_without_model(current, new_messages, person_goal, literals, task_tree)
        ensure_decisions(fallback, decisions)
        return fallback, problem
    except Exception as exc:  # pragma: no cover - last line of defence
        return current, f"{problem}; fallback failed: {type(exc).__name__}: {exc}"


def messages_digest(messages: list[Message]) -> str:
    """Stable short id of a message batch (for the writer's log and idempotence checks)."""
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
