"""``crew export``: a session as a Markdown transcript or as its events in JSON.

The Markdown is for reading and sharing: the summary as a table, then the person's prompts,
the assistant's text and every tool call with its arguments and (cut) output under a
``<details>`` fold, and the events beside them as italic lines. The JSON is the log's own
envelopes, as the supervisor wrote them: nothing added, so nothing that was scrubbed from the
log (registered key values) can come back through an export.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from stagecrew.messages import Envelope
from stagecrew.sessions.catalog import SessionSummary
from stagecrew.sessions.text import duration, tool_line
from stagecrew.sessions.transcript import Entry, Transcript, clock

OUTPUT_CHARS = 4_000


def events_json(envelopes: Iterable[Envelope]) -> str:
    """The envelopes as one JSON array, each exactly as a log line holds it."""
    return json.dumps([env.model_dump(mode="json") for env in envelopes], ensure_ascii=False)


def _fence(text: str, info: str = "") -> str:
    """``text`` in a code fence longer than any run of backticks inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{info}\n{text.rstrip()}\n{ticks}"


def _cut(text: str, limit: int = OUTPUT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… ({len(text) - limit:,} more characters in the log)"


def _pretty_args(raw: str) -> str:
    try:
        return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    except (json.JSONDecodeError, TypeError):
        return raw


def _summary_table(summary: SessionSummary) -> list[str]:
    rows: list[tuple[str, str]] = [("Session", f"`{summary.id}`")]
    if summary.forked_from:
        source, _, step = summary.forked_from.partition("@")
        rows.append(("Forked from", f"`{source}` at step {step}"))
    if summary.started is not None:
        rows.append(("Started", clock(summary.started)))
    rows += [
        ("Duration", f"{summary.duration_s:.1f} s"),
        ("Agent", summary.agent),
        ("Model", f"`{summary.model}`"),
        ("Stop reason", summary.stop_reason or "no stop record (running or killed)"),
        ("Steps", str(summary.steps)),
        ("Tokens", f"{summary.tokens:,}"),
        ("Cost", f"${summary.cost_usd:.4f}"),
    ]
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _who(entry: Entry) -> str:
    return f" · {entry.actor}" if entry.actor else ""


def _entry(entry: Entry) -> list[str]:
    if entry.kind == "header":
        return [f"## {entry.text}", ""]
    if entry.kind == "prompt":
        quoted = "\n".join(f"> {line}" if line else ">" for line in entry.text.splitlines())
        return [f"### You · {clock(entry.ts)}", "", quoted, ""]
    if entry.kind == "text":
        step = f" · step {entry.step}" if entry.step is not None else ""
        return [f"### Assistant{step}{_who(entry)}", "", entry.text, ""]
    if entry.kind == "tool" and entry.tool is not None:
        fold = entry.tool
        step = f"**[{entry.step}]** " if entry.step is not None else ""
        lines = [f"{step}{_code_span(tool_line(fold))}{_who(entry)}", ""]
        body = ["**Arguments**", "", _fence(_pretty_args(fold.arguments), "json"), ""]
        if fold.ok is not None:
            body += [f"**Output** ({duration(fold.duration_ms)})", "", _fence(_cut(fold.content))]
        return [*lines, "<details><summary>details</summary>", "", *body, "", "</details>", ""]
    if entry.kind == "finish":
        return ["---", "", f"**{entry.text}**", ""]
    return [f"_{_escape(entry.text)}_{_who(entry)}", ""]


def _code_span(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _escape(text: str) -> str:
    """Text for an italic line: Markdown's emphasis characters taken literally."""
    return re.sub(r"([\\`*_\[\]<>])", r"\\\1", " ".join(text.split()))


def to_markdown(summary: SessionSummary, transcript: Transcript) -> str:
    """The whole session as one Markdown document."""
    title = summary.title or f"Session {summary.id}"
    lines: list[str] = [f"# {title}", "", *_summary_table(summary), ""]
    for entry in transcript.entries:
        lines += _entry(entry)
    return "\n".join(lines).rstrip() + "\n"


def export(
    summary: SessionSummary, transcript: Transcript, envelopes: list[Envelope], fmt: str
) -> str:
    """``md`` or ``json`` (see the module docstring)."""
    if fmt == "json":
        return events_json(envelopes) + "\n"
    return to_markdown(summary, transcript)


__all__ = ["events_json", "export", "to_markdown"]
