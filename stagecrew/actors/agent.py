"""The agent loop: model call (streamed) → tool calls → tool results → again, until a stop reason.

One linear message list, in the spirit of mini-swe-agent. Everything outside the loop comes in
through small ports — ``ModelPort`` (the gateway), ``EventSink`` (the supervisor's log),
``PermissionPort`` (the person, for ``ask`` rules) and ``CheckpointPort`` (the session's
checkpoint writer, also the single writer of project memory) — so the orchestrator can run
this class as a Ray actor while tests run it in-process against the same scripted model server.

Memory: the first system prompt carries project instructions and memory; before every model
call a ``ContextManager`` (``actors/context.py``) checks how full the window is, asks for
checkpoints as it fills and rebuilds the context from memory near the limit. The ``memory``
and ``tasks`` tools find what they need in ``ctx.services``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

from stagecrew.actors.context import CheckpointPort, ContextManager, agent_memory_paths
from stagecrew.actors.goal import GoalGate
from stagecrew.actors.hook_gate import AgentHooks, HookStop
from stagecrew.actors.loopdetect import Detection, Escalation, LoopDetector
from stagecrew.actors.spec import (
    AgentResult,
    AgentSpec,
    EventSink,
    ModelPort,
    PermissionPort,
)
from stagecrew.llm.providers import model_key_variables
from stagecrew.llm.repair import RepairResult, repair_arguments
from stagecrew.messages import (
    ActorRole,
    AssistantMessage,
    ModelDelta,
    ModelRequest,
    ModelRequested,
    ModelRetry,
    ModelUsage,
    Notice,
    PermissionRequest,
    StopReason,
    StreamDone,
    StreamError,
    StreamRetry,
    StreamText,
    TaskTreeChanged,
    ToolCall,
    ToolFinished,
    ToolStarted,
    Usage,
    new_id,
)
from stagecrew.rewind.recorder import RewindRecorder
from stagecrew.tools.base import Tool, ToolContext, ToolResult
from stagecrew.tools.providers import BuiltinTools, ToolProvider, ToolSet


class _Stop(Exception):
    def __init__(self, reason: StopReason, summary: str = "", error: str | None = None):
        super().__init__(summary or error or reason.value)
        self.reason = reason
        self.summary = summary
        self.error = error


class Agent:
    def __init__(
        self,
        spec: AgentSpec,
        model: ModelPort,
        events: EventSink,
        *,
        tools: dict[str, Tool] | None = None,
        providers: list[ToolProvider] | None = None,
        ask_permission: PermissionPort | None = None,
        checkpoint: CheckpointPort | None = None,
        goal_gate: GoalGate | None = None,
        delta_interval_s: float = 0.05,
    ) -> None:
        from stagecrew.tools.permissions import (
            DEFAULT_RULES,
            PermissionChecker,
            attach_path_policy,
        )

        self.spec = spec
        self.model = model
        self.events = events
        # The built-in tools first, then the session's providers (MCP servers, ...); the
        # profile's ``tools`` list picks from all of them.
        builtin = BuiltinTools(tools if tools is not None else _default_tools(spec))
        self.tools = ToolSet([builtin, *(providers or [])], spec.tools)
        # Tools that exist but this profile leaves out (plan mode's write tools): asking for
        # one is a well-formed call to refuse, not a format failure.
        self.withheld_tools = self.tools.withheld
        self.goal_gate = goal_gate
        self.tool_schemas = self.tools.schemas()
        self.hooks = AgentHooks(spec, events)
        # Rewind points before each turn and each mutating tool call (stagecrew/rewind).
        self.rewind = RewindRecorder(spec, self.tools, events)
        self.ctx = ToolContext(
            workspace=Path(spec.workspace),
            hidden_env=frozenset(
                model_key_variables(
                    [spec.model, *spec.role_models.values()], keep=spec.tool_env_passthrough
                )
            ),
            read_only=spec.read_only,
            session_dir=Path(spec.session_dir) if spec.session_dir else None,
            agent_id=spec.actor_id,
        )
        self.checkpoint = checkpoint
        self.context = self._setup_memory()
        self.context.before_rebuild = self.hooks.before_compact
        # Shipped defaults first: config and profile rules after them win (last match wins).
        self.permissions = PermissionChecker(
            [*DEFAULT_RULES, *spec.permissions], ask_policy=spec.ask_policy
        )
        # grep, glob, ls and apply_patch hold each path they find or touch to the same rules.
        attach_path_policy(self.ctx, self.permissions)
        # Build-mode bash runs under bubblewrap with these rules' deny paths masked or read-only.
        from stagecrew.tools.base import SandboxPolicy

        self.ctx.sandbox = SandboxPolicy.from_config(
            spec.sandbox,
            self.permissions,
            notify=lambda text: self.events.emit(
                Notice(actor_id=spec.actor_id, level="warning", text=text)
            ),
        )
        self.ask_permission = ask_permission
        self.delta_interval_s = delta_interval_s
        self.messages: list[dict[str, Any]] = list(spec.messages)
        self.steps = 0
        self.usage = Usage()
        self.format_failures = 0
        self._unreadable: dict[str, str] = {}  # text-form calls whose arguments failed to parse
        self.active_model = spec.model
        self.started = time.monotonic()
        self.loops = LoopDetector(spec.stuck)
        # Why a cancellation came: the supervisor's watchdog cancels with timeout, budget or
        # stuck, a person with cancelled.
        self.cancel_reason = StopReason.CANCELLED
        self.cancel_detail = ""

    def _setup_memory(self) -> ContextManager:
        """What the ``memory`` and ``tasks`` tools find in ``ctx.services``, and the context
        manager that shares their index. The index opens here only when the agent has a
        session directory (every orchestrated agent does); otherwise on first use."""
        from stagecrew.memory.index import MemoryIndex
        from stagecrew.tools.memory_tools import memory_index

        paths = agent_memory_paths(self.spec)
        services = self.ctx.services
        services.memory_paths = paths
        services.user_config_dir = str(paths.user_config_dir)
        if self.ctx.session_dir is not None:
            try:
                services.memory_index = MemoryIndex(paths.index_db)
            except Exception as exc:  # memory is a help, not a precondition: run without it
                self.events.emit(
                    Notice(
                        actor_id=self.spec.actor_id,
                        level="warning",
                        text=f"memory index unavailable ({paths.index_db}): {exc}",
                    )
                )
        if self.checkpoint is not None:
            services.memory_writer = self.checkpoint.save_memory
        return ContextManager.from_spec(
            self.spec,
            self.tool_schemas,
            paths=paths,
            index=lambda: memory_index(self.ctx),
            checkpoint=self.checkpoint,
            events=self.events,
        )

    # -- public ------------------------------------------------------------------------------

    async def run(self) -> AgentResult:
        """Run to a stop reason. Cancellation kills every process the tools started."""
        result = await self._run()
        with contextlib.suppress(HookStop):  # SessionEnd cannot change how the run ended
            await self.hooks.on_end(result.stop_reason.value)
        return result

    async def _run(self) -> AgentResult:
        try:
            self.rewind.before_turn()
            resumed = bool(self.messages)
            if not self.messages:
                self.messages = self.context.initial_messages(self.spec.prompt)
            else:
                self.messages = self.context.adopt(self.messages)
            refusal, context = await self.hooks.on_start(resumed, self.spec.prompt)
            if refusal is not None:
                raise _Stop(
                    StopReason.ERROR, error=f"a UserPromptSubmit hook refused the prompt: {refusal}"
                )
            if context:
                self.messages.append({"role": "user", "content": f"[hook context]\n{context}"})
            await self._adopt_tasks()
            while True:
                self._check_limits()
                await self._step()
        except HookStop as stop:
            return self._result(StopReason.CANCELLED, error=f"stopped by a hook: {stop}")
        except _Stop as stop:
            # The last checkpoint should land before the session (and its writer) closes.
            with contextlib.suppress(asyncio.CancelledError):
                await self.context.drain()
            return self._result(stop.reason, stop.summary, stop.error)
        except asyncio.CancelledError:
            self.ctx.processes.kill_all()
            reason = self.cancel_reason
            detail = self.cancel_detail or reason.value
            if reason == StopReason.CANCELLED:
                return self._result(reason, "cancelled", error=None)
            return self._result(reason, error=detail)
        except Exception as exc:  # a bug in the loop ends this agent, it never hangs
            self.ctx.processes.kill_all()
            return self._result(StopReason.ERROR, error=f"{type(exc).__name__}: {exc}")
        finally:
            self.ctx.processes.kill_all()
            index = self.ctx.services.memory_index
            if index is not None:
                with contextlib.suppress(Exception):
                    index.close()

    async def _adopt_tasks(self) -> None:
        """Take over the open tasks of the actors named in ``adopt_tasks_from``; a subagent
        instead joins the ledger under its parent's current task."""
        from stagecrew.memory.tasks import FINAL, TaskLedger

        paths = self.context.paths
        if self.spec.role != ActorRole.PRIMARY and self.spec.parent and paths.session_id:
            # A subagent's tasks nest under the task its parent is working on right now.
            ledger = TaskLedger(paths.tasks_dir, self.spec.actor_id)
            with contextlib.suppress(Exception):  # a damaged ledger is the tool's to report
                await asyncio.to_thread(ledger.join, self.spec.parent)
            return
        previous = set(self.spec.adopt_tasks_from) - {self.spec.actor_id}
        if (
            not previous
            or self.spec.role != ActorRole.PRIMARY  # a subagent inherits the field, not the tree
            or paths.session_id is None
            or not paths.ledger.is_file()
        ):
            return

        def adopt() -> list[str]:
            moved = []
            for task in TaskLedger(paths.tasks_dir).tasks():
                if task.owner in previous and task.status not in FINAL:
                    TaskLedger(paths.tasks_dir, task.owner).assign(task.id, self.spec.actor_id)
                    moved.append(task.id)
            return moved

        try:
            moved = await asyncio.to_thread(adopt)
        except Exception as exc:  # a damaged ledger is the tasks tool's to report, not fatal
            self.events.emit(
                Notice(
                    actor_id=self.spec.actor_id,
                    level="warning",
                    text=f"could not take over the earlier run's tasks: {exc}",
                )
            )
            return
        if moved:
            self._emit_task_tree()

    def _emit_task_tree(self) -> None:
        from stagecrew.memory.tasks import TaskLedger

        paths = self.context.paths
        if paths.session_id is None:
            return
        ledger = TaskLedger(paths.tasks_dir).render_ledger()
        self.events.emit(TaskTreeChanged(actor_id=self.spec.actor_id, ledger=ledger))

    # -- the loop ----------------------------------------------------------------------------

    def _result(
        self, reason: StopReason, summary: str = "", error: str | None = None
    ) -> AgentResult:
        return AgentResult(
            actor_id=self.spec.actor_id,
            stop_reason=reason,
            summary=summary,
            steps=self.steps,
            usage=self.usage,
            error=error,
            messages=_close_dangling_calls(self.messages),
        )

    def _check_limits(self) -> None:
        spec = self.spec
        if self.steps >= spec.max_steps:
            raise _Stop(StopReason.MAX_STEPS, error=f"reached the step limit ({spec.max_steps})")
        if time.monotonic() - self.started > spec.wall_time_s:
            raise _Stop(StopReason.TIMEOUT, error=f"ran longer than {spec.wall_time_s:g} s")
        if spec.max_tokens is not None and self.usage.total_tokens >= spec.max_tokens:
            raise _Stop(
                StopReason.BUDGET,
                error=f"used {self.usage.total_tokens} tokens (limit {spec.max_tokens})",
            )
        if spec.max_cost_usd is not None and self.usage.cost_usd >= spec.max_cost_usd:
            raise _Stop(
                StopReason.BUDGET,
                error=f"spent ${self.usage.cost_usd:.4f} (limit ${spec.max_cost_usd:g})",
            )

    async def _step(self) -> None:
        self.steps += 1
        done = await self._call_model()
        calls = list(done.tool_calls)
        text = done.text
        if not calls and text:
            calls, text = self._text_tool_calls(text)
        # Repaired once per call: the transcript keeps the repaired JSON (providers re-parse
        # it on every request; Anthropic and Gemini reject invalid JSON there, so an
        # unreadable call is kept as ``{}``: its tool result already says what was wrong),
        # and the tool runs with the same arguments.
        repairs = {c.id: repair_arguments(c.arguments) for c in calls}
        assistant: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            assistant["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": repairs[c.id].as_json()},
                }
                for c in calls
            ]
        self.messages.append(assistant)
        self.events.emit(
            AssistantMessage(
                actor_id=self.spec.actor_id, step=self.steps, text=text, tool_calls=calls
            )
        )
        if not calls:
            self._watch_loops(self.loops.record_text(text))
            keep_going = await self.hooks.on_stop()
            if keep_going is not None:
                self.messages.append({"role": "user", "content": f"[Stop hook] {keep_going}"})
                return
            if self.goal_gate is not None:
                decision = await self.goal_gate.on_stop(self.messages, text)
                if not decision.stop:
                    self.messages.append({"role": "user", "content": decision.feedback})
                    return
                raise _Stop(decision.stop_reason, summary=text, error=decision.error)
            raise _Stop(StopReason.DONE, summary=text)
        detections = []
        for index, call in enumerate(calls):
            result = await self._run_tool(call, repairs[call.id])
            self.messages.append(
                {"role": "tool", "tool_call_id": call.id, "content": result.content}
            )
            detections.append(
                self.loops.record_tool(call.name, call.arguments, result.content, result.is_error)
            )
            if self.format_failures >= self.spec.max_format_failures:
                # The answered calls keep their real results; the rest are said not to have run.
                for skipped in calls[index + 1 :]:
                    self.messages.append(
                        {
                            "role": "tool",
                            "tool_call_id": skipped.id,
                            "content": "[not run: too many malformed tool calls in a row]",
                        }
                    )
                self._on_format_failures()
                return
        for detection in detections:
            self._watch_loops(detection)

    def _watch_loops(self, detection: Detection | None) -> None:
        """Escalate a detected loop: remind, then force a re-plan, then stop as stuck."""
        if detection is None:
            return
        self.events.emit(
            Notice(
                actor_id=self.spec.actor_id,
                level="warning",
                text=f"loop detected ({detection.kind}): {detection.detail}; "
                f"escalation: {detection.level.name.lower()}",
            )
        )
        if detection.level >= Escalation.STOP:
            raise _Stop(StopReason.STUCK, error=f"stuck: {detection.detail}")
        self.messages.append({"role": "user", "content": detection.message()})

    def _text_tool_calls(self, text: str) -> tuple[list[ToolCall], str]:
        """Models without native tool calling write calls as text; recognise the common forms.
        A call whose arguments could not be read keeps its raw text, so the tool step reports
        the precise error to the model instead of running with empty arguments."""
        from stagecrew.llm.repair import extract_text_tool_calls

        found, rest = extract_text_tool_calls(text, set(self.tools))
        if not found:
            return [], text
        calls = []
        for i, tc in enumerate(found):
            call_id = tc.id or f"call_text_{self.steps}_{i}"
            if tc.arguments is None:
                self._unreadable[call_id] = tc.error or "the arguments could not be read"
            arguments = json.dumps(tc.arguments) if tc.arguments is not None else tc.raw
            calls.append(ToolCall(id=call_id, name=tc.name, arguments=arguments))
        self.events.emit(
            Notice(
                actor_id=self.spec.actor_id,
                level="info",
                text=f"recognised {len(calls)} tool call(s) written as text",
            )
        )
        return calls, rest

    async def _call_model(self) -> StreamDone:
        spec = self.spec
        # Checkpoint as the window fills; near its limit the list is rebuilt from memory.
        self.messages = await self.context.prepare(self.messages)
        sent = list(self.messages)
        request = ModelRequest(
            session=spec.session,
            actor_id=spec.actor_id,
            role=spec.model_role,
            spec=self.active_model,
            messages=sent,
            tools=self.tool_schemas,
        )
        self.events.emit(
            ModelRequested(
                actor_id=spec.actor_id,
                model=self.active_model.model,
                step=self.steps,
                messages=len(sent),
                est_tokens=self.context.last_used,
            )
        )
        pending: list[str] = []
        last_flush = time.monotonic()
        done: StreamDone | None = None
        async for item in self.model.stream(request):
            if isinstance(item, StreamText):
                pending.append(item.text)
                now = time.monotonic()
                if now - last_flush >= self.delta_interval_s:
                    self.events.emit(ModelDelta(actor_id=spec.actor_id, text="".join(pending)))
                    pending.clear()
                    last_flush = now
            elif isinstance(item, StreamRetry):
                # The gateway tries again; text of the failed attempt not yet sent is void.
                if item.discard_partial:
                    pending.clear()
                self.events.emit(
                    ModelRetry(
                        actor_id=spec.actor_id,
                        model=self.active_model.model,
                        role=spec.model_role,
                        attempt=item.attempt,
                        max_attempts=item.max_attempts,
                        delay_s=item.delay_s,
                        error_kind=item.error_kind,
                        message=item.message,
                        discard_partial=item.discard_partial,
                    )
                )
            elif isinstance(item, StreamError):
                # Final: the gateway has retried what was worth retrying. A provider failure
                # ends the run as an error, never as the model's fault (a cut stream never
                # reaches the tool step as malformed calls).
                raise _Stop(StopReason.ERROR, error=item.message)
            elif isinstance(item, StreamDone):
                done = item
        if pending:
            self.events.emit(ModelDelta(actor_id=spec.actor_id, text="".join(pending)))
        if done is None:
            raise _Stop(StopReason.ERROR, error="the model stream ended without a final message")
        self.usage = self.usage + done.usage
        self.context.observe(sent, done.usage)
        self.events.emit(
            ModelUsage(
                actor_id=spec.actor_id,
                model=done.model or self.active_model.model,
                usage=done.usage,
                latency_ms=done.latency_ms,
                attempts=done.attempts,
            )
        )
        return done

    async def _run_tool(self, call: ToolCall, repaired: RepairResult) -> ToolResult:
        spec = self.spec
        self.events.emit(
            ToolStarted(
                actor_id=spec.actor_id, call_id=call.id, tool=call.name, arguments=call.arguments
            )
        )
        started = time.perf_counter()
        format_error: str | None = None
        result: ToolResult
        withheld = call.name in self.withheld_tools
        if withheld:
            known = ", ".join(sorted(self.tools))
            mode = " (read-only)" if spec.read_only else ""
            result = ToolResult(
                content=f"Tool '{call.name}' is not available to the {spec.profile} agent"
                f"{mode}. Available tools: {known}",
                is_error=True,
                metadata={"withheld": True},
            )
        elif call.name not in self.tools:
            known = ", ".join(sorted(self.tools))
            format_error = f"Unknown tool '{call.name}'. Available tools: {known}"
        elif call.id in self._unreadable:
            format_error = (
                f"Invalid arguments for tool '{call.name}': {self._unreadable.pop(call.id)}"
            )
        else:
            if repaired.arguments is None:
                format_error = f"Invalid arguments for tool '{call.name}': {repaired.error}"
            else:
                if repaired.repaired:
                    self.events.emit(
                        Notice(
                            actor_id=spec.actor_id,
                            level="info",
                            text=f"repaired arguments of {call.name}: {repaired.note}",
                        )
                    )
                result = await self._permitted_execute(call.name, repaired.arguments, call.id)
                if result.invalid_arguments:
                    format_error = result.content
        if format_error is not None:
            result = ToolResult(
                content=format_error, is_error=True, metadata={"format_error": True}
            )
            self.format_failures += 1
        elif not withheld:
            self.format_failures = 0
            if not result.is_error:  # instruction files of directories first reached by this call
                self._pre_approve(result.metadata.get("allow_rules") or [])
                extra = self.context.nested_instructions(call.name, repaired.arguments or {})
                if extra:
                    result = result.model_copy(update={"content": result.content + extra})
        self.events.emit(
            ToolFinished(
                actor_id=spec.actor_id,
                call_id=call.id,
                tool=call.name,
                content=result.content,
                is_error=result.is_error,
                duration_ms=(time.perf_counter() - started) * 1000,
                metadata=result.metadata,
            )
        )
        if call.name == "tasks" and not result.is_error and "id" in result.metadata:
            self._emit_task_tree()
        return result

    def _pre_approve(self, texts: list[str]) -> None:
        """A skill the model loaded pre-approves its ``allowed-tools`` for the rest of the
        run, as a session answer would: it lifts an ``ask``, never a ``deny``."""
        for rule in _allow_rules(texts):
            self.permissions.remember(rule.tool, rule.pattern)

    def _on_format_failures(self) -> None:
        fallback = self.spec.fallback_model
        if fallback is not None and self.active_model != fallback:
            self.events.emit(
                Notice(
                    actor_id=self.spec.actor_id,
                    level="warning",
                    text=f"{self.format_failures} malformed tool calls in a row from "
                    f"{self.active_model.model}; switching to fallback {fallback.model}",
                )
            )
            self.active_model = fallback
            self.format_failures = 0
            return
        raise _Stop(
            StopReason.MODEL_FORMAT_FAILURES,
            error=f"{self.format_failures} malformed tool calls in a row "
            f"from {self.active_model.model}",
        )

    async def _permitted_execute(
        self, name: str, arguments: dict[str, Any], call_id: str = ""
    ) -> ToolResult:
        gate = await self.hooks.before_tool(name, arguments)
        if gate.result is not None:
            return gate.result
        arguments = gate.arguments if gate.arguments is not None else arguments
        decision = self.permissions.check(
            name, arguments, self.ctx.workspace, read_only=self._read_only_annotation(name)
        )
        action = decision.action
        # A hook's allow answers an ask; its ask asks even where a rule allows; a deny rule
        # holds whatever a hook says.
        if action == "ask" and gate.permission == "allow":
            action = "allow"
        elif action == "allow" and gate.permission == "ask":
            action = "ask"
        if action == "ask":
            action = await self._ask(name, arguments, decision)
        if action != "allow":
            message = (
                decision.message
                if decision.action == "deny"
                else f"Permission denied by the person: {decision.reason}"
            )
            return ToolResult(content=message, is_error=True, metadata={"denied": True})
        await self.rewind.before_tool(name, arguments, step=self.steps, call_id=call_id)
        result = await self.tools.execute(name, arguments, self.ctx)
        return await self.hooks.after_tool(name, arguments, result)

    def _read_only_annotation(self, name: str) -> bool | None:
        """A provider's tool (an MCP server's) says whether it only reads; the permission
        check then holds its path arguments to the path rules. None for built-in tools, whose
        arguments the checker knows."""
        spec = self.tools.specs.get(name)
        return None if spec is None or spec.provider == "builtin" else spec.read_only

    async def _ask(self, name: str, arguments: dict[str, Any], decision: Any) -> str:
        """Put an ``ask`` rule to the person; headless runs resolve it by policy."""
        if self.ask_permission is None:
            return "deny"
        summary = _summarise_call(name, arguments)
        await self.hooks.on_ask(summary)
        request = PermissionRequest(
            request_id=new_id("perm-"),
            actor_id=self.spec.actor_id,
            tool=name,
            summary=summary,
            rule=decision.rule,
            reason=decision.reason,
        )
        self.events.emit(request)
        answer = await self.ask_permission(request)
        if answer == "always":
            # Exactly this call: approving `rm -rf build` must not approve `rm -rf /`.
            self.permissions.remember_call(name, arguments, self.ctx.workspace)
            return "allow"
        return "allow" if answer == "once" else "deny"


