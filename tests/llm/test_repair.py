"""Tool-call repair: a corpus of what weak models really send, with exact expected outcomes.

Every accepted case pins the arguments, whether it counts as a repair and what the note says;
every rejected case pins the error line the model will read, because that line is all it gets
to correct itself.
"""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys
from typing import Any

import pytest

from stagecrew.llm.repair import (
    RepairResult,
    TextToolCall,
    extract_text_tool_calls,
    repair_arguments,
)

CUT_OFF = "so the call looks cut off"

# (raw arguments, expected arguments, note)
ACCEPTED: list[tuple[str, dict[str, Any], str]] = [
    # Missing closing brackets after a complete value: nothing but "}" / "]" is added.
    (
        '{"file_path": "a.py"',
        {"file_path": "a.py"},
        "closed 1 bracket(s) missing at the end (the text was cut off after a complete value)",
    ),
    (
        '{"file_path": "a.py",',
        {"file_path": "a.py"},
        "closed 1 bracket(s) missing at the end (the text was cut off after a complete value)",
    ),
    (
        '{"edits": [{"old": "a", "new": "b"}, {"old": "c", "new": "d"}]',
        {"edits": [{"old": "a", "new": "b"}, {"old": "c", "new": "d"}]},
        "closed 1 bracket(s) missing at the end (the text was cut off after a complete value)",
    ),
    (
        '{"opts": {"recursive": true',
        {"opts": {"recursive": True}},
        "closed 2 bracket(s) missing at the end (the text was cut off after a complete value)",
    ),
    # Quoting and punctuation slips.
    (
        "{'file_path': 'a.py', 'limit': 5}",
        {"file_path": "a.py", "limit": 5},
        "replaced single quotes",
    ),
    (
        "{'msg': 'it\\'s \"fine\"'}",
        {"msg": 'it\'s "fine"'},
        "replaced single quotes",
    ),
    ('{"a": 1, "b": [1, 2,],}', {"a": 1, "b": [1, 2]}, "removed trailing commas"),
    ('{file_path: "a.py", limit: 10}', {"file_path": "a.py", "limit": 10}, "quoted bare keys"),
    (
        '{"a": True, "b": None, "c": False}',
        {"a": True, "b": None, "c": False},
        "converted Python literals",
    ),
    ('{"a": "x"\n "b": 2}', {"a": "x", "b": 2}, "inserted missing commas"),
    # json_repair 0.64.5 gets these three wrong (drops the "\n", reads a as "1"): exact here.
    (
        '{"file_path": "a.py", "content": "x = 1\\n",',
        {"file_path": "a.py", "content": "x = 1\n"},
        "closed 1 bracket(s) missing at the end (the text was cut off after a complete value)",
    ),
    ('{"content": "x = 1\\n",}', {"content": "x = 1\n"}, "removed trailing commas"),
    ("{a: 1,b: 2}", {"a": 1, "b": 2}, "quoted bare keys"),
    ('{"a": 1} }', {"a": 1}, "removed extra closing brackets"),
    ('{"a": 1, // the count\n "b": 2}', {"a": 1, "b": 2}, "removed comments"),
    ('{"pattern": "\\d+\\s"}', {"pattern": "\\d+\\s"}, "kept invalid backslash escapes as text"),
    (
        '{"content": "line one\nline two"}',
        {"content": "line one\nline two"},
        "escaped raw control characters inside strings",
    ),
    # Code fences, alone or combined with other slips.
    ('```json\n{"file_path": "a.py"}\n```', {"file_path": "a.py"}, "removed a code fence"),
    (
        "```\n{'file_path': 'a.py',}\n```",
        {"file_path": "a.py"},
        "removed a code fence; replaced single quotes; removed trailing commas",
    ),
    # Double-encoded: a JSON string holding the object.
    (
        '"{\\"file_path\\": \\"a.py\\"}"',
        {"file_path": "a.py"},
        "decoded arguments sent as a JSON string",
    ),
    (
        "\"{'file_path': 'a.py'}\"",
        {"file_path": "a.py"},
        "decoded arguments sent as a JSON string; replaced single quotes",
    ),
]

