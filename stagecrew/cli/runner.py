"""What the CLI commands do: start a session, follow its events, render, and pick the exit code."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stagecrew.config import ConfigError, RuntimeConfig, find_project_root, load_config
from stagecrew.layout import sessions_dir
from stagecrew.messages import Envelope, ModelRole, PermissionRequest, SessionFinished
from stagecrew.orchestrator.control import ControlError
from stagecrew.orchestrator.control_api import SupervisorClient
from stagecrew.orchestrator.eventlog import read_events, session_dir
from stagecrew.orchestrator.runtime import RuntimeStartError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _say(message: str) -> None:
    sys.stderr.write(f"crew: {message}\n")
    sys.stderr.flush()


def _connect(
    runtime: RuntimeConfig | None, *, start: bool = True, quiet: bool = False
) -> SupervisorClient:
    """The supervisor's client (where ``runtime`` says: address, namespace, pool size); a
    start or a restart being waited for is said in one line (unless the caller already said
    why it is waiting)."""
    from stagecrew.orchestrator.runtime import connect_configured

    return connect_configured(
        runtime or RuntimeConfig(), start=start, on_start=None if quiet else _say
    )


def run_session(
    prompt: str,
    flags: dict[str, Any],
    output_format: str,
    *,
    background: bool = False,
    cwd: Path | None = None,
    goal: str | None = None,
    max_candidates: int | None = None,
    max_policy: str = "best",
    node_resource: str | None = None,
) -> int:
    from stagecrew.actors.builder import SessionSetupError, keys_for_roles, prepare_session

    workspace = find_project_root(cwd or Path.cwd())
    extra: dict[str, Any] = {}
    if node_resource:
        extra["placement"] = {"resource": node_resource}
    try:
        config = load_config(workspace, flags=flags)
        if config.ask_policy == "ask" and not sys.stdin.isatty():
            # Nobody can answer a prompt: `ask` rules are refused unless a flag says otherwise.
            config = config.model_copy(update={"ask_policy": "deny"})
        prepared = prepare_session(config, prompt, workspace, confirm=_confirm_on_terminal())
        _say_setup(prepared)
        spec = prepared.spec
        credentials = dict(prepared.credentials)
        roles: list[ModelRole] = []
        if goal is not None:
            spec = _with_goal(spec, goal, config)
            roles.append(ModelRole.JUDGE)
        if max_candidates is not None:
            from stagecrew.orchestrator.maxmode import MaxModeSpec

            max_spec = MaxModeSpec(
                n=max_candidates,
                policy=max_policy,
                verify_commands=config.verify_commands,
                candidate_models=[m.wire() for m in config.models.candidates],
            )
            extra["max"] = max_spec.model_dump(mode="json")
            roles += [ModelRole.CANDIDATE, ModelRole.JUDGE]
        credentials.update(keys_for_roles(config, roles, dict(os.environ)))
    except (ConfigError, SessionSetupError) as exc:
        _say(str(exc))
        return EXIT_USAGE
    try:
        client = _connect(config.runtime)
        if "max" in extra:
            sid = client.start_max_session(
                spec,
                credentials,
                config.public_dict(),
                extra["max"],
                limits=config.limits.session_limits(),
            )
        else:
            sid = client.start_session(
                spec,
                credentials,
                config.public_dict(),
                limits=config.limits.session_limits(),
                placement=extra.get("placement"),
                auto_resume=config.runtime.auto_resume,
            )
    except (ControlError, RuntimeStartError) as exc:
        _say(str(exc))
        return EXIT_FAILED
    log_path = session_dir(workspace, sid) / "events.jsonl"
    if background:
        return print_started(sid, log_path, output_format)
    return follow_session(
        client,
        sid,
        log_path,
        output_format,
        interactive_permissions=sys.stdin.isatty(),
        runtime=config.runtime,
    )


def print_started(sid: str, log_path: Path, output_format: str, **extra: str) -> int:
    """What a session started in the background prints: its id, or one JSON object."""
    if output_format == "json":
        print(json.dumps({"session_id": sid, **extra, "log": str(log_path)}))
    else:
        print(sid)
    return EXIT_OK


def _confirm_on_terminal() -> Callable[[str], bool] | None:
    """How a custom command's ``!`cmd``` under an ``ask`` rule is put to the person: a y/n
    question on the terminal, or None (the ask policy decides) when nobody is there."""
    if not sys.stdin.isatty():
        return None

    def confirm(question: str) -> bool:
        sys.stderr.write(f"crew: {question} [y/n] ")
        sys.stderr.flush()
        return (sys.stdin.readline() or "n").strip().lower()[:1] == "y"

    return confirm


def _say_setup(prepared: Any) -> None:
    """The lines the session builder has for the person: files of their setup it could not
    use, and which custom command the prompt ran."""
    for line in prepared.notices:
        _say(f"warning: {line}")
    if prepared.command is not None:
        command = prepared.command.command
        _say(f"{command.slash}: {command.label} from {command.source}")


def _with_goal(spec: Any, condition: str, config: Any) -> Any:
    """``--goal``: the spec with a ``GoalSpec`` built from the condition and the configured
    verification commands (the chat's ``/goal CONDITION`` does the same)."""
    from stagecrew.actors.builder import SessionSetupError
    from stagecrew.actors.goal import GoalUnavailableError, goal_spec_from_config, with_goal

    if not condition.strip():
        raise SessionSetupError("--goal needs a condition, e.g. --goal 'all tests pass'")
    try:
        return with_goal(spec, goal_spec_from_config(condition, config))
    except GoalUnavailableError as exc:
        raise SessionSetupError(f"--goal: {exc}") from exc


def _max_mode_report(log_path: Path) -> dict[str, Any] | None:
    """The Max Mode outcome the coordinator wrote next to the log, for the json result."""
    from stagecrew.orchestrator.maxmode import REPORT_FILE

    try:
        return json.loads((log_path.parent / REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


MAX_RECONNECTS = 3


def follow_session(
    client: SupervisorClient,
    sid: str,
    log_path: Path,
    output_format: str,
    *,
    after_seq: int = 0,
    detach_on_interrupt: bool = False,
    interactive_permissions: bool = False,
    runtime: RuntimeConfig | None = None,
) -> int:
    """Render the session's events until its stop record; the exit code is its stop reason.

    A dropped control connection (the supervisor died or restarted) is said in one line;
    the CLI reconnects (Ray restarts the supervisor on the same endpoint), reads what was
    logged meanwhile from the log file — the restarted supervisor writes the stop record of a
    session it could not keep — and follows on.
    """
    from stagecrew.cli.render import TextRenderer, result_object

    renderer = TextRenderer() if output_format == "text" else None
    finished: SessionFinished | None = None
    last = after_seq

    def show(env: Envelope, raw: dict[str, Any] | None = None) -> None:
        nonlocal finished, last
        last = max(last, env.seq)
        if output_format == "stream-json":
            print(json.dumps(raw if raw is not None else env.model_dump(mode="json")), flush=True)
        elif renderer is not None:
            renderer.handle(env)
        if isinstance(env.body, PermissionRequest) and interactive_permissions:
            _answer_permission(client, sid, env.body)
        if isinstance(env.body, SessionFinished):
            finished = env.body

    reconnects = 0
    while finished is None:
        try:
            ended = False
            for msg in client.follow(sid, after_seq=last):
                if msg.get("end"):
                    ended = True
                    break
                show(Envelope.model_validate(msg), msg)
            problem = None if ended else "the connection closed"
        except KeyboardInterrupt:
            if detach_on_interrupt:
                _say(f"detached; session {sid} goes on (crew attach {sid})")
                return EXIT_OK
            _say(f"cancelling session {sid}…")
            try:
                client.cancel(sid)
            except (ControlError, OSError) as exc:
                _say(str(exc))
            return EXIT_INTERRUPTED
        except (ControlError, OSError, ValueError) as exc:
            problem = str(exc) or type(exc).__name__
        if finished is not None or problem is None:
            break
        for env in read_events(log_path, after_seq=last):  # what the log got meanwhile
            show(env)
        if finished is not None:
            break
        if reconnects >= MAX_RECONNECTS or f"unknown session {sid}" in problem:
            _say(
                f"lost session {sid}: {problem}; its log is {log_path} "
                f"(crew resume {sid} continues it)"
            )
            break
        reconnects += 1
        _say(f"lost the connection to the supervisor ({problem}); reconnecting…")
        try:
            client = _connect(runtime, start=False, quiet=True)
        except (ControlError, RuntimeStartError) as exc:
            _say(f"the supervisor did not come back: {exc} (crew resume {sid} continues it)")
            break
    if output_format == "json":
        result = result_object(sid, finished, log_path)
        report = _max_mode_report(log_path)
        if report is not None:
            result["max_mode"] = report
        print(json.dumps(result))
    elif output_format == "text":
        _say(f"session log: {log_path}")
    if finished is None:
        return EXIT_FAILED
    return EXIT_OK if finished.stop_reason.success else EXIT_FAILED


def _answer_permission(client: SupervisorClient, sid: str, request: PermissionRequest) -> None:
    answer = ""
    while answer not in ("y", "a", "n"):
        sys.stderr.write(f"allow {request.summary}? [y]es once / [a]lways this session / [n]o: ")
        sys.stderr.flush()
        answer = (sys.stdin.readline() or "n").strip().lower()[:1] or "n"
    decision = {"y": "once", "a": "always", "n": "deny"}[answer]
    client.permission_reply(sid, request.request_id, decision)


def _find_log(sid: str) -> Path | None:
    path = session_dir(find_project_root(Path.cwd()), sid) / "events.jsonl"
    return path if path.exists() else None


def show_logs(
    sid: str, follow: bool, output_format: str, *, detach_on_interrupt: bool = True
) -> int:
    """Replay the log from disk; with ``follow``, continue live from the supervisor."""
    from stagecrew.cli.render import TextRenderer
    from stagecrew.orchestrator.runtime import connect

    client: SupervisorClient | None = None
    workspace: Path | None = None
    if follow or _find_log(sid) is None:
        try:
            client = connect(os.environ.get("RAY_ADDRESS"), start=False)
            info = client.session_info(sid)
            workspace = Path(info["workspace"])
        except (ControlError, RuntimeStartError):
            client = None
    log_path = session_dir(workspace, sid) / "events.jsonl" if workspace else _find_log(sid)
    if log_path is None or not log_path.exists():
        _say(f"no session '{sid}' here (run crew logs from the session's project directory)")
        return EXIT_USAGE
    renderer = TextRenderer() if output_format == "text" else None
    last = 0
    try:
        for env in read_events(log_path):
            last = env.seq
            if renderer:
                renderer.handle(env)
            else:
                print(env.to_json(), flush=True)
    except BrokenPipeError:
        return EXIT_OK
    if not follow or client is None:
        return EXIT_OK
    return follow_session(
        client,
        sid,
        log_path,
        output_format,
        after_seq=last,
        detach_on_interrupt=detach_on_interrupt,
    )


def show_ps(session: str | None, as_json: bool) -> int:
    """``crew ps``: the live actor tree. Ids whole in any terminal: a narrow one loses
    columns, never a character of an id (people copy them into ``crew cancel``)."""
    from rich.console import Console

    from stagecrew.cli.render import actor_table
    from stagecrew.orchestrator.runtime import connect

    try:
        reply = connect(os.environ.get("RAY_ADDRESS"), start=False).ps(session)
    except (ControlError, RuntimeStartError) as exc:
        _say(str(exc))
        return EXIT_FAILED
    if as_json:
        print(json.dumps({"actors": reply["actors"], "sessions": reply["sessions"]}))
        return EXIT_OK
    console = Console()
    console.print(actor_table(reply["actors"], width=console.width))
    return EXIT_OK


def cancel_target(target: str, kill: bool) -> int:
    from stagecrew.orchestrator.runtime import connect

    try:
        cancelled = connect(os.environ.get("RAY_ADDRESS"), start=False).cancel(target, kill=kill)
    except (ControlError, RuntimeStartError) as exc:
        _say(str(exc))
        return EXIT_FAILED
    verb = "killed" if kill else "cancelling"
    print(f"{verb}: {', '.join(cancelled) or 'nothing running'}")
    return EXIT_OK


# -- resume and the task tree -----------------------------------------------------------------


def latest_session(workspace: Path) -> str | None:
    """The project's most recently active session: the newest ``events.jsonl`` that holds a
    session (an empty or unreadable one, left by a crash, is skipped)."""
    root = sessions_dir(workspace)
    try:
        logs = [p for p in root.glob("*/events.jsonl") if p.stat().st_size > 0]
    except OSError:
        return None
    for path in sorted(logs, key=lambda p: p.stat().st_mtime, reverse=True):
        if next(read_events(path), None) is not None:
            return path.parent.name
    return None


def resume_session(
    sid: str | None,
    prompt: str | None,
    flags: dict[str, Any],
    output_format: str,
    *,
    background: bool = False,
    cwd: Path | None = None,
) -> int:
    """``crew resume [ID]`` and ``crew run --continue PROMPT``: a new run of the session.

    The transcript comes back from the event log (``history_from_events``), the person's new
    words (if any) are appended, and the context is rebuilt from the session's memory files
    (``resume_context``: checkpoint, task ledger, notes, archive) exactly as the agent rebuilds
    it near its limit. The run is started with the same session id, so the supervisor appends
    to the same ``events.jsonl``; the new actor adopts the open tasks of the earlier ones.
    """
    from stagecrew.actors.builder import SessionSetupError, keys_for_roles, prepare_session
    from stagecrew.actors.context import history_from_events, resumed_spec
    from stagecrew.messages import ModelRole

    workspace = find_project_root(cwd or Path.cwd())
    sid = sid or latest_session(workspace)
    if sid is None:
        _say(f"no session to continue in {workspace} (crew run starts one)")
        return EXIT_USAGE
    log_path = session_dir(workspace, sid) / "events.jsonl"
    history = history_from_events(read_events(log_path))
    if not history.last_seq:
        _say(f"no session '{sid}' here (run crew resume from the session's project directory)")
        return EXIT_USAGE
    try:
        config = load_config(workspace, flags=flags)
        if config.ask_policy == "ask" and not sys.stdin.isatty():
            config = config.model_copy(update={"ask_policy": "deny"})
        profile = flags.get("agent") or history.profile
        prepared = prepare_session(
            config,
            prompt or "",
            workspace,
            agent=profile,
            session_id=sid,
            confirm=_confirm_on_terminal(),
        )
        _say_setup(prepared)
    except (ConfigError, SessionSetupError) as exc:
        _say(str(exc))
        return EXIT_USAGE
    credentials = dict(prepared.credentials)
    # The checkpoint writer may use another provider; without its key it still writes (the
    # deterministic fallback), so a missing key is not a reason to refuse the resume.
    with contextlib.suppress(SessionSetupError):
        credentials.update(keys_for_roles(config, [ModelRole.CHECKPOINT], dict(os.environ)))
    try:
        client = _connect(config.runtime)
        try:
            info = client.session_info(sid)
        except ControlError:  # not known to this supervisor (it restarted): not running
            info = {"finished": True}
        if not info.get("finished", True):
            _say(f"session {sid} is still running (crew attach {sid}, or crew cancel {sid})")
            return EXIT_USAGE
        spec = prepared.spec.model_copy(update={"session_dir": str(session_dir(workspace, sid))})
        # A `/name args` prompt continues the session with the command's expansion.
        spec, report = resumed_spec(spec, history, prompt and spec.prompt)
        _say(
            f"resuming session {sid}: {len(history.messages)} messages from its log, "
            f"context rebuilt from memory ({report.before:,} → {report.after:,} tokens)"
        )
        client.start_session(
            spec,
            credentials,
            config.public_dict(),
            limits=config.limits.session_limits(),
            auto_resume=config.runtime.auto_resume,
        )
    except (ControlError, RuntimeStartError) as exc:
        _say(str(exc))
        return EXIT_FAILED
    if background:
        return print_started(sid, log_path, output_format)
    return follow_session(
        client,
        sid,
        log_path,
        output_format,
        after_seq=history.last_seq,
        interactive_permissions=sys.stdin.isatty(),
        runtime=config.runtime,
    )


def show_tasks(sid: str | None, as_json: bool, cwd: Path | None = None) -> int:
    """``crew tasks [ID]``: the session's task ledger as the agents left it (read from disk,
    so it works while the session runs, after it ended, and without a Ray head: the ledger is
    replaced atomically, so a read mid-write sees the old tree or the new one). ``--json``
    adds the subagents that joined it, with the parent task their own tasks nest under."""
    from stagecrew.memory.tasks import TaskError, TaskLedger

    workspace = find_project_root(cwd or Path.cwd())
    sid = sid or latest_session(workspace)
    if sid is None:
        _say(f"no sessions in {workspace}")
        return EXIT_USAGE
    sdir = session_dir(workspace, sid)
    if not sdir.is_dir():
        _say(f"no session '{sid}' here (run crew tasks from the session's project directory)")
        return EXIT_USAGE
    ledger = TaskLedger(sdir / "tasks")
    try:
        if as_json:
            tasks = [t.to_json() for t in ledger.tasks()]
            members = {a: vars(m) for a, m in ledger.members().items()}
            print(json.dumps({"session": sid, "tasks": tasks, "subagents": members}))
        else:
            print(f"session {sid}")
            print(ledger.render_ledger())
    except TaskError as exc:
        _say(str(exc))
        return EXIT_FAILED
    return EXIT_OK
