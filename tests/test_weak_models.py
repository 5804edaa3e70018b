"""Weak models through the real agent: malformed tool calls, text-form calls, format failures.

Every model answer comes from the scripted OpenAI-compatible server over real HTTP, through
litellm and the in-process ``ModelGateway``, into the same ``Agent`` the Ray actor runs. For
each malformed call the test checks the two things that matter to a person: the agent did not
crash, and either the tool ran with exactly the repaired arguments (checked on disk and in
the tool result) or the *next* request the model received carries one precise error naming
the tool and the field or problem, so the model can fix its call. Nothing else on disk may
change in either case.

Run inside ``scripts/offline`` (litellm must never reach the network).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stagecrew.actors.inprocess import CollectingSink, InProcessModelPort, run_agent_inprocess
from stagecrew.actors.spec import AgentSpec
from stagecrew.messages import (
    Message,
    ModelRequested,
    ModelSpecWire,
    Notice,
    StopReason,
    ToolFinished,
)
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.filterwarnings("ignore:Accessing the 'model_:DeprecationWarning")

WEAK = "openai/weak"
STRONG = "openai/strong"
NOTES = "alpha\nbeta\ngamma\n"

Snapshot = dict[str, tuple[str, bytes | None, int]]


# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "notes.txt").write_text(NOTES)
    (ws / "src" / "app.py").write_text("print('hi')\n")
    return ws


def snapshot(root: Path) -> Snapshot:
    """Every file's bytes and every entry's mtime, so 'nothing changed' means exactly that."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            st = path.lstat()
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            out[rel] = ("file" if data is not None else "other", data, st.st_mtime_ns)
    return out


def changed(before: Snapshot, after: Snapshot) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def wire(llm: ScriptedLLM, model: str) -> ModelSpecWire:
    return ModelSpecWire(model=model, api_base=llm.base_url, num_retries=0, timeout_s=20)


def make_spec(
    llm: ScriptedLLM, workspace: Path, *, fallback: str | None = None, **kw: Any
) -> AgentSpec:
    return AgentSpec(
        session="weak-test",
        actor_id="weak-test-primary",
        workspace=str(workspace),
        prompt="Do the task.",
        model=wire(llm, WEAK),
        fallback_model=wire(llm, fallback) if fallback else None,
        max_steps=20,
        **kw,
    )


def last_tool_message(llm: ScriptedLLM, index: int) -> dict[str, Any]:
    """The tool result at the end of request ``index`` (0-based), checked to answer the call
    the assistant made just before it."""
    messages = llm.requests[index].body["messages"]
    tool, assistant = messages[-1], messages[-2]
    assert tool["role"] == "tool", messages[-3:]
    assert assistant["role"] == "assistant" and assistant["tool_calls"], messages[-3:]
    assert tool["tool_call_id"] == assistant["tool_calls"][-1]["id"]
    return tool


def of_type(events: list[Message], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def raw_call(name: str, raw: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "raw_arguments": raw}]}


def good_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


# ---------------------------------------------------------------------------------------------
# the corpus


@dataclass(frozen=True)
class Case:
    """One malformed model answer and what must come of it.

    ``errors``: substrings the tool result sent back must contain (the call was refused);
    empty means the call must run, ``result`` then being a substring of its output and
    ``files`` the exact contents it must leave (the only change allowed on disk).
    ``notice``: a substring of a ``Notice`` the event log must carry (repair or recognition).
    """

    id: str
    turn: dict[str, Any]
    tool: str
    errors: tuple[str, ...] = ()
    result: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    notice: str | None = None
    absent: tuple[str, ...] = ()  # substrings the successful result must not contain


def _invalid(tool: str, *parts: str) -> tuple[str, ...]:
    return (f"Invalid arguments for tool '{tool}'", *parts)


