"""One streamed model call through litellm, normalised into stagecrew's own types.

Only the model gateway process imports this module: importing litellm costs about 4 s of CPU
and 120 MB, which agent actors must not pay. Streaming goes through ``acompletion`` because its
async iterator costs a quarter of the sync one's CPU per chunk. Retries (429, 5xx, timeouts,
refused or cut connections, streams that stop without a finish reason) happen here with
exponential backoff, each announced by a ``StreamRetry``; what still fails becomes a
``StreamError`` whose message is the single line a person needs: which role, which model,
which server, what went wrong and what to do about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from stagecrew.messages import (
    ModelRequest,
    StreamDone,
    StreamError,
    StreamItem,
    StreamRetry,
    StreamText,
    ToolCall,
    Usage,
)

_litellm: Any = None


def load_litellm() -> Any:
    """Import litellm once, offline: never let it fetch its price list from the internet."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        litellm.drop_params = True
        litellm.set_verbose = False
        _litellm = litellm
    return _litellm


class ModelCallError(Exception):
    """One failed attempt, classified: ``cause`` says what happened (one line, for the retry
    notices), ``advice`` what to do about it; ``message`` is both, after the role and model."""

    def __init__(
        self,
        kind: str,
        message: str,
        retryable: bool,
        retry_after: float | None = None,
        *,
        cause: str | None = None,
        advice: str = "",
    ):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.cause = cause or message
        self.advice = advice


def _failure(
    request: ModelRequest,
    kind: str,
    cause: str,
    advice: str = "",
    *,
    retryable: bool,
    retry_after: float | None = None,
) -> ModelCallError:
    message = f"{_where(request)}: {cause}" + (f" — {advice}" if advice else "")
    return ModelCallError(kind, message, retryable, retry_after, cause=cause, advice=advice)


def _where(request: ModelRequest) -> str:
    return f"model role '{request.role.value}' ({request.spec.model})"


def _server(request: ModelRequest) -> str:
    """Who was asked: the server at the configured ``api_base``, else the hosted provider."""
    base = request.spec.api_base
    if base:
        return f"the server at {base}"
    model = request.spec.model
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    return f"the provider ({provider})"


def _retry_after(exc: Exception) -> float | None:
    """The server's Retry-After, capped; litellm keeps the real headers on its own attribute
    (``exc.response`` is a stand-in without them)."""
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        if not headers:
            continue
        try:
            value = headers.get("retry-after")
            if value is not None:
                return min(30.0, max(0.0, float(value)))
        except (TypeError, ValueError, AttributeError):
            continue
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything behind it: causes, contexts, and the
    ``original_exception`` litellm keeps on the errors it wraps mid-stream."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while todo:
        cur = todo.pop(0)
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        out.append(cur)
        original = getattr(cur, "original_exception", None)
        if isinstance(original, BaseException):
            todo.append(original)
        todo.extend((cur.__cause__, cur.__context__))
    return out


_CONNECT_TIMEOUTS = {"ConnectTimeout", "ConnectionTimeoutError"}
_CONNECT_FAILURES = {"ConnectError", "ClientConnectorError", "ClientConnectorDNSError"}
_READ_TIMEOUTS = {
    "ReadTimeout",
    "SocketTimeoutError",
    "ServerTimeoutError",
    "TimeoutException",
    "TimeoutError",
}
_CUTS = {
    "ReadError",
    "RemoteProtocolError",
    "ClientPayloadError",
    "ServerDisconnectedError",
    "TransferEncodingError",
    "ContentLengthError",
    "IncompleteRead",
    "ConnectionResetError",
    "BrokenPipeError",
}


def _transport_failure(exc: BaseException) -> str | None:
    """What went wrong on the wire, from the exception chain (litellm reports most of these
    as a 500 "Connection error." or a mid-stream fallback error; the cause is further down):
    ``connect_timeout``, ``refused``, ``connect``, ``read_timeout``, ``cut`` or None."""
    names = {type(e).__name__ for e in _chain(exc)}
    if names & _CONNECT_TIMEOUTS:
        return "connect_timeout"
    if "ConnectionRefusedError" in names:
        return "refused"
    if names & _CONNECT_FAILURES:
        return "connect"
    if names & _READ_TIMEOUTS:
        return "read_timeout"
    if names & _CUTS:
        return "cut"
    return None


