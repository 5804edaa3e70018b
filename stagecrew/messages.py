"""The protocol: every message stagecrew's actors exchange, and every line of an event log.

One discriminated union (``Message``, keyed by ``kind``) wrapped in an ``Envelope``. The same
JSON is the wire format between the CLI and the supervisor and the storage format of
``events.jsonl``, so a session can be replayed, resumed and analysed from its log alone.
Commands ask for something to happen; events say what happened. Every finish names a
``StopReason`` so that nothing ever ends "somehow".
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


def new_id(prefix: str = "") -> str:
    """Short random ids: unique enough for one machine's sessions, short enough to type."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


class StopReason(StrEnum):
    DONE = "done"
    GOAL_MET = "goal_met"
    MAX_STEPS = "max_steps"
    BUDGET = "budget"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    STUCK = "stuck"
    MODEL_FORMAT_FAILURES = "model_format_failures"
    JUDGE_ROUNDS_EXHAUSTED = "judge_rounds_exhausted"
    ERROR = "error"

    @property
    def success(self) -> bool:
        return self in (StopReason.DONE, StopReason.GOAL_MET)


class ModelRole(StrEnum):
    """Which configured model an actor uses; each role can point at a different model."""

    PRIMARY = "primary"
    SUBAGENT = "subagent"
    JUDGE = "judge"
    CHECKPOINT = "checkpoint"
    CANDIDATE = "candidate"


class ActorRole(StrEnum):
    PRIMARY = "primary"
    SUBAGENT = "subagent"
    CHECKPOINT_WRITER = "checkpoint-writer"
    JUDGE = "judge"
    CANDIDATE = "candidate"
    MCP = "mcp"


class ActorState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    KILLED = "killed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {ActorState.FINISHED, ActorState.FAILED, ActorState.CANCELLED, ActorState.KILLED}
)


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# ---------------------------------------------------------------------------------------------
# Shared value types
# ---------------------------------------------------------------------------------------------


class ToolCall(_Msg):
    """A tool call as the model made it; ``arguments`` is the raw JSON text, repaired later."""

    id: str
    name: str
    arguments: str = "{}"


class Usage(_Msg):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


class StartTask(_Msg):
    kind: Literal["start_task"] = "start_task"
    prompt: str
    workspace: str
    profile: str = "build"
    max_steps: int | None = None
    goal: str | None = None


class UserInput(_Msg):
    kind: Literal["user_input"] = "user_input"
    text: str


class Spawn(_Msg):
    kind: Literal["spawn"] = "spawn"
    role: ActorRole
    prompt: str
    profile: str = "build"
    parent: str | None = None


class Cancel(_Msg):
    kind: Literal["cancel"] = "cancel"
    target: str
    reason: str = "cancelled by user"
    recursive: bool = True


class PermissionRequest(_Msg):
    kind: Literal["permission_request"] = "permission_request"
    request_id: str
    actor_id: str
    tool: str
    summary: str
    rule: str | None = None
    reason: str = ""


class PermissionReply(_Msg):
    kind: Literal["permission_reply"] = "permission_reply"
    request_id: str
    decision: Literal["once", "always", "deny"]


class JudgeRequest(_Msg):
    kind: Literal["judge_request"] = "judge_request"
    condition: str
    round: int = 1


class CheckpointRequest(_Msg):
    kind: Literal["checkpoint_request"] = "checkpoint_request"
    reason: str
    used_tokens: int = 0
    window_tokens: int = 0


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


class SessionStarted(_Msg):
    kind: Literal["session_started"] = "session_started"
    prompt: str
    workspace: str
    profile: str
    model: str
    config: dict[str, Any] = {}
    goal: str | None = None


class ActorStarted(_Msg):
    kind: Literal["actor_started"] = "actor_started"
    actor_id: str
    role: ActorRole
    parent: str | None = None
    profile: str | None = None
    model: str | None = None
    pid: int | None = None
    node_id: str | None = None
    from_pool: bool = False


class ActorStateChanged(_Msg):
    kind: Literal["actor_state"] = "actor_state"
    actor_id: str
    state: ActorState
    detail: str = ""


