"""Max Mode: N candidate agents attempt the same task in parallel; the best verified patch wins.

``crew run --max N "task"`` opens a session whose "primary" is a coordinator living in the
supervisor (``<session>-max``, in the tree but without a process of its own) instead of an
agent. The coordinator:

1. creates one detached git worktree per candidate under
   ``.stagecrew/state/worktrees/<session>/`` (``WorktreeManager``: each starts from what the
   person sees, uncommitted edits included) and starts the session's judge actor, whose process
   warms up while the candidates work;
2. starts N ``candidate`` actors at once through the supervisor (pool hosts, same log, same
   tree, parent = the coordinator), each with its worktree as workspace and its own model from
   ``candidate_models`` (cycled; default: the ``candidate`` role's model);
3. as each candidate finishes, takes its patch (``WorktreeManager.patch``), has the judge
   actor run ``verify_commands`` read-only in its worktree, removes the worktree, and logs
   ``CandidateFinished`` with its tokens and cost;
4. selects the winner with ``judge.ranking.select_winner``: passing candidates first, a single
   passing one wins outright, otherwise the judge model (through ``Supervisor.complete``, at
   temperature 0) compares the patches shuffled under neutral labels; ties go to the smaller
   patch. Policy ``first-pass`` instead cancels every other candidate the moment one passes and
   takes that one;
5. applies the winner's patch to the person's working tree with ``apply_patch_to`` (a rewind
   snapshot first), makes sure no worktree or baseline ref is left, writes ``maxmode.json`` and
   every candidate's patch (``maxmode/<id>.patch``) to the session directory, and ends the
   session.

How the session ends (``SessionFinished.stop_reason``):

* ``done``: a candidate that passed verification was applied;
* ``error``: no candidate passed, and the judge's choice among the failing ones *was applied*
  anyway (the person asked for a change and gets the most promising one, with a snapshot to
  rewind to), or no candidate produced a patch, or the patch did not apply (tree unchanged) —
  the error says which. An exit code of 1 makes a script look before trusting the result;
* ``cancelled``/``timeout``/``budget``: the session was stopped (person or watchdog) before the
  candidates finished; nothing is applied.

No candidate ever touches the person's tree: only step 5 does, once, all or nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from stagecrew.judge.ranking import Candidate, Selection, select_winner
from stagecrew.judge.verify import CheckResult
from stagecrew.layout import worktrees_dir
from stagecrew.messages import (
    ActorRole,
    ActorState,
    CandidateFinished,
    ModelRole,
    ModelSpecWire,
    Notice,
    SessionStarted,
    StopReason,
    Usage,
)
from stagecrew.orchestrator.sessions import EventHub, SessionRuntime
from stagecrew.orchestrator.tree import CANCEL_GRACE_S, ActorRecord, ActorTree
from stagecrew.tools.snapshots import GitError, encode_patch
from stagecrew.tools.worktrees import (
    PatchApplyError,
    WorktreeError,
    WorktreeManager,
    apply_patch_to,
)

if TYPE_CHECKING:
    from stagecrew.actors.spec import AgentResult, AgentSpec


class MaxModeHost(Protocol):
    """What the coordinator needs from the supervisor: its public interface, nothing else."""

    hub: EventHub
    tree: ActorTree

    def open_session(
        self,
        spec: AgentSpec,
        credentials: dict[str, str],
        *,
        interactive: bool = False,
        limits: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
    ) -> tuple[SessionRuntime, AgentSpec]: ...

    async def register_credentials(self, session: SessionRuntime) -> None: ...

    async def service(self, session_id: str, kind: str, model: ModelSpecWire) -> Any: ...

    async def spawn_child(self, spec: AgentSpec, description: str = "") -> str: ...

    async def cancel(
        self, target: str, kill: bool = False, reason: str = "cancelled", detail: str = ""
    ) -> list[str]: ...

    async def complete(
        self, session_id: str, actor_id: str, model: ModelSpecWire, messages: list[dict[str, Any]]
    ) -> str: ...

    async def finish_session(self, session: SessionRuntime, result: AgentResult) -> None: ...


MaxPolicy = Literal["best", "first-pass"]
REPORT_FILE = "maxmode.json"
# Coordinators running in this (the supervisor's) process, kept so they are not collected.
_RUNS: dict[str, asyncio.Task[None]] = {}


class MaxModeSpec(BaseModel):
    """How a Max Mode session runs; sent by the CLI with ``start_max_session``."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=1, le=64)
    policy: MaxPolicy = "best"
    # Cycled over the candidates (candidate i gets models[i % len]); empty means the
    # `candidate` role's model for all, so N copies of one model differ by sampling only.
    candidate_models: list[ModelSpecWire] = []
    judge_model: ModelSpecWire | None = None  # default: the `judge` role's model
    verify_commands: list[str] = []
    verify_timeout_s: float = Field(default=600.0, gt=0)
    seed: int | None = None  # shuffles the patches shown to the judge; random when unset