_LITELLM_PREFIX = re.compile(r"^(?:litellm\.\w+: )?(?:\w+Error: )?(?:\w+Exception - )?")


def _provider_text(exc: BaseException, limit: int) -> str:
    """What the provider said, without litellm's class-name prefixes, on one line."""
    text = str(exc).replace("\n", " ").strip()
    text = _LITELLM_PREFIX.sub("", text, count=1) or text
    return text if len(text) <= limit else text[:limit] + "…"


def _connection_failure(exc: BaseException) -> bool:
    """litellm reports a refused connection in a stream as a 500 ("Connection error."); the
    real cause is further down the exception chain."""
    for cur in _chain(exc):
        if isinstance(cur, ConnectionError) or type(cur).__name__ in (
            "ConnectError",
            "APIConnectionError",
            "ConnectTimeout",
        ):
            return True
    return "Connection error." in str(exc)


def dropped(request: ModelRequest, *, silent: bool, received: int) -> ModelCallError:
    """A stream that stopped before the provider said it was finished."""
    server = _server(request)
    if silent:
        cause = f"the stream from {server} ended mid-answer, without a finish reason"
    elif received:
        cause = f"{server} cut the connection mid-answer"
    else:
        cause = f"{server} closed the connection without answering"
    if request.spec.api_base:
        advice = (
            "the server or a proxy in between ended the stream early; check the server's log "
            "(a crash, a restart, out of memory)"
        )
    else:
        advice = "the provider ended the stream early; try again later"
    return _failure(request, "dropped", cause, advice, retryable=True)


def classify(
    exc: Exception, request: ModelRequest, key_env: str | None, *, received: int = 0
) -> ModelCallError:
    """Turn whatever litellm raised into one kind, one line, and whether to try again.
    ``received`` is how many chunks this attempt got before it failed."""
    litellm = load_litellm()
    base = request.spec.api_base
    role = request.role.value
    timeout = request.spec.timeout_s
    original = getattr(exc, "original_exception", None)
    if isinstance(original, litellm.RateLimitError | litellm.AuthenticationError):
        exc = original  # wrapped as a mid-stream fallback error; the provider's answer counts
    text = str(exc).replace("\n", " ")
    if len(text) > 300:
        text = text[:300] + "…"
    if isinstance(exc, litellm.AuthenticationError):
        fix = f"check {key_env}" if key_env else f"set models.{role}.api_key_env"
        return _failure(request, "auth", "the provider rejected the API key", fix, retryable=False)
    if isinstance(exc, litellm.ContextWindowExceededError):
        return _failure(
            request,
            "context_window",
            "the request exceeds the model's context window",
            retryable=False,
        )
    if isinstance(exc, litellm.RateLimitError):
        wait = _retry_after(exc)
        cause = f"rate limited by {_server(request)} (429)"
        if wait is not None:
            cause += f"; it asked to wait {wait:g} s"
        return _failure(
            request,
            "rate_limited",
            cause,
            f"wait a while and run again, or use fewer parallel agents "
            f"(models.{role}.num_retries sets how often to try)",
            retryable=True,
            retry_after=wait,
        )
    transport = _transport_failure(exc)
    if transport == "connect_timeout":
        return _failure(
            request,
            "unreachable",
            f"could not connect to {base or 'the provider'} within {timeout:g} s",
            f"check models.{role}.api_base and that the host is reachable",
            retryable=True,
        )
    if isinstance(exc, litellm.Timeout) or transport == "read_timeout":
        server = _server(request)
        if received:
            return _failure(
                request,
                "timeout",
                f"the stream from {server} stalled mid-answer: nothing more within {timeout:g} s",
                f"the server may be overloaded or stuck; raise models.{role}.timeout_s "
                "if it is only slow",
                retryable=True,
            )
        if base:
            model = request.spec.model
            served = model.split("/", 1)[1] if "/" in model else model  # the name it is sent
            advice = (
                f"check that it is serving the model '{served}' (a local server may still be "
                f"loading it), or raise models.{role}.timeout_s"
            )
            cause = f"{server} accepted the request but sent nothing within {timeout:g} s"
        else:
            advice = f"the provider may be overloaded; raise models.{role}.timeout_s"
            cause = f"{server} sent nothing within {timeout:g} s"
        return _failure(request, "timeout", cause, advice, retryable=True)
    if "No module named" in text:  # litellm wraps its own import failures as connection errors
        return _failure(request, "error", f"litellm failed inside ({text[:200]})", retryable=False)
    fix = f"start the server or check models.{role}.api_base"
    if transport == "refused":
        return _failure(
            request,
            "unreachable",
            f"cannot reach {base or 'the provider'} (connection refused)",
            fix,
            retryable=True,
        )
    if transport == "cut":
        return dropped(request, silent=False, received=received)
    if (
        transport == "connect"
        or isinstance(exc, litellm.APIConnectionError | OSError)
        or _connection_failure(exc)
    ):
        return _failure(
            request,
            "unreachable",
            f"cannot reach {base or 'the provider'} ({text[:120]})",
            fix,
            retryable=True,
        )
    if isinstance(exc, litellm.NotFoundError):
        return _failure(
            request,
            "not_found",
            "the provider does not know this model",
            f"check models.{role}.model",
            retryable=False,
        )
    status = getattr(exc, "status_code", None)
    if isinstance(exc, litellm.ServiceUnavailableError | litellm.InternalServerError) or (
        isinstance(status, int) and status >= 500
    ):
        code = f" {status}" if isinstance(status, int) else ""
        return _failure(
            request,
            "server",
            f"{_server(request)} answered with an error{code} ({_provider_text(exc, 160)})",
            "a problem on the provider's side; try again later",
            retryable=True,
            retry_after=_retry_after(exc),
        )
    if isinstance(exc, litellm.BadRequestError):
        return _failure(
            request,
            "bad_request",
            f"the provider refused the request ({_provider_text(exc, 200)})",
            retryable=False,
        )
    return _failure(request, "error", f"{type(exc).__name__}: {text[:200]}", retryable=False)


