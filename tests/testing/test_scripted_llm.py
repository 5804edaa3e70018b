"""The scripted model server, driven through litellm (as the gateway will) and through raw httpx.

Everything here crosses a real socket: if the server's SSE framing, tool-call deltas, error
bodies or keep-alive handling were wrong, litellm or httpx would say so.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm

from stagecrew.testing.scripted_llm import (
    EXHAUSTED_TEXT,
    ScriptedLLM,
    Turn,
    text_turn,
    tool_turn,
)

pytest_plugins = ["pytester"]

litellm.suppress_debug_info = True

READ_TOOL = {
    "type": "function",
    "function": {
        "name": "read",
        "description": "Read a file.",
        "parameters": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["file_path"],
        },
    },
}
USER = [{"role": "user", "content": "hello"}]


async def call(llm: ScriptedLLM, messages: list[dict[str, Any]] | None = None, **kw: Any) -> Any:
    """One litellm call with retries off, so every count and timing is the server's own.

    ``_skip_mcp_handler``: litellm 1.106.2 imports its MCP gateway (and the ``mcp`` package,
    not installed here) whenever ``tools`` are passed; we never use that gateway.
    """
    kw.setdefault("model", "openai/scripted")
    return await litellm.acompletion(
        messages=messages or USER,
        api_base=llm.base_url,
        api_key="sk-test",
        num_retries=0,
        max_retries=0,
        _skip_mcp_handler=True,
        **kw,
    )


async def stream_chunks(llm: ScriptedLLM, **kw: Any) -> list[Any]:
    response = await call(llm, stream=True, **kw)
    return [chunk async for chunk in response]


# ---------------------------------------------------------------------------------------------
# Text and tool calls through litellm
# ---------------------------------------------------------------------------------------------


async def test_text_turn_non_streaming_with_estimated_usage() -> None:
    with ScriptedLLM([text_turn("Hello there.", reasoning="thinking first")]) as llm:
        response = await call(llm)
    message = response.choices[0].message
    assert message.content == "Hello there."
    assert message.reasoning_content == "thinking first"
    assert response.choices[0].finish_reason == "stop"
    # Estimated at ~4 characters per token from the request and the answer.
    body = llm.requests[0].body
    expected_prompt = -(-(len(json.dumps(body["messages"])) + len(json.dumps([]))) // 4)
    assert response.usage.prompt_tokens == expected_prompt
    assert response.usage.completion_tokens == -(-len("Hello there.thinking first") // 4)


async def test_scripted_usage_is_reported_as_given() -> None:
    turn = text_turn("ok", usage={"prompt_tokens": 1234, "completion_tokens": 56})
    with ScriptedLLM([turn, turn]) as llm:
        response = await call(llm)
        chunks = await stream_chunks(llm, stream_options={"include_usage": True})
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (1234, 56)
    usage = [c.usage for c in chunks if getattr(c, "usage", None)]
    assert usage and usage[-1].prompt_tokens == 1234 and usage[-1].completion_tokens == 56


async def test_text_streams_in_several_chunks() -> None:
    text = "The quick brown fox jumps over the lazy dog."
    with ScriptedLLM([text_turn(text), text_turn(text, chunk_size=5)]) as llm:
        default = await stream_chunks(llm)
        sized = await stream_chunks(llm)
    for chunks in (default, sized):
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
        assert chunks[-1].choices[0].finish_reason == "stop"
    pieces = [c.choices[0].delta.content for c in sized if c.choices[0].delta.content]
    assert pieces == [text[i : i + 5] for i in range(0, len(text), 5)]
    assert len([c for c in default if c.choices[0].delta.content]) >= 6


async def test_tool_call_non_streaming() -> None:
    args = {"file_path": "src/app.py", "limit": 20}
    with ScriptedLLM([tool_turn("read", args, text="Reading it.")]) as llm:
        response = await call(llm, tools=[READ_TOOL])
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Reading it."
    (tc,) = choice.message.tool_calls
    assert tc.function.name == "read"
    assert json.loads(tc.function.arguments) == args
    assert tc.id == "call_1_0"


async def test_streamed_tool_arguments_are_reassembled_by_litellm() -> None:
    args = {
        "file_path": "src/naïve/ünïcode.py",
        "content": 'def f(x):\n    return "quoted" + x\n' * 3,
        "nested": {"list": [1, 2.5, None, True], "empty": {}},
    }
    with ScriptedLLM([tool_turn("read", args, chunk_size=7)]) as llm:
        chunks = await stream_chunks(llm, tools=[READ_TOOL])
    fragments = [
        d.function.arguments
        for c in chunks
        for d in (c.choices[0].delta.tool_calls or [])
        if d.function and d.function.arguments
    ]
    assert len(fragments) > 10  # really streamed in pieces, as OpenAI does
    built = litellm.stream_chunk_builder(chunks)
    (tc,) = built.choices[0].message.tool_calls
    assert tc.function.name == "read"
    assert json.loads(tc.function.arguments) == args
    assert built.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
async def test_several_tool_calls_in_one_turn(stream: bool) -> None:
    turn = Turn(
        tool_calls=[
            {"name": "read", "arguments": {"file_path": "a.py"}, "id": "call_given"},
            {"name": "read", "arguments": {"file_path": "b.py"}},
            {"name": "bash", "arguments": {"command": "ls -la"}},
        ]
    )
    with ScriptedLLM([turn]) as llm:
        if stream:
            built = litellm.stream_chunk_builder(await stream_chunks(llm, tools=[READ_TOOL]))
        else:
            built = await call(llm, tools=[READ_TOOL])
    calls = built.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("read", {"file_path": "a.py"}),
        ("read", {"file_path": "b.py"}),
        ("bash", {"command": "ls -la"}),
    ]
    assert calls[0].id == "call_given"
    assert len({c.id for c in calls}) == 3


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_raw_arguments_are_delivered_verbatim(stream: bool) -> None:
    raw = '{\'file_path\': "a.py", "con'
    turn = Turn(tool_calls=[{"name": "read", "raw_arguments": raw}], chunk_size=4)
    with ScriptedLLM([turn]) as llm:
        if stream:
            built = litellm.stream_chunk_builder(await stream_chunks(llm, tools=[READ_TOOL]))
        else:
            built = await call(llm, tools=[READ_TOOL])
    assert built.choices[0].message.tool_calls[0].function.arguments == raw


# ---------------------------------------------------------------------------------------------
# Routing: when, model queues, repeat, exhaustion
# ---------------------------------------------------------------------------------------------


async def test_when_routing_serves_concurrent_requests_deterministically() -> None:
    # Turns are listed in the opposite order to the requests, and each answer is delayed so
    # all four requests are in flight together: only `when` decides who gets what.
    names = ["alpha", "beta", "gamma", "delta"]
    script = [
        text_turn(f"answer for {n}", when={"contains": f"task {n}"}, delay=0.1)
        for n in reversed(names)
    ]
    with ScriptedLLM(script) as llm:
        results = await asyncio.gather(
            *(call(llm, [{"role": "user", "content": f"please do task {n}"}]) for n in names)
        )
        assert [r.choices[0].message.content for r in results] == [f"answer for {n}" for n in names]
        assert llm.exhausted == 0 and llm.remaining == 0
        by_text = {r.last_message_text: r.turn_index for r in llm.requests}
    assert by_text == {f"please do task {n}": 3 - i for i, n in enumerate(names)}


async def test_when_conditions_last_message_any_message_and_system() -> None:
    script = [
        text_turn("from system", when={"system_contains": "You are the judge"}),
        text_turn("from history", when={"any_contains": "remember 42"}),
        text_turn("from last", when={"contains": "tool output: OK"}),
        text_turn("fallback"),
    ]
    conversation = [
        {"role": "system", "content": "You are a coder."},
        {"role": "user", "content": "remember 42"},
        {"role": "assistant", "content": "sure"},
        {"role": "user", "content": [{"type": "text", "text": "tool output: OK"}]},
    ]
    with ScriptedLLM(script) as llm:
        first = await call(llm, conversation)  # "contains" and "any_contains" both match
        second = await call(llm, conversation)
        third = await call(llm, [{"role": "user", "content": "nothing special"}])
        judge = await call(
            llm, [{"role": "system", "content": "You are the judge."}, *USER], model="openai/x"
        )
    # The first matching turn in queue order wins: "from history" is listed before "from last".
    assert first.choices[0].message.content == "from history"
    assert second.choices[0].message.content == "from last"
    assert third.choices[0].message.content == "fallback"
    assert judge.choices[0].message.content == "from system"


async def test_model_keyed_queues_with_fallback() -> None:
    script = {
        "judge": [text_turn("verdict: met")],
        "agent": [tool_turn("read", {"file_path": "a.py"}), text_turn("agent done")],
        "*": [text_turn("anyone else")],
    }
    with ScriptedLLM(script) as llm:
        agent_1 = await call(llm, model="openai/agent", tools=[READ_TOOL])
        judge = await call(llm, model="openai/judge")
        other = await call(llm, model="openai/candidate-3")
        agent_2 = await call(llm, model="openai/agent")
        judge_again = await call(llm, model="openai/judge")
        assert llm.exhausted == 1
        queues = [(r.model, r.queue, r.turn_index) for r in llm.requests]
    assert agent_1.choices[0].message.tool_calls[0].function.name == "read"
    assert judge.choices[0].message.content == "verdict: met"
    assert other.choices[0].message.content == "anyone else"
    assert agent_2.choices[0].message.content == "agent done"
    # A model with its own queue does not fall back to "*" when that queue runs out.
    assert judge_again.choices[0].message.content == EXHAUSTED_TEXT
    assert queues == [
        ("agent", "agent", 0),
        ("judge", "judge", 0),
        ("candidate-3", "*", 0),
        ("agent", "agent", 1),
        ("judge", None, None),
    ]


async def test_repeat_count_and_forever() -> None:
    stuck = tool_turn("read", {"file_path": "same.py"}, repeat=3)
    with ScriptedLLM([stuck, text_turn("then this")]) as llm:
        assert llm.remaining == 4
        answers = [await call(llm, tools=[READ_TOOL]) for _ in range(4)]
        assert llm.remaining == 0
    names = [a.choices[0].message.tool_calls for a in answers[:3]]
    assert all(n[0].function.arguments == '{"file_path": "same.py"}' for n in names)
    assert answers[3].choices[0].message.content == "then this"

    with ScriptedLLM([{"text": "again", "repeat": "forever"}]) as llm:
        texts = [(await call(llm)).choices[0].message.content for _ in range(12)]
        assert texts == ["again"] * 12
        assert llm.exhausted == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_exhausted_script_answers_and_counts(stream: bool) -> None:
    with ScriptedLLM([text_turn("only one")]) as llm:
        await call(llm)
        if stream:
            chunks = await stream_chunks(llm)
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
        else:
            text = (await call(llm)).choices[0].message.content
        assert text == EXHAUSTED_TEXT
        assert llm.exhausted == 1
        assert [r.outcome for r in llm.requests] == ["ok", "exhausted"]


async def test_add_turns_while_serving() -> None:
    with ScriptedLLM() as llm:
        assert (await call(llm)).choices[0].message.content == EXHAUSTED_TEXT
        llm.add_turns(text_turn("one"), {"text": "two"})
        llm.add_turns([text_turn("judge says")], queue="judge")
        assert (await call(llm)).choices[0].message.content == "one"
        assert (await call(llm)).choices[0].message.content == "two"
        assert (await call(llm, model="openai/judge")).choices[0].message.content == "judge says"


# ---------------------------------------------------------------------------------------------
# Latency, errors, broken connections
# ---------------------------------------------------------------------------------------------


async def test_delay_and_chunk_delay_are_at_least_as_scripted() -> None:
    with ScriptedLLM(
        [text_turn("slow start", delay=0.3), text_turn("abcdef", chunk_size=1, chunk_delay=0.05)]
    ) as llm:
        start = time.perf_counter()
        await call(llm)
        first = time.perf_counter() - start
        start = time.perf_counter()
        await stream_chunks(llm)
        second = time.perf_counter() - start
    assert first >= 0.3
    # role chunk + 6 text chunks + finish chunk + [DONE]: 8 gaps of 0.05 s.
    assert second >= 8 * 0.05


async def test_http_errors_surface_as_litellm_exceptions() -> None:
    script = [
        {"status": 429, "retry_after": 7},
        {"status": 500},
        {"status": 503},
        {
            "status": 400,
            "error_code": "context_length_exceeded",
            "error_message": "This model's maximum context length is 8192 tokens. "
            "However, your messages resulted in 9000 tokens.",
        },
    ]
    with ScriptedLLM(script) as llm:
        with pytest.raises(litellm.RateLimitError) as rate:
            await call(llm)
        with pytest.raises(litellm.InternalServerError):
            await call(llm)
        with pytest.raises(litellm.ServiceUnavailableError):
            await call(llm)
        with pytest.raises(litellm.ContextWindowExceededError):
            await call(llm)
        assert [r.outcome for r in llm.requests] == ["http_error"] * 4
        assert llm.exhausted == 0
    assert rate.value.status_code == 429
    assert rate.value.litellm_response_headers["retry-after"] == "7"


async def test_error_status_on_a_stream_request() -> None:
    with ScriptedLLM([{"status": 429}]) as llm:
        with pytest.raises(litellm.RateLimitError):
            await stream_chunks(llm)
        assert len(llm.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_drop_breaks_the_connection(stream: bool) -> None:
    text = "this answer never fully arrives"
    with ScriptedLLM([text_turn(text, drop=True), text_turn("next one works")]) as llm:
        errors = (
            litellm.APIConnectionError,
            litellm.ServiceUnavailableError,
            litellm.InternalServerError,
        )
        seen: list[str] = []
        with pytest.raises(errors):
            if stream:
                response = await call(llm, stream=True)
                async for chunk in response:
                    seen.append(chunk.choices[0].delta.content or "")
            else:
                await call(llm)
        assert llm.requests[0].outcome == "dropped"
        assert "".join(seen) != text
        assert (await call(llm)).choices[0].message.content == "next one works"


def test_drop_mid_stream_with_httpx_after_some_chunks() -> None:
    with ScriptedLLM([text_turn("abcdefgh", chunk_size=1, drop=3)]) as llm:
        events: list[str] = []
        with (
            httpx.Client() as client,
            pytest.raises(httpx.RemoteProtocolError),
            client.stream(
                "POST",
                f"{llm.base_url}/chat/completions",
                json={"model": "m", "messages": USER, "stream": True},
            ) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line)
    assert len(events) == 3  # role chunk, "a", "b", then the connection was cut


async def test_hang_until_the_client_gives_up() -> None:
    with ScriptedLLM([{"hang": True}]) as llm:
        start = time.perf_counter()
        with pytest.raises(litellm.Timeout):
            await call(llm, timeout=0.3)
        assert time.perf_counter() - start >= 0.3
        # The event loop must keep running for the client to close its socket.
        assert await asyncio.to_thread(llm.wait_for_outcome, 1, 5) == "client_gone"


async def test_cancelled_stream_is_seen_as_client_gone() -> None:
    with ScriptedLLM([text_turn("x" * 50, chunk_size=1, chunk_delay=0.05)]) as llm:

        async def consume() -> None:
            async for _ in await call(llm, stream=True):
                pass

        task = asyncio.create_task(consume())
        await asyncio.to_thread(llm.wait_for_requests, 1, 5)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Poll without blocking the event loop, which must run to close the socket.
        for _ in range(100):
            if llm.requests[0].outcome is not None:
                break
            await asyncio.sleep(0.05)
        assert llm.requests[0].outcome == "client_gone"


def test_hang_ends_at_the_cap_and_when_the_server_closes() -> None:
    with ScriptedLLM([{"hang": True}], hang_cap=0.3) as llm, httpx.Client(timeout=10) as client:
        start = time.perf_counter()
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(f"{llm.base_url}/chat/completions", json={"model": "m", "messages": USER})
        assert time.perf_counter() - start >= 0.3
        assert llm.requests[0].outcome == "hang_timeout"

    llm = ScriptedLLM([{"hang": True}])
    failure: list[BaseException] = []

    def client_call() -> None:
        try:
            httpx.post(
                f"{llm.base_url}/chat/completions",
                json={"model": "m", "messages": USER},
                timeout=30,
            )
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=client_call)
    thread.start()
    llm.wait_for_requests(1, timeout=5)
    start = time.perf_counter()
    llm.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.perf_counter() - start < 5
    assert failure and isinstance(failure[0], httpx.HTTPError)
    assert llm.requests[0].outcome == "server_closed"


def test_stream_stalls_after_n_chunks() -> None:
    with ScriptedLLM([text_turn("abcdef", chunk_size=1, hang=2)]) as llm:
        events: list[str] = []
        with (
            httpx.Client(timeout=httpx.Timeout(5, read=0.4)) as client,
            pytest.raises(httpx.ReadTimeout),
            client.stream(
                "POST",
                f"{llm.base_url}/chat/completions",
                json={"model": "m", "messages": USER, "stream": True},
            ) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line)
        assert len(events) == 2
        assert llm.wait_for_outcome(1, timeout=5) == "client_gone"


# ---------------------------------------------------------------------------------------------
# Recording, control endpoints, HTTP details
# ---------------------------------------------------------------------------------------------


async def test_requests_are_recorded_with_headers_body_and_turn() -> None:
    script = [tool_turn("read", {"file_path": "a.py"}, label="first"), text_turn("done")]
    with ScriptedLLM(script) as llm:
        before = time.time()
        await call(llm, tools=[READ_TOOL], temperature=0.2)
        await call(llm, [*USER, {"role": "assistant", "content": "next"}])
        records = llm.wait_for_requests(2, timeout=1)
        with pytest.raises(TimeoutError, match="got 2 of 3"):
            llm.wait_for_requests(3, timeout=0.1)
        over_http = httpx.get(f"{llm.url}/_scripted/requests").json()
        health = httpx.get(f"{llm.url}/_scripted/health").json()
    first, second = records
    assert first.path == "/v1/chat/completions" and first.method == "POST"
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.headers["content-type"].startswith("application/json")
    assert first.body["model"] == "scripted"
    assert first.body["tools"] == [READ_TOOL]
    assert first.body["temperature"] == 0.2
    assert first.body["messages"] == USER
    assert (first.queue, first.turn_index, first.turn_label) == ("*", 0, "first")
    assert (second.turn_index, second.turn_label) == (1, None)
    assert second.last_message_text == "next"
    assert before <= first.ts <= second.ts <= time.time()
    assert [r["seq"] for r in over_http] == [1, 2]
    assert over_http[0]["headers"]["authorization"] == "Bearer sk-test"
    assert health == {
        "ok": True,
        "requests": 2,
        "exhausted": 0,
        "remaining": 0,
        "queues": {"*": 2},
    }


def test_control_endpoint_replaces_and_appends_the_script() -> None:
    with ScriptedLLM([text_turn("old")]) as llm, httpx.Client(base_url=llm.url) as client:
        chat = {"model": "m", "messages": USER}
        ok = client.post("/_scripted/script", json={"script": [{"text": "new"}]})
        assert ok.status_code == 200 and ok.json()["remaining"] == 1
        client.post(
            "/_scripted/script",
            json={"script": {"m": [{"text": "for m"}], "*": [{"text": "later"}]}, "mode": "append"},
        )
        answers = [
            client.post("/v1/chat/completions", json=chat).json(),
            client.post("/v1/chat/completions", json={**chat, "model": "other"}).json(),
            client.post("/v1/chat/completions", json={**chat, "model": "other"}).json(),
        ]
        assert [a["choices"][0]["message"]["content"] for a in answers] == [
            "for m",
            "new",
            "later",
        ]
        bad = client.post("/_scripted/script", json={"script": [{"txt": "typo"}]})
        assert bad.status_code == 400 and "txt" in bad.json()["error"]
        models = client.get("/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["m", "scripted"]
        assert client.post("/v1/nope", json={}).status_code == 404
        not_json = client.post("/v1/chat/completions", content=b"{oops")
        assert not_json.status_code == 400
        assert not_json.json()["error"]["type"] == "invalid_request_error"
        # Control requests are not recorded; the model list, the 404 and the 400 are.
        assert [r.outcome for r in llm.requests] == ["ok"] * 4 + ["bad_request"] * 2


def test_keep_alive_across_json_and_streamed_answers() -> None:
    with (
        ScriptedLLM([{"text": "hi there", "repeat": "forever"}]) as llm,
        httpx.Client() as client,
    ):
        url = f"{llm.base_url}/chat/completions"
        for stream in (False, True, False, True):
            response = client.post(url, json={"model": "m", "messages": USER, "stream": stream})
            assert response.status_code == 200
            if stream:
                assert response.headers["transfer-encoding"] == "chunked"
                assert response.text.rstrip().endswith("data: [DONE]")
            else:
                assert int(response.headers["content-length"]) == len(response.content)
        ports = {r.client_port for r in llm.requests}
    assert len(ports) == 1  # one TCP connection served all four


def test_small_streamed_answers_do_not_wait_for_nagle() -> None:
    # With Nagle on, each streamed answer waits ~40 ms for the peer's delayed ACK.
    with (
        ScriptedLLM([{"text": "hello there world", "repeat": "forever"}]) as llm,
        httpx.Client() as client,
    ):
        timings = []
        for _ in range(15):
            start = time.perf_counter()
            client.post(
                f"{llm.base_url}/chat/completions",
                json={"model": "m", "messages": USER, "stream": True},
            ).read()
            timings.append(time.perf_counter() - start)
    assert statistics.median(timings) < 0.025


def test_chunked_request_body_is_read() -> None:
    body = json.dumps({"model": "m", "messages": USER}).encode()

    def parts() -> Iterator[bytes]:
        yield body[:10]
        yield body[10:]

    with ScriptedLLM([text_turn("got it")]) as llm:
        response = httpx.post(
            f"{llm.base_url}/chat/completions",
            content=parts(),
            headers={"content-type": "application/json"},
        )
        assert llm.requests[0].headers["transfer-encoding"] == "chunked"
        assert llm.requests[0].body == {"model": "m", "messages": USER}
    assert response.json()["choices"][0]["message"]["content"] == "got it"


def test_turn_validation() -> None:
    with pytest.raises(ValidationError, match="contans"):
        Turn.model_validate({"text": "x", "when": {"contans": "typo"}})
    with pytest.raises(ValidationError, match="not both"):
        Turn.model_validate({"tool_calls": [{"name": "a", "arguments": {}, "raw_arguments": "{}"}]})
    with pytest.raises(ValidationError):
        Turn(repeat=0)
    with pytest.raises(TypeError):
        ScriptedLLM("not a script")  # type: ignore[arg-type]
    assert tool_turn("read", {"a": 1}).resolved_finish_reason == "tool_calls"
    assert text_turn("x", finish_reason="length").resolved_finish_reason == "length"


# ---------------------------------------------------------------------------------------------
# Fixture and command line
# ---------------------------------------------------------------------------------------------


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_fixture_closes_every_server(pytester: pytest.Pytester, tmp_path: Path) -> None:
    ports_file = tmp_path / "ports.txt"
    pytester.makepyfile(
        f"""
        import httpx
        from stagecrew.testing.fixtures import scripted_llm

        def test_two(scripted_llm):
            a = scripted_llm([{{"text": "a"}}])
            b = scripted_llm()
            assert a.port != b.port
            reply = httpx.post(a.base_url + "/chat/completions",
                               json={{"model": "m", "messages": []}}).json()
            assert reply["choices"][0]["message"]["content"] == "a"
            open({str(ports_file)!r}, "w").write(f"{{a.port}} {{b.port}}")
        """
    )
    result = pytester.runpytest_inprocess(
        "-q", "-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function"
    )
    result.assert_outcomes(passed=1)
    ports = [int(p) for p in ports_file.read_text().split()]
    assert len(ports) == 2
    assert not any(_port_open(p) for p in ports)


def _read_line(stream: Any, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "the server printed nothing"
    return stream.readline()


def test_cli_serves_records_and_exits_on_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"*": [{"text": "from the cli"}]}))
    record = tmp_path / "requests.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stagecrew.testing.scripted_llm",
            "--script",
            str(script),
            "--port",
            "0",
            "--record",
            str(record),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = _read_line(proc.stdout, timeout=20).strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        port = int(base_url.rsplit(":", 1)[1].split("/")[0])
        reply = httpx.post(
            f"{base_url}/chat/completions",
            json={"model": "m", "messages": USER},
            headers={"authorization": "Bearer cli-key"},
        ).json()
        assert reply["choices"][0]["message"]["content"] == "from the cli"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None and proc.stderr.read() == ""
    assert not _port_open(port)
    (line,) = record.read_text().splitlines()
    recorded = json.loads(line)
    assert recorded["body"]["messages"] == USER
    assert recorded["headers"]["authorization"] == "Bearer cli-key"
    assert recorded["turn_index"] == 0


def test_cli_rejects_a_bad_script(tmp_path: Path) -> None:
    script = tmp_path / "bad.json"
    script.write_text(json.dumps([{"text": "x", "bogus": 1}]))
    proc = subprocess.run(
        [sys.executable, "-m", "stagecrew.testing.scripted_llm", "--script", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "bogus" in proc.stderr and proc.stdout == ""
