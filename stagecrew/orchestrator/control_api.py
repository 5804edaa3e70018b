"""The control channel's operations as types: one request model per operation, and a client
with one method per operation.

The supervisor validates every incoming line against ``ControlRequest`` (a discriminated
union on ``op``), so a request is parsed once, in one place, and a malformed one gets a reply
that says which field is wrong. The CLI and the chat call ``SupervisorClient`` methods and
never spell an operation's name or parameters themselves. The transport underneath is
``control.ControlClient``: the standard library and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from stagecrew.actors.spec import AgentSpec
from stagecrew.orchestrator.control import ControlClient


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(default="", repr=False)


class Ping(_Request):
    op: Literal["ping"] = "ping"


class StartSession(_Request):
    op: Literal["start_session"] = "start_session"
    spec: AgentSpec
    credentials: dict[str, str] = Field(default_factory=dict, repr=False)
    config: dict[str, Any] = Field(default_factory=dict)
    interactive: bool = False
    limits: dict[str, Any] | None = None
    placement: dict[str, Any] | None = None
    # How many times a run whose agent host died is resumed without the person asking.
    auto_resume: int = 0


class StartMaxSession(_Request):
    op: Literal["start_max_session"] = "start_max_session"
    spec: AgentSpec
    credentials: dict[str, str] = Field(default_factory=dict, repr=False)
    config: dict[str, Any] = Field(default_factory=dict)
    limits: dict[str, Any] | None = None
    max: dict[str, Any]


class UserInput(_Request):
    op: Literal["user_input"] = "user_input"
    session: str
    text: str
    spec: AgentSpec | None = None


class EndSession(_Request):
    op: Literal["end_session"] = "end_session"
    session: str


class Cancel(_Request):
    op: Literal["cancel"] = "cancel"
    target: str
    kill: bool = False


class Ps(_Request):
    op: Literal["ps"] = "ps"
    session: str | None = None


class PermissionReply(_Request):
    op: Literal["permission_reply"] = "permission_reply"
    session: str
    request_id: str
    decision: Literal["once", "always", "deny"]


class SessionInfo(_Request):
    op: Literal["session_info"] = "session_info"
    session: str


class Shutdown(_Request):
    op: Literal["shutdown"] = "shutdown"
    reason: str = "crew down stopped the head"


class Follow(_Request):
    op: Literal["follow"] = "follow"
    session: str
    after_seq: int = 0


ControlRequest = Annotated[
    Ping
    | StartSession
    | StartMaxSession
    | UserInput
    | EndSession
    | Cancel
    | Ps
    | PermissionReply
    | SessionInfo
    | Shutdown
    | Follow,
    Field(discriminator="op"),
]
REQUEST_ADAPTER: TypeAdapter[Any] = TypeAdapter(ControlRequest)


def parse_request(data: Any) -> Any:
    """One validated request; raises ``pydantic.ValidationError`` or ``TypeError``."""
    if not isinstance(data, dict):
        raise TypeError(f"a request is a JSON object, not {type(data).__name__}")
    return REQUEST_ADAPTER.validate_python(data)


def _wire(request: _Request) -> dict[str, Any]:
    return request.model_dump(mode="json", exclude={"token", "op"}, exclude_none=True)


class SupervisorClient(ControlClient):
    """The supervisor's operations as methods (the transport is ``ControlClient``)."""

    def _do(self, request: _Request, timeout: float | None = None) -> dict[str, Any]:
        return self.call(request.op, timeout=timeout, **_wire(request))  # type: ignore[attr-defined]

    def ping(self, timeout: float = 0.5) -> dict[str, Any]:
        return self._do(Ping(), timeout=timeout)

    def start_session(
        self,
        spec: AgentSpec,
        credentials: dict[str, str],
        config: dict[str, Any],
        *,
        limits: dict[str, Any] | None = None,
        interactive: bool = False,
        placement: dict[str, Any] | None = None,
        auto_resume: int = 0,
        timeout: float = 60,
    ) -> str:
        request = StartSession(
            spec=spec,
            credentials=credentials,
            config=config,
            limits=limits,
            interactive=interactive,
            placement=placement,
            auto_resume=auto_resume,
        )
        return str(self._do(request, timeout)["session"])

    def start_max_session(
        self,
        spec: AgentSpec,
        credentials: dict[str, str],
        config: dict[str, Any],
        max_spec: dict[str, Any],
        *,
        limits: dict[str, Any] | None = None,
        timeout: float = 60,
    ) -> str:
        request = StartMaxSession(
            spec=spec, credentials=credentials, config=config, limits=limits, max=max_spec
        )
        return str(self._do(request, timeout)["session"])

    def user_input(
        self, session: str, text: str, spec: AgentSpec | None = None, timeout: float = 30
    ) -> str:
        reply = self._do(UserInput(session=session, text=text, spec=spec), timeout)
        return str(reply["actor_id"])

    def end_session(self, session: str, timeout: float = 30) -> None:
        self._do(EndSession(session=session), timeout)

    def cancel(self, target: str, kill: bool = False, timeout: float | None = None) -> list[str]:
        return list(self._do(Cancel(target=target, kill=kill), timeout)["cancelled"])

    def ps(self, session: str | None = None) -> dict[str, Any]:
        return self._do(Ps(session=session))

    def permission_reply(self, session: str, request_id: str, decision: str) -> None:
        self._do(PermissionReply(session=session, request_id=request_id, decision=decision))  # type: ignore[arg-type]

    def session_info(self, session: str) -> dict[str, Any]:
        return self._do(SessionInfo(session=session))

    def shutdown(self, reason: str = "crew down stopped the head", timeout: float = 10) -> None:
        self._do(Shutdown(reason=reason), timeout)

    def follow(self, session: str, after_seq: int = 0) -> Iterator[dict[str, Any]]:
        request = Follow(session=session, after_seq=after_seq)
        return self.stream(request.op, **_wire(request))