CUT = "so the call looks cut off"
NATIVE: list[Case] = [
    # -- repaired: the intent is unambiguous ---------------------------------------------
    Case(
        "truncated-after-complete-value",
        raw_call("write", '{"file_path": "a.txt", "content": "hello\\n"'),
        "write",
        files={"a.txt": "hello\n"},
        notice="closed 1 bracket(s) missing at the end",
    ),
    Case(
        "single-quotes",
        raw_call("read", "{'file_path': 'notes.txt'}"),
        "read",
        result="beta",
        notice="replaced single quotes",
    ),
    Case(
        "trailing-commas",
        raw_call("write", '{"file_path": "b.txt", "content": "x\\n",}'),
        "write",
        files={"b.txt": "x\n"},
        notice="removed trailing commas",
    ),
    Case(
        "python-literals",
        raw_call(
            "bash",
            '{"command": "printf \'py\\\\n\' > py.txt", "run_in_background": False, '
            '"description": None}',
        ),
        "bash",
        result="[exit code 0]",
        files={"py.txt": "py\n"},
        notice="converted Python literals",
    ),
    Case(
        "bare-keys",
        raw_call("read", '{file_path: "notes.txt", limit: 1}'),
        "read",
        result="alpha",
        absent=("beta",),  # limit 1 was read as the number 1, not dropped
        notice="quoted bare keys",
    ),
    Case(
        "code-fence",
        raw_call("read", '```json\n{"file_path": "notes.txt"}\n```'),
        "read",
        result="gamma",
        notice="removed a code fence",
    ),
    Case(
        "double-encoded",
        raw_call("read", json.dumps(json.dumps({"file_path": "notes.txt"}))),
        "read",
        result="alpha",
        notice="decoded arguments sent as a JSON string",
    ),
    Case(
        "truncated-after-comma",
        raw_call("read", '{"file_path": "notes.txt",'),
        "read",
        result="alpha",
        notice="closed 1 bracket(s)",
    ),
    # -- refused: guessing would change what the call does -------------------------------
    Case(
        "truncated-inside-string",
        raw_call("write", '{"file_path": "a.txt", "content": "hel'),
        "write",
        errors=_invalid("write", "string value of 'content'", CUT),
    ),
    Case(
        "truncated-before-value",
        raw_call("read", '{"file_path": '),
        "read",
        errors=_invalid("read", "before the value of 'file_path'", CUT),
    ),
    Case(
        "truncated-inside-number",
        raw_call("read", '{"file_path": "notes.txt", "limit": 12'),
        "read",
        errors=_invalid("read", "inside the number for 'limit'"),
    ),
    Case(
        "unquoted-value",
        raw_call("read", '{"file_path": notes.txt}'),
        "read",
        errors=_invalid("read", "unquoted value 'notes.txt' for 'file_path'"),
    ),
    Case(
        "array-not-object",
        raw_call("read", '["notes.txt"]'),
        "read",
        errors=_invalid("read", "must be one JSON object, got an array"),
    ),
    Case(
        "two-objects",
        raw_call("read", '{"file_path": "notes.txt"} {"file_path": "src/app.py"}'),
        "read",
        errors=_invalid("read", "unexpected text after the JSON object"),
    ),
    Case(
        "nan",
        raw_call("read", '{"file_path": "notes.txt", "limit": NaN}'),
        "read",
        errors=_invalid("read", "NaN"),
    ),
    Case(
        "wrong-type-string-for-int",
        raw_call("read", '{"file_path": "notes.txt", "limit": "ten"}'),
        "read",
        errors=_invalid("read", "field 'limit'", "valid integer"),
    ),
    Case(
        "wrong-type-list-for-string",
        good_call("write", {"file_path": ["a.txt"], "content": "x"}),
        "write",
        errors=_invalid("write", "field 'file_path'", "valid string"),
    ),
    Case(
        "missing-required-field",
        good_call("write", {"file_path": "c.txt"}),
        "write",
        errors=_invalid("write", "field 'content'", "Field required"),
    ),
    Case(
        "empty-arguments",
        raw_call("read", ""),
        "read",
        errors=_invalid("read", "field 'file_path'", "Field required"),
    ),
    Case(
        "unknown-tool",
        good_call("delete_file", {"file_path": "notes.txt"}),
        "delete_file",
        errors=("Unknown tool 'delete_file'", "Available tools:", "read", "write"),
    ),
]

