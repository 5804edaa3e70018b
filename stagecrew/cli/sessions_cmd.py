"""``crew sessions``, ``show``, ``replay``, ``export`` and ``fork``: past sessions from their logs.

Everything is read from the project's ``.stagecrew/state/sessions/<id>/events.jsonl`` through
``stagecrew.sessions``; no Ray head is needed, except to tell a running session from a killed
one in the listing (asked only when a head is up, never started) and to run a fork. A session
is named by its id or any unambiguous prefix of it. Errors are one line on stderr and exit 2.

Imports nothing heavy at module level: ``crew --help`` loads this module.
"""

from __future__ import annotations

import enum
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from stagecrew.sessions import SessionSummary, Transcript

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_LIMIT = 20
# Replay never waits longer than this (divided by --speed) between two events.
REPLAY_MAX_GAP_S = 2.0

CwdOption = Annotated[
    Path | None, typer.Option(help="Project directory (default: the current one).")
]
SessionArg = Annotated[str, typer.Argument(help="Session id, or an unambiguous prefix of one.")]


class ExportFormat(enum.StrEnum):
    md = "md"
    json = "json"


class ForkOutput(enum.StrEnum):
    text = "text"
    json = "json"
    stream_json = "stream-json"


def _say(message: str) -> None:
    """One line for the person, on stderr (the way every ``crew`` command says things)."""
    sys.stderr.write(f"crew: {message}\n")
    sys.stderr.flush()


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    _say(message)
    return typer.Exit(code)


def _workspace(cwd: Path | None) -> Path:
    """The project root, its session logs checked readable (nothing is created)."""
    from stagecrew.cli import preflight

    try:
        workspace = preflight.workspace_for(cwd)
        preflight.check_project_state(workspace, write=False, create=False)
    except preflight.PreflightError as exc:
        raise _fail(str(exc)) from None
    return workspace


def _resolve(workspace: Path, session: str) -> str:
    from stagecrew.sessions import SessionLookupError, resolve_session

    try:
        return resolve_session(workspace, session)
    except SessionLookupError as exc:
        raise _fail(str(exc)) from None


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _print_line(console: Console, text: str, style: str) -> None:
    from stagecrew.cli.render import styled

    console.print(styled(text, style))


# -- crew sessions ----------------------------------------------------------------------------


def _live_sessions() -> set[str] | None:
    """Ids of the sessions the local supervisor runs now; None when no head answers (nothing
    is started or waited for: a listing must not cost a head start)."""
    if os.environ.get("RAY_ADDRESS"):
        return None
    from stagecrew.orchestrator.control import ControlError
    from stagecrew.orchestrator.runtime import head_alive, read_record

    record = read_record()
    if record is None or not head_alive(record):
        return None
    try:
        rows = record.client(timeout=2).ps()["sessions"]
    except (ControlError, OSError, KeyError, TypeError, ValueError):
        return None
    return {row["session"] for row in rows if not row.get("finished", True)}


def _state(summary: SessionSummary, live: set[str] | None) -> str:
    """The stop reason, or for a session without a stop record what is known of it."""
    if summary.stop_reason is not None:
        return summary.stop_reason
    if live is not None and summary.id in live:
        return "running"
    return "no stop record"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def _started(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


def sessions(
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help=f"Every session of this project (default: the {DEFAULT_LIMIT} most recent).",
        ),
    ] = False,
    limit: Annotated[
        int, typer.Option(min=1, help="How many of the most recent sessions to list.")
    ] = DEFAULT_LIMIT,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    cwd: CwdOption = None,
) -> None:
    """This project's sessions, most recently active first: how each ended, what it cost.

    Columns: id, title (the first prompt), start, duration, agent, model, how it ended, cost.
    A session without a stop record is running (when the local head says so) or was killed.
    Narrow terminals drop model, agent, duration, cost and start, in that order; ids stay
    whole."""
    from stagecrew.cli.render import Column, fitted_table
    from stagecrew.sessions import list_sessions

    workspace = _workspace(cwd)
    found = list_sessions(workspace, None if all_ else limit)
    live = _live_sessions() if any(s.stop_reason is None for s in found) else None
    if as_json:
        rows = [{**s.to_json(), "state": _state(s, live)} for s in found]
        print(json.dumps({"workspace": str(workspace), "sessions": rows}))
        return
    if not found:
        print(f"no sessions in {workspace} yet (crew run starts one)")
        return
    columns = [
        Column("id", id=True),
        Column("title", max_width=30),
        Column("started", drop=5),
        Column("duration", drop=3, justify="right"),
        Column("agent", drop=2),
        Column("model", drop=1),
        Column("ended"),
        Column("cost", drop=4, justify="right"),
    ]
    cells = [
        [
            s.id,
            ("⑂ " if s.forked_from else "") + (s.title or "(no prompt)"),
            _started(s.started),
            _duration(s.duration_s),
            s.agent,
            s.model,
            _state(s, live),
            f"${s.cost_usd:.4f}",
        ]
        for s in found
    ]
    console = _console()
    console.print(fitted_table(columns, cells, console.width))
    shown = len(found)
    if not all_ and shown == limit:
        console.print(f"[dim]the {limit} most recent; crew sessions --all lists every one[/dim]")


