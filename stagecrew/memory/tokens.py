"""Token accounting: how big a prompt is, before the provider tells us.

The agent actors must stay light, so nothing here imports litellm (4 s) or a tokenizer. The
lead can plug litellm's exact counter in from the model-gateway process; anything with
``count_text`` and ``count_messages`` satisfies ``TokenCounter``.

``EstimateCounter`` is a deliberately *conservative* estimate. It counts the pieces a BPE
pre-tokenizer splits text into (letter runs, digit groups, punctuation, indentation, newlines)
instead of dividing characters by a constant, because chars/token swings from ~2.5 (hex
tables, uppercase) to ~5 (plain English) and a flat ratio under-counts exactly the dense text
that overflows windows.

Calibration (``tiktoken`` cl100k_base and o200k_base, and the Anthropic tokenizer litellm
bundles; 300 random 3,000-char windows of CPython stdlib source, 85 package READMEs, 199 JSON
files). Ratio estimate/actual:

=========  =====  ====  ====  ====  ===============
text       model  mean  p5    p95   under-counted
=========  =====  ====  ====  ====  ===============
code       cl100k 1.24  1.10  1.39  1%
code       claude 1.19  1.10  1.30  0%
prose      cl100k 1.26  1.13  1.42  1%
prose      claude 1.14  1.01  1.33  4%
json       o200k  1.23  1.09  1.34  2%
=========  =====  ====  ====  ====  ===============

A flat 3.6 chars/token under-counted 18-58% of the same samples (p5 0.67 on code). So the
estimate over-counts by about 20%, on purpose; ``CalibratedCounter`` removes most of that
once the provider has reported real ``prompt_tokens`` for a request.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from stagecrew.memory.messages import Message, content_text, tool_calls_of

# One match per pre-tokenizer piece; single spaces are not pieces (they join the next word).
_PIECES = re.compile(r"[A-Za-z]+|[0-9]+|[ \t]{2,}|\n+|[^\x00-\x7f]|[^\sA-Za-z0-9]")


@runtime_checkable
class TokenCounter(Protocol):
    """Anything that can size text and OpenAI-format message lists in tokens."""

    def count_text(self, text: str) -> int: ...

    def count_messages(self, messages: list[Message]) -> int: ...


@lru_cache(maxsize=4096)
def estimate_text_tokens(text: str) -> int:
    """Conservative token estimate for one string (see the module docstring for calibration).

    Rules, each fitted on the calibration set: a lowercase/mixed-case word is one token per
    six letters or part thereof, an all-caps word one per three letters (caps split badly),
    digits one per three, a run of 2+ spaces/tabs one, a run of newlines one, an ASCII
    punctuation mark 0.75, a non-ASCII character one. About 100 ns a character, so results
    are cached: the same tool output is counted at every turn.
    """
    if not text:
        return 0
    n = 0.0
    for piece in _PIECES.findall(text):
        c = piece[0]
        if c.isascii() and c.isalpha():
            if len(piece) > 1 and piece.isupper():
                n += 1 + len(piece) // 3
            else:
                n += 1 + (len(piece) - 1) // 6
        elif c.isdigit() and c.isascii():
            n += (len(piece) + 2) // 3
        elif c in " \t\n" or not c.isascii():
            n += 1
        else:
            n += 0.75
    return math.ceil(n)


@dataclass(frozen=True)
class EstimateCounter:
    """The built-in counter: piece-based estimate plus OpenAI-style per-message overhead.

    Overheads follow OpenAI's published accounting (3-4 tokens per message, 3 to prime the
    reply) rounded up; tool calls pay for their name, JSON arguments and id. An image part is
    charged ``image_tokens`` (a 1092x1092 image on Claude is ~1,600).
    """

    per_message: int = 4
    per_tool_call: int = 8
    reply_priming: int = 3
    image_tokens: int = 1600

    def count_text(self, text: str) -> int:
        return estimate_text_tokens(text) if text else 0

    def count_message(self, message: Message) -> int:
        n = self.per_message
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") not in (None, "text"):
                    n += self.image_tokens
                else:
                    n += self.count_text(content_text([part]))
        else:
            n += self.count_text(content_text(content))
        if message.get("name"):
            n += 1 + self.count_text(str(message["name"]))
        if message.get("role") == "tool" and message.get("tool_call_id"):
            n += self.count_text(str(message["tool_call_id"]))
        for call in tool_calls_of(message):
            fn = call.get("function") or {}
            args = fn.get("arguments", "") if isinstance(fn, dict) else ""
            n += self.per_tool_call
            n += self.count_text(str(fn.get("name", ""))) if isinstance(fn, dict) else 0
            n += self.count_text(args if isinstance(args, str) else str(args))
            n += self.count_text(str(call.get("id", "")))
        return n

    def count_messages(self, messages: list[Message]) -> int:
        if not messages:
            return 0
        return self.reply_priming + sum(self.count_message(m) for m in messages)

    def count_tools(self, tools: list[dict[str, Any]]) -> int:
        """Tool schemas are sent with every request and count against the window too."""
        return sum(self.count_text(json.dumps(t, separators=(",", ":"))) + 4 for t in tools)


class CalibratedCounter:
    """A base counter scaled by what the provider actually billed for recent requests.

    After each response, call ``observe(estimated, reported_prompt_tokens)`` with the count
    this counter's *base* gave for the request that was sent. The correction ratio is an
    exponential moving average (``smoothing`` weight for the newest sample), clamped to
    ``[min_ratio, max_ratio]`` so one odd response (a cached prompt, a provider that adds a
    hidden system prompt) cannot swing budgets wildly, and multiplied by ``safety`` so the
    corrected count still leans slightly high.
    """

    def __init__(
        self,
        base: TokenCounter | None = None,
        smoothing: float = 0.3,
        min_ratio: float = 0.5,
        max_ratio: float = 2.0,
        safety: float = 1.03,
    ) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing must be in (0, 1]")
        self.base: TokenCounter = base or EstimateCounter()
        self.smoothing = smoothing
        self.min_ratio = min_ratio
        self.max_ratio = max_ratio
        self.safety = safety
        self._ratio: float | None = None
        self.samples = 0

    @property
    def ratio(self) -> float:
        """Multiplier applied to the base count (1.0 until the first observation)."""
        if self._ratio is None:
            return 1.0
        return min(self.max_ratio, max(self.min_ratio, self._ratio * self.safety))

    def observe(self, estimated: int, reported_prompt_tokens: int) -> float:
        """Fold one (base estimate, provider count) pair into the ratio; returns the ratio."""
        if estimated <= 0 or reported_prompt_tokens <= 0:
            return self.ratio
        sample = reported_prompt_tokens / estimated
        sample = min(self.max_ratio * 2, max(self.min_ratio / 2, sample))
        if self._ratio is None:
            self._ratio = sample
        else:
            self._ratio += self.smoothing * (sample - self._ratio)
        self.samples += 1
        return self.ratio

    def observe_request(
        self,
        messages: list[Message],
        reported_prompt_tokens: int,
        tools: list[dict[str, Any]] | None = None,
    ) -> float:
        """``observe`` for a request given as sent: messages plus tool schemas."""
        estimated = self.base.count_messages(messages)
        if tools and isinstance(self.base, EstimateCounter):
            estimated += self.base.count_tools(tools)
        return self.observe(estimated, reported_prompt_tokens)

    def count_text(self, text: str) -> int:
        return math.ceil(self.base.count_text(text) * self.ratio)

    def count_messages(self, messages: list[Message]) -> int:
        return math.ceil(self.base.count_messages(messages) * self.ratio)


# ----------------------------------------------------------------------------- the window


@dataclass(frozen=True)
class ContextWindow:
    """A model's context window and when to act on how full it is.

    Fractions are of the *usable* window (the window minus tokens reserved for the reply):
    checkpoints at 40/60/80% spread the checkpoint writer's work out so the checkpoint is
    fresh when a rebuild is needed at 90%, and ``rebuild_target`` is how full a rebuilt
    context may be, leaving room to work before the next rebuild.
    """

    window_tokens: int
    reserved_output_tokens: int = 8192
    checkpoint_thresholds: tuple[float, ...] = (0.4, 0.6, 0.8)
    rebuild_threshold: float = 0.9
    rebuild_target: float = 0.5

    def __post_init__(self) -> None:
        if self.window_tokens <= 0:
            raise ValueError("window_tokens must be positive")
        if not 0 <= self.reserved_output_tokens < self.window_tokens:
            raise ValueError("reserved_output_tokens must be smaller than the window")
        fractions = (*self.checkpoint_thresholds, self.rebuild_threshold, self.rebuild_target)
        if any(not 0 < f <= 1 for f in fractions):
            raise ValueError("thresholds are fractions in (0, 1]")
        if list(self.checkpoint_thresholds) != sorted(self.checkpoint_thresholds):
            raise ValueError("checkpoint_thresholds must be increasing")
        if self.rebuild_target >= self.rebuild_threshold:
            raise ValueError("rebuild_target must be below rebuild_threshold")

    @property
    def usable_tokens(self) -> int:
        return self.window_tokens - self.reserved_output_tokens

    @property
    def rebuild_budget(self) -> int:
        """The ``budget_tokens`` to pass to ``rebuild_context``."""
        return int(self.usable_tokens * self.rebuild_target)

    def fraction(self, used_tokens: int) -> float:
        return used_tokens / self.usable_tokens


def should_checkpoint(
    used_tokens: int, window: ContextWindow, last_level: float = 0.0
) -> float | None:
    """The highest checkpoint threshold crossed above ``last_level``, or ``None``.

    Pass the level returned last time (reset to 0 after a rebuild) so each threshold fires
    once; a jump from 30% to 85% fires one checkpoint (0.8), not three.
    """
    frac = window.fraction(used_tokens)
    crossed = [t for t in window.checkpoint_thresholds if last_level < t <= frac]
    return max(crossed) if crossed else None


def should_rebuild(used_tokens: int, window: ContextWindow) -> bool:
    """True once the context is at or past the rebuild threshold of the usable window."""
    return window.fraction(used_tokens) >= window.rebuild_threshold