HERMES_READ = '<tool_call>{"name": "read", "arguments": {"file_path": "notes.txt"}}</tool_call>'
TEXT_FORM: list[Case] = [
    Case(
        "hermes-tool-call",
        {"text": "Let me look at the notes.\n" + HERMES_READ},
        "read",
        result="gamma",
        notice="recognised 1 tool call(s) written as text",
    ),
    Case(
        "hermes-no-closing-tag",
        {"text": HERMES_READ.removesuffix("</tool_call>")},
        "read",
        result="alpha",
        notice="written as text",
    ),
    Case(
        "hermes-repairable-json",
        {"text": "<tool_call>{'name': 'read', 'arguments': {'file_path': 'notes.txt',},}"},
        "read",
        result="beta",
        notice="written as text",
    ),
    Case(
        "function-tag-parameters",
        {
            "text": "<function=write>\n<parameter=file_path>\nf.txt\n</parameter>\n"
            "<parameter=content>\nline1\nline2\n\n</parameter>\n</function>"
        },
        "write",
        files={"f.txt": "line1\nline2\n"},
        notice="written as text",
    ),
    Case(
        "function-tag-json",
        {"text": '<function=read>{"file_path": "notes.txt", "limit": 2}</function>'},
        "read",
        result="beta",
        absent=("gamma",),
        notice="written as text",
    ),
    Case(
        "invoke",
        {
            "text": 'Creating the file.\n<function_calls>\n<invoke name="bash">\n'
            '<parameter name="command">echo inv > inv.txt</parameter>\n'
            "</invoke>\n</function_calls>"
        },
        "bash",
        result="[exit code 0]",
        files={"inv.txt": "inv\n"},
        notice="written as text",
    ),
    Case(
        "json-fence",
        {
            "text": "I will read the file.\n```json\n"
            '{"name": "read", "arguments": {"file_path": "notes.txt"}}\n```'
        },
        "read",
        result="alpha",
        notice="written as text",
    ),
    Case(
        "bare-json-message",
        {"text": '{"tool": "read", "file_path": "notes.txt"}'},
        "read",
        result="alpha",
        notice="written as text",
    ),
    Case(
        "text-form-broken-json",
        {
            "text": '<tool_call>{"name": "write", "arguments": '
            '{"file_path": "x.txt", "content": "abc</tool_call>'
        },
        "write",
        errors=_invalid("write", "string value of 'content'", CUT),
    ),
    Case(
        "function-tag-unquoted-value",
        {"text": '<function=read>{"file_path": notes.txt}</function>'},
        "read",
        errors=_invalid("read", "unquoted value 'notes.txt' for 'file_path'"),
    ),
    Case(
        "text-form-wrong-type",
        {"text": '<function=read>{"file_path": "notes.txt", "limit": "ten"}</function>'},
        "read",
        errors=_invalid("read", "field 'limit'", "valid integer"),
    ),
    Case(
        "invoke-missing-required-field",
        {"text": '<invoke name="write"><parameter name="file_path">y.txt</parameter></invoke>'},
        "write",
        errors=_invalid("write", "field 'content'", "Field required"),
    ),
]


@pytest.mark.parametrize("case", NATIVE + TEXT_FORM, ids=lambda c: c.id)
async def test_malformed_call(case: Case, workspace: Path, scripted_llm: Callable) -> None:
    llm = scripted_llm({"weak": [case.turn, {"text": "done"}]})
    before = snapshot(workspace)

    result, events = await run_agent_inprocess(make_spec(llm, workspace))

    # The agent did not crash: it reported the outcome and asked the model again.
    assert result.stop_reason is StopReason.DONE, result.error
    assert result.summary == "done"
    assert len(llm.requests) == 2 and llm.exhausted == 0
    finished = of_type(events, ToolFinished)
    assert [f.tool for f in finished] == [case.tool]
    tool_message = last_tool_message(llm, 1)
    content = tool_message["content"]
    assert content == finished[0].content

    after = snapshot(workspace)
    if case.errors:
        assert finished[0].is_error and finished[0].metadata.get("format_error") is True
        for part in case.errors:
            assert part in content, f"{part!r} missing from the error sent back: {content!r}"
        assert "\n" not in content, "the error is one line the model can act on"
        assert changed(before, after) == set(), "a refused call changed the workspace"
    else:
        assert not finished[0].is_error, content
        if case.result is not None:
            assert case.result in content
        for text in case.absent:
            assert text not in content
        assert changed(before, after) == set(case.files)
        for rel, text in case.files.items():
            assert (workspace / rel).read_text() == text
    if case.notice is not None:
        notices = [n.text for n in of_type(events, Notice)]
        assert any(case.notice in n for n in notices), notices


async def test_text_form_call_keeps_prose_and_answers_the_call(
    workspace: Path, scripted_llm: Callable
) -> None:
    """A text-form call becomes a real tool call in the transcript (so the tool result has a
    call to answer), and the prose around it stays the assistant's text."""
    llm = scripted_llm({"weak": [{"text": "Reading first.\n" + HERMES_READ}, {"text": "done"}]})
    result, _ = await run_agent_inprocess(make_spec(llm, workspace))
    assert result.stop_reason is StopReason.DONE
    assistant = llm.requests[1].body["messages"][-2]
    assert assistant["content"] == "Reading first."
    [call] = assistant["tool_calls"]
    assert call["function"]["name"] == "read"
    assert json.loads(call["function"]["arguments"]) == {"file_path": "notes.txt"}
    assert "alpha" in last_tool_message(llm, 1)["content"]