def warm_up() -> None:
    """Run litellm's whole call path once against its built-in mock (no network), so the
    first real request does not pay for lazy imports and client set-up."""
    litellm = load_litellm()
    with contextlib.suppress(Exception):
        litellm.completion(
            model="openai/warm-up",
            messages=[{"role": "user", "content": "hi"}],
            mock_response="ok",
            api_key="unused",
        )


def cost_of(model: str, usage: Usage) -> float:
    """USD for a call, from litellm's bundled price map; unknown models cost 0 (not a guess)."""
    litellm = load_litellm()
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
        return float(prompt_cost + completion_cost)
    except Exception:
        return 0.0


class _Accumulator:
    """Reassembles streamed text and tool-call fragments (keyed by their ``index``)."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model = ""

    def add(self, chunk: Any) -> str:
        self.model = getattr(chunk, "model", None) or self.model
        usage = getattr(chunk, "usage", None)
        if usage and getattr(usage, "prompt_tokens", None) is not None:
            self.usage = Usage(
                prompt_tokens=int(usage.prompt_tokens or 0),
                completion_tokens=int(usage.completion_tokens or 0),
            )
        choices = getattr(chunk, "choices", None) or []
        if not choices:
            return ""
        choice = choices[0]
        if getattr(choice, "finish_reason", None):
            self.finish_reason = choice.finish_reason
        delta = getattr(choice, "delta", None)
        if delta is None:
            return ""
        for tc in getattr(delta, "tool_calls", None) or []:
            index = getattr(tc, "index", None)
            if index is None:
                index = len(self.calls)
            slot = self.calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
            if getattr(tc, "id", None):
                slot["id"] = tc.id
            fn = getattr(tc, "function", None)
            if fn is not None:
                if getattr(fn, "name", None):
                    slot["name"] = fn.name
                if getattr(fn, "arguments", None):
                    slot["arguments"] += fn.arguments
        content = getattr(delta, "content", None) or ""
        if content:
            self.text.append(content)
        return content

    def tool_calls(self) -> list[ToolCall]:
        out = []
        for index in sorted(self.calls):
            slot = self.calls[index]
            if not slot["name"] and not slot["arguments"]:
                continue
            out.append(
                ToolCall(
                    id=slot["id"] or f"call_{index}",
                    name=slot["name"],
                    arguments=slot["arguments"] or "{}",
                )
            )
        return out


def _estimate_usage(request: ModelRequest, text: str, calls: list[ToolCall]) -> Usage:
    """When a provider reports no usage: about 4 characters a token, said so in the docs."""
    sent = len(json.dumps(request.messages)) + len(json.dumps(request.tools))
    got = len(text) + sum(len(c.arguments) + len(c.name) for c in calls)
    return Usage(prompt_tokens=sent // 4, completion_tokens=max(1, got // 4))


def _provider_finish_reason(response: Any, acc: _Accumulator) -> str | None:
    """The finish reason the provider itself sent, or None when its stream just stopped.

    litellm's stream wrapper makes up a last chunk with ``finish_reason="stop"`` when a stream
    ends without one (a server or proxy that closes the response mid-answer, no ``[DONE]``),
    so the chunks cannot tell a cut answer from a whole one; the wrapper's own record of what
    the provider sent can. Without that record (another litellm), the chunks are all there is.
    """
    if hasattr(response, "received_finish_reason"):
        return getattr(response, "received_finish_reason", None) or getattr(
            response, "intermittent_finish_reason", None
        )
    return acc.finish_reason


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return retry_after
    return min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.8 + 0.4 * random.random())


async def stream_completion(
    request: ModelRequest, api_key: str | None, key_env: str | None = None
) -> AsyncIterator[StreamItem]:
    """Stream one model call; yields ``StreamText`` pieces and ends with ``StreamDone`` or
    ``StreamError``.

    A failed attempt that is worth repeating (429, 5xx, timeouts, refused or cut connections,
    a stream that ends without a finish reason) yields a ``StreamRetry`` before the wait, so
    the person sees each retry as it happens; ``discard_partial`` says the text streamed so far
    is void and the next attempt's text starts over. The final ``StreamError`` (never
    retryable) is one line: the role and model, the cause, what to do, and how many attempts.
    """
    litellm = load_litellm()
    spec = request.spec
    kwargs: dict[str, Any] = {
        "model": spec.model,
        "messages": request.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "timeout": spec.timeout_s,
        "num_retries": 0,
        "max_retries": 0,
        # litellm otherwise routes every call with tools through its MCP gateway hook, which
        # imports the mcp SDK (~1.8 s) on the first call; the flag is popped before sending.
        "_skip_mcp_handler": True,
    }
    if request.tools:
        kwargs["tools"] = request.tools
    if spec.api_base:
        kwargs["api_base"] = spec.api_base
    if api_key:
        kwargs["api_key"] = api_key
    elif spec.api_base:
        kwargs["api_key"] = "sk-no-key-needed"  # OpenAI-compatible servers want some value
    if spec.temperature is not None:
        kwargs["temperature"] = spec.temperature
    if spec.max_tokens is not None:
        kwargs["max_tokens"] = spec.max_tokens
    kwargs.update(spec.extra)

    started = time.perf_counter()
    max_attempts = spec.num_retries + 1
    attempt = 0
    while True:
        attempt += 1
        acc = _Accumulator()
        produced = False  # text of this attempt already handed on
        received = 0  # chunks of this attempt
        try:
            response = await litellm.acompletion(**kwargs)
            async for chunk in response:
                received += 1
                piece = acc.add(chunk)
                if piece:
                    produced = True
                    yield StreamText(text=piece)
            if _provider_finish_reason(response, acc) is None:
                err = dropped(request, silent=True, received=received)
            else:
                calls = acc.tool_calls()
                text = "".join(acc.text)
                usage = acc.usage or _estimate_usage(request, text, calls)
                usage = usage.model_copy(update={"cost_usd": cost_of(spec.model, usage)})
                yield StreamDone(
                    text=text,
                    tool_calls=calls,
                    finish_reason=acc.finish_reason,
                    usage=usage,
                    model=acc.model or spec.model,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    attempts=attempt,
                )
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # classified below; nothing escapes as a raw trace
            err = classify(exc, request, key_env, received=received)
        if not err.retryable or attempt >= max_attempts:
            suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
            yield StreamError(error_kind=err.kind, message=err.message + suffix, retryable=False)
            return
        delay = _backoff(attempt, err.retry_after)
        yield StreamRetry(
            attempt=attempt + 1,
            max_attempts=max_attempts,
            delay_s=round(delay, 2),
            error_kind=err.kind,
            message=err.cause,
            discard_partial=produced,
        )
        await asyncio.sleep(delay)
