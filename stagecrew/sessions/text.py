"""Transcript entries as plain lines: what ``crew show`` and ``crew replay`` print.

Plain text with a style name per line, so the terminal colours it (``cli/sessions_cmd.py``)
and tests read it without escape codes. The primary agent's step number is printed once, in
front of the step's first line (``[3] ⏺ bash(pytest -q) · ok · 12 lines · 0.8 s``): it is the
number ``crew fork --at`` takes. Lines of subagents and candidates are indented under a bar.
"""

from __future__ import annotations

from dataclasses import dataclass

from stagecrew.sessions.transcript import Entry, ToolFold

TOOL_MARKS = {True: "⏺", False: "✗", None: "…"}


@dataclass(frozen=True)
class TextLine:
    """One printed line; ``style`` is ``prompt``, ``header``, ``finish-ok`` or an entry level
    (``dim``, ``info``, ``ok``, ``warning``, ``error``)."""

    text: str
    style: str


def duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def tool_line(fold: ToolFold) -> str:
    """``⏺ read(stats.py) · ok · 3 lines · 4 ms``."""
    line = f"{TOOL_MARKS[fold.ok]} {fold.tool}({fold.summary}) · {fold.outcome}"
    if fold.ok is not None:
        line += f" · {duration(fold.duration_ms)}"
    return line


class TextTranscript:
    """Renders entries one by one (replay prints them as their time comes)."""

    def __init__(self) -> None:
        self._shown_step: int | None = None

    def lines(self, entry: Entry) -> list[TextLine]:
        body = self._body(entry)
        if not body:
            return []
        if entry.step is not None and not entry.actor and entry.step != self._shown_step:
            self._shown_step = entry.step
            body[0] = TextLine(f"[{entry.step}] {body[0].text}", body[0].style)
        if entry.actor:
            body = [TextLine(f"  │ {line.text}", line.style) for line in body]
        return body

    @staticmethod
    def _body(entry: Entry) -> list[TextLine]:
        if entry.kind == "header":
            return [TextLine(f"── {entry.text}", "header")]
        if entry.kind == "prompt":
            first, *rest = entry.text.strip().splitlines() or [""]
            return [TextLine(f"❯ {first}", "prompt"), *(TextLine(f"  {r}", "prompt") for r in rest)]
        if entry.kind == "text":
            return [TextLine(line, "info") for line in entry.text.splitlines()]
        if entry.kind == "tool" and entry.tool is not None:
            return [TextLine(tool_line(entry.tool), entry.level)]
        if entry.kind == "finish":
            return [TextLine(entry.text, "finish-ok" if entry.level == "ok" else "error")]
        return [TextLine(entry.text, entry.level)]


def render_lines(entries: list[Entry]) -> list[TextLine]:
    """Every line of a transcript, in order."""
    text = TextTranscript()
    return [line for entry in entries for line in text.lines(entry)]
