"""The ``/goal`` gate: an agent may only stop once an independent judge says the goal is met.

An agent left to itself stops when *it* thinks it is done, which for long autonomous work is
far too early ("the tests should pass now"). With a goal set, every attempt to stop (the model
answers without calling a tool) goes to the judge first:

* **met** → the run ends with ``goal_met``;
* **not met** → the reason and the missing items go back to the agent as a user message and the
  loop carries on (one judge round used);
* **rounds exhausted** (``max_rounds``, default 12) → ``judge_rounds_exhausted``;
* **impossible**, or **the judge failed** under ``retry_then_stop`` → ``error``, the reason says
  what failed; under ``retry_then_allow`` a failed judge lets the agent stop with ``done`` (not
  ``goal_met``: nobody verified it) and a warning says so. Never a silent pass or stop.

A verification command that fails means *not met* whatever the judge model would say: the judge
library runs the commands first and does not consult the model when one fails.

The gate does not know how the judge is reached: ``JudgePort`` is the Ray actor
(``orchestrator.judge_host.RayJudgePort``) in a session, or ``LocalJudgePort`` in-process. Every
verdict is logged as a ``JudgeVerdict`` event through the agent's ``EventSink``.

Integration in the loop (``Agent._step``, where the model stopped calling tools)::

    if not calls:
        self._watch_loops(self.loops.record_text(text))
        if self.goal_gate is not None:
            decision = await self.goal_gate.on_stop(self.messages, text)
            if not decision.stop:
                self.messages.append({"role": "user", "content": decision.feedback})
                return
            raise _Stop(decision.stop_reason, summary=text, error=decision.error)
        raise _Stop(StopReason.DONE, summary=text)

and in ``AgentHost.run``, when ``spec.goal_spec`` is set::

    judge = await supervisor.service.remote(
        spec.session, "judge", spec.role_models.get("judge", spec.model)
    )
    gate = GoalGate(spec.goal_spec, RayJudgePort(judge, workspace=spec.workspace), outbox,
                    actor_id=spec.actor_id)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from stagecrew.judge.judge import ErrorPolicy, GoalLoop, Judge
from stagecrew.judge.verdict import Verdict
from stagecrew.messages import JudgeVerdict, Message, Notice, StopReason

if TYPE_CHECKING:
    from stagecrew.config import Config

DEFAULT_MAX_ROUNDS = 12
# The AgentSpec field that carries a GoalSpec to the agent's host.
GOAL_FIELD = "goal_spec"


class GoalSpec(BaseModel):
    """A goal condition and how it is checked; travels inside the agent's spec.

    ``verify_commands`` are the configured ones (``Config.verify_commands``): they run read-only
    in the agent's workspace each round and veto the judge model when they fail.
    """

    model_config = ConfigDict(extra="forbid")

    condition: str = Field(min_length=1)
    verify_commands: list[str] = []
    max_rounds: int = Field(default=DEFAULT_MAX_ROUNDS, ge=1, le=1000)
    error_policy: ErrorPolicy = "retry_then_stop"
    # Per verification command, and how often a failed judge-model call is retried.
    timeout_s: float = Field(default=600.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)


def goal_spec_from_config(condition: str, config: Config, **overrides: Any) -> GoalSpec:
    """The ``GoalSpec`` for ``crew run --goal`` and the chat's ``/goal CONDITION``."""
    condition = condition.strip()
    return GoalSpec(condition=condition, verify_commands=list(config.verify_commands), **overrides)


class GoalUnavailableError(RuntimeError):
    """The agent spec in this build has no ``goal_spec`` field, so a goal cannot be carried."""


def with_goal(spec: BaseModel, goal: GoalSpec) -> Any:
    """``spec`` (an ``AgentSpec``) carrying ``goal``, validated like any spec from the wire.

    Typed loosely so this module never imports the agent loop (which imports it). Raises
    ``GoalUnavailableError`` if ``AgentSpec`` has no ``goal_spec`` field yet, rather than drop
    the goal silently and let the agent stop unchecked. (``AgentSpec.goal``, a plain string, is
    the person's intent for checkpoints; the stop condition is a separate, structured field.)
    """
    cls = type(spec)
    if GOAL_FIELD not in cls.model_fields:
        raise GoalUnavailableError(
            "this build cannot run a goal yet: the agent loop has no goal gate "
            f"(AgentSpec.{GOAL_FIELD})"
        )
    return cls.model_validate({**spec.model_dump(mode="json"), GOAL_FIELD: goal.model_dump()})


class JudgePort(Protocol):
    """How the gate reaches a judge; returns the verdict for one round."""

    async def evaluate(
        self,
        condition: str,
        messages: list[dict[str, Any]],
        agent_claim: str | None,
        verify_commands: list[str],
        round: int,
        *,
        error_policy: ErrorPolicy = "retry_then_stop",
        timeout_s: float = 600.0,
        retries: int = 2,
    ) -> Verdict: ...


class EventSink(Protocol):
    def emit(self, body: Message) -> None: ...