class Heartbeat(_Msg):
    kind: Literal["heartbeat"] = "heartbeat"
    actor_id: str
    steps: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    rss_bytes: int = 0
    cpu_percent: float = 0.0


class ModelRequested(_Msg):
    """The agent sent a request to its model (what was sent is in the scripted tests' record)."""

    kind: Literal["model_requested"] = "model_requested"
    actor_id: str
    model: str
    step: int
    messages: int
    est_tokens: int = 0


class ModelDelta(_Msg):
    """Streamed text, coalesced by the agent into a few events a second."""

    kind: Literal["model_delta"] = "model_delta"
    actor_id: str
    text: str


class ModelUsage(_Msg):
    kind: Literal["model_usage"] = "model_usage"
    actor_id: str
    model: str
    usage: Usage
    latency_ms: float = 0.0
    attempts: int = 1


class ModelRetry(_Msg):
    """A model call failed in a way worth trying again, and is about to be: attempt
    ``attempt`` of ``max_attempts`` starts after ``delay_s``. ``message`` is the cause;
    ``discard_partial`` says text already streamed from the failed attempt is void."""

    kind: Literal["model_retry"] = "model_retry"
    actor_id: str
    model: str
    role: ModelRole | None = None
    attempt: int
    max_attempts: int
    delay_s: float
    error_kind: str
    message: str
    discard_partial: bool = False


class AssistantMessage(_Msg):
    """The whole assistant turn: replay and resume rebuild the transcript from these."""

    kind: Literal["assistant_message"] = "assistant_message"
    actor_id: str
    step: int
    text: str = ""
    tool_calls: list[ToolCall] = []


class ToolStarted(_Msg):
    kind: Literal["tool_started"] = "tool_started"
    actor_id: str
    call_id: str
    tool: str
    arguments: str


class ToolFinished(_Msg):
    kind: Literal["tool_finished"] = "tool_finished"
    actor_id: str
    call_id: str
    tool: str
    content: str
    is_error: bool = False
    duration_ms: float = 0.0
    metadata: dict[str, Any] = {}


class HookRan(_Msg):
    """One hook command ran (Claude Code's hooks contract): for which event and matcher, how
    it ended and what it decided, so ``crew logs`` shows every guard that acted."""

    kind: Literal["hook_ran"] = "hook_ran"
    actor_id: str | None = None
    event: str
    matcher: str = ""
    command: str
    exit_code: int | None = None
    duration_ms: float = 0.0
    timed_out: bool = False
    decision: str = ""
    tool: str | None = None


class ServiceEvent(_Msg):
    """A per-session service (MCP servers, ...) changed state: started, failed, restarted,
    stopped; ``detail`` is the one line a person reads."""

    kind: Literal["service_event"] = "service_event"
    service: str
    state: Literal["starting", "running", "failed", "restarted", "stopped"]
    detail: str = ""


class Notice(_Msg):
    """Something a person should see that is not the model's output (warnings, repairs)."""

    kind: Literal["notice"] = "notice"
    actor_id: str | None = None
    level: Literal["info", "warning", "error"] = "info"
    text: str


class TaskTreeChanged(_Msg):
    kind: Literal["task_tree_changed"] = "task_tree_changed"
    actor_id: str
    ledger: str


class CheckpointWritten(_Msg):
    kind: Literal["checkpoint_written"] = "checkpoint_written"
    path: str
    reason: str
    chars: int = 0


class JudgeVerdict(_Msg):
    kind: Literal["judge_verdict"] = "judge_verdict"
    round: int
    met: bool
    impossible: bool = False
    reason: str = ""
    missing: list[str] = []
    source: str = "model"


class CandidateFinished(_Msg):
    kind: Literal["candidate_finished"] = "candidate_finished"
    actor_id: str
    passed: bool
    patch_bytes: int = 0
    usage: Usage = Usage()


class ActorFinished(_Msg):
    kind: Literal["actor_finished"] = "actor_finished"
    actor_id: str
    stop_reason: StopReason
    summary: str = ""
    steps: int = 0
    usage: Usage = Usage()
    error: str | None = None