# (raw arguments, exact error)
REJECTED: list[tuple[Any, str]] = [
    # The brief's example: cut inside a key. Completing it would invent a key and a value.
    (
        '{"file_path": "a.py", "con',
        "arguments are not valid JSON: unterminated string starting at position 22; "
        f"the text ends inside a key, {CUT_OFF}; send one JSON object",
    ),
    # Cut inside a string value: accepting would write half a file.
    (
        '{"file_path": "a.py", "content": "def main():\\n    pri',
        "arguments are not valid JSON: unterminated string starting at position 33; "
        f"the text ends inside the string value of 'content', {CUT_OFF}; send one JSON object",
    ),
    (
        '{"file_path": "a.py", "content":',
        "arguments are not valid JSON: expecting value at position 32; "
        f"the text ends before the value of 'content', {CUT_OFF}; send one JSON object",
    ),
    (
        '{"file_path": "a.py", "content"',
        "arguments are not valid JSON: expecting ':' delimiter at position 31; "
        f"the text ends after the key 'content', {CUT_OFF}; send one JSON object",
    ),
    (
        '{"limit": 12',
        "arguments are not valid JSON: expecting ',' delimiter at position 12; "
        "the text ends inside the number for 'limit', so it may be cut off; send one JSON object",
    ),
    (
        '{"paths": [',
        "arguments are not valid JSON: expecting value at position 11; "
        f"the text ends inside the value of 'paths', {CUT_OFF}; send one JSON object",
    ),
    (
        "{",
        "arguments are not valid JSON: expecting property name enclosed in double quotes at "
        f"position 1; the text ends inside the arguments, {CUT_OFF}; send one JSON object",
    ),
    # Ambiguous content.
    (
        '{"command": "echo "hi""}',
        "arguments are not valid JSON: expecting ',' delimiter at position 19; "
        "expected ',' or '}' (an unescaped quote inside a string?); send one JSON object",
    ),
    (
        "{'msg': 'it's fine'}",
        "arguments are not valid JSON: expecting property name enclosed in double quotes at "
        "position 1; expected ',' or '}' at position 12 (an unescaped quote inside a string?); "
        "send one JSON object",
    ),
    (
        '{"file_path": a.py}',
        "arguments are not valid JSON: expecting value at position 14; "
        "unquoted value 'a.py' for 'file_path' (quote strings); send one JSON object",
    ),
    (
        '{"a": 1,, "b": 2}',
        "arguments are not valid JSON: expecting property name enclosed in double quotes at "
        "position 8; expected a key; send one JSON object",
    ),
    (
        '{"a" 1}',
        "arguments are not valid JSON: expecting ':' delimiter at position 5; "
        "expected ':' after the key 'a'; send one JSON object",
    ),
    (
        '{"a": 1}{"b": 2}',
        "arguments are not valid JSON: extra data at position 8; "
        "unexpected text after the JSON object; send one JSON object",
    ),
    (
        'Sure! {"file_path": "a.py"}',
        "arguments are not valid JSON: expecting value at position 0; "
        "the arguments must start with '{'; send one JSON object",
    ),
    (
        "{'a': 1, 'a': 2,}",
        "arguments are not valid JSON: expecting property name enclosed in double quotes at "
        "position 1; the key 'a' appears twice at position 13; send one JSON object",
    ),
    (
        '{"a": NaN}',
        "arguments are not valid JSON: NaN or Infinity is not a number; send one JSON object",
    ),
    (
        "{'a': 1e999}",
        "arguments are not valid JSON: expecting property name enclosed in double quotes at "
        "position 1; a number is out of range; send one JSON object",
    ),
    # A missing comma is only inserted at a line break: on one line it is too ambiguous.
    (
        '{"a": "x" "b": 2}',
        "arguments are not valid JSON: expecting ',' delimiter at position 10; "
        "expected ',' or '}' (an unescaped quote inside a string?); send one JSON object",
    ),
    # Valid JSON, wrong shape.
    ('["a.py"]', "arguments must be one JSON object, got an array; send one JSON object"),
    ('"a.py"', "arguments must be one JSON object, got a string; send one JSON object"),
    ("42", "arguments must be one JSON object, got a number; send one JSON object"),
    (["a.py"], "arguments must be one JSON object, got an array; send one JSON object"),
]


