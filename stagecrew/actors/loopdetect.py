"""Catching an agent that spins: the same call with the same result, A-B-A-B cycles, the same
error again and again, or the model repeating itself without making tool progress.

Users of other agents report subagents making hundreds of identical grep calls for an hour.
Here each agent feeds its actions to a ``LoopDetector``; a detection escalates: first a
reminder injected into the agent's context, then a forced re-plan, then a stop with ``stuck``.
Progress (a new, different action) does not reset the escalation level: a model that loops,
gets reminded, does one new thing and loops again is still looping.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum

from stagecrew.config import StuckConfig


class Escalation(IntEnum):
    NONE = 0
    REMIND = 1
    REPLAN = 2
    STOP = 3


@dataclass
class Detection:
    level: Escalation
    kind: str
    detail: str

    def message(self) -> str:
        """What is put into the agent's context (reminder or re-plan)."""
        if self.level == Escalation.REMIND:
            return (
                f"[stagecrew loop check] You are repeating yourself: {self.detail}. Repeating it "
                "will not give a different result. Step back, and try a different approach or "
                "different arguments; if the task is done, say so and stop."
            )
        return (
            f"[stagecrew loop check] You are still looping ({self.detail}) after a reminder. "
            "Before any other tool call, write a short new plan: what you know, what you tried, "
            "why it failed, and the different next step. If you cannot make progress, stop and "
            "explain what blocks you. One more repetition ends this agent as stuck."
        )


def _digest(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode(), usedforsecurity=False).hexdigest()[:16]


def _canonical_args(raw: str) -> str:
    try:
        return json.dumps(json.loads(raw), sort_keys=True)
    except (json.JSONDecodeError, TypeError):
        return raw.strip()


@dataclass
class LoopDetector:
    config: StuckConfig = field(default_factory=StuckConfig)
    level: Escalation = Escalation.NONE
    actions: deque[str] = field(default_factory=deque)
    errors: deque[str] = field(default_factory=deque)
    texts: deque[str] = field(default_factory=deque)

    def _push(self, queue: deque[str], item: str) -> None:
        queue.append(item)
        while len(queue) > self.config.window:
            queue.popleft()

    def record_tool(
        self, name: str, arguments: str, result: str, is_error: bool
    ) -> Detection | None:
        """Feed one finished tool call; returns a detection when one fires."""
        action = _digest(name, _canonical_args(arguments), result)
        self._push(self.actions, action)
        self.texts.clear()  # a tool call is progress as far as text repetition goes
        if is_error:
            self._push(self.errors, _digest(name, result[:500]))
        return self._check()

    def record_text(self, text: str) -> Detection | None:
        """Feed an assistant turn that called no tool."""
        self._push(self.texts, _digest(" ".join(text.split())))
        return self._check()

    def _check(self) -> Detection | None:
        found = self._find()
        if found is None:
            return None
        kind, detail = found
        self.level = Escalation(min(Escalation.STOP, self.level + 1))
        # Forget the evidence so the next level needs fresh repetitions, not the same ones.
        self.actions.clear()
        self.errors.clear()
        self.texts.clear()
        return Detection(self.level, kind, detail)

    def _find(self) -> tuple[str, str] | None:
        cfg = self.config
        acts = list(self.actions)
        n = cfg.identical_repeats
        if len(acts) >= n and len(set(acts[-n:])) == 1:
            return "identical", f"the same tool call returned the same result {n} times in a row"
        for period in range(2, cfg.max_period + 1):
            span = period * cfg.cycle_repeats
            if len(acts) >= span:
                tail = acts[-span:]
                pattern = tail[:period]
                if len(set(pattern)) > 1 and all(
                    tail[i] == pattern[i % period] for i in range(span)
                ):
                    return (
                        "cycle",
                        f"a cycle of {period} tool calls repeated {cfg.cycle_repeats} times",
                    )
        if self.errors:
            worst = max(set(self.errors), key=list(self.errors).count)
            count = list(self.errors).count(worst)
            if count >= cfg.error_repeats:
                return "error", f"the same error {count} times"
        texts = list(self.texts)
        t = cfg.text_repeats
        if len(texts) >= t and len(set(texts[-t:])) == 1:
            return "text", f"the same answer {t} times without any tool progress"
        return None
