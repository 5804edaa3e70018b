"""Repair of malformed tool calls from weaker models.

Small and local models get tool calls wrong in a handful of recurring ways: arguments cut off
by the output limit, single quotes, trailing commas, unquoted keys, Python literals, a code
fence around the JSON; and models without native tool calling write the call as text
(``<tool_call>``, ``<function=...>``, ``<invoke ...>``, a fenced JSON block). This module turns
those into arguments the tool layer can validate, but only when the intent is unambiguous:
a wrong guess (a truncated file written to disk, a path with a stray quote) costs far more than
one more model turn, so everything else comes back as a precise error the model can act on.

Plain library on purpose: no litellm, no ray, so agents, tests and tools can use it cheaply.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RepairResult",
    "TextToolCall",
    "extract_text_tool_calls",
    "repair_arguments",
]

_SUFFIX = "; send one JSON object"


@dataclass(frozen=True)
class RepairResult:
    """The outcome of reading one tool call's arguments.

    Exactly one of ``arguments`` and ``error`` is set. ``repaired`` says whether anything had to
    be fixed (so the agent can count format failures per model); ``note`` says what, in words a
    person reading the event log understands.
    """

    arguments: dict[str, Any] | None
    repaired: bool = False
    error: str | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        """True when ``arguments`` can be handed to the tool's validation."""
        return self.error is None

    def as_json(self) -> str:
        """The arguments as a transcript may carry them: valid JSON always (``{}`` when they
        could not be read), because providers re-parse the transcript on every request."""
        return json.dumps(self.arguments) if self.arguments is not None else "{}"


@dataclass(frozen=True)
class TextToolCall:
    """A tool call a model wrote as text instead of through the native tool-call channel.

    ``arguments``/``error``/``repaired``/``note`` mean the same as in :class:`RepairResult`;
    ``raw`` is the exact text that was taken out of the prose, ``format`` which notation it was
    (``tool_call``, ``function_tag``, ``invoke``, ``json_fence``, ``json``).
    """

    id: str
    name: str
    arguments: dict[str, Any] | None
    error: str | None
    repaired: bool
    note: str
    raw: str
    format: str


# ---------------------------------------------------------------------------------------------
# repair_arguments
# ---------------------------------------------------------------------------------------------


class _Reject(Exception):
    """The lenient reader found something it will not guess about.

    ``reason`` may hold ``{at}``: it becomes `` at position N`` unless json's own message
    already named that position, so the error line never says the same thing twice.
    """

    def __init__(self, reason: str, pos: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pos = pos

    def text(self, strict_pos: int | None) -> str:
        at = "" if strict_pos == self.pos else f" at position {self.pos}"
        return self.reason.replace("{at}", at)


# A valid escape (kept) or a lone backslash starting an invalid one (doubled: kept as text).
_ESCAPE = re.compile(r'\\(u[0-9a-fA-F]{4}|["\\/bfnrt])|\\')
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}
_PY_LITERALS: dict[str, Any] = {"True": True, "False": False, "None": None}
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?\Z")
_BARE_END = set(" \t\r\n{}[]:,\"'/")
_FENCE = re.compile(r"\A```[A-Za-z0-9_+-]*[ \t]*\r?\n(?P<body>.*?)(?:\r?\n)?(?:```\s*)?\Z", re.S)