class CandidateReport(BaseModel):
    """One candidate in ``maxmode.json`` and the json result: what it did and what it cost."""

    actor_id: str
    model: str
    stop_reason: str
    error: str | None = None
    passed: bool
    cancelled_by_policy: bool = False
    patch_bytes: int = 0
    changed_lines: int = 0
    patch_file: str | None = None
    checks: list[str] = []
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0


class MaxModeResult(BaseModel):
    """The outcome of a Max Mode session (``<session dir>/maxmode.json``)."""

    session: str
    policy: MaxPolicy
    n: int
    winner: str | None = None
    any_passed: bool = False
    applied: bool = False
    apply_method: str | None = None
    exact: bool | None = None  # the tree's change is byte-for-byte the winner's patch
    snapshot_id: str | None = None  # rewind point taken before applying
    rewind_point: int | None = None  # the same, in the rewind store: `crew rewind --to` it
    reason: str = ""
    judged: bool = False
    shown_order: list[str] = []
    ranked: list[str] = []
    seed: int
    candidates: list[CandidateReport] = []
    duration_s: float = 0.0


def coordinator_id(session: str) -> str:
    return f"{session}-max"


async def start_max_mode(
    sup: MaxModeHost,
    spec: AgentSpec,
    credentials: dict[str, str],
    config: dict[str, Any],
    limits: dict[str, Any] | None,
    max_spec: MaxModeSpec,
) -> str:
    """Open the session and start its coordinator in the background; returns the session id
    at once (the CLI follows the log like any session)."""
    session = await _open_session(sup, spec, credentials, config, limits, max_spec)
    run = MaxModeRun(sup, session, session.spec or spec, max_spec)
    task = asyncio.get_running_loop().create_task(run.run())
    _RUNS[session.session] = task
    task.add_done_callback(lambda _t, sid=session.session: _RUNS.pop(sid, None))
    return session.session


async def _open_session(
    sup: MaxModeHost,
    spec: AgentSpec,
    credentials: dict[str, str],
    config: dict[str, Any],
    limits: dict[str, Any] | None,
    max_spec: MaxModeSpec,
) -> SessionRuntime:
    """``Supervisor.start_session`` without starting a primary agent: the coordinator is the
    session's primary, so the supervisor's own end-of-primary handling never fires and the
    coordinator ends the session itself."""
    session, spec = sup.open_session(spec, credentials, limits=limits, config=config)
    sid = session.session
    models = [m.model for m in _candidate_models(spec, max_spec)]
    public = max_spec.model_dump(mode="json", exclude={"candidate_models", "judge_model"})
    public["candidate_models"] = models
    await sup.hub.emit(
        session,
        SessionStarted(
            prompt=spec.prompt,
            workspace=spec.workspace,
            profile=spec.profile,
            model=", ".join(dict.fromkeys(models)),
            config={**config, "max_mode": public},
        ),
    )
    await sup.register_credentials(session)
    coordinator = ActorRecord(
        actor_id=coordinator_id(sid),
        session=sid,
        role="max-mode",
        parent=None,
        handle=None,  # lives in the supervisor: cancelling it cancels its candidates
        description=f"Max Mode: {max_spec.n} candidate(s), policy {max_spec.policy}",
        state=ActorState.RUNNING,
        model=_judge_model(spec, max_spec).model,
    )
    sup.tree.add(coordinator)
    session.primary = coordinator.actor_id
    return session