@pytest.mark.parametrize(("raw", "expected", "note"), ACCEPTED)
def test_unambiguous_repairs(raw: str, expected: dict[str, Any], note: str) -> None:
    result = repair_arguments(raw)
    assert result == RepairResult(arguments=expected, repaired=True, error=None, note=note)
    assert result.ok


@pytest.mark.parametrize(("raw", "error"), REJECTED)
def test_ambiguous_or_broken_arguments_are_rejected_precisely(raw: Any, error: str) -> None:
    result = repair_arguments(raw)
    assert result.error == error
    assert result.arguments is None and not result.repaired and not result.ok


@pytest.mark.parametrize(
    "raw",
    [
        '{"file_path": "a.py", "limit": 10}',
        '{"limit": "10", "recursive": "yes", "paths": "a.py"}',  # wrong types: validated later
        '{"text": "unicode ✓ and \\u00e9 and \\"quotes\\""}',
        "{}",
        '  {"padded": true}\n',
    ],
)
def test_valid_json_objects_pass_untouched(raw: str) -> None:
    assert repair_arguments(raw) == RepairResult(arguments=json.loads(raw))


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 3 else 5)
    if kind == 0:
        return rng.choice([True, False, None])
    if kind == 1:
        return rng.randint(-(10**6), 10**6)
    if kind == 2:
        return rng.choice([0.5, -1.25, 3e-05, 1e20])
    if kind in (3, 4):
        alphabet = string.ascii_letters + string.digits + " \n\t'\"\\{}[]:,/*#é✓"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    if kind == 5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return _random_object(rng, depth + 1)