class _Lenient:
    """An exact reader for JSON plus exactly the slips we are willing to repair.

    Accepted: single-quoted strings, bare identifier keys, trailing commas, a missing comma
    between members on separate lines, Python literals, comments, invalid backslash escapes
    (kept as text: ``"\\d+"`` is a regex), extra closing brackets, and closing brackets missing
    at a clean cut. Everything else raises :class:`_Reject` with the reason. Every string token
    is decoded by ``json.loads`` itself, so an accepted value is exactly what the text says.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.notes: list[str] = []
        self.closed_at_end = 0

    def note(self, what: str) -> None:
        if what not in self.notes:
            self.notes.append(what)

    # -- lexing helpers --------------------------------------------------------------------

    def skip(self) -> None:
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in " \t\r\n":
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end + 1
                self.note("removed comments")
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise _Reject("the text ends inside a comment", self.pos)
                self.pos = end + 2
                self.note("removed comments")
            else:
                return

    def at_end(self) -> bool:
        self.skip()
        return self.pos >= len(self.text)

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def read_string(self, where: str) -> Any:
        """Read a quoted string starting at ``self.pos``; ``where`` names it for errors."""
        text = self.text
        start = self.pos
        quote = text[start]
        i = start + 1
        while i < len(text):
            ch = text[i]
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                self.pos = i + 1
                return self.decode(text[start : i + 1], quote)
            i += 1
        raise _Reject(f"the text ends inside {where}, so the call looks cut off", start)

    def decode(self, token: str, quote: str) -> Any:
        if quote == "'":
            self.note("replaced single quotes")
            inner = token[1:-1]
            out: list[str] = []
            i = 0
            while i < len(inner):
                ch = inner[i]
                if ch == "\\" and i + 1 < len(inner) and inner[i + 1] == "'":
                    out.append("'")
                    i += 2
                    continue
                if ch == "\\" and i + 1 < len(inner):
                    out.append(inner[i : i + 2])
                    i += 2
                    continue
                out.append('\\"' if ch == '"' else ch)
                i += 1
            token = '"' + "".join(out) + '"'
        if any(ord(ch) < 0x20 for ch in token):
            self.note("escaped raw control characters inside strings")
        try:
            return json.loads(token, strict=False)
        except json.JSONDecodeError:
            pass
        # An invalid escape such as "\d" (a regex): keep the backslash as text.
        self.note("kept invalid backslash escapes as text")
        inner = _ESCAPE.sub(lambda m: m.group(0) if m.group(1) else "\\\\", token[1:-1])
        try:
            return json.loads('"' + inner + '"', strict=False)
        except json.JSONDecodeError as exc:  # pragma: no cover - every escape is valid now
            raise _Reject(f"unreadable string{{at}}: {exc.msg}", self.pos) from exc

    def read_bare(self) -> str:
        start = self.pos
        text = self.text
        while self.pos < len(text) and text[self.pos] not in _BARE_END:
            self.pos += 1
        return text[start : self.pos]

    # -- grammar ---------------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        if self.peek() != "{":
            raise _Reject("the arguments must start with '{'", self.pos)
        value = self.read_object(None)
        while not self.at_end():
            if self.peek() in "}]":
                self.pos += 1
                self.note("removed extra closing brackets")
                continue
            raise _Reject("unexpected text after the JSON object{at}", self.pos)
        if self.closed_at_end:
            self.note(
                f"closed {self.closed_at_end} bracket(s) missing at the end "
                "(the text was cut off after a complete value)"
            )
        return value

    def describe(self, key: str | None) -> str:
        return "the arguments" if key is None else f"the value of {key!r}"

    def read_value(self, key: str | None) -> Any:
        ch = self.peek()
        if ch == "":
            raise _Reject(
                f"the text ends before {self.describe(key)}, so the call looks cut off", self.pos
            )
        if ch == "{":
            return self.read_object(key)
        if ch == "[":
            return self.read_array(key)
        if ch in "\"'":
            return self.read_string(f"the string value of {key!r}")
        start = self.pos
        word = self.read_bare()
        if not word:
            raise _Reject(f"unexpected {ch!r}{{at}}", start)
        if word in _LITERALS:
            return _LITERALS[word]
        if word in _PY_LITERALS:
            self.note("converted Python literals")
            return _PY_LITERALS[word]
        if _NUMBER.match(word):
            if self.pos >= len(self.text):
                raise _Reject(
                    f"the text ends inside the number for {key!r}, so it may be cut off", start
                )
            return json.loads(word)
        raise _Reject(
            f"unquoted value {word[:40]!r} for {key!r}{{at}} (quote strings)",
            start,
        )

    def read_key(self) -> str:
        ch = self.peek()
        start = self.pos
        if ch in "\"'":
            return str(self.read_string("a key"))
        word = self.read_bare()
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", word or ""):
            if self.pos >= len(self.text):
                raise _Reject("the text ends inside a key, so the call looks cut off", start)
            self.note("quoted bare keys")
            return word
        raise _Reject("expected a key{at}", start)

    def read_object(self, key: str | None) -> dict[str, Any]:
        start = self.pos
        self.pos += 1  # "{"
        result: dict[str, Any] = {}
        after_comma = False
        value_end = self.pos
        while True:
            ch = self.peek()
            if ch == "":
                if not result and not after_comma:
                    raise _Reject(
                        f"the text ends inside {self.describe(key)}, so the call looks cut off",
                        start,
                    )
                self.closed_at_end += 1
                return result
            if ch == "}":
                if after_comma:
                    self.note("removed trailing commas")
                self.pos += 1
                return result
            if result and not after_comma:
                if ch in "\"'" and "\n" in self.text[value_end : self.pos]:
                    self.note("inserted missing commas")
                else:
                    raise _Reject(
                        "expected ',' or '}'{at} (an unescaped quote inside a string?)",
                        self.pos,
                    )
            member = self.read_key()
            if self.peek() != ":":
                if self.peek() == "":
                    raise _Reject(
                        f"the text ends after the key {member!r}, so the call looks cut off",
                        self.pos,
                    )
                raise _Reject(f"expected ':' after the key {member!r}{{at}}", self.pos)
            self.pos += 1
            if member in result:
                raise _Reject(f"the key {member!r} appears twice{{at}}", self.pos)
            result[member] = self.read_value(member)
            value_end = self.pos
            after_comma = False
            if self.peek() == ",":
                self.pos += 1
                after_comma = True

    def read_array(self, key: str | None) -> list[Any]:
        start = self.pos
        self.pos += 1  # "["
        result: list[Any] = []
        after_comma = False
        while True:
            ch = self.peek()
            if ch == "":
                if not result and not after_comma:
                    raise _Reject(
                        f"the text ends inside {self.describe(key)}, so the call looks cut off",
                        start,
                    )
                self.closed_at_end += 1
                return result
            if ch == "]":
                if after_comma:
                    self.note("removed trailing commas")
                self.pos += 1
                return result
            if result and not after_comma:
                raise _Reject("expected ',' or ']'{at}", self.pos)
            result.append(self.read_value(key))
            after_comma = False
            if self.peek() == ",":
                self.pos += 1
                after_comma = True


def _strict_detail(exc: json.JSONDecodeError) -> str:
    """'Unterminated string starting at' + pos -> 'unterminated string starting at position N'."""
    msg = exc.msg[:1].lower() + exc.msg[1:]
    joiner = " position " if msg.endswith(" at") else " at position "
    return f"{msg}{joiner}{exc.pos}"


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def repair_arguments(raw: str | dict[str, Any] | None, *, _depth: int = 0) -> RepairResult:
    """Read a tool call's arguments, repairing them only when the intent is unambiguous.

    The rule:

    1. ``None``, ``""`` and whitespace mean "no arguments": ``{}`` (not counted as a repair;
       providers send all three for tools without parameters). A dict is taken as it is.
    2. Strict ``json.loads``. An object is returned untouched (wrong *types* inside stay as
       they are: the tool's pydantic model validates them later). A JSON *string* holding an
       object (double-encoded arguments) is decoded once. Any other JSON value is an error.
    3. Otherwise the text (without a surrounding Markdown code fence) is read by an exact
       reader that accepts only these slips: single-quoted strings, bare identifier keys,
       trailing commas, a missing comma between members on separate lines, Python
       ``True``/``False``/``None``, ``//`` and ``/* */`` comments, invalid backslash escapes
       (kept as text), extra closing brackets after the object, and closing brackets missing at
       the end. Every string is decoded by ``json.loads``, so the result is exactly what the
       text says. (json_repair is deliberately not used for the value: 0.64.5 drops a trailing
       ``\n`` from strings whenever it repairs, reads ``{a: 1,b: 2}`` as ``{"a": "1"}`` and
       strips whitespace inside keys, which fuzzing found in 15% of repairable mutations; a
       repair that silently changes file content is what this function exists to prevent.)
    4. Truncation: accepted only when the text was cut *after a complete value* (optionally
       followed by a comma), so repairing means nothing but appending the missing ``}``/``]``.
       A cut inside a key, between a key and its value, inside a string value (a truncated
       ``content`` would silently write half a file), inside a number (``12`` may have been
       ``123``) or right after an opening bracket is rejected: that would invent or shorten a
       value. Unquoted string values, unescaped quotes inside strings, prose around the object
       and several objects are rejected too.

    Errors read ``arguments are not valid JSON: <what and where>[; <why not repaired>]; send
    one JSON object`` so the model gets one precise line to act on.
    """
    if raw is None:
        return RepairResult(arguments={}, note="no arguments given; read as {}")
    if isinstance(raw, dict):
        return RepairResult(arguments=raw)
    if not isinstance(raw, str):
        return RepairResult(
            arguments=None,
            error=f"arguments must be one JSON object, got {_kind(raw)}{_SUFFIX}",
        )
    text = raw.strip()
    if not text:
        return RepairResult(arguments={}, note="empty arguments read as {}")

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        strict_error: json.JSONDecodeError | None = exc
    else:
        strict_error = None
        if isinstance(value, dict):
            if not _finite(value):
                return RepairResult(
                    arguments=None,
                    error=f"arguments are not valid JSON: NaN or Infinity is not a number{_SUFFIX}",
                )
            return RepairResult(arguments=value)
        if isinstance(value, str) and _depth == 0 and value.strip().startswith("{"):
            inner = repair_arguments(value, _depth=1)
            if inner.ok:
                notes = "decoded arguments sent as a JSON string"
                if inner.note:
                    notes += "; " + inner.note
                return RepairResult(arguments=inner.arguments, repaired=True, note=notes)
            return inner
        return RepairResult(
            arguments=None,
            error=f"arguments must be one JSON object, got {_kind(value)}{_SUFFIX}",
        )

    notes: list[str] = []
    body = text
    fence = _FENCE.match(text)
    if fence:
        body = fence.group("body").strip()
        notes.append("removed a code fence")
        try:
            fenced = json.loads(body)
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(fenced, dict) and _finite(fenced):
                return RepairResult(arguments=fenced, repaired=True, note=notes[0])

    detail = _strict_detail(strict_error) if strict_error else "not one JSON object"
    # Positions from the lenient reader are relative to ``body``; only compare when unfenced.
    strict_pos = strict_error.pos if strict_error is not None and body is text else None
    reader = _Lenient(body)
    try:
        repaired = reader.document()
    except _Reject as rej:
        return RepairResult(
            arguments=None,
            error=f"arguments are not valid JSON: {detail}; {rej.text(strict_pos)}{_SUFFIX}",
        )
    if not _finite(repaired):
        return RepairResult(
            arguments=None,
            error=f"arguments are not valid JSON: {detail}; a number is out of range{_SUFFIX}",
        )
    notes.extend(reader.notes)
    return RepairResult(arguments=repaired, repaired=True, note="; ".join(notes))


# ---------------------------------------------------------------------------------------------
# extract_text_tool_calls
# ---------------------------------------------------------------------------------------------

_TOOL_CALL_TAG = re.compile(r"<tool_call>(?P<body>.*?)(?:</tool_call>|\Z)", re.S)
_FUNCTION_TAG = re.compile(
    r"<function=(?P<name>[^>\s]+)\s*>(?P<body>.*?)(?:</function>|(?=<function=)|\Z)", re.S
)
_FUNCTION_CALLS = re.compile(r"<function_calls>(?P<body>.*?)(?:</function_calls>|\Z)", re.S)
_INVOKE = re.compile(
    r"<invoke\s+name\s*=\s*[\"'](?P<name>[^\"']+)[\"']\s*>(?P<body>.*?)"
    r"(?:</invoke>|(?=<invoke\s)|(?=</function_calls>)|\Z)",
    re.S,
)
_EQ_PARAM = re.compile(
    r"<parameter=(?P<name>[^>\s]+)\s*>(?P<value>.*?)"
    r"(?:</parameter>|(?=<parameter=)|(?=</function>)|\Z)",
    re.S,
)
_NAMED_PARAM = re.compile(
    r"<parameter\s+name\s*=\s*[\"'](?P<name>[^\"']+)[\"']\s*>(?P<value>.*?)"
    r"(?:</parameter>|(?=<parameter\s)|(?=</invoke>)|\Z)",
    re.S,
)
_JSON_FENCE = re.compile(
    r"```(?P<lang>json5?|tool_call|tool_code|tool|)[ \t]*\r?\n(?P<body>.*?)(?:```|\Z)", re.S | re.I
)
_NAME_KEYS = ("name", "tool", "tool_name", "function")
_ARG_KEYS = ("arguments", "parameters", "args", "input")
_NAME_IN_TEXT = re.compile(r"[\"']?(?:name|tool|tool_name|function)[\"']?\s*:\s*[\"']([^\"']+)")


def _param_value(value: str) -> str:
    """Drop the one newline models put after the opening and before the closing tag."""
    if value.startswith("\r\n"):
        value = value[2:]
    elif value.startswith("\n"):
        value = value[1:]
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    return value


@dataclass
class _Found:
    """One tool call found in the text, before ids are numbered."""

    name: str
    result: RepairResult
    format: str


def _call_from_object(
    obj: Any, known: set[str], fmt: str, outer: RepairResult | None = None
) -> _Found | None:
    """Read ``{"name": ..., "arguments": {...}}`` and its common variants.

    ``outer`` is the repair the whole call object needed, if any: its note is kept so the
    event log says what was fixed.
    """
    if not isinstance(obj, dict):
        return None
    nested = obj.get("function")
    if isinstance(nested, dict) and isinstance(nested.get("name"), str):
        obj = nested  # OpenAI shape: {"type": "function", "function": {"name", "arguments"}}
    name_key = next((k for k in _NAME_KEYS if isinstance(obj.get(k), str)), None)
    if name_key is None or obj[name_key] not in known:
        return None
    name = obj[name_key]
    arg_key = next((k for k in _ARG_KEYS if k in obj), None)
    if arg_key is not None:
        raw_args = obj[arg_key]
    else:
        # {"tool": "read", "file_path": "a.py"}: the other keys are the arguments.
        raw_args = {k: v for k, v in obj.items() if k not in (name_key, "type", "id")}
    if isinstance(raw_args, dict | str) or raw_args is None:
        result = repair_arguments(raw_args)
    else:
        result = RepairResult(
            arguments=None,
            error=f"arguments must be one JSON object, got {_kind(raw_args)}{_SUFFIX}",
        )
    if outer is not None and outer.repaired and result.ok:
        note = "; ".join(n for n in (outer.note, result.note) if n)
        result = RepairResult(arguments=result.arguments, repaired=True, note=note)
    return _Found(name, result, fmt)


def _calls_from_json_text(text: str, known: set[str], fmt: str) -> list[_Found]:
    """Tool calls in a JSON text holding one call object or a list of them."""
    stripped = text.strip()
    outer: RepairResult | None = None
    try:
        value: Any = json.loads(stripped)
    except json.JSONDecodeError:
        result = repair_arguments(stripped)
        if result.ok:
            value, outer = result.arguments, result
        else:
            # Unreadable, but if it clearly names a known tool the model should hear why.
            match = _NAME_IN_TEXT.search(stripped)
            if match and match.group(1) in known:
                return [_Found(match.group(1), result, fmt)]
            return []
    items = value if isinstance(value, list) else [value]
    found = [_call_from_object(item, known, fmt, outer) for item in items]
    if any(f is None for f in found):
        return []  # a list mixing calls with other things is data, not calls
    return [f for f in found if f is not None]


def _calls_from_function_tag(name: str, body: str, known: set[str]) -> list[_Found]:
    if name not in known:
        return []
    params = list(_EQ_PARAM.finditer(body))
    if params:
        args = {m.group("name"): _param_value(m.group("value")) for m in params}
        return [_Found(name, repair_arguments(args), "function_tag")]
    return [_Found(name, repair_arguments(body.strip() or None), "function_tag")]


def _calls_from_invoke(name: str, body: str, known: set[str]) -> list[_Found]:
    if name not in known:
        return []
    args = {m.group("name"): _param_value(m.group("value")) for m in _NAMED_PARAM.finditer(body)}
    return [_Found(name, repair_arguments(args), "invoke")]


def _parse_span(kind: str, match: re.Match[str], known: set[str]) -> list[_Found]:
    if kind == "tool_call":
        body = match.group("body")
        inner = list(_FUNCTION_TAG.finditer(body))
        if inner:
            out: list[_Found] = []
            for m in inner:
                out.extend(_calls_from_function_tag(m.group("name"), m.group("body"), known))
            return out
        return _calls_from_json_text(body, known, "tool_call")
    if kind == "function_tag":
        return _calls_from_function_tag(match.group("name"), match.group("body"), known)
    if kind == "function_calls":
        out = []
        for m in _INVOKE.finditer(match.group("body")):
            out.extend(_calls_from_invoke(m.group("name"), m.group("body"), known))
        return out
    if kind == "invoke":
        return _calls_from_invoke(match.group("name"), match.group("body"), known)
    if kind == "json_fence":
        return _calls_from_json_text(match.group("body"), known, "json_fence")
    raise AssertionError(kind)  # pragma: no cover


def extract_text_tool_calls(text: str, known_tools: set[str]) -> tuple[list[TextToolCall], str]:
    """Find tool calls written as text; return them (in order) and the prose that remains.

    For models without native tool calling. Recognised notations: ``<tool_call>{json}
    </tool_call>`` (Hermes, Qwen; also wrapping ``<function=...>``), ``<function=NAME>{json}
    </function>`` and ``<function=NAME><parameter=KEY>value</parameter></function>`` (Llama,
    Qwen-coder), ``<invoke name="NAME"><parameter name="KEY">value</parameter></invoke>``
    (optionally inside ``<function_calls>``), Markdown fences (```json, ```tool_call or bare)
    holding ``{"name"|"tool": NAME, "arguments"|"parameters"|"args"|"input": {...}}`` or a list
    of those, and a message that is nothing but such a JSON object.

    Only names in ``known_tools`` count: anything else stays in the prose untouched (it may be
    an example the model is explaining). A closing tag missing at the very end is tolerated (the
    model stopped at its stop token). Tag parameter values are kept as strings (minus the one
    newline models add on each side): the tool's pydantic model coerces "10" to 10, and
    guessing types here would turn file content like ``123`` into a number. Every call's
    arguments go through :func:`repair_arguments`, so a call can come back with ``error`` set
    for the agent to report. Ids are ``call_text_1``, ``call_text_2``, ... in text order.
    """
    known = set(known_tools)
    candidates: list[tuple[int, int, str, re.Match[str]]] = []
    for kind, pattern in (
        ("tool_call", _TOOL_CALL_TAG),
        ("function_calls", _FUNCTION_CALLS),
        ("function_tag", _FUNCTION_TAG),
        ("invoke", _INVOKE),
        ("json_fence", _JSON_FENCE),
    ):
        for m in pattern.finditer(text):
            candidates.append((m.start(), -(m.end() - m.start()), kind, m))
    candidates.sort(key=lambda c: (c[0], c[1]))

    found: list[tuple[int, int, list[_Found]]] = []
    covered_until = -1
    for start, _neg_len, kind, match in candidates:
        if start < covered_until:
            continue  # inside a span already taken (e.g. <function=...> within <tool_call>)
        calls = _parse_span(kind, match, known)
        if calls:
            found.append((start, match.end(), calls))
            covered_until = match.end()

    if not found and text.strip().startswith("{"):
        calls = _calls_from_json_text(text, known, "json")
        if calls:
            found.append((0, len(text), calls))

    result: list[TextToolCall] = []
    prose_parts: list[str] = []
    last = 0
    for start, end, calls in found:
        prose_parts.append(text[last:start])
        for call in calls:
            result.append(
                TextToolCall(
                    id=f"call_text_{len(result) + 1}",
                    name=call.name,
                    arguments=call.result.arguments,
                    error=call.result.error,
                    repaired=call.result.repaired,
                    note=call.result.note,
                    raw=text[start:end],
                    format=call.format,
                )
            )
        last = end
    prose_parts.append(text[last:])
    prose = "".join(prose_parts) if found else text
    if found:
        prose = re.sub(r"\n{3,}", "\n\n", prose).strip()
    return result, prose
