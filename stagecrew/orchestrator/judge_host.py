"""The judge as an actor: its own process, its own model, verification it runs itself.

The supervisor creates one per session on first use (``Supervisor.service(session, "judge",
model)``, see ``SERVICES``). Two callers use it:

* the ``/goal`` gate of an agent (``actors/goal.py``), through ``RayJudgePort``: each time the
  agent wants to stop, ``evaluate`` runs the verification commands read-only, builds the
  evidence and asks the judge model for a verdict;
* Max Mode (``orchestrator/maxmode.py``), which asks it to ``verify`` each candidate's worktree.

Why a separate actor rather than a library call inside the agent: verification runs test
suites that can take minutes and many CPU seconds; in its own process they cannot starve the
agent's event loop or the supervisor's, and the judge's model and usage are accounted under
its own id in the tree (``crew ps`` shows what judging costs).

The judge model is always called at temperature 0: a ruling that changes from one call to the
next on the same evidence is no ruling.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from stagecrew.envutil import restore_process_env
from stagecrew.judge.judge import ErrorPolicy, Judge
from stagecrew.judge.verdict import Verdict
from stagecrew.judge.verify import CheckResult, run_verification_async
from stagecrew.messages import (
    Envelope,
    ModelRequest,
    ModelRole,
    ModelSpecWire,
    ModelUsage,
    StreamDone,
    StreamError,
)
from stagecrew.orchestrator.eventlog import ensure_state_ignored
from stagecrew.orchestrator.model_port import RayModelPort


class JudgeModelError(RuntimeError):
    """The judge model's call failed for good; the message is the gateway's one-line error."""


class JudgeHost:
    """The session's judge service (built by ``Supervisor.service`` with these arguments)."""

    def __init__(
        self,
        session: str,
        workspace: str,
        session_dir: str,
        gateways: list[Any],
        model: ModelSpecWire,
    ) -> None:
        restore_process_env()
        self.session = session
        self.workspace = Path(workspace)
        self.session_dir = Path(session_dir)
        self.port = RayModelPort(gateways)
        self.model = model.model_copy(update={"temperature": 0.0})
        self.actor_id = f"{session}-judge"
        self._tasks: set[asyncio.Task[Any]] = set()
        self._supervisor: Any = None
        ensure_state_ignored(self.workspace)

    def ping(self) -> int:
        import os

        return os.getpid()

    # -- the model -----------------------------------------------------------------------------

    async def _complete(self, messages: list[dict[str, Any]]) -> str:
        """One judge-model call, streamed through the gateway like an agent's (same retries,
        keys and error lines); its usage is logged under the judge's id."""
        request = ModelRequest(
            session=self.session,
            actor_id=self.actor_id,
            role=ModelRole.JUDGE,
            spec=self.model,
            messages=messages,
        )
        async for item in self.port.stream(request):
            if isinstance(item, StreamError):  # final: retries are StreamRetry items
                raise JudgeModelError(item.message)
            if isinstance(item, StreamDone):
                await self._post_usage(item)
                return item.text
        raise JudgeModelError("the judge model's stream ended without a final message")

    async def _post_usage(self, done: StreamDone) -> None:
        import ray

        from stagecrew.orchestrator.names import SUPERVISOR_NAME

        with contextlib.suppress(Exception):
            if self._supervisor is None:
                namespace = ray.get_runtime_context().namespace
                self._supervisor = ray.get_actor(SUPERVISOR_NAME, namespace=namespace)
            usage = ModelUsage(
                actor_id=self.actor_id,
                model=done.model or self.model.model,
                usage=done.usage,
                latency_ms=done.latency_ms,
                attempts=done.attempts,
            )
            await self._supervisor.post.remote(
                [Envelope(session=self.session, sender=self.actor_id, body=usage)]
            )

    # -- requests ------------------------------------------------------------------------------

    async def _tracked(self, coro: Any) -> Any:
        """Run ``coro`` as a task ``cancel`` can reach (and with it, the running checks)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        try:
            return await task
        finally:
            self._tasks.discard(task)

    async def evaluate(
        self,
        condition: str,
        messages: list[dict[str, Any]],
        agent_claim: str | None,
        verify_commands: list[str],
        round: int,
        *,
        workspace: str | None = None,
        error_policy: ErrorPolicy = "retry_then_stop",
        timeout_s: float = 600.0,
        retries: int = 2,
    ) -> dict[str, Any]:
        """One ``/goal`` round: a ``Verdict`` as a dict (plain data crosses Ray cheaply and
        keeps callers free of pickled classes). ``round`` is for the caller's records only:
        the judge rules on the evidence, not on how often it was asked."""
        del round
        judge = Judge(
            self._complete,
            verify_commands=verify_commands,
            timeout_s=timeout_s,
            error_policy=error_policy,
            retries=retries,
        )
        where = Path(workspace) if workspace else self.workspace
        verdict: Verdict = await self._tracked(
            judge.evaluate(condition, messages, where, agent_claim)
        )
        return verdict.model_dump(mode="json")

    async def verify(
        self, workspace: str, commands: list[str], timeout_s: float = 600.0
    ) -> list[dict[str, Any]]:
        """Run ``commands`` read-only in ``workspace`` (a Max Mode candidate's worktree)."""
        checks: list[CheckResult] = await self._tracked(
            run_verification_async(commands, Path(workspace), timeout_s)
        )
        return [check.model_dump(mode="json") for check in checks]

    async def cancel(self, reason: str = "cancelled", detail: str = "") -> bool:
        """The supervisor cancels a session's services with its agents: stop every running
        evaluation (their verification processes are killed by ``run_verification_async``)."""
        del reason, detail
        running = [task for task in self._tasks if not task.done()]
        for task in running:
            task.cancel()
        return bool(running)


class RayJudgePort:
    """The goal gate's way to the judge actor: a ``JudgePort`` over a ``JudgeHost`` handle."""

    def __init__(self, handle: Any, *, workspace: str | None = None) -> None:
        self.handle = handle
        self.workspace = workspace

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
        data = await self.handle.evaluate.remote(
            condition,
            messages,
            agent_claim,
            verify_commands,
            round,
            workspace=self.workspace,
            error_policy=error_policy,
            timeout_s=timeout_s,
            retries=retries,
        )
        return Verdict.model_validate(data)