def _summarise_call(name: str, arguments: dict[str, Any]) -> str:
    for key in ("command", "file_path", "path", "url", "pattern"):
        if key in arguments:
            return f"{name}({str(arguments[key])[:200]})"
    return name


def _close_dangling_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run cancelled mid-tool leaves tool calls without results; providers reject such a
    transcript, so each missing result is filled in with what happened."""
    out = list(messages)
    answered = {m.get("tool_call_id") for m in out if m.get("role") == "tool"}
    for i in range(len(out) - 1, -1, -1):
        msg = out[i]
        if msg.get("role") == "assistant" and msg.get("tool_calls"):
            missing = [c for c in msg["tool_calls"] if c["id"] not in answered]
            fill = [
                {"role": "tool", "tool_call_id": c["id"], "content": "[interrupted: no result]"}
                for c in missing
            ]
            if fill:
                j = i + 1
                while j < len(out) and out[j].get("role") == "tool":
                    j += 1
                out[j:j] = fill
            break
    return out


def _allow_rules(texts: list[str]) -> list[Any]:
    """The ``allow`` rules among ``texts`` (a loaded skill's ``allowed-tools``)."""
    from stagecrew.tools.permissions import RuleError, parse_rule

    rules = []
    for text in texts:
        try:
            rule = parse_rule(str(text))
        except RuleError:
            continue
        if rule.action == "allow" and not rule.claude:
            rules.append(rule)
    return rules


def _default_tools(spec: AgentSpec) -> dict[str, Tool]:
    """Every built-in tool, ``task`` listing the profiles this agent may delegate to."""
    from stagecrew.profiles import profile_descriptions
    from stagecrew.tools.registry import default_tools
    from stagecrew.tools.task import Task

    tools = default_tools()
    user_dir = Path(spec.user_config_dir) if spec.user_config_dir else None
    tools["task"] = Task(profile_descriptions(Path(spec.workspace), user_dir))
    return tools