class TurnFinished(_Msg):
    """An interactive session's agent run ended its turn; the session waits for the person."""

    kind: Literal["turn_finished"] = "turn_finished"
    actor_id: str
    stop_reason: StopReason
    summary: str = ""
    error: str | None = None


class ConversationRewound(_Msg):
    """The person rewound the session to rewind point ``point`` (``crew rewind
    --conversation``): the transcript continues from the log as it stood at ``to_seq``. The
    events between stay in the log (what happened is never erased); the transcript a resume
    rebuilds leaves out what they said (``stagecrew.rewind.conversation``)."""

    kind: Literal["conversation_rewound"] = "conversation_rewound"
    point: int
    to_seq: int


class ActorFailed(_Msg):
    kind: Literal["actor_failed"] = "actor_failed"
    actor_id: str
    error: str
    cause: str = ""


class SessionFinished(_Msg):
    kind: Literal["session_finished"] = "session_finished"
    stop_reason: StopReason
    summary: str = ""
    steps: int = 0
    usage: Usage = Usage()
    error: str | None = None
    duration_s: float = 0.0


Message = Annotated[
    StartTask
    | UserInput
    | Spawn
    | Cancel
    | PermissionRequest
    | PermissionReply
    | JudgeRequest
    | CheckpointRequest
    | SessionStarted
    | ActorStarted
    | ActorStateChanged
    | Heartbeat
    | ModelRequested
    | ModelDelta
    | ModelUsage
    | ModelRetry
    | AssistantMessage
    | ToolStarted
    | ToolFinished
    | HookRan
    | ServiceEvent
    | Notice
    | TaskTreeChanged
    | CheckpointWritten
    | JudgeVerdict
    | CandidateFinished
    | ActorFinished
    | TurnFinished
    | ConversationRewound
    | ActorFailed
    | SessionFinished,
    Field(discriminator="kind"),
]


class Envelope(_Msg):
    """Addressing and ordering around a message. ``seq`` is assigned by the supervisor when it
    appends the envelope to the session's log, so log order is the one true order."""

    id: str = Field(default_factory=lambda: new_id())
    session: str
    sender: str
    recipient: str = "supervisor"
    ts: float = Field(default_factory=time.time)
    reply_to: str | None = None
    seq: int = 0
    body: Message

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, line: str | bytes) -> Envelope:
        return cls.model_validate_json(line)


MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


# ---------------------------------------------------------------------------------------------
# Model gateway wire types (not logged: they travel between an agent and its gateway)
# ---------------------------------------------------------------------------------------------


class ModelSpecWire(_Msg):
    """The model a request goes to. Carries the *name* of the key variable, never the key."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float = 120.0
    num_retries: int = 3
    extra: dict[str, Any] = {}


class ModelRequest(_Msg):
    session: str
    actor_id: str
    role: ModelRole
    spec: ModelSpecWire
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = []


class StreamText(_Msg):
    kind: Literal["text"] = "text"
    text: str


class StreamDone(_Msg):
    kind: Literal["done"] = "done"
    text: str = ""
    tool_calls: list[ToolCall] = []
    finish_reason: str | None = None
    usage: Usage = Usage()
    model: str = ""
    latency_ms: float = 0.0
    attempts: int = 1


class StreamError(_Msg):
    """A model call that failed for good: ``message`` is the one line a person reads."""

    kind: Literal["error"] = "error"
    error_kind: str
    message: str
    retryable: bool = False


class StreamRetry(_Msg):
    """The call failed and will be tried again: attempt ``attempt`` of ``max_attempts`` starts
    after ``delay_s`` seconds. ``message`` is the cause (one line, no advice);
    ``discard_partial`` is true when text of the failed attempt was already streamed and is
    now void (the next attempt streams its answer from the start)."""

    kind: Literal["retry"] = "retry"
    attempt: int
    max_attempts: int
    delay_s: float
    error_kind: str
    message: str
    discard_partial: bool = False


StreamItem = Annotated[
    StreamText | StreamDone | StreamError | StreamRetry, Field(discriminator="kind")
]
