"""Helpers for OpenAI-format chat messages shared by the archive, the rebuild and the checkpoint.

They live in one place because all three must agree on two things: how a tool call is named in
short form (``read(src/a.py)``), and which messages belong together (an assistant message that
calls tools plus every tool result answering it). If the rebuild and the archive disagreed, a
masked tool output could point at an archive entry that was filed under a different label.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]

# Argument names that best identify what a tool call touched, most telling first.
_LABEL_KEYS = (
    "path",
    "file_path",
    "filename",
    "file",
    "command",
    "cmd",
    "pattern",
    "query",
    "url",
    "id",
    "action",
)


def content_text(content: Any) -> str:
    """The text of a message ``content``: a string, ``None``, or a list of typed parts.

    Image and other non-text parts become a short placeholder rather than disappearing, so a
    transcript still shows that the person sent something.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out: list[str] = []
        for part in content:
            if isinstance(part, dict):
                if part.get("type") == "text" or "text" in part:
                    out.append(str(part.get("text", "")))
                else:
                    out.append(f"[{part.get('type', 'part')}]")
            else:
                out.append(str(part))
        return "\n".join(out)
    return str(content)


def tool_calls_of(message: Message) -> list[dict[str, Any]]:
    """The tool calls of an assistant message (empty for every other message)."""
    calls = message.get("tool_calls") if message.get("role") == "assistant" else None
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


def parse_arguments(call: dict[str, Any]) -> dict[str, Any] | str:
    """A tool call's arguments as a dict when they are JSON, else the raw string."""
    fn = call.get("function") or {}
    raw = fn.get("arguments", "") if isinstance(fn, dict) else ""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        return str(raw)
    try:
        parsed = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError:
        return raw
    return parsed if isinstance(parsed, dict) else raw


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tool_call_label(call: dict[str, Any], limit: int = 60) -> str:
    """``name(most telling argument)``, e.g. ``read(src/a.py)`` or ``bash(pytest -q)``."""
    fn = call.get("function") or {}
    name = str(fn.get("name", "tool")) if isinstance(fn, dict) else "tool"
    args = parse_arguments(call)
    if isinstance(args, str):
        return f"{name}({_shorten(args, limit)})" if args.strip() else f"{name}()"
    for key in _LABEL_KEYS:
        value = args.get(key)
        if isinstance(value, str | int | float) and str(value).strip():
            return f"{name}({_shorten(str(value), limit)})"
    for value in args.values():
        if isinstance(value, str) and value.strip():
            return f"{name}({_shorten(value, limit)})"
    return f"{name}()"


@dataclass
class MessageGroup:
    """Messages that must stay or go together: one message, or a tool call with its results.

    ``start`` is the index of the first message in the original list; ``orphan`` marks tool
    results with no matching call before them (providers reject those, so callers drop them).
    """

    start: int
    messages: list[Message] = field(default_factory=list)
    orphan: bool = False

    @property
    def role(self) -> str:
        return str(self.messages[0].get("role", "")) if self.messages else ""

    @property
    def end(self) -> int:
        return self.start + len(self.messages)


def group_messages(messages: list[Message]) -> list[MessageGroup]:
    """Split a conversation into atomic groups (see ``MessageGroup``).

    An assistant message with ``tool_calls`` absorbs the tool messages right after it whose
    ``tool_call_id`` it issued (or that carry no id at all, for lenient producers). The group
    stops at the first other message, so an unmatched tool result becomes its own orphan group.
    """
    groups: list[MessageGroup] = []
    i = 0
    while i < len(messages):
        msg = messages[i]
        calls = tool_calls_of(msg)
        if calls:
            ids = {c.get("id") for c in calls}
            group = MessageGroup(start=i, messages=[msg])
            j = i + 1
            while j < len(messages) and messages[j].get("role") == "tool":
                tcid = messages[j].get("tool_call_id")
                if tcid is not None and tcid not in ids:
                    break
                group.messages.append(messages[j])
                j += 1
            groups.append(group)
            i = j
            continue
        groups.append(MessageGroup(start=i, messages=[msg], orphan=msg.get("role") == "tool"))
        i += 1
    return groups


def tool_labels_by_id(messages: list[Message]) -> dict[str, str]:
    """Map every ``tool_call_id`` to the short label of the call that produced it."""
    labels: dict[str, str] = {}
    for msg in messages:
        for call in tool_calls_of(msg):
            cid = call.get("id")
            if isinstance(cid, str):
                labels[cid] = tool_call_label(call)
    return labels


def message_to_text(
    message: Message, labels: dict[str, str] | None = None, max_chars: int | None = None
) -> str:
    """One message as plain text for transcripts and the archive.

    Tool calls are written as ``→ name({json args})`` and results as ``← label: output`` so a
    search for a path or command finds both the call and what it returned.
    """
    role = str(message.get("role", "?"))
    body = content_text(message.get("content"))
    if max_chars is not None and len(body) > max_chars:
        body = body[:max_chars] + f"\n[… {len(body) - max_chars:,} more chars]"
    if role == "tool":
        label = (labels or {}).get(str(message.get("tool_call_id")), message.get("name") or "tool")
        return f"tool result {label}:\n{body}"
    lines = [f"{role}: {body}" if body else f"{role}:"]
    for call in tool_calls_of(message):
        fn = call.get("function") or {}
        name = fn.get("name", "tool") if isinstance(fn, dict) else "tool"
        raw = fn.get("arguments", "") if isinstance(fn, dict) else ""
        raw = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)
        if max_chars is not None and len(raw) > max_chars:
            raw = raw[:max_chars] + "…"
        lines.append(f"→ {name}({raw})")
    return "\n".join(lines)
