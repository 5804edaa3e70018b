"""``crew`` with no arguments: a chat with the agent in the current repository.

One interactive session per chat (``start_session`` with ``interactive=True``): every message
is a ``user_input`` that starts the next agent run on the same transcript, with a spec built for
the profile and model chosen at that moment, which is how Tab (build ⇄ plan) and ``/model``
take effect without losing the conversation.

The module is split in two on purpose:

* pure state — :class:`ChatState` (profile cycling, turn tracking, the Ctrl-C rules, pending
  permission asks, usage totals), :func:`parse_command`, :func:`complete_command`,
  :func:`help_rows` and :func:`parse_permission_answer` — which needs no terminal, no
  supervisor and no threads, so it can be driven directly by unit tests;
* I/O — :class:`Chat`, which owns the prompt_toolkit input line, a background thread that
  follows the session's envelopes, and the control client.

Output reaches the terminal through ``patch_stdout`` so streamed text and the input line
coexist. Only *complete* lines go above the prompt: the unfinished line the model is still
streaming is shown as the first line of the prompt itself (see :class:`_TailWriter`), because
prompt_toolkit redraws its input line over any partial line printed above it.

Nothing here imports ray or litellm: like the rest of the CLI it talks to the supervisor over
the control channel, so the chat opens in well under a second once a head is up.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stagecrew.messages import (
    Envelope,
    ModelUsage,
    PermissionRequest,
    SessionStarted,
    StopReason,
    TurnFinished,
    Usage,
    UserInput,
    new_id,
)

if TYPE_CHECKING:
    from stagecrew.actors.builder import CustomSetup
    from stagecrew.commands import CustomCommand
    from stagecrew.orchestrator.control_api import SupervisorClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Tab toggles between these two (the shipped profiles); `/agent NAME` reaches any other.
TAB_CYCLE: tuple[str, ...] = ("build", "plan")

COMMANDS: dict[str, str] = {
    "/help": "list the commands and keys",
    "/agent": "[name] show the profiles, or switch the agent for the next messages",
    "/model": "[litellm-model] show the model, or change it for the next messages",
    "/ps": "the session's actors: state, steps, tokens, cost",
    "/cancel": "cancel the running turn (Ctrl-C does the same)",
    "/memory": "the instruction files and memory this project's agents read",
    "/rewind": "[POINT] list this session's rewind points, or put the files back to one",
    "/clear": "clear the screen and start a new session",
    "/exit": "end the session and quit (Ctrl-D too)",
}

KEYS: tuple[tuple[str, str], ...] = (
    ("Enter", "send the message"),
    ("Esc Enter", "new line"),
    ("Tab", "switch agent build ⇄ plan (completes after /)"),
    ("Ctrl-C", "cancel the running turn; else clear the line; twice on an empty line quits"),
    ("Ctrl-D", "quit"),
    ("↑ ↓", "history"),
)

PERMISSION_QUESTION = "[y]es once / [a]lways this session / [n]o"
_PERMISSION_ANSWERS = {
    "y": "once",
    "yes": "once",
    "once": "once",
    "a": "always",
    "always": "always",
    "n": "deny",
    "no": "deny",
    "deny": "deny",
}

InterruptAction = Literal["cancel", "clear", "arm", "quit"]


# ---------------------------------------------------------------------------------------------
# Pure state
# ---------------------------------------------------------------------------------------------


class CommandError(ValueError):
    """A line that looks like a slash command but is not one; the message says what is."""


@dataclass(frozen=True)
class Command:
    """A parsed slash command: ``name`` with its slash (``/agent``), ``arg`` stripped.
    ``custom``: a custom command (or a skill), sent to the agent expanded."""

    name: str
    arg: str = ""
    custom: bool = False


def parse_command(line: str, custom: Collection[str] = ()) -> Command | None:
    """The slash command in ``line``, or None when the line is a message for the agent.

    ``custom`` names the custom commands (with their slash); one of them wins over a built-in
    of the same name. A line starting with ``//`` is a message whose text starts with one
    ``/`` (so a path like ``/etc/hosts`` can still open a message), and so is an MCP prompt
    (``/mcp__server__prompt``, expanded by the agent's host); any other unknown ``/word`` is an
    error rather than a message, because a mistyped command sent to the model costs a turn.
    """
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    name, _, arg = text.partition(" ")
    if name in custom:
        return Command(name, arg.strip(), custom=True)
    if name.startswith("/mcp__"):
        return None
    name = name.lower()
    if name not in COMMANDS:
        names = [*COMMANDS, *sorted(set(custom) - set(COMMANDS))]
        close = [c for c in names if c.lower().startswith(name)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise CommandError(f"unknown command {name}{hint}; /help lists them")
    return Command(name, arg.strip())


def message_text(line: str) -> str:
    """The text sent to the agent for a non-command line (``//x`` becomes ``/x``)."""
    text = line.strip()
    return text[1:] if text.startswith("//") else text


def custom_meta(command: CustomCommand) -> str:
    """A custom command in one short line: its argument hint and description, and that it
    replaces a built-in when it does (so the override is never a surprise)."""
    text = " ".join(p for p in (command.argument_hint, command.description) if p)
    if command.slash in COMMANDS:
        text += f" (overrides the built-in {command.slash})"
    return text


def complete_command(
    text: str,
    profiles: Iterable[str] = (),
    models: Iterable[str] = (),
    custom: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Completions for the text before the cursor: ``(replacement, description)`` pairs.

    Command names after a lone ``/`` (``custom`` maps custom command names, with their slash,
    to their description; it wins over a built-in of the same name); profile names after
    ``/agent ``; model strings after ``/model ``. Each replacement replaces the word being
    typed (the text after the last space, or the whole line for a command name).
    """
    if not text.startswith("/"):
        return []
    custom = custom or {}
    if " " not in text:
        merged = {**COMMANDS, **custom}
        names = [*COMMANDS, *sorted(set(custom) - set(COMMANDS))]
        typed = text.lower()
        return [(n, merged[n]) for n in names if n.lower().startswith(typed)]
    name, _, arg = text.partition(" ")
    if " " in arg or name in custom:
        return []
    options = {"/agent": profiles, "/model": models}.get(name.lower(), ())
    return [(o, "") for o in dict.fromkeys(options) if o.startswith(arg) and o != arg]


def help_rows(custom: Iterable[CustomCommand] = ()) -> list[tuple[str, str]]:
    """What ``/help`` lists: the built-in commands (those a custom command replaces say so),
    then the custom commands with their argument hint, description and where they are from."""
    custom = list(custom)
    replaced = {c.slash for c in custom}
    rows = []
    for name, text in COMMANDS.items():
        note = " — replaced by a custom command, see below" if name in replaced else ""
        rows.append((name, text + note))
    for command in sorted(custom, key=lambda c: c.name):
        shown = f"{command.slash} {command.argument_hint}".rstrip()
        rows.append((shown, f"{custom_meta(command)} · {command.label}".lstrip(" ·")))
    return rows


def rewind_lines(workspace: Path, session: str | None, arg: str) -> list[str]:
    """What ``/rewind`` shows: the session's points, or (``/rewind N``) the files put back to
    point N, with the point that undoes it. The conversation stays as it is: ``crew rewind
    --to N --conversation`` after the chat also cuts the transcript."""
    from stagecrew.rewind import (
        PointNotFound,
        RewindError,
        describe_restore,
        format_points,
        list_points,
        restore_point,
    )

    try:
        if not arg:
            points = list_points(workspace, session)
            if not points:
                return ["[dim]no rewind points in this session yet[/dim]"]
            return [_esc(row) for row in format_points(points)]
        if not arg.isdigit():
            return ["[red]/rewind takes a point number (see /rewind)[/red]"]
        result = restore_point(workspace, int(arg), session=session)
    except (PointNotFound, RewindError, OSError) as exc:
        return [f"[red]{_esc(str(exc))}[/red]"]
    return [f"[green]{_esc(describe_restore(result))}[/green]"]


def memory_lines(workspace: Path, home: Path | None = None) -> list[str]:
    """What ``/memory`` shows (rich markup): each instruction file the agents read, in the
    order they enter the prompt, what it is and its size; the problems with them; and the
    memory files. Read from disk now, as the next run will read them."""
    from stagecrew.config import user_config_dir
    from stagecrew.memory.instructions import load_instructions
    from stagecrew.memory.layers import MemoryPaths

    config_dir = user_config_dir()
    found = load_instructions(workspace, home=home, config_dir=config_dir)
    lines = ["[bold]Instruction files[/bold] (in prompt order)"]
    if not found.sources:
        lines.append("  [dim]none: add AGENTS.md or CLAUDE.md to the project[/dim]")
    for source in found.sources:
        lines.append(
            f"  {_esc(source.label)}  [dim]{_esc(source.describe())}, "
            f"{source.size_bytes:,} bytes[/dim]"
        )
    lines += [f"  [yellow]{_esc(n)}[/yellow]" for n in found.notices]
    paths = MemoryPaths(workspace, None, config_dir)
    lines.append("[bold]Memory[/bold]")
    for label, path in (("project", paths.project_memory), ("global", paths.global_memory)):
        size = f"{path.stat().st_size:,} bytes" if path.is_file() else "not written yet"
        lines.append(f"  {label}: {_esc(str(path))}  [dim]{size}[/dim]")
    return lines


def parse_permission_answer(text: str) -> str | None:
    """``once``, ``always`` or ``deny`` for an answer like ``y``/``a``/``n``; None if unclear."""
    return _PERMISSION_ANSWERS.get(text.strip().lower())


def next_profile(current: str, available: Iterable[str], cycle: tuple[str, ...] = TAB_CYCLE) -> str:
    """The profile Tab switches to: the next one in ``cycle`` that exists.

    From a profile outside the cycle (picked with ``/agent``), Tab goes back to the first one
    in the cycle, so Tab always lands somewhere predictable.
    """
    present = [p for p in cycle if p in set(available)]
    if not present:
        return current
    if current not in present:
        return present[0]
    return present[(present.index(current) + 1) % len(present)]


@dataclass
class ChatState:
    """What the chat knows between keystrokes, shared by the input loop and the follower thread.

    Every method takes the lock, because the follower thread (envelopes arriving) and the
    input thread (keys, commands) both change it.
    """

    profiles: list[str]
    agent: str
    model: str = ""
    model_override: str | None = None
    session: str | None = None
    running: str | None = None  # actor id of the turn in progress
    usage: Usage = field(default_factory=Usage)
    permissions: deque[PermissionRequest] = field(default_factory=deque)
    last_stop: StopReason | None = None
    _finished: set[str] = field(default_factory=set)
    _armed: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # -- agent and model ---------------------------------------------------------------------

    def cycle_agent(self) -> str:
        with self._lock:
            self.agent = next_profile(self.agent, self.profiles)
            return self.agent

    def set_agent(self, name: str) -> None:
        with self._lock:
            if name not in self.profiles:
                known = ", ".join(self.profiles)
                raise ValueError(f"unknown agent profile '{name}': known profiles are {known}")
            self.agent = name

    # -- session and turns -------------------------------------------------------------------

    def new_session(self, sid: str) -> None:
        """A fresh session: nothing running, nothing pending, usage from zero."""
        with self._lock:
            self.session = sid
            self.running = None
            self.usage = Usage()
            self.permissions.clear()
            self._finished.clear()
            self.last_stop = None

    def turn_started(self, actor_id: str) -> None:
        """Called with the id ``user_input`` returned. The turn may already have finished (a
        fast model can beat the reply to the follower thread), so a finished id stays idle."""
        with self._lock:
            self._armed = False
            if actor_id not in self._finished:
                self.running = actor_id

    def turn_finished(self, actor_id: str, stop: StopReason) -> None:
        with self._lock:
            self._finished.add(actor_id)
            self.last_stop = stop
            if self.running == actor_id:
                self.running = None
            # An ask that belonged to the run is moot once it has ended (e.g. cancelled).
            self.permissions = deque(p for p in self.permissions if p.actor_id != actor_id)

    @property
    def busy(self) -> bool:
        with self._lock:
            return self.running is not None

    def add_usage(self, msg: ModelUsage) -> None:
        with self._lock:
            self.usage = self.usage + msg.usage

    # -- permission asks ---------------------------------------------------------------------

    def ask(self, request: PermissionRequest) -> None:
        with self._lock:
            self.permissions.append(request)

    @property
    def pending_permission(self) -> PermissionRequest | None:
        with self._lock:
            return self.permissions[0] if self.permissions else None

    def answered(self, request_id: str) -> None:
        with self._lock:
            self.permissions = deque(p for p in self.permissions if p.request_id != request_id)

    # -- Ctrl-C ------------------------------------------------------------------------------

    def interrupt(self, has_text: bool) -> InterruptAction:
        """What Ctrl-C means now: cancel a running turn, else clear the line, else quit on the
        second press at an empty line (the first only arms, so one stray key never quits)."""
        with self._lock:
            if self.running is not None:
                self._armed = False
                return "cancel"
            if has_text:
                self._armed = False
                return "clear"
            if self._armed:
                return "quit"
            self._armed = True
            return "arm"

    def disarm(self) -> None:
        """Any other input in between means the next Ctrl-C starts over."""
        with self._lock:
            self._armed = False

    # -- what the prompt shows ---------------------------------------------------------------

    def prompt_label(self) -> str:
        with self._lock:
            request = self.permissions[0] if self.permissions else None
            if request is not None:
                return f"allow {request.summary}? {PERMISSION_QUESTION} › "
            return f"{self.agent} › "

    def status(self) -> str:
        with self._lock:
            parts = [
                self.agent,
                self.model or "?",
                f"{self.usage.total_tokens:,} tokens",
                f"${self.usage.cost_usd:.4f}",
            ]
            if self.permissions:
                parts.append("waiting for your answer")
            elif self.running:
                parts.append("working · Ctrl-C cancels")
            if self.session:
                parts.append(f"session {self.session}")
            return " · ".join(parts)


# ---------------------------------------------------------------------------------------------
# Output: complete lines above the prompt, the streaming line inside it
# ---------------------------------------------------------------------------------------------


class _TailWriter:
    """The file rich writes to.

    Complete lines go to ``sink`` (the ``patch_stdout`` proxy, which prints them above the
    input line). The unfinished last line is held back as :attr:`tail` and drawn as the first
    line of the prompt, because prompt_toolkit repaints the input line over any partial line
    printed above it: without this, streamed text would only appear a whole line at a time.
    """

    encoding = "utf-8"

    def __init__(self, sink: Any, on_change: Callable[[], None]) -> None:
        self._sink = sink
        self._on_change = on_change
        self._lock = threading.Lock()
        self.tail = ""

    def write(self, data: str) -> int:
        with self._lock:
            head, sep, rest = (self.tail + data).rpartition("\n")
            if sep:
                self._sink.write(head + "\n")
                self.tail = rest
            else:
                self.tail = rest
        return len(data)

    def flush(self) -> None:
        self._sink.flush()
        self._on_change()

    def break_line(self) -> bool:
        """End the streaming line (before printing something else); True if there was one."""
        with self._lock:
            if not self.tail:
                return False
            self._sink.write(self.tail + "\n")
            self.tail = ""
        self._sink.flush()
        return True

    def discard(self) -> None:
        """Forget the streaming line without printing it."""
        with self._lock:
            self.tail = ""
        self._on_change()

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._sink.fileno()


# ---------------------------------------------------------------------------------------------
# The chat
# ---------------------------------------------------------------------------------------------


class ChatSetupError(Exception):
    """The chat cannot open; the message is one line that says what to fix. ``code`` is the
    exit status: 2 for configuration (like ``crew run``), 1 for a runtime that failed."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class Chat:
    """The interactive loop: an input line, a follower thread, and the control client."""

    def __init__(self, workspace: Path, flags: dict[str, Any]) -> None:
        from stagecrew.actors.builder import custom_setup
        from stagecrew.config import ConfigError, load_config, user_config_dir
        from stagecrew.profiles import ProfileError, discover_profiles

        self.workspace = workspace
        self.flags = dict(flags)
        try:
            self.config = load_config(workspace, flags=self.flags)
            names = list(discover_profiles(workspace, user_config_dir()))
        except (ConfigError, ProfileError) as exc:
            raise ChatSetupError(str(exc)) from exc
        ordered = [p for p in TAB_CYCLE if p in names] + sorted(set(names) - set(TAB_CYCLE))
        self.state = ChatState(profiles=ordered, agent=self.config.agent)
        if self.config.agent not in names:
            raise ChatSetupError(
                f"unknown agent profile '{self.config.agent}': known profiles are "
                f"{', '.join(ordered)}"
            )
        self.client: Any = None
        self.registered_keys: set[str] = set()
        self.out: _TailWriter | None = None
        self.renderer: Any = None
        self.side: Any = None  # a console for everything that is not the envelope stream
        self.app: Any = None
        self._followers: list[threading.Thread] = []
        self._out_lock = threading.RLock()
        self._left: set[str] = set()  # sessions left by /clear, whose last events are noise
        self._carry = ""
        self._closing = False
        # Custom commands and skills, read again before each line (files may change).
        self.setup: CustomSetup = custom_setup(workspace)
        self._notices_shown = False
        self._refresh_model()  # also finds a missing key before anything starts

    # -- specs -------------------------------------------------------------------------------

    def _prepare(self, prompt: str, session_id: str | None = None, expand: bool = False) -> Any:
        """An AgentSpec and credentials for the current profile and model (raises
        SessionSetupError with a one-line reason: unknown profile, missing key). ``expand``:
        ``prompt`` is a custom command line, expanded by the builder."""
        from stagecrew.actors.builder import SessionSetupError, prepare_session
        from stagecrew.config import ConfigError, load_config

        config = self.config
        if self.state.model_override:
            flags = {**self.flags, "models.primary.model": self.state.model_override}
            try:
                config = load_config(self.workspace, flags=flags)
            except ConfigError as exc:
                raise SessionSetupError(str(exc)) from exc
        return prepare_session(
            config,
            prompt,
            self.workspace,
            agent=self.state.agent,
            session_id=session_id,
            expand_commands=expand,
            confirm=self._confirm if expand else None,
            setup=self.setup,
        )

    def _confirm(self, question: str) -> bool:
        """A custom command's ``!`cmd``` under an ``ask`` rule, put to the person (the input
        line is not drawn while a submitted line is handled, so a plain prompt can ask)."""
        from prompt_toolkit import prompt

        try:
            return prompt(f"{question} [y/n] ").strip().lower()[:1] == "y"
        except (EOFError, KeyboardInterrupt):
            return False

    def _refresh_model(self) -> None:
        """Show the model the *next* turn will use (a profile may pin its own)."""
        from stagecrew.actors.builder import SessionSetupError

        try:
            prepared = self._prepare("")
        except SessionSetupError as exc:
            if self.client is None:
                raise ChatSetupError(str(exc)) from exc
            self.say(f"[red]{_esc(str(exc))}[/red]")
            return
        self.state.model = prepared.spec.model.model

    # -- output ------------------------------------------------------------------------------

    def say(self, markup: str | Any, *, end_stream: bool = False) -> None:
        """Print rich markup (or a renderable) above the prompt.

        The line the model is streaming stays where it is and goes on growing (a ``/ps`` in
        the middle of an answer does not cut it in two) unless ``end_stream``: the end of a
        turn ends it first. Takes the output lock: the follower thread, the input thread and
        key handlers all print, and a line must never be cut by another thread's line.
        """
        if self.renderer is None or self.side is None:
            text = markup if isinstance(markup, str) else str(markup)
            sys.stderr.write(_plain(text) + "\n")
            return
        with self._out_lock:
            if end_stream:
                self._end_line()
            self.side.print(markup)

    def _print_now(self, markup: str) -> None:
        """Print while no prompt is drawn, straight to the terminal rather than through
        patch_stdout's writer thread: that thread is asynchronous, and a prompt drawn before
        it writes is pushed down by the text and leaves a stray copy in the scrollback."""
        from prompt_toolkit.application.current import get_app_session

        if self.side is None:
            sys.stderr.write(_plain(markup) + "\n")
            return
        with self.side.capture() as captured:
            self.side.print(markup)
        output = get_app_session().output
        output.write_raw(captured.get())
        output.flush()

    def _end_line(self) -> None:
        """Finish the line the model was streaming, so what follows starts on its own."""
        if self.out is not None and self.out.break_line() and self.renderer is not None:
            self.renderer.in_text = False

    def _render(self, env: Envelope) -> None:
        if self.renderer is not None:
            with self._out_lock:
                self.renderer.handle(env)

    def _invalidate(self) -> None:
        app = self.app
        if app is not None and app.is_running:
            app.invalidate()

    def _call(self, what: str, call: Callable[[SupervisorClient], Any]) -> Any:
        """One control call; a failure is shown as one line and returns None.

        Besides the supervisor's own errors (ControlError), a reply slower than ``timeout``
        surfaces as an OSError from the socket: neither may take the chat down.
        """
        from stagecrew.orchestrator.control import ControlError

        try:
            return call(self.client)
        except (ControlError, OSError, ValueError) as exc:
            self.say(f"[red]{what}: {_esc(str(exc) or type(exc).__name__)}[/red]")
            return None

    # -- session -----------------------------------------------------------------------------

    def connect(self) -> None:
        from stagecrew.orchestrator.control import ControlError
        from stagecrew.orchestrator.runtime import RuntimeStartError, connect_configured

        def starting(line: str) -> None:
            sys.stderr.write(f"crew: {line}\n")
            sys.stderr.flush()

        try:
            self.client = connect_configured(self.config.runtime, on_start=starting)
        except (ControlError, RuntimeStartError) as exc:
            raise ChatSetupError(str(exc), EXIT_FAILED) from exc

    def open_session(self) -> None:
        """Start a new interactive session (no run yet) and follow its envelopes."""
        from stagecrew.actors.builder import SessionSetupError
        from stagecrew.orchestrator.control import ControlError

        sid = new_id()
        try:
            prepared = self._prepare("", session_id=sid)
            self.client.start_session(
                prepared.spec,
                prepared.credentials,
                self.config.public_dict(),
                # A chat stays open as long as the person likes: no wall time for the whole
                # session (each run still has the agent's own), the token and cost caps hold.
                limits={**self.config.limits.session_limits(), "wall_time_s": None},
                interactive=True,
            )
        except SessionSetupError as exc:
            raise ChatSetupError(str(exc)) from exc
        except (ControlError, OSError) as exc:
            raise ChatSetupError(str(exc), EXIT_FAILED) from exc
        self.registered_keys = set(prepared.credentials)
        self.state.new_session(sid)
        self.state.model = prepared.spec.model.model
        model = prepared.spec.model.model
        self._print_now(
            f"[dim]session {sid} · {_esc(model)} · agent {self.state.agent}[/dim]\n"
            "[dim]/help for commands · Tab switches build ⇄ plan · Ctrl-D quits[/dim]"
        )
        if not self._notices_shown:  # once per chat, not again after /clear
            self._notices_shown = True
            for line in self.setup.notices:
                self._print_now(f"[yellow]warning: {_esc(line)}[/yellow]")
        follower = threading.Thread(
            target=self._follow, args=(sid,), name=f"follow-{sid}", daemon=True
        )
        self._followers.append(follower)
        follower.start()

    def end_session(self, sid: str | None) -> None:
        """End a session (the supervisor cancels a running turn first and writes the final
        ``session_finished``); errors are shown, never raised, since we are leaving anyway."""
        if sid is not None and self.client is not None:
            self._call(f"could not end session {sid}", lambda c: c.end_session(sid, timeout=30))

    def _follow(self, sid: str) -> None:
        """The follower thread: stream the session's envelopes until it ends."""
        from stagecrew.orchestrator.control import ControlError

        try:
            for msg in self.client.follow(sid):
                if msg.get("end"):
                    return
                env = Envelope.model_validate(msg)
                if sid in self._left:
                    continue
                self._on_envelope(env)
        except (ControlError, OSError, ValueError) as exc:
            if sid == self.state.session and not self._closing:
                self.say(f"[red]lost the session's event stream: {_esc(str(exc))}", end_stream=True)
        finally:
            self._invalidate()

    def _on_envelope(self, env: Envelope) -> None:
        body = env.body
        if isinstance(body, UserInput):
            return  # the person's line is already on screen, where they typed it
        if isinstance(body, ModelUsage):
            self.state.add_usage(body)
        elif isinstance(body, PermissionRequest):
            self.state.ask(body)
        elif isinstance(body, TurnFinished):
            self.state.turn_finished(body.actor_id, body.stop_reason)
            self._show_turn_end(body)
            self._invalidate()
            return
        elif isinstance(body, SessionStarted):
            return  # open_session printed the header before the first prompt
        self._render(env)
        self._invalidate()

    def _show_turn_end(self, body: TurnFinished) -> None:
        usage = self.state.usage
        totals = f"{usage.total_tokens:,} tokens · ${usage.cost_usd:.4f} this session"
        if body.stop_reason.success:
            self.say(f"[dim]── {totals}[/dim]", end_stream=True)
            return
        detail = f": {_esc(body.error)}" if body.error else ""
        self.say(
            f"[red]✗ {body.stop_reason.value}{detail}[/red] [dim]── {totals}[/dim]", end_stream=True
        )

    # -- actions -----------------------------------------------------------------------------

    def send(self, text: str, *, expand: bool = False) -> None:
        """Start the next turn with a spec for the current profile and model. ``expand``:
        ``text`` is a custom command line; the agent gets its expansion."""
        from stagecrew.actors.builder import SessionSetupError

        if self.state.busy:
            self.say(
                "[yellow]the agent is still working on the last message: Ctrl-C cancels it; "
                "your text is kept below[/yellow]"
            )
            self._carry = text
            return
        try:
            prepared = self._prepare(text, session_id=self.state.session, expand=expand)
        except SessionSetupError as exc:
            self.say(f"[red]{_esc(str(exc))}[/red]")
            self._carry = text
            return
        missing = set(prepared.credentials) - self.registered_keys
        if missing:
            self.say(
                f"[red]{prepared.spec.model.model} needs {', '.join(sorted(missing))}, which "
                "this session did not start with: /clear starts a session that has it[/red]"
            )
            self._carry = text
            return
        sid = self.state.session
        changed = prepared.command is not None or prepared.mentions
        said = prepared.spec.prompt if changed else text
        actor_id = self._call("not sent", lambda c: c.user_input(sid, said, prepared.spec))
        if actor_id is None:
            self._carry = text
            return
        self.state.turn_started(actor_id)

    def cancel(self, quiet: bool = False) -> None:
        """Ask the supervisor to cancel the running turn, off the UI thread (the call is quick,
        but the input line must never wait on the network)."""
        sid = self.state.session
        if not self.state.busy:
            if not quiet:
                self.say("[dim]nothing is running[/dim]")
            return
        self.say("[yellow]cancelling…[/yellow]")

        threading.Thread(
            target=self._call, args=("cancel failed", lambda c: c.cancel(sid)),
            name="cancel", daemon=True,
        ).start()  # fmt: skip

    def answer_permission(self, decision: str) -> None:
        request = self.state.pending_permission
        if request is None:
            return
        self.state.answered(request.request_id)
        word = {"once": "allowed once", "always": "allowed for this session", "deny": "denied"}
        colour = "red" if decision == "deny" else "green"
        self.say(f"[{colour}]{word[decision]}:[/{colour}] {_esc(request.summary)}")
        sid = self.state.session
        self._call(
            "the answer did not reach the agent",
            lambda c: c.permission_reply(sid, request.request_id, decision),
        )
        self._invalidate()

    def clear(self) -> None:
        """Clear the screen and start over in a new session; the old one ends in the
        background (ending waits for a running turn to stop)."""
        from prompt_toolkit.shortcuts import clear as clear_screen

        old = self.state.session
        if old is not None:
            self._left.add(old)
        if self.out is not None:
            self.out.discard()  # the screen is about to be cleared anyway
        if self.renderer is not None:
            self.renderer.in_text = False
        threading.Thread(target=self.end_session, args=(old,), daemon=True).start()
        clear_screen()
        self.open_session()

    # -- commands ----------------------------------------------------------------------------

    def command(self, cmd: Command) -> bool:
        """Run a slash command; False means leave the chat."""
        from stagecrew.actors.builder import SessionSetupError

        if cmd.custom:
            self.run_custom(cmd)
            return True
        if cmd.name == "/exit":
            return False
        if cmd.name == "/help":
            self.show_help()
        elif cmd.name == "/agent":
            if not cmd.arg:
                for name in self.state.profiles:
                    mark = "●" if name == self.state.agent else " "
                    self.say(f"{mark} {name}")
                return True
            try:
                self.state.set_agent(cmd.arg)
            except ValueError as exc:
                self.say(f"[red]{_esc(str(exc))}[/red]")
                return True
            self._refresh_model()
            self.say(f"[dim]agent: {self.state.agent} (for the next message)[/dim]")
        elif cmd.name == "/model":
            if not cmd.arg:
                self.say(f"model: {_esc(self.state.model)}")
                return True
            previous = self.state.model_override
            self.state.model_override = cmd.arg
            try:
                prepared = self._prepare("")
            except SessionSetupError as exc:
                self.state.model_override = previous
                self.say(f"[red]{_esc(str(exc))}[/red]")
                return True
            self.state.model = prepared.spec.model.model
            self.say(f"[dim]model: {_esc(self.state.model)} (for the next message)[/dim]")
            missing = set(prepared.credentials) - self.registered_keys
            if missing:
                # Keys reach the gateway only at session start; see send().
                self.say(
                    f"[yellow]it needs {', '.join(sorted(missing))}, which this session did "
                    "not start with: /clear starts a session that has it[/yellow]"
                )
        elif cmd.name == "/ps":
            reply = self._call("ps failed", lambda c: c.ps(self.state.session))
            if reply is not None:
                self.show_actors(reply["actors"])
        elif cmd.name == "/cancel":
            self.cancel()
        elif cmd.name == "/rewind":
            if self.state.busy:
                self.say("[yellow]the agent is working: cancel the turn first (Ctrl-C)[/yellow]")
                return True
            for line in rewind_lines(self.workspace, self.state.session, cmd.arg):
                self.say(line)
        elif cmd.name == "/memory":
            for line in memory_lines(self.workspace):
                self.say(line)
        elif cmd.name == "/clear":
            self.clear()
        return True

    def run_custom(self, cmd: Command) -> None:
        """Send a custom command (or a skill) to the agent, expanded; say where it is from,
        and that it replaces the built-in of that name when it does."""
        command = self.setup.commands.get(cmd.name)
        if command is None:
            return
        override = f" (overrides the built-in {cmd.name})" if cmd.name in COMMANDS else ""
        source = _esc(str(command.source))
        self.say(f"[dim]{_esc(cmd.name)}: {command.label} from {source}{override}[/dim]")
        self.send(f"{cmd.name} {cmd.arg}".strip(), expand=True)

    def show_help(self) -> None:
        from rich.table import Table

        table = Table(show_header=False, box=None, padding=(0, 2))
        for name, text in help_rows(self.setup.commands.sorted()):
            table.add_row(f"[bold]{_esc(name)}[/bold]", _esc(text))
        for key, text in KEYS:
            table.add_row(f"[cyan]{key}[/cyan]", _esc(text))
        self.say(table)

    def show_actors(self, rows: list[dict[str, Any]]) -> None:
        from stagecrew.cli.render import actor_table

        if not rows:
            self.say("[dim]no actors yet in this session[/dim]")
            return
        self.say(actor_table(rows))

    # -- the input line ----------------------------------------------------------------------

    def _completer(self) -> Any:
        from prompt_toolkit.completion import Completer, Completion

        chat = self

        class SlashCompleter(Completer):
            def get_completions(self, document: Any, complete_event: Any) -> Iterator[Any]:
                text = document.text_before_cursor
                models = [m for m in (chat.state.model, chat.config.models.primary.model) if m]
                custom = {c.slash: custom_meta(c) for c in chat.setup.commands.sorted()}
                options = complete_command(text, chat.state.profiles, models, custom)
                word = text if " " not in text else text.rpartition(" ")[2]
                for replacement, meta in options:
                    yield Completion(replacement, start_position=-len(word), display_meta=meta)

        return SlashCompleter()

    def _key_bindings(self) -> Any:
        from prompt_toolkit.filters import Condition, has_completions
        from prompt_toolkit.key_binding import KeyBindings

        kb = KeyBindings()
        state = self.state

        @Condition
        def typing_command() -> bool:
            app = self.app
            return bool(app and app.current_buffer.text.startswith("/"))

        @Condition
        def asked() -> bool:
            app = self.app
            return state.pending_permission is not None and not (app and app.current_buffer.text)

        @kb.add("tab", filter=~typing_command & ~has_completions)
        def _(event: Any) -> None:
            state.cycle_agent()
            self._refresh_model()

        @kb.add("escape", "enter")
        def _(event: Any) -> None:
            event.current_buffer.insert_text("\n")

        @kb.add("c-c")
        def _(event: Any) -> None:
            buffer = event.current_buffer
            action = state.interrupt(bool(buffer.text))
            if action == "cancel":
                self.cancel(quiet=True)
            elif action == "clear":
                buffer.reset()
            elif action == "arm":
                self.say("[dim](Ctrl-C again to quit)[/dim]")
            else:
                event.app.exit(exception=EOFError())

        for key, decision in (("y", "once"), ("a", "always"), ("n", "deny")):

            @kb.add(key, filter=asked)
            def _(event: Any, decision: str = decision) -> None:
                self.answer_permission(decision)

        return kb

    def _message(self) -> Any:
        from prompt_toolkit.formatted_text import ANSI, FormattedText, to_formatted_text

        label = self.state.prompt_label()
        asked = self.state.pending_permission is not None
        style = "class:asked" if asked else f"class:agent.{self.state.agent}"
        parts: list[tuple[str, str]] = []
        tail = self.out.tail if self.out is not None else ""
        # The last drawing of an accepted line stays in the scrollback: without the streaming
        # line, which is printed for good once it is complete (else it would show twice).
        if tail and not (self.app is not None and self.app.is_done):
            parts.extend(to_formatted_text(ANSI(tail)))
            parts.append(("", "\n"))
        parts.append((style, label))
        return FormattedText(parts)

    def _session(self) -> Any:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.styles import Style

        from stagecrew.orchestrator.runtime import state_home

        style = Style.from_dict(
            {
                "agent.build": "bold ansigreen",
                "agent.plan": "bold ansiyellow",
                "asked": "bold ansiyellow",
                "bottom-toolbar": "noreverse bg:ansibrightblack ansiwhite",
            }
        )
        session: Any = PromptSession(
            message=self._message,
            history=FileHistory(str(state_home() / "history")),
            completer=self._completer(),
            complete_while_typing=True,
            key_bindings=self._key_bindings(),
            bottom_toolbar=lambda: " " + self.state.status(),
            style=style,
            multiline=False,
            prompt_continuation=lambda width, line, wrap: "… ".rjust(width),
        )
        session.default_buffer.on_text_changed += lambda _buffer: self.state.disarm()
        return session

    def submit(self, line: str) -> bool:
        """Handle one submitted line; False means leave the chat."""
        request = self.state.pending_permission
        if request is not None and line.strip():
            decision = parse_permission_answer(line)
            if decision is None:
                self.say(f"[yellow]answer the permission question first: {PERMISSION_QUESTION}[/]")
                self._carry = line
            else:
                self.answer_permission(decision)
            return True
        if not line.strip():
            return True
        from stagecrew.actors.builder import custom_setup

        self.setup = custom_setup(self.workspace)
        try:
            cmd = parse_command(line, {c.slash for c in self.setup.commands.sorted()})
        except CommandError as exc:
            # A /name whose file is broken: what is wrong with the file, not "unknown".
            broken = self.setup.problem_for(line.strip().partition(" ")[0])
            self.say(f"[red]{_esc(broken or str(exc))}[/red]")
            return True
        if cmd is not None:
            return self.command(cmd)
        self.send(message_text(line))
        return True

    def run(self) -> int:
        """The loop: open the session, read lines until /exit or Ctrl-D, end the session."""
        from prompt_toolkit.patch_stdout import patch_stdout
        from rich.console import Console

        from stagecrew.cli.render import TextRenderer

        with patch_stdout(raw=True):
            self.out = _TailWriter(sys.stdout, self._invalidate)
            self.renderer = TextRenderer(self.out, color=True, diffs=True)  # type: ignore[arg-type]
            self.side = Console(
                file=sys.stdout, highlight=False, soft_wrap=True, force_terminal=True
            )
            session = self._session()
            self.app = session.app
            self.open_session()
            while True:
                carry, self._carry = self._carry, ""
                try:
                    line = session.prompt(default=carry)
                except EOFError:
                    break
                except KeyboardInterrupt:  # a SIGINT between two prompts
                    if self.state.interrupt(False) == "cancel":
                        self.cancel(quiet=True)
                    continue
                try:
                    if not self.submit(line):
                        break
                except KeyboardInterrupt:
                    if self.state.busy:
                        self.cancel(quiet=True)
            self._closing = True
            self.end_session(self.state.session)
            for follower in self._followers:  # let the closing lines print
                follower.join(timeout=3)
            with self._out_lock:
                self._end_line()
        return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _plain(markup: str) -> str:
    from rich.text import Text

    return Text.from_markup(markup).plain


def run_chat(flags: dict[str, Any] | None = None, cwd: Path | None = None) -> int:
    """``crew`` with no command: chat in the project that contains ``cwd``."""
    from stagecrew.config import find_project_root

    workspace = find_project_root(cwd or Path.cwd())
    try:
        chat = Chat(workspace, flags or {})
        chat.connect()
    except ChatSetupError as exc:
        sys.stderr.write(f"crew: {exc}\n")
        return exc.code
    try:
        return chat.run()
    except ChatSetupError as exc:
        sys.stderr.write(f"crew: {exc}\n")
        return exc.code
    finally:
        with contextlib.suppress(Exception):
            if not chat._closing:
                chat.end_session(chat.state.session)