# ---------------------------------------------------------------------------------------------
# consecutive format failures and the fallback model

BAD_TURNS = [
    raw_call("write", '{"file_path": "a.txt", "content": "cut off he'),
    good_call("remove_file", {"path": "notes.txt"}),
    raw_call("read", '{"file_path": "notes.txt", "limit": "ten"}'),
]
GOOD_TURN = good_call("write", {"file_path": "done.txt", "content": "ok\n"})


async def test_three_failures_without_fallback_stop(
    workspace: Path, scripted_llm: Callable
) -> None:
    llm = scripted_llm({"weak": [*BAD_TURNS, {"text": "never served"}]})
    before = snapshot(workspace)
    result, events = await run_agent_inprocess(make_spec(llm, workspace, max_format_failures=3))

    assert result.stop_reason is StopReason.MODEL_FORMAT_FAILURES
    assert result.error == f"3 malformed tool calls in a row from {WEAK}"
    assert len(llm.requests) == 3 and llm.remaining == 1
    assert all(e.is_error for e in of_type(events, ToolFinished))
    assert changed(before, snapshot(workspace)) == set()
    # The transcript handed back (for a resumed or interactive session) is well formed.
    assert result.messages[-1]["role"] == "tool"


async def test_three_bad_calls_in_one_turn_count_as_three(
    workspace: Path, scripted_llm: Callable
) -> None:
    calls = [c["tool_calls"][0] for c in BAD_TURNS]
    llm = scripted_llm({"weak": [{"tool_calls": calls}, {"text": "never served"}]})
    result, events = await run_agent_inprocess(make_spec(llm, workspace))
    assert result.stop_reason is StopReason.MODEL_FORMAT_FAILURES
    assert len(llm.requests) == 1
    assert len(of_type(events, ToolFinished)) == 3


async def test_fallback_takes_over_after_the_third_failure(
    workspace: Path, scripted_llm: Callable
) -> None:
    llm = scripted_llm(
        {
            "weak": [*BAD_TURNS, {"text": "the weak model must not be asked again"}],
            "strong": [GOOD_TURN, {"text": "done"}],
        }
    )
    result, events = await run_agent_inprocess(make_spec(llm, workspace, fallback=STRONG))

    assert result.stop_reason is StopReason.DONE, result.error
    assert result.summary == "done"
    assert [r.body["model"] for r in llm.requests] == ["weak"] * 3 + ["strong"] * 2
    assert llm.exhausted == 0
    # The strong model sees the third failure's error and the whole history before it.
    assert "field 'limit'" in last_tool_message(llm, 3)["content"]
    assert len(llm.requests[3].body["messages"]) == 2 + 3 * 2
    assert (workspace / "done.txt").read_text() == "ok\n"

    # Order in the log: third failure, the switch notice, then the request to the fallback.
    kinds = [
        (type(e).__name__, getattr(e, "model", None) or getattr(e, "text", None))
        for e in events
        if isinstance(e, ToolFinished | Notice | ModelRequested)
    ]
    switch = next(i for i, (k, t) in enumerate(kinds) if k == "Notice" and "fallback" in t)
    assert kinds[switch - 1][0] == "ToolFinished"
    assert kinds[switch + 1] == ("ModelRequested", STRONG)
    [notice] = [n for n in of_type(events, Notice) if "fallback" in n.text]
    assert notice.level == "warning"
    assert notice.text == (
        f"3 malformed tool calls in a row from {WEAK}; switching to fallback {STRONG}"
    )


async def test_fallback_failing_too_stops(workspace: Path, scripted_llm: Callable) -> None:
    llm = scripted_llm({"weak": BAD_TURNS, "strong": [*BAD_TURNS, {"text": "never served"}]})
    result, events = await run_agent_inprocess(make_spec(llm, workspace, fallback=STRONG))
    assert result.stop_reason is StopReason.MODEL_FORMAT_FAILURES
    assert result.error == f"3 malformed tool calls in a row from {STRONG}"
    assert [r.body["model"] for r in llm.requests] == ["weak"] * 3 + ["strong"] * 3
    assert len([n for n in of_type(events, Notice) if "fallback" in n.text]) == 1


