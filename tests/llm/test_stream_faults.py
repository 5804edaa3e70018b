"""Provider faults through ``stream_completion``: litellm for real, the scripted server over HTTP.

A stream that stops before the provider says it is finished is not an answer: it is retried
like a 5xx, each retry announced by a ``StreamRetry``, and when every attempt fails the one
line says which server, what happened and what to do. litellm 1.106 shows both kinds of cut:
a connection closed inside the chunked body raises (``MidStreamFallbackError``), while a
response that ends properly without ``finish_reason``/``[DONE]`` ends the iteration silently
with a made-up ``finish_reason="stop"``. Run inside ``scripts/offline``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from stagecrew.llm.client import stream_completion
from stagecrew.messages import (
    ModelRequest,
    ModelRole,
    ModelSpecWire,
    StreamDone,
    StreamError,
    StreamRetry,
    StreamText,
)
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.filterwarnings("ignore:Accessing the 'model_:DeprecationWarning")

ANSWER = "Fixed calc.add: it subtracted instead of adding; the tests pass now."
EDIT_ARGS = {"file_path": "calc.py", "old_string": "return a - b", "new_string": "return a + b"}
EDIT = {"tool_calls": [{"name": "edit", "arguments": EDIT_ARGS}]}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "edit", "parameters": {"type": "object", "properties": {}}},
    }
]


def request(base_url: str, *, num_retries: int = 2, timeout_s: float = 20.0) -> ModelRequest:
    return ModelRequest(
        session="faults",
        actor_id="faults-primary",
        role=ModelRole.PRIMARY,
        spec=ModelSpecWire(
            model="openai/scripted", api_base=base_url, num_retries=num_retries, timeout_s=timeout_s
        ),
        messages=[{"role": "user", "content": "Fix calc.add."}],
        tools=TOOLS,
    )


async def collect(req: ModelRequest) -> list[Any]:
    return [item async for item in stream_completion(req, None)]


def kinds(items: list[Any]) -> list[str]:
    """The items without the text pieces, as kinds: ``["retry", "done"]``."""
    return [i.kind for i in items if not isinstance(i, StreamText)]


@pytest.mark.parametrize("drop_mode", ["eof", "reset"])
async def test_text_dropped_once_then_whole(drop_mode: str) -> None:
    """Cut half-way (silently, or with the connection reset), then served whole: the answer
    is the whole text, and the retry says the partial text already streamed is void."""
    with ScriptedLLM(
        [{"text": ANSWER, "drop": True, "drop_mode": drop_mode}, {"text": ANSWER}]
    ) as llm:
        items = await collect(request(llm.base_url))
        outcomes = [r.outcome for r in llm.requests]
    assert kinds(items) == ["retry", "done"]
    retry = next(i for i in items if isinstance(i, StreamRetry))
    assert retry.error_kind == "dropped" and retry.discard_partial is True
    assert (retry.attempt, retry.max_attempts) == (2, 3) and retry.delay_s > 0
    assert llm.base_url in retry.message and "\n" not in retry.message
    at = items.index(retry)
    before = "".join(i.text for i in items[:at] if isinstance(i, StreamText))
    after = "".join(i.text for i in items[at:] if isinstance(i, StreamText))
    assert before and ANSWER.startswith(before) and before != ANSWER  # the void, cut text
    assert after == ANSWER
    done = items[-1]
    assert isinstance(done, StreamDone)
    assert done.text == ANSWER and done.finish_reason == "stop" and done.attempts == 2
    assert outcomes == ["dropped", "ok"]


@pytest.mark.parametrize("drop_mode", ["eof", "reset"])
async def test_tool_call_dropped_once_then_whole(drop_mode: str) -> None:
    """A tool call cut mid-arguments is never handed on: the retry's call is complete."""
    with ScriptedLLM([{**EDIT, "drop": True, "drop_mode": drop_mode}, EDIT]) as llm:
        items = await collect(request(llm.base_url))
        outcomes = [r.outcome for r in llm.requests]
    assert kinds(items) == ["retry", "done"]
    retry = items[0]
    assert isinstance(retry, StreamRetry) and retry.error_kind == "dropped"
    assert retry.discard_partial is False  # tool-call fragments are never streamed on
    done = items[-1]
    assert isinstance(done, StreamDone) and done.finish_reason == "tool_calls"
    assert [c.name for c in done.tool_calls] == ["edit"]
    assert json.loads(done.tool_calls[0].arguments) == EDIT_ARGS
    assert outcomes == ["dropped", "ok"]