# -- crew show / replay -----------------------------------------------------------------------


def _transcript(workspace: Path, sid: str) -> Transcript:
    from stagecrew.layout import session_log
    from stagecrew.orchestrator.eventlog import read_events
    from stagecrew.sessions import build_transcript

    return build_transcript(sid, read_events(session_log(workspace, sid)))


def show(session: SessionArg, cwd: CwdOption = None) -> None:
    """A session's transcript from its log, each tool call folded to one line.

    Prompts, answers, tool calls (name, arguments, ok or error, duration) and the events
    beside them: notices, hooks, services, checkpoints, judge verdicts, Max Mode candidates.
    [N] marks the primary agent's steps: crew fork --at N starts after step N."""
    from stagecrew.sessions.text import render_lines

    workspace = _workspace(cwd)
    sid = _resolve(workspace, session)
    console = _console()
    try:
        for line in render_lines(_transcript(workspace, sid).entries):
            _print_line(console, line.text, line.style)
    except BrokenPipeError:
        pass


def replay(
    session: SessionArg,
    speed: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Play N times faster than it happened. Gaps longer than "
            f"{REPLAY_MAX_GAP_S:g} s are cut to {REPLAY_MAX_GAP_S:g} s (then divided by N).",
        ),
    ] = 1.0,
    cwd: CwdOption = None,
) -> None:
    """Play a session's transcript back with its original timing; Ctrl-C stops.

    The lines are crew show's; the pauses between them are the real ones divided by --speed."""
    from stagecrew.sessions.text import TextTranscript

    workspace = _workspace(cwd)
    sid = _resolve(workspace, session)
    entries = _transcript(workspace, sid).entries
    console = _console()
    text = TextTranscript()
    previous: float | None = None
    try:
        for entry in entries:
            if previous is not None:
                gap = min(max(0.0, entry.ts - previous), REPLAY_MAX_GAP_S)
                time.sleep(gap / speed)
            previous = entry.ts
            for line in text.lines(entry):
                _print_line(console, line.text, line.style)
    except KeyboardInterrupt:
        console.print()
        raise _fail("replay stopped", EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        pass


# -- crew export ------------------------------------------------------------------------------


def export(
    session: SessionArg,
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format", help="md: a readable transcript; json: the log's events as a list."
        ),
    ] = ExportFormat.md,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")
    ] = None,
    cwd: CwdOption = None,
) -> None:
    """A session as Markdown or as its JSON events, to stdout or a file."""
    from stagecrew.layout import session_log
    from stagecrew.orchestrator.eventlog import read_events
    from stagecrew.sessions import build_transcript
    from stagecrew.sessions.catalog import summarize
    from stagecrew.sessions.export import export as render

    workspace = _workspace(cwd)
    sid = _resolve(workspace, session)
    log = session_log(workspace, sid)
    envelopes = list(read_events(log))
    summary = summarize(sid, envelopes, log)
    text = render(summary, build_transcript(sid, envelopes), envelopes, fmt.value)
    if output is None:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            pass
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {output}: {exc.strerror or exc}", EXIT_FAILED) from None
    sys.stderr.write(f"crew: wrote {output} ({len(text.encode()):,} bytes)\n")


# -- crew fork --------------------------------------------------------------------------------


