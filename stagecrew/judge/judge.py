"""The ``/goal`` judge: rules on evidence, with execution checks that overrule the model.

Order of authority, highest first:

1. **Execution.** Verification commands run first, read-only. If any fails or times out the
   goal is not met, full stop: the model is *not* consulted. Deliberate: the failing command and
   its output tail are the most actionable feedback the agent can get, a model call would cost a
   round-trip every such round, and a model's "missing items" could only restate the failure
   (or, worse, argue with it). The model gets its say once the checks pass.
2. **Model.** With the checks green, the judge model reads the evidence and rules.
3. **Policy.** When the model call or its reply fails ``retries + 1`` times, ``error_policy``
   decides, and the verdict says so (``source="policy"``, reason naming the failure). Never a
   silent pass or a silent stop.

``GoalLoop`` is the small state machine around it: how many rounds were used and what to do next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stagecrew.judge.evidence import (
    DEFAULT_DIFF_CHARS,
    DEFAULT_TRANSCRIPT_CHARS,
    build_evidence,
    render_evidence_prompt,
)
from stagecrew.judge.verdict import Verdict, VerdictParseError, parse_verdict
from stagecrew.judge.verify import CheckResult, run_verification_async

CompleteFn = Callable[[list[dict[str, Any]]], Awaitable[str]]
ErrorPolicy = Literal["retry_then_stop", "retry_then_allow"]
NextAction = Literal["stop_goal_met", "continue", "stop_rounds_exhausted", "stop_impossible"]

_FAILURE_TAIL_CHARS = 2_000


def _tail(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def execution_verdict(checks: list[CheckResult]) -> Verdict | None:
    """A not-met verdict naming every failed check, or None when all checks passed."""
    failed = [check for check in checks if not check.passed]
    if not failed:
        return None
    first = failed[0]
    reason = f"Verification failed: {first.summary()}."
    if len(failed) > 1:
        others = "; ".join(check.summary() for check in failed[1:])
        reason += f" Also failing: {others}."
    reason += f"\nOutput tail of `{first.command}`:\n{_tail(first.output, _FAILURE_TAIL_CHARS)}"
    return Verdict(
        met=False,
        reason=reason,
        missing=[f"`{check.command}` must pass" for check in failed],
        evidence=[check.summary() for check in checks],
        source="execution",
    )


class Judge:
    """Decides whether a ``/goal`` condition holds when the agent tries to stop.

    ``complete`` sends OpenAI-format messages to the judge model and returns its text; pinning
    temperature 0 (and the model choice) is the caller's job.
    """

    def __init__(
        self,
        complete: CompleteFn,
        *,
        verify_commands: Sequence[str] = (),
        timeout_s: float = 600.0,
        error_policy: ErrorPolicy = "retry_then_stop",
        retries: int = 2,
        max_transcript_chars: int = DEFAULT_TRANSCRIPT_CHARS,
        max_diff_chars: int = DEFAULT_DIFF_CHARS,
    ) -> None:
        if error_policy not in ("retry_then_stop", "retry_then_allow"):
            raise ValueError(f"unknown error_policy {error_policy!r}")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.complete = complete
        self.verify_commands = list(verify_commands)
        self.timeout_s = timeout_s
        self.error_policy: ErrorPolicy = error_policy
        self.retries = retries
        self.max_transcript_chars = max_transcript_chars
        self.max_diff_chars = max_diff_chars

    async def evaluate(
        self,
        condition: str,
        messages: list[dict[str, Any]],
        workspace: Path,
        agent_claim: str | None = None,
        *,
        extra_commands: Sequence[str] = (),
    ) -> Verdict:
        """One judge round. ``extra_commands`` come from the goal itself (e.g. its test command)
        and run after the configured ones; duplicates run once."""
        commands = list(dict.fromkeys([*self.verify_commands, *extra_commands]))
        checks = await run_verification_async(commands, Path(workspace), self.timeout_s)
        failed = execution_verdict(checks)
        if failed is not None:
            return failed

        evidence = await asyncio.to_thread(
            build_evidence,
            condition,
            messages,
            Path(workspace),
            checks,
            agent_claim,
            max_transcript_chars=self.max_transcript_chars,
            max_diff_chars=self.max_diff_chars,
        )
        prompt = render_evidence_prompt(evidence)
        passed_lines = [check.summary() for check in checks]
        errors: list[str] = []
        conversation = list(prompt)
        for _attempt in range(self.retries + 1):
            try:
                reply = await self.complete(conversation)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors.append(f"model call failed: {type(exc).__name__}: {exc}")
                conversation = list(prompt)
                continue
            try:
                verdict = parse_verdict(reply if isinstance(reply, str) else str(reply))
            except VerdictParseError as exc:
                errors.append(f"unusable reply: {exc}")
                # Show the model its own reply and what was wrong with it; cheaper than starting
                # over and it usually fixes formatting on the next try.
                conversation = [
                    *prompt,
                    {"role": "assistant", "content": str(reply)},
                    {
                        "role": "user",
                        "content": f"That reply could not be used ({exc}). Answer again with "
                        "only the JSON object, with the fields met, impossible, reason, missing "
                        "and evidence.",
                    },
                ]
                continue
            verdict.evidence = [
                *verdict.evidence,
                *(e for e in passed_lines if e not in verdict.evidence),
            ]
            return verdict
        return self._policy_verdict(errors, passed_lines)

    def _policy_verdict(self, errors: list[str], passed_lines: list[str]) -> Verdict:
        attempts = self.retries + 1
        detail = " | ".join(errors)
        if self.error_policy == "retry_then_allow":
            return Verdict(
                met=True,
                reason=f"The judge failed {attempts} time(s) ({detail}); the error policy "
                "'retry_then_allow' lets the agent stop without a ruling on the condition.",
                evidence=passed_lines,
                source="policy",
            )
        return Verdict(
            met=False,
            impossible=True,
            reason=f"The judge failed {attempts} time(s) ({detail}); the error policy "
            "'retry_then_stop' stops the session rather than run on without a judge.",
            missing=["a working judge model"],
            evidence=passed_lines,
            source="policy",
        )


@dataclass
class GoalLoop:
    """Round accounting for one ``/goal``: each judge verdict uses one round."""

    condition: str
    max_rounds: int = 12
    rounds_used: int = 0
    verdicts: list[Verdict] = field(default_factory=list)

    def next_action(self, verdict: Verdict) -> NextAction:
        """Record ``verdict`` and say what the session does next.

        A met goal stops even on the last round; an impossible one stops at once; otherwise the
        agent continues until the round budget is spent.
        """
        self.rounds_used += 1
        self.verdicts.append(verdict)
        if verdict.met:
            return "stop_goal_met"
        if verdict.impossible:
            return "stop_impossible"
        if self.rounds_used >= self.max_rounds:
            return "stop_rounds_exhausted"
        return "continue"

    @property
    def rounds_left(self) -> int:
        return max(0, self.max_rounds - self.rounds_used)

    def feedback_message(self, verdict: Verdict) -> str:
        """What the agent is told when it tried to stop too early: why, and what is missing."""
        who = {
            "execution": "a verification command failed",
            "model": "the judge reviewed the evidence",
            "policy": "the judge could not rule",
        }[verdict.source]
        lines = [
            f"The goal is not met yet ({who}). Goal: {self.condition}",
            f"Reason: {verdict.reason}",
        ]
        if verdict.missing:
            lines.append("Still missing:")
            lines.extend(f"- {item}" for item in verdict.missing)
        lines.append(
            f"Keep working toward the goal ({self.rounds_left} judge round(s) left); stop again "
            "when the evidence shows it is met."
        )
        return "\n".join(lines)
