"""One streamed model call through litellm, normalised into stagecrew's own types.

Only the model gateway process imports this module: importing litellm costs about 4 s of CPU
and 120 MB, which agent actors must not pay. Streaming goes through ``acompletion`` because its
async iterator costs a quarter of the sync one's CPU per chunk. Retries (429, 5xx, timeouts,
refused connections) happen here with exponential backoff; what still fails becomes a
``StreamError`` whose message is the single line a person needs: which role, which model,
what went wrong and what to set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from stagecrew.messages import (
    ModelRequest,
    StreamDone,
    StreamError,
    StreamItem,
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
    def __init__(self, kind: str, message: str, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


def _where(request: ModelRequest) -> str:
    return f"model role '{request.role.value}' ({request.spec.model})"


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


def _connection_failure(exc: BaseException) -> bool:
    """litellm reports a refused connection in a stream as a 500 ("Connection error."); the
    real cause is further down the exception chain."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        name = type(cur).__name__
        if isinstance(cur, ConnectionError) or name in (
            "ConnectError",
            "APIConnectionError",
            "ConnectTimeout",
        ):
            return True
        cur = cur.__cause__ or cur.__context__
    return "Connection error." in str(exc)


def classify(exc: Exception, request: ModelRequest, key_env: str | None) -> ModelCallError:
    """Turn whatever litellm raised into one kind, one line, and whether to try again."""
    litellm = load_litellm()
    where = _where(request)
    base = request.spec.api_base
    role = request.role.value
    text = str(exc).replace("\n", " ")
    if len(text) > 300:
        text = text[:300] + "…"
    if isinstance(exc, litellm.AuthenticationError):
        fix = f"check {key_env}" if key_env else f"set models.{role}.api_key_env"
        return ModelCallError("auth", f"{where}: the provider rejected the API key — {fix}", False)
    if isinstance(exc, litellm.ContextWindowExceededError):
        return ModelCallError(
            "context_window", f"{where}: the request exceeds the model's context window", False
        )
    if isinstance(exc, litellm.RateLimitError):
        return ModelCallError(
            "rate_limited", f"{where}: rate limited by the provider (429)", True, _retry_after(exc)
        )
    if isinstance(exc, litellm.Timeout):
        return ModelCallError(
            "timeout",
            f"{where}: no answer within {request.spec.timeout_s:g} s "
            f"— raise models.{role}.timeout_s",
            True,
        )
    if "No module named" in text:  # litellm wraps its own import failures as connection errors
        return ModelCallError("error", f"{where}: litellm failed inside ({text[:200]})", False)
    if isinstance(exc, litellm.APIConnectionError | OSError) or _connection_failure(exc):
        target = base or "the provider"
        return ModelCallError(
            "unreachable",
            f"{where}: cannot reach {target} ({text[:120]}) — check models.{role}.api_base "
            "or start the server",
            True,
        )
    if isinstance(exc, litellm.NotFoundError):
        return ModelCallError(
            "not_found",
            f"{where}: the provider does not know this model — check models.{role}.model",
            False,
        )
    if isinstance(exc, litellm.ServiceUnavailableError | litellm.InternalServerError):
        return ModelCallError(
            "server", f"{where}: provider error ({text[:160]})", True, _retry_after(exc)
        )
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 500:
        return ModelCallError(
            "server", f"{where}: provider error {status} ({text[:160]})", True, _retry_after(exc)
        )
    if isinstance(exc, litellm.BadRequestError):
        return ModelCallError(
            "bad_request", f"{where}: the provider refused the request ({text[:200]})", False
        )
    return ModelCallError("error", f"{where}: {type(exc).__name__}: {text[:200]}", False)


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


async def stream_completion(
    request: ModelRequest, api_key: str | None, key_env: str | None = None
) -> AsyncIterator[StreamItem]:
    """Stream one model call; yields ``StreamText`` pieces and ends with ``StreamDone`` or
    ``StreamError``. A ``StreamError`` with ``retryable=True`` mid-stream means "the partial
    text so far is void, a retry follows"."""
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
    attempt = 0
    while True:
        attempt += 1
        acc = _Accumulator()
        produced = False
        try:
            response = await litellm.acompletion(**kwargs)
            async for chunk in response:
                piece = acc.add(chunk)
                if piece:
                    produced = True
                    yield StreamText(text=piece)
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
            err = classify(exc, request, key_env)
            if not err.retryable or attempt > spec.num_retries:
                suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
                yield StreamError(
                    error_kind=err.kind, message=err.message + suffix, retryable=False
                )
                return
            delay = err.retry_after or min(8.0, 0.5 * 2 ** (attempt - 1)) * (
                0.8 + 0.4 * random.random()
            )
            if produced:
                yield StreamError(
                    error_kind="restart",
                    message=f"{err.message}; retrying in {delay:.1f} s",
                    retryable=True,
                )
            await asyncio.sleep(delay)