@pytest.mark.parametrize(
    ("after_good", "stopped"),
    [(2, False), (3, True)],
    ids=["2-bad-1-good-2-bad-continues", "2-bad-1-good-3-bad-stops"],
)
async def test_a_good_call_resets_the_count(
    after_good: int, stopped: bool, workspace: Path, scripted_llm: Callable
) -> None:
    """The limit is on failures *in a row*: one good call starts the count again from zero
    (the second variant proves it is a reset, not a limit that was switched off)."""
    script = [*BAD_TURNS[:2], GOOD_TURN, *BAD_TURNS[:after_good], {"text": "done"}]
    llm = scripted_llm({"weak": script})
    result, events = await run_agent_inprocess(make_spec(llm, workspace, max_format_failures=3))
    if stopped:
        assert result.stop_reason is StopReason.MODEL_FORMAT_FAILURES
        assert len(llm.requests) == 6 and llm.remaining == 1
    else:
        assert result.stop_reason is StopReason.DONE, result.error
        assert len(llm.requests) == 6 and llm.remaining == 0
    errors = [f.is_error for f in of_type(events, ToolFinished)]
    assert errors == [True, True, False, *[True] * after_good]
    assert (workspace / "done.txt").read_text() == "ok\n"


# ---------------------------------------------------------------------------------------------
# the transcript carries only valid arguments, and the last error survives the stop


async def test_stopped_transcript_keeps_the_last_error(
    workspace: Path, scripted_llm: Callable
) -> None:
    """The transcript handed back at the stop (resume, the next interactive turn) must say
    what the third call got, not that it was interrupted: it was answered."""
    llm = scripted_llm({"weak": BAD_TURNS})
    result, events = await run_agent_inprocess(make_spec(llm, workspace))
    assert result.stop_reason is StopReason.MODEL_FORMAT_FAILURES
    last_error = of_type(events, ToolFinished)[-1].content
    assert result.messages[-1] == {
        "role": "tool",
        "tool_call_id": result.messages[-2]["tool_calls"][-1]["id"],
        "content": last_error,
    }


async def test_fallback_transcript_carries_only_valid_arguments(
    workspace: Path, scripted_llm: Callable
) -> None:
    llm = scripted_llm({"weak": BAD_TURNS, "strong": [{"text": "done"}]})
    result, _ = await run_agent_inprocess(make_spec(llm, workspace, fallback=STRONG))
    assert result.stop_reason is StopReason.DONE
    unreadable = []
    for message in llm.requests[3].body["messages"]:
        for call in message.get("tool_calls") or []:
            try:
                ok = isinstance(json.loads(call["function"]["arguments"]), dict)
            except json.JSONDecodeError:
                ok = False
            if not ok:
                unreadable.append(call["function"])
    assert unreadable == [], "malformed arguments re-sent to the fallback model"


async def test_anthropic_fallback_gets_its_request(workspace: Path, scripted_llm: Callable) -> None:
    """The realistic shape of the bug: a local weak model with a hosted fallback. litellm's
    Anthropic adapter cannot convert the weak model's broken arguments, so the fallback never
    receives a request and the run ends in an error about the transcript."""
    llm = scripted_llm({"weak": BAD_TURNS})
    spec = make_spec(llm, workspace).model_copy(
        update={"fallback_model": wire(llm, "anthropic/strong")}
    )
    result, _ = await run_agent_inprocess(spec)
    # Three requests to the weak model, then the fallback's own (Anthropic's /v1/messages).
    assert [r.path for r in llm.requests[:3]] == ["/v1/chat/completions"] * 3
    assert "Failed to parse tool call arguments" not in (result.error or "")
    assert any("messages" in r.path for r in llm.requests[3:]), result.error


# ---------------------------------------------------------------------------------------------
# the in-process ports themselves


async def test_inprocess_port_streams_through_the_gateway(scripted_llm: Callable) -> None:
    """The port adds nothing: what the gateway streams is what the agent gets."""
    from stagecrew.actors.gateway import ModelGateway
    from stagecrew.messages import ModelRequest, ModelRole, StreamDone, StreamText

    llm = scripted_llm({"weak": [{"text": "hello there"}]})
    gateway = ModelGateway(preload=False)
    port = InProcessModelPort(gateway)
    request = ModelRequest(
        session="s",
        actor_id="a",
        role=ModelRole.PRIMARY,
        spec=wire(llm, WEAK),
        messages=[{"role": "user", "content": "hi"}],
    )
    items = [item async for item in port.stream(request)]
    assert "".join(i.text for i in items if isinstance(i, StreamText)) == "hello there"
    assert isinstance(items[-1], StreamDone) and items[-1].text == "hello there"
    assert gateway.calls == 1 and gateway.session_usage("s").total_tokens > 0
    sink = CollectingSink()
    sink.emit(Notice(text="x"))
    assert sink.of_type(Notice) == sink.messages