@pytest.mark.parametrize(
    ("drop_mode", "cause"),
    [("eof", "ended mid-answer, without a finish reason"), ("reset", "cut the connection")],
)
async def test_always_dropped_is_an_error_naming_the_server(drop_mode: str, cause: str) -> None:
    turn = {**EDIT, "drop": True, "drop_mode": drop_mode, "repeat": "forever"}
    with ScriptedLLM([turn]) as llm:
        items = await collect(request(llm.base_url, num_retries=2))
        outcomes = [r.outcome for r in llm.requests]
    assert kinds(items) == ["retry", "retry", "error"]
    retries = [i for i in items if isinstance(i, StreamRetry)]
    assert [(r.attempt, r.max_attempts) for r in retries] == [(2, 3), (3, 3)]
    error = items[-1]
    assert isinstance(error, StreamError)
    assert error.error_kind == "dropped" and error.retryable is False
    message = error.message
    assert message.startswith("model role 'primary' (openai/scripted): ")
    assert llm.base_url in message and cause in message
    assert "check the server's log" in message and message.endswith("(after 3 attempts)")
    assert "\n" not in message
    assert outcomes == ["dropped"] * 3


async def test_stream_stopped_after_finish_reason_is_whole() -> None:
    """A stream cut after the provider sent its finish reason (and its usage) lost nothing
    but ``[DONE]``: it is the answer, not a retry."""
    with ScriptedLLM([{"text": ANSWER, "drop": 1000, "drop_mode": "eof"}]) as llm:
        items = await collect(request(llm.base_url))
        outcomes = [r.outcome for r in llm.requests]
    assert kinds(items) == ["done"]
    assert items[-1].text == ANSWER and outcomes == ["dropped"]


async def test_finish_reason_length_is_an_answer() -> None:
    with ScriptedLLM([{"text": ANSWER, "finish_reason": "length"}]) as llm:
        items = await collect(request(llm.base_url))
    assert kinds(items) == ["done"]
    assert items[-1].finish_reason == "length" and items[-1].attempts == 1


async def test_hang_is_retried_then_explained() -> None:
    """The server takes the request and sends nothing: each attempt waits ``timeout_s``, the
    retry is announced at once, and the advice points at the server and at timeout_s."""
    with ScriptedLLM([{"text": ANSWER, "hang": True, "repeat": "forever"}], hang_cap=30) as llm:
        items = await collect(request(llm.base_url, num_retries=1, timeout_s=0.5))
        assert await asyncio.to_thread(llm.wait_for_outcome, 1, 5) == "client_gone"
        assert len(llm.requests) == 2
    assert kinds(items) == ["retry", "error"]
    retry = items[0]
    assert isinstance(retry, StreamRetry)
    assert retry.error_kind == "timeout" and (retry.attempt, retry.max_attempts) == (2, 2)
    assert "sent nothing within 0.5 s" in retry.message and retry.discard_partial is False
    error = items[-1]
    assert isinstance(error, StreamError) and error.error_kind == "timeout"
    assert llm.base_url in error.message
    assert "accepted the request but sent nothing within 0.5 s" in error.message
    assert "is serving the model 'scripted'" in error.message
    assert "models.primary.timeout_s" in error.message
    assert error.message.endswith("(after 2 attempts)")


async def test_stall_mid_answer_says_so() -> None:
    with ScriptedLLM([{"text": ANSWER, "hang": 3}], hang_cap=30) as llm:
        items = await collect(request(llm.base_url, num_retries=0, timeout_s=0.5))
    assert kinds(items) == ["error"]
    error = items[-1]
    assert error.error_kind == "timeout" and "stalled mid-answer" in error.message
    assert "(after" not in error.message  # one attempt: nothing to count


async def test_rate_limit_wait_is_honoured_and_shown() -> None:
    with ScriptedLLM([{"status": 429, "retry_after": 0.4}, {"text": ANSWER}]) as llm:
        items = await collect(request(llm.base_url, num_retries=1))
        outcomes = [r.outcome for r in llm.requests]
    assert kinds(items) == ["retry", "done"]
    retry = items[0]
    assert retry.error_kind == "rate_limited" and retry.delay_s == pytest.approx(0.4)
    assert "429" in retry.message and "wait 0.4 s" in retry.message
    assert items[-1].text == ANSWER and outcomes == ["http_error", "ok"]


async def test_refused_connection_says_start_the_server() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}/v1"
    items = await collect(request(base, num_retries=1))
    assert kinds(items) == ["retry", "error"]
    assert items[0].error_kind == "unreachable"
    error = items[-1]
    assert error.message.startswith(f"model role 'primary' (openai/scripted): cannot reach {base}")
    assert "connection refused" in error.message and "start the server" in error.message
    assert error.message.endswith("(after 2 attempts)")


async def test_closed_without_answering_is_a_drop_not_unreachable() -> None:
    with ScriptedLLM([{"text": ANSWER, "drop": 0}]) as llm:
        items = await collect(request(llm.base_url, num_retries=0))
    error = items[-1]
    assert isinstance(error, StreamError) and error.error_kind == "dropped"
    assert "closed the connection without answering" in error.message