class LocalJudgePort:
    """A judge in this process (no Ray): for in-process runs and a future ``--no-ray`` mode.

    ``complete`` sends messages to the judge model and returns its text; pinning temperature 0
    is the caller's job, as for ``Judge``.
    """

    def __init__(
        self, complete: Callable[[list[dict[str, Any]]], Awaitable[str]], workspace: Path
    ) -> None:
        self.complete = complete
        self.workspace = Path(workspace)

    async def evaluate(
        self,
        condition: str,
        messages: list[dict[str, Any]],
        agent_claim: str | None,
        verify_commands: list[str],
        round: int,
        *,
        error_policy: ErrorPolicy = "retry_then_stop",
        timeout_s: float = 600.0,
        retries: int = 2,
    ) -> Verdict:
        del round
        judge = Judge(
            self.complete,
            verify_commands=verify_commands,
            timeout_s=timeout_s,
            error_policy=error_policy,
            retries=retries,
        )
        return await judge.evaluate(condition, messages, self.workspace, agent_claim)


class GateDecision(BaseModel):
    """What the loop does after the agent tried to stop.

    ``stop`` with ``stop_reason`` (and ``error`` when it is a failure), or carry on after
    appending ``feedback`` as a user message.
    """

    stop: bool
    stop_reason: StopReason | None = None
    error: str | None = None
    feedback: str | None = None
    round: int
    verdict: Verdict


class GoalGate:
    """Asks the judge each time the agent wants to stop; keeps the round count."""

    def __init__(
        self,
        spec: GoalSpec,
        judge: JudgePort,
        events: EventSink | None = None,
        *,
        actor_id: str | None = None,
    ) -> None:
        self.spec = spec
        self.judge = judge
        self.events = events
        self.actor_id = actor_id
        self.loop = GoalLoop(spec.condition, max_rounds=spec.max_rounds)

    def _emit(self, body: Message) -> None:
        if self.events is not None:
            self.events.emit(body)

    def _unreachable(self, exc: BaseException) -> Verdict:
        """The judge itself could not be asked (its actor died, Ray failed): the error policy
        decides, exactly as for a failing judge model, and the verdict names the failure."""
        what = f"the judge could not be reached ({type(exc).__name__}: {exc})"
        if self.spec.error_policy == "retry_then_allow":
            return Verdict(
                met=True,
                reason=f"{what}; the error policy 'retry_then_allow' lets the agent stop "
                "without a ruling on the condition.",
                source="policy",
            )
        return Verdict(
            met=False,
            impossible=True,
            reason=f"{what}; the error policy 'retry_then_stop' stops the session rather than "
            "run on without a judge.",
            missing=["a working judge"],
            source="policy",
        )

    async def on_stop(self, messages: list[dict[str, Any]], final_text: str) -> GateDecision:
        """One judge round for the agent's attempt to stop with ``final_text``."""
        round_no = self.loop.rounds_used + 1
        try:
            verdict = await self.judge.evaluate(
                self.spec.condition,
                messages,
                final_text or None,
                list(self.spec.verify_commands),
                round_no,
                error_policy=self.spec.error_policy,
                timeout_s=self.spec.timeout_s,
                retries=self.spec.retries,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            verdict = self._unreachable(exc)
        self._emit(
            JudgeVerdict(
                round=round_no,
                met=verdict.met,
                impossible=verdict.impossible,
                reason=verdict.reason,
                missing=verdict.missing,
                source=verdict.source,
            )
        )
        action = self.loop.next_action(verdict)
        if action == "continue":
            return GateDecision(
                stop=False,
                feedback=self.loop.feedback_message(verdict),
                round=round_no,
                verdict=verdict,
            )
        if action == "stop_goal_met":
            if verdict.source == "policy":
                # Allowed to stop, but nothing confirmed the goal: `done`, never `goal_met`.
                self._emit(
                    Notice(
                        actor_id=self.actor_id,
                        level="warning",
                        text=f"goal NOT verified: {verdict.reason}",
                    )
                )
                return GateDecision(
                    stop=True, stop_reason=StopReason.DONE, round=round_no, verdict=verdict
                )
            return GateDecision(
                stop=True, stop_reason=StopReason.GOAL_MET, round=round_no, verdict=verdict
            )
        if action == "stop_rounds_exhausted":
            return GateDecision(
                stop=True,
                stop_reason=StopReason.JUDGE_ROUNDS_EXHAUSTED,
                error=f"the goal was not met after {self.loop.rounds_used} judge round(s); "
                f"last verdict: {verdict.reason}",
                round=round_no,
                verdict=verdict,
            )
        # stop_impossible: the judge failed under retry_then_stop, or ruled the goal unreachable.
        error = (
            verdict.reason
            if verdict.source == "policy"
            else f"the judge ruled the goal cannot be met: {verdict.reason}"
        )
        return GateDecision(
            stop=True, stop_reason=StopReason.ERROR, error=error, round=round_no, verdict=verdict
        )
