"""The judge's ruling and a forgiving-but-honest parser for the model's reply.

Models wrap JSON in code fences, chat around it, or answer ``"met": "yes"``. None of that should
cost a judge round, so the parser tolerates it. What it must never do is *guess*: a reply with no
usable ``met`` value raises ``VerdictParseError`` with a message precise enough to send back to
the model on a retry, instead of silently defaulting to met or not met.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, Field

VerdictSource = Literal["model", "execution", "policy"]


class Verdict(BaseModel):
    """A ruling on whether a goal condition holds, and what it was based on.

    ``source`` says who decided: ``execution`` (a verification command failed, which overrides
    any model opinion), ``model`` (the judge model read the evidence), or ``policy`` (the judge
    itself failed and the configured error policy decided). ``impossible`` asks the goal loop to
    stop even though the condition is not met.
    """

    met: bool
    impossible: bool = False
    reason: str
    missing: list[str] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)
    source: VerdictSource = "model"


class VerdictParseError(ValueError):
    """The judge's reply held no usable verdict; the message says exactly what was wrong."""


_TRUE_WORDS = {"true", "yes", "y", "met", "1", "pass", "passed", "done", "satisfied"}
_FALSE_WORDS = {
    "false",
    "no",
    "n",
    "not met",
    "not_met",
    "unmet",
    "0",
    "fail",
    "failed",
    "not done",
    "not satisfied",
}
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\n(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def coerce_bool(value: Any, field: str) -> bool:
    """Read a model's boolean leniently (``"yes"``, ``"Met"``, ``1``) but never guess."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().strip(".!").lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise VerdictParseError(
        f"field '{field}': expected true/false (or yes/no), got {json.dumps(value)[:80]}"
    )


def _balanced_objects(text: str) -> list[str]:
    """Every top-level ``{...}`` span in ``text``, skipping braces inside JSON strings."""
    spans: list[str] = []
    depth = 0
    start = -1
    in_string = False
    escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"' and depth > 0:
            in_string = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans


def _loads_lenient(blob: str) -> Any:
    try:
        return json.loads(blob)
    except json.JSONDecodeError:
        # Trailing commas are the one defect models make often enough to repair by hand.
        return json.loads(_TRAILING_COMMA.sub(r"\1", blob))


def extract_json_objects(text: str) -> list[dict[str, Any]]:
    """All JSON objects found in a model reply: fenced blocks first, then bare ``{...}`` spans.

    Shared by the goal judge and the Max Mode ranker, which both ask for "a JSON object" and get
    it decorated in the same ways.
    """
    candidates: list[str] = []
    for block in _FENCE.findall(text):
        candidates.extend(_balanced_objects(block) or [block.strip()])
    candidates.extend(_balanced_objects(text))
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    for blob in candidates:
        if blob in seen:
            continue
        seen.add(blob)
        try:
            value = _loads_lenient(blob)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def _str_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [item if isinstance(item, str) else json.dumps(item) for item in value]
    raise VerdictParseError(
        f"field '{field}': expected a list of strings, got {type(value).__name__}"
    )


def _snippet(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def parse_verdict(text: str, *, source: VerdictSource = "model") -> Verdict:
    """Turn the judge model's reply into a ``Verdict``.

    When several JSON objects appear (a model restating the schema, then answering), the last
    one carrying ``met`` wins: it is the model's final word.
    """
    if not text or not text.strip():
        raise VerdictParseError("empty reply: expected a JSON object with a 'met' field")
    objects = extract_json_objects(text)
    if not objects:
        raise VerdictParseError(f"no JSON object found in reply: {_snippet(text)!r}")
    with_met = [obj for obj in objects if "met" in obj]
    if not with_met:
        keys = sorted({key for obj in objects for key in obj})
        raise VerdictParseError(
            f"JSON object has no 'met' field (keys seen: {', '.join(keys) or 'none'})"
        )
    data = with_met[-1]
    met = coerce_bool(data["met"], "met")
    impossible_raw = data.get("impossible", False)
    impossible = False if impossible_raw is None else coerce_bool(impossible_raw, "impossible")
    reason = data.get("reason", data.get("rationale", data.get("explanation")))
    if not isinstance(reason, str) or not reason.strip():
        raise VerdictParseError("field 'reason': expected a non-empty string explaining the ruling")
    return Verdict(
        met=met,
        # "Impossible" only means something for an unmet goal; a met goal is simply done.
        impossible=impossible and not met,
        reason=reason.strip(),
        missing=_str_list(data.get("missing"), "missing"),
        evidence=_str_list(data.get("evidence"), "evidence"),
        source=source,
    )