def fork(
    session: SessionArg,
    prompt: Annotated[
        str | None,
        typer.Argument(
            help="Your next message to the forked session (optional).", show_default=False
        ),
    ] = None,
    at: Annotated[
        int | None,
        typer.Option(
            "--at", min=1, help="Start after this step (crew show numbers them; default: the end)."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="litellm model string for the primary role.")
    ] = None,
    api_base: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint for the primary model.")
    ] = None,
    agent: Annotated[
        str | None, typer.Option(help="Agent profile (default: the one the session used).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many model turns.")] = None,
    output_format: Annotated[
        ForkOutput, typer.Option("--output-format", help="text, json or stream-json.")
    ] = ForkOutput.text,
    background: Annotated[
        bool, typer.Option("--background", help="Print the new session id and return.")
    ] = False,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (else RAY_ADDRESS, else a local head).")
    ] = None,
    cwd: CwdOption = None,
) -> None:
    """Start a new session from step N of another one (which stays as it is).

    The new session's log starts with the source's events up to the end of that step; the
    model sees the conversation up to there and nothing after it, then PROMPT if given."""
    from stagecrew.cli import preflight

    workspace = _workspace(cwd)
    source = _resolve(workspace, session)
    try:
        preflight.check_project_state(workspace, write=True, create=False)
        preflight.check_state_home(write=True)
    except preflight.PreflightError as exc:
        raise _fail(str(exc)) from None
    flags = {
        "models.primary.model": model,
        "models.primary.api_base": api_base,
        "limits.max_steps": max_steps,
        "agent": agent,
        "runtime.address": address,
    }
    raise typer.Exit(
        _run_fork(workspace, source, at, prompt, flags, output_format.value, background)
    )


def _run_fork(
    workspace: Path,
    source: str,
    at: int | None,
    prompt: str | None,
    flags: dict[str, Any],
    output_format: str,
    background: bool,
) -> int:
    """Cut, prepare (every setup error before anything is written), seed, start, follow."""
    import contextlib

    from stagecrew.actors.builder import SessionSetupError, keys_for_roles, prepare_session
    from stagecrew.config import ConfigError, load_config
    from stagecrew.messages import ModelRole, new_id
    from stagecrew.orchestrator.control import ControlError
    from stagecrew.orchestrator.runtime import RuntimeStartError, connect_configured
    from stagecrew.sessions.fork import (
        ForkError,
        fork_point,
        forked_spec,
        seed_fork,
        source_profile,
    )

    try:
        point = fork_point(workspace, source, at)
    except ForkError as exc:
        _say(str(exc))
        return EXIT_USAGE
    sid = new_id()
    try:
        config = load_config(workspace, flags=flags)
        if config.ask_policy == "ask" and not sys.stdin.isatty():
            config = config.model_copy(update={"ask_policy": "deny"})
        profile = flags.get("agent") or source_profile(point)
        prepared = prepare_session(config, prompt or "", workspace, agent=profile, session_id=sid)
    except (ConfigError, SessionSetupError) as exc:
        _say(str(exc))
        return EXIT_USAGE
    for line in prepared.notices:
        _say(f"warning: {line}")
    credentials = dict(prepared.credentials)
    with contextlib.suppress(SessionSetupError):  # the checkpoint writer has a keyless fallback
        credentials.update(keys_for_roles(config, [ModelRole.CHECKPOINT], dict(os.environ)))
    try:
        log_path = seed_fork(workspace, point, sid)
    except (ForkError, OSError) as exc:
        _say(f"cannot start the fork: {exc}")
        return EXIT_FAILED
    try:
        spec, report, messages = forked_spec(
            prepared.spec, workspace, prompt and prepared.spec.prompt
        )
        _say(
            f"forked session {sid} from {source} at step {point.step} of {point.steps}: "
            f"{messages} messages, context {report.before:,} → {report.after:,} tokens"
        )
        client = connect_configured(config.runtime, on_start=_say)
        client.start_session(
            spec,
            credentials,
            config.public_dict(),
            limits=config.limits.session_limits(),
            auto_resume=config.runtime.auto_resume,
        )
    except (ControlError, RuntimeStartError, OSError, ValueError) as exc:
        _say(f"{exc} (the fork's log is kept: crew resume {sid} starts it)")
        return EXIT_FAILED
    from stagecrew.cli.runner import follow_session, print_started

    if background:
        return print_started(sid, log_path, output_format, forked_from=source)

    return follow_session(
        client,
        sid,
        log_path,
        output_format,
        after_seq=len(point.envelopes) + 1,  # the seeded copy and its notice
        interactive_permissions=sys.stdin.isatty(),
        runtime=config.runtime,
    )


def register(app: typer.Typer) -> None:
    """Add the commands to ``crew`` (called once by ``cli/main.py``)."""
    app.command()(sessions)
    app.command()(show)
    app.command()(replay)
    app.command()(fork)
    app.command()(export)