def _random_object(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    keys = ["file_path", "content", "x", "limit", "a b", "é", "old_string"]
    return {rng.choice(keys): _random_value(rng, depth) for _ in range(rng.randrange(1, 5))}


def test_exact_reader_gives_back_random_objects_through_every_slip() -> None:
    # Property check against the standard library: random objects, their text damaged in the
    # ways we repair; the repair must give back exactly the original object, never a near one.
    rng = random.Random(20240601)
    for _ in range(300):
        obj = _random_object(rng)
        text = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
        assert repair_arguments(text) == RepairResult(obj)
        # Python's repr: single quotes (or double when needed), True/False/None.
        py_text = repr(obj).replace("1e+20", "1e20")
        assert repair_arguments(py_text).arguments == obj, py_text
        # A trailing comma, and a cut after the last complete value.
        assert repair_arguments(text[:-1] + ",}").arguments == obj
        assert repair_arguments(text[:-1] + ",").arguments == obj
        # Cut inside the last string value: rejected, never shortened.
        if text.endswith('"}'):
            assert repair_arguments(text[:-2]).arguments is None, text[:-2]


def test_no_arguments_and_dicts() -> None:
    assert repair_arguments(None) == RepairResult({}, note="no arguments given; read as {}")
    assert repair_arguments("") == RepairResult({}, note="empty arguments read as {}")
    assert repair_arguments("  \n") == RepairResult({}, note="empty arguments read as {}")
    given = {"file_path": "a.py", "limit": "10"}
    assert repair_arguments(given) == RepairResult(given)


def test_repair_module_stays_light() -> None:
    # Agents import this module: it must not drag in litellm (4 s, 120 MB) or ray.
    code = (
        "import sys, stagecrew.llm.repair\n"
        "bad = [m for m in ('litellm', 'ray', 'openai') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------------------------------
# Tool calls written as text
# ---------------------------------------------------------------------------------------------

KNOWN = {"read", "write", "bash"}


def only(text: str) -> tuple[TextToolCall, str]:
    calls, prose = extract_text_tool_calls(text, KNOWN)
    assert len(calls) == 1, calls
    return calls[0], prose


def test_hermes_tool_call_tag() -> None:
    text = (
        "I'll read the file.\n<tool_call>\n"
        '{"name": "read", "arguments": {"file_path": "a.py"}}\n</tool_call>'
    )
    call, prose = only(text)
    assert call == TextToolCall(
        id="call_text_1",
        name="read",
        arguments={"file_path": "a.py"},
        error=None,
        repaired=False,
        note="",
        raw=text[len("I'll read the file.\n") :],
        format="tool_call",
    )
    assert prose == "I'll read the file."


def test_tool_call_tag_with_repairs_and_string_arguments() -> None:
    call, _ = only("<tool_call>{'name': 'read', 'arguments': {'file_path': 'a.py',}}</tool_call>")
    assert (call.arguments, call.repaired) == ({"file_path": "a.py"}, True)
    assert call.note == "replaced single quotes; removed trailing commas"

    call, _ = only('<tool_call>{"name": "read", "arguments": {"file_path": "a.py"}')
    assert call.arguments == {"file_path": "a.py"} and call.repaired  # no closing tag, no "}"

    call, _ = only(
        '<tool_call>{"name": "bash", "arguments": "{\\"command\\": \\"ls\\"}"}</tool_call>'
    )
    assert (call.name, call.arguments, call.repaired) == ("bash", {"command": "ls"}, False)


def test_truncated_text_call_keeps_the_name_and_reports_the_error() -> None:
    call, prose = only(
        '<tool_call>{"name": "write", "arguments": {"file_path": "a.py", "content": "par'
    )
    assert call.name == "write" and call.arguments is None
    assert call.error == (
        "arguments are not valid JSON: unterminated string starting at position 64; "
        f"the text ends inside the string value of 'content', {CUT_OFF}; send one JSON object"
    )
    assert prose == ""


def test_function_tag_with_json_body() -> None:
    call, prose = only('Reading.\n<function=read>{"file_path": "a.py"}</function>\nDone.')
    assert (call.name, call.arguments, call.format) == (
        "read",
        {"file_path": "a.py"},
        "function_tag",
    )
    assert prose == "Reading.\n\nDone."


def test_qwen_coder_parameter_tags() -> None:
    text = (
        "<tool_call>\n<function=write>\n<parameter=file_path>\nsrc/a.py\n</parameter>\n"
        "<parameter=content>\ndef f():\n    return 1\n\n</parameter>\n"
        "<parameter=limit>\n10\n</parameter>\n</function>\n</tool_call>"
    )
    call, prose = only(text)
    # One newline is dropped on each side; types stay strings for the tool's validation.
    assert call.arguments == {
        "file_path": "src/a.py",
        "content": "def f():\n    return 1\n",
        "limit": "10",
    }
    assert call.raw == text and prose == ""

    # A missing </parameter> before the next parameter is tolerated.
    call, _ = only("<function=bash><parameter=command>ls -la<parameter=timeout>5</function>")
    assert call.arguments == {"command": "ls -la", "timeout": "5"}


def test_invoke_blocks_with_and_without_wrapper() -> None:
    text = (
        "Let me check.\n<function_calls>\n"
        '<invoke name="read">\n<parameter name="file_path">a.py</parameter>\n</invoke>\n'
        "<invoke name='bash'><parameter name='command'>git status</parameter></invoke>\n"
        "</function_calls>\nThen I will fix it."
    )
    calls, prose = extract_text_tool_calls(text, KNOWN)
    assert [(c.id, c.name, c.arguments, c.format) for c in calls] == [
        ("call_text_1", "read", {"file_path": "a.py"}, "invoke"),
        ("call_text_2", "bash", {"command": "git status"}, "invoke"),
    ]
    assert prose == "Let me check.\n\nThen I will fix it."

    call, _ = only('<invoke name="read"><parameter name="file_path">b.py</parameter></invoke>')
    assert call.arguments == {"file_path": "b.py"}


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ('{"name": "read", "arguments": {"file_path": "a.py"}}', {"file_path": "a.py"}),
        ('{"name": "read", "parameters": {"file_path": "a.py"}}', {"file_path": "a.py"}),
        ('{"name": "read", "args": {"file_path": "a.py"}}', {"file_path": "a.py"}),
        ('{"tool": "read", "file_path": "a.py"}', {"file_path": "a.py"}),
        ('{"tool": "read", "input": {"file_path": "a.py"}}', {"file_path": "a.py"}),
        (
            '{"type": "function", "function": {"name": "read", '
            '"arguments": "{\\"file_path\\": \\"a.py\\"}"}}',
            {"file_path": "a.py"},
        ),
    ],
)
def test_fenced_json_calls(block: str, expected: dict[str, Any]) -> None:
    call, prose = only(f"Let me look:\n```json\n{block}\n```\nthen more")
    assert (call.name, call.arguments, call.format) == ("read", expected, "json_fence")
    assert prose == "Let me look:\n\nthen more"