def _candidate_models(spec: AgentSpec, max_spec: MaxModeSpec) -> list[ModelSpecWire]:
    pool = max_spec.candidate_models or [
        spec.role_models.get(ModelRole.CANDIDATE.value, spec.model)
    ]
    return [pool[i % len(pool)] for i in range(max_spec.n)]


def _judge_model(spec: AgentSpec, max_spec: MaxModeSpec) -> ModelSpecWire:
    model = max_spec.judge_model or spec.role_models.get(ModelRole.JUDGE.value, spec.model)
    return model.model_copy(update={"temperature": 0.0})


class _Slot:
    """Bookkeeping for one candidate while the session runs."""

    def __init__(self, index: int, actor_id: str, name: str, model: ModelSpecWire) -> None:
        self.index = index
        self.actor_id = actor_id
        self.name = name
        self.model = model
        self.worktree: Path | None = None
        self.workspace: Path | None = None
        self.start_error: str | None = None
        self.candidate: Candidate | None = None
        self.report: CandidateReport | None = None


class MaxModeRun:
    """The coordinator of one Max Mode session (runs as a task in the supervisor's loop)."""

    def __init__(
        self, sup: MaxModeHost, session: SessionRuntime, spec: AgentSpec, max_spec: MaxModeSpec
    ) -> None:
        self.sup = sup
        self.session = session
        self.spec = spec
        self.max = max_spec
        self.sid = session.session
        self.coordinator = coordinator_id(self.sid)
        self.workspace = Path(spec.workspace)
        self.sdir = Path(spec.session_dir or self.workspace)
        self.seed = max_spec.seed if max_spec.seed is not None else secrets.randbelow(2**31)
        self.judge_model = _judge_model(spec, max_spec)
        models = _candidate_models(spec, max_spec)
        self.slots = [
            _Slot(i, f"{self.sid}-c{i + 1}", f"c{i + 1}", models[i]) for i in range(max_spec.n)
        ]
        self.mgr: WorktreeManager | None = None
        self.judge: Any = None
        self.first_pass: Candidate | None = None
        self.policy_cancelled: set[str] = set()
        self.started = time.monotonic()

    # -- helpers -------------------------------------------------------------------------------

    async def _notice(self, text: str, level: Literal["info", "warning", "error"] = "info") -> None:
        await self.sup.hub.emit(
            self.session, Notice(actor_id=self.coordinator, level=level, text=text)
        )

    def _record(self, actor_id: str) -> ActorRecord | None:
        return self.sup.tree.get(actor_id)

    def _stopped_from_outside(self) -> str | None:
        """Why the session was stopped by someone else (person or watchdog), if it was: every
        candidate the coordinator did not cancel itself was cancelled, or the watchdog stopped
        the session. A person cancelling one candidate is not a session stop."""
        if self.session.stopping:
            return self.session.stopping
        others = [
            self._record(s.actor_id)
            for s in self.slots
            if s.actor_id not in self.policy_cancelled and s.start_error is None
        ]
        reasons = [r.stopping for r in others if r is not None]
        if others and len(reasons) == len(others) and all(r == "cancelled" for r in reasons):
            return "cancelled"
        return None

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the session to its end; whatever happens, candidates are stopped, worktrees
        removed and the session finished with an explicit stop reason."""
        outcome: tuple[StopReason, str, str | None] | None = None
        result = MaxModeResult(
            session=self.sid, policy=self.max.policy, n=self.max.n, seed=self.seed
        )
        try:
            outcome = await self._run(result)
        except asyncio.CancelledError:
            outcome = (StopReason.CANCELLED, "", "the Max Mode coordinator was cancelled")
            raise
        except Exception as exc:  # a bug or an environment problem ends the session, never hangs
            outcome = (StopReason.ERROR, "", f"Max Mode failed: {type(exc).__name__}: {exc}")
        finally:
            await self._stop_candidates()
            await self._cleanup()
            result.duration_s = round(time.monotonic() - self.started, 3)
            reason, summary, error = outcome or (StopReason.ERROR, "", "Max Mode ended early")
            await self._finish(result, reason, summary, error)

    async def _run(self, result: MaxModeResult) -> tuple[StopReason, str, str | None]:
        from stagecrew.orchestrator.eventlog import ensure_state_ignored

        await asyncio.to_thread(ensure_state_ignored, self.workspace)
        root = worktrees_dir(self.workspace, self.sid)
        try:
            self.mgr = await asyncio.to_thread(WorktreeManager, self.workspace, root)
        except (GitError, WorktreeError) as exc:
            return (
                StopReason.ERROR,
                "",
                f"Max Mode needs a git repository with at least one commit: {exc}",
            )
        if self.max.verify_commands:
            # Started first so its process is up by the time the first candidate finishes.
            self.judge = await self.sup.service(self.sid, "judge", self.judge_model)
        await self._notice(
            f"Max Mode: {self.max.n} candidate(s) in separate worktrees, policy "
            f"{self.max.policy}; verification: "
            + (", ".join(f"`{c}`" for c in self.max.verify_commands) or "none configured")
        )
        # Each candidate starts as soon as its worktree exists, while the next one is created;
        # all start concurrently (one after another, cold hosts would queue behind each other),
        # and each is collected as soon as it ends, however long the others take.
        runs: list[asyncio.Task[None]] = []
        try:
            for slot in self.slots:
                await asyncio.to_thread(self._create_worktree, slot)
                runs.append(asyncio.get_running_loop().create_task(self._spawn_and_collect(slot)))
        except (GitError, WorktreeError) as exc:
            for task in runs:
                task.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
            return StopReason.ERROR, "", f"could not create a candidate worktree: {exc}"
        await asyncio.gather(*runs)
        result.candidates = [s.report for s in self.slots if s.report is not None]
        stopped = self._stopped_from_outside()
        if stopped:
            known = {r.value for r in StopReason}
            reason = StopReason(stopped) if stopped in known else StopReason.CANCELLED
            return (
                reason,
                "",
                f"the session was stopped ({stopped}) before a winner was chosen; nothing was "
                f"applied (the candidates' patches are kept in {self.sdir / 'maxmode'})",
            )
        candidates = [s.candidate for s in self.slots if s.candidate is not None]
        selection = await self._select(candidates)
        result.winner, result.reason = selection.winner, selection.reason
        result.any_passed, result.judged = selection.any_passed, selection.judged
        result.shown_order, result.ranked = selection.shown_order, selection.ranked
        await self._notice(f"selection: {selection.reason}")
        if selection.winner is None:
            return StopReason.ERROR, "", "No candidate produced a patch; nothing was applied."
        winner = next(c for c in candidates if c.id == selection.winner)
        result.rewind_point = await self._rewind_point(f"before applying {winner.id}'s patch")
        try:
            applied = await asyncio.to_thread(
                apply_patch_to,
                self.workspace,
                winner.patch,
                label=f"before Max Mode session {self.sid} applied {winner.id}",
            )
        except PatchApplyError as exc:
            return (
                StopReason.ERROR,
                "",
                f"{winner.id}'s patch did not apply; your tree is unchanged: {exc}",
            )
        result.applied = True
        result.apply_method, result.exact = applied.method, applied.exact
        result.snapshot_id = applied.snapshot_id
        merged = "" if applied.exact else " (merged around your own edits to the same files)"
        undo = (
            f"rewind point {result.rewind_point} (crew rewind --to {result.rewind_point})"
            if result.rewind_point is not None
            else f"rewind snapshot {applied.snapshot_id}"
        )
        await self._notice(
            f"applied {winner.id}'s patch to your working tree{merged}; your tree from before "
            f"is {undo}",
            "info" if selection.any_passed else "warning",
        )
        summary = self._summary(result, winner)
        if selection.any_passed:
            return StopReason.DONE, summary, None
        return (
            StopReason.ERROR,
            summary,
            f"No candidate passed verification; the judge's choice {winner.id} was applied "
            f"anyway. Review it, or rewind to snapshot {applied.snapshot_id}"
            + (f" (crew rewind --to {result.rewind_point})." if result.rewind_point else "."),
        )

    async def _rewind_point(self, label: str) -> int | None:
        """A point of the person's tree in the rewind store, so ``crew rewind`` lists and
        restores it like any other; a failure is a warning (the snapshot ``apply_patch_to``
        takes still protects the tree)."""
        from stagecrew.oneline import one_line
        from stagecrew.rewind import take_point

        try:
            point = await asyncio.to_thread(
                take_point, self.workspace, session=self.sid, tool="maxmode", label=label
            )
        except Exception as exc:
            await self._notice(f"no rewind point before applying: {one_line(exc)}", "warning")
            return None
        return point.id

    def _create_worktree(self, slot: _Slot) -> None:
        from stagecrew.orchestrator.eventlog import ensure_state_ignored

        assert self.mgr is not None
        # The person may run crew from a subdirectory of the repository: candidates work in
        # the same subdirectory of their worktree.
        rel = self.workspace.resolve().relative_to(self.mgr.repo.resolve())
        slot.worktree = self.mgr.create(slot.name)
        slot.workspace = slot.worktree / rel
        # The ignored state directory is not in the baseline, so a candidate's own state (its
        # memory index) would otherwise be part of its patch, and be applied over the person's.
        ensure_state_ignored(slot.workspace)

    async def _spawn(self, slot: _Slot) -> None:
        assert slot.workspace is not None
        if self.first_pass is not None:  # first-pass already has its winner: do not start
            self.policy_cancelled.add(slot.actor_id)
            slot.start_error = f"not started: {self.first_pass.id} passed first"
            return
        spec = self.spec.model_copy(
            update={
                "actor_id": slot.actor_id,
                "role": ActorRole.CANDIDATE,
                "model_role": ModelRole.CANDIDATE,
                "parent": self.coordinator,
                "workspace": str(slot.workspace),
                "model": slot.model,
                "messages": [],
            }
        )
        try:
            await self.sup.spawn_child(
                spec, f"Max Mode candidate {slot.index + 1}/{self.max.n} ({slot.model.model})"
            )
        except Exception as exc:
            slot.start_error = f"could not start: {type(exc).__name__}: {exc}"

    async def _spawn_and_collect(self, slot: _Slot) -> None:
        await self._spawn(slot)
        await self._collect(slot)

    async def _collect(self, slot: _Slot) -> None:
        """Wait for one candidate, then take its patch and verify it; under ``first-pass`` a
        passing candidate cancels the rest at once."""
        if slot.worktree is None or slot.workspace is None or self.mgr is None:
            return  # never created: the run is ending with an error
        record = self._record(slot.actor_id)
        agent_result: AgentResult | None = None
        if slot.start_error is None and record is not None:
            await record.done.wait()
            agent_result = record.result
        if agent_result is not None:
            stop_reason = agent_result.stop_reason
        elif slot.actor_id in self.policy_cancelled:
            stop_reason = StopReason.CANCELLED
        else:
            stop_reason = StopReason.ERROR
        error = slot.start_error
        if error is None and not stop_reason.success:
            detail = agent_result.error if agent_result and agent_result.error else ""
            error = f"stopped with {stop_reason.value}" + (f": {detail}" if detail else "")
        patch = ""
        try:
            patch = await asyncio.to_thread(self.mgr.patch, slot.worktree)
        except (GitError, WorktreeError) as exc:
            error = error or f"could not read its patch: {exc}"
        by_policy = slot.actor_id in self.policy_cancelled
        checks: list[CheckResult] = []
        if (
            patch.strip()
            and self.max.verify_commands
            and not by_policy
            and not self._stopped_from_outside()
        ):
            checks, verify_error = await self._verify(slot.workspace)
            error = error or verify_error
        # Patch and checks are taken: the worktree has served its purpose (and N of them
        # should not linger while slower candidates finish).
        with contextlib.suppress(GitError, WorktreeError, OSError):
            await asyncio.to_thread(self.mgr.remove, slot.name)
        candidate = Candidate(
            id=slot.actor_id,
            patch=patch,
            checks=checks,
            model=slot.model.model,
            tokens=0,
            cost_usd=0.0,
            error=error,
        )
        usage = agent_result.usage if agent_result else Usage()
        if usage.total_tokens == 0 and record is not None and record.tokens:
            # Killed before it could report: the supervisor's running count is what is known.
            usage = Usage(prompt_tokens=record.tokens, cost_usd=record.cost_usd)
        candidate.tokens, candidate.cost_usd = usage.total_tokens, usage.cost_usd
        slot.candidate = candidate
        slot.report = CandidateReport(
            actor_id=slot.actor_id,
            model=slot.model.model,
            stop_reason=stop_reason.value,
            error=error,
            passed=candidate.passed,
            cancelled_by_policy=by_policy,
            patch_bytes=len(encode_patch(patch)),
            changed_lines=candidate.changed_lines,
            checks=[c.summary() for c in checks],
            steps=agent_result.steps if agent_result else 0,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            cost_usd=usage.cost_usd,
        )
        await self.sup.hub.emit(
            self.session,
            CandidateFinished(
                actor_id=slot.actor_id,
                passed=candidate.passed,
                patch_bytes=slot.report.patch_bytes,
                usage=usage,
            ),
        )
        await self._notice(self._candidate_line(slot.report))
        if self.max.policy == "first-pass" and candidate.passed and self.first_pass is None:
            self.first_pass = candidate
            await self._cancel_others(slot.actor_id)

    async def _verify(self, workspace: Path) -> tuple[list[CheckResult], str | None]:
        try:
            raw = await self.judge.verify.remote(
                str(workspace), list(self.max.verify_commands), self.max.verify_timeout_s
            )
        except Exception as exc:  # the judge actor died or was cancelled
            return [], f"verification could not run: {type(exc).__name__}: {exc}"
        return [CheckResult.model_validate(item) for item in raw], None

    async def _cancel_others(self, winner_id: str) -> None:
        for slot in self.slots:
            record = self._record(slot.actor_id)
            if slot.actor_id == winner_id or record is None or record.done.is_set():
                continue
            self.policy_cancelled.add(slot.actor_id)
            with contextlib.suppress(Exception):
                await self.sup.cancel(
                    slot.actor_id,
                    reason=StopReason.CANCELLED.value,
                    detail=f"Max Mode first-pass: {winner_id} passed verification first",
                )
        if self.policy_cancelled:
            await self._notice(
                f"first-pass: {winner_id} passed; cancelled "
                + ", ".join(sorted(self.policy_cancelled))
            )

    async def _select(self, candidates: list[Candidate]) -> Selection:
        if self.first_pass is not None:
            winner = self.first_pass
            rest = [c.id for c in candidates if c.id != winner.id]
            return Selection(
                winner=winner.id,
                reason=f"{winner.id} wins: the first candidate to pass verification "
                "(policy first-pass); the others were cancelled.",
                ranked=[winner.id, *rest],
                any_passed=True,
                judged=False,
            )

        async def complete(messages: list[dict[str, Any]]) -> str:
            return await self.sup.complete(self.sid, self.coordinator, self.judge_model, messages)

        return await select_winner(candidates, complete, seed=self.seed, task=self.spec.prompt)

    # -- the end -------------------------------------------------------------------------------

    async def _stop_candidates(self) -> None:
        """Nothing may still run in a worktree that is about to be removed."""
        live = [
            r
            for s in self.slots
            if (r := self._record(s.actor_id)) is not None and not r.done.is_set()
        ]
        if not live:
            return
        for record in live:
            with contextlib.suppress(Exception):
                await self.sup.cancel(record.actor_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(r.done.wait() for r in live)), timeout=CANCEL_GRACE_S + 5
            )

    async def _cleanup(self) -> None:
        if self.mgr is None:
            return
        try:
            await asyncio.to_thread(self.mgr.cleanup)
        except Exception as exc:
            await self._notice(f"could not remove every candidate worktree: {exc}", "warning")

    def _write_report(self, result: MaxModeResult) -> None:
        patch_dir = self.sdir / "maxmode"
        for slot in self.slots:
            if slot.candidate is None or slot.report is None or not slot.candidate.patch:
                continue
            patch_dir.mkdir(parents=True, exist_ok=True)
            path = patch_dir / f"{slot.actor_id}.patch"
            path.write_bytes(encode_patch(slot.candidate.patch))
            slot.report.patch_file = str(path)
        result.candidates = [s.report for s in self.slots if s.report is not None]
        self.sdir.mkdir(parents=True, exist_ok=True)
        (self.sdir / REPORT_FILE).write_text(
            json.dumps(result.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8"
        )

    async def _finish(
        self, result: MaxModeResult, reason: StopReason, summary: str, error: str | None
    ) -> None:
        from stagecrew.actors.spec import AgentResult

        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._write_report, result)
        usage = Usage()
        for report in result.candidates:
            usage = usage + Usage(
                prompt_tokens=report.prompt_tokens,
                completion_tokens=report.completion_tokens,
                cost_usd=report.cost_usd,
            )
        final = AgentResult(
            actor_id=self.coordinator,
            stop_reason=reason,
            summary=summary,
            steps=sum(r.steps for r in result.candidates),
            usage=usage,
            error=error,
        )
        record = self._record(self.coordinator)
        if record is not None:
            record.result = final
            record.state = ActorState.FINISHED if reason.success else ActorState.FAILED
            record.done.set()
        await self.sup.finish_session(self.session, final)

    # -- text --------------------------------------------------------------------------------

    @staticmethod
    def _candidate_line(report: CandidateReport) -> str:
        if report.cancelled_by_policy:
            status = "cancelled (another candidate passed first)"
        elif report.passed:
            status = "PASSED verification"
        elif report.error:
            status = f"failed: {report.error[:160]}"
        else:
            failing = [c for c in report.checks if "passed (exit 0)" not in c]
            status = "failed: " + ("; ".join(failing) or "empty patch")
        return (
            f"candidate {report.actor_id} ({report.model}): {status} · {report.steps} steps · "
            f"{report.total_tokens:,} tokens · ${report.cost_usd:.4f} · "
            f"patch {report.changed_lines} changed line(s)"
        )

    def _summary(self, result: MaxModeResult, winner: Candidate) -> str:
        lines = [
            f"Applied {winner.id}'s patch ({winner.changed_lines} changed line(s), "
            f"model {winner.model}). {result.reason}",
            f"Rewind: snapshot {result.snapshot_id} holds your tree from before"
            + (
                f" (crew rewind --to {result.rewind_point})."
                if result.rewind_point is not None
                else "."
            ),
            "Candidates:",
        ]
        lines += [f"- {self._candidate_line(r)}" for r in result.candidates]
        return "\n".join(lines)