def test_fenced_list_of_calls_and_bare_json_message() -> None:
    calls, prose = extract_text_tool_calls(
        '```\n[{"name": "read", "arguments": {"file_path": "a.py"}},'
        ' {"name": "bash", "arguments": {"command": "ls"}}]\n```',
        KNOWN,
    )
    assert [(c.name, c.arguments) for c in calls] == [
        ("read", {"file_path": "a.py"}),
        ("bash", {"command": "ls"}),
    ]
    assert prose == ""

    call, prose = only('{"name": "read", "parameters": {"file_path": "a.py"}}')
    assert (call.arguments, call.format, prose) == ({"file_path": "a.py"}, "json", "")


def test_unknown_tools_and_plain_json_stay_in_the_prose() -> None:
    for text in [
        '<tool_call>{"name": "delete_everything", "arguments": {}}</tool_call>',
        "<function=rm_rf>{}</function>",
        '<invoke name="nope"><parameter name="x">1</parameter></invoke>',
        'Here is the config:\n```json\n{"name": "my-app", "version": "1.0"}\n```',
        "No tool calls here, just talk about <tool_call> tags.",
    ]:
        calls, prose = extract_text_tool_calls(text, {"write"})
        assert calls == [] and prose == text
    # A list mixing a call with other data is data.
    text = '```json\n[{"name": "read", "arguments": {}}, 3]\n```'
    assert extract_text_tool_calls(text, KNOWN) == ([], text)


def test_mixed_formats_keep_text_order_and_number_ids() -> None:
    text = (
        'First:\n<tool_call>{"name": "read", "arguments": {"file_path": "a.py"}}'
        '</tool_call>\nSecond:\n```json\n{"tool": "bash", "command": "ls"}\n```\n'
        'Third: <function=write>{"file_path": "b.py", "content": "x"}</function>'
    )
    calls, prose = extract_text_tool_calls(text, KNOWN)
    assert [(c.id, c.name, c.format) for c in calls] == [
        ("call_text_1", "read", "tool_call"),
        ("call_text_2", "bash", "json_fence"),
        ("call_text_3", "write", "function_tag"),
    ]
    assert prose == "First:\n\nSecond:\n\nThird:"


def test_malformed_arguments_in_tags_go_through_repair() -> None:
    call, _ = only("<function=read>{'file_path': 'a.py'}</function>")
    assert (call.arguments, call.repaired, call.note) == (
        {"file_path": "a.py"},
        True,
        "replaced single quotes",
    )
    call, _ = only('<function=read>{"file_path": "a.py", "lim</function>')
    assert call.arguments is None
    assert call.error is not None and "ends inside a key" in call.error
