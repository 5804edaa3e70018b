"""What the CLI commands do: start a session, follow its events, render, and pick the exit code."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from stagecrew.config import ConfigError, find_project_root, load_config
from stagecrew.messages import Envelope, PermissionRequest, SessionFinished
from stagecrew.orchestrator.control import ControlClient, ControlError
from stagecrew.orchestrator.eventlog import read_events, session_dir

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _say(message: str) -> None:
    sys.stderr.write(f"crew: {message}\n")
    sys.stderr.flush()


def _connect(address: str | None) -> ControlClient:
    from stagecrew.orchestrator.runtime import connect

    return connect(
        address, on_start=lambda: _say("starting a local Ray head (first use; about 10 s)…")
    )


def run_session(
    prompt: str,
    flags: dict[str, Any],
    output_format: str,
    *,
    background: bool = False,
    cwd: Path | None = None,
) -> int:
    from stagecrew.cli.session import SessionSetupError, prepare_session
    from stagecrew.orchestrator.runtime import RuntimeStartError

    workspace = find_project_root(cwd or Path.cwd())
    try:
        config = load_config(workspace, flags=flags)
        if config.ask_policy == "ask" and not sys.stdin.isatty():
            # Nobody can answer a prompt: `ask` rules are refused unless a flag says otherwise.
            config = config.model_copy(update={"ask_policy": "deny"})
        prepared = prepare_session(config, prompt, workspace)
    except (ConfigError, SessionSetupError) as exc:
        _say(str(exc))
        return EXIT_USAGE
    try:
        client = _connect(config.runtime.address)
        reply = client.call(
            "start_session",
            timeout=60,
            spec=prepared.spec.model_dump(mode="json"),
            credentials=prepared.credentials,
            config=config.public_dict(),
            limits=config.limits.session_limits(),
        )
    except (ControlError, RuntimeStartError) as exc:
        _say(str(exc))
        return EXIT_FAILED
    sid = reply["session"]
    log_path = session_dir(workspace, sid) / "events.jsonl"
    if background:
        if output_format == "json":
            print(json.dumps({"session_id": sid, "log": str(log_path)}))
        else:
            print(sid)
        return EXIT_OK
    return follow_session(
        client, sid, log_path, output_format, interactive_permissions=sys.stdin.isatty()
    )


def follow_session(
    client: ControlClient,
    sid: str,
    log_path: Path,
    output_format: str,
    *,
    after_seq: int = 0,
    detach_on_interrupt: bool = False,
    interactive_permissions: bool = False,
) -> int:
    from stagecrew.cli.render import TextRenderer, result_object

    renderer = TextRenderer() if output_format == "text" else None
    finished: SessionFinished | None = None
    try:
        for msg in client.stream("follow", session=sid, after_seq=after_seq):
            if msg.get("end"):
                break
            env = Envelope.model_validate(msg)
            if output_format == "stream-json":
                print(json.dumps(msg), flush=True)
            elif renderer is not None:
                renderer.handle(env)
            if isinstance(env.body, PermissionRequest) and interactive_permissions:
                _answer_permission(client, sid, env.body)
            if isinstance(env.body, SessionFinished):
                finished = env.body
    except KeyboardInterrupt:
        if detach_on_interrupt:
            _say(f"detached; session {sid} goes on (crew attach {sid})")
            return EXIT_OK
        _say(f"cancelling session {sid}…")
        try:
            client.call("cancel", target=sid)
        except ControlError as exc:
            _say(str(exc))
        return EXIT_INTERRUPTED
    except ControlError as exc:
        _say(str(exc))
    if output_format == "json":
        print(json.dumps(result_object(sid, finished, log_path)))
    elif output_format == "text":
        _say(f"session log: {log_path}")
    if finished is None:
        return EXIT_FAILED
    return EXIT_OK if finished.stop_reason.success else EXIT_FAILED


def _answer_permission(client: ControlClient, sid: str, request: PermissionRequest) -> None:
    answer = ""
    while answer not in ("y", "a", "n"):
        sys.stderr.write(f"allow {request.summary}? [y]es once / [a]lways this session / [n]o: ")
        sys.stderr.flush()
        answer = (sys.stdin.readline() or "n").strip().lower()[:1] or "n"
    decision = {"y": "once", "a": "always", "n": "deny"}[answer]
    client.call("permission_reply", session=sid, request_id=request.request_id, decision=decision)


def _find_log(sid: str) -> Path | None:
    path = session_dir(find_project_root(Path.cwd()), sid) / "events.jsonl"
    return path if path.exists() else None


def show_logs(
    sid: str, follow: bool, output_format: str, *, detach_on_interrupt: bool = True
) -> int:
    """Replay the log from disk; with ``follow``, continue live from the supervisor."""
    from stagecrew.cli.render import TextRenderer
    from stagecrew.orchestrator.runtime import RuntimeStartError, connect

    client: ControlClient | None = None
    workspace: Path | None = None
    if follow or _find_log(sid) is None:
        try:
            client = connect(os.environ.get("RAY_ADDRESS"), start=False)
            info = client.call("session_info", session=sid)
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
    from stagecrew.orchestrator.runtime import RuntimeStartError, connect

    try:
        reply = connect(os.environ.get("RAY_ADDRESS"), start=False).call("ps", session=session)
    except (ControlError, RuntimeStartError) as exc:
        _say(str(exc))
        return EXIT_FAILED
    if as_json:
        print(json.dumps({"actors": reply["actors"], "sessions": reply["sessions"]}))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    from stagecrew.cli.render import human_size

    table = Table(title="stagecrew actors")
    for col in ("actor", "role", "parent", "state", "elapsed", "steps", "tokens", "cost", "RSS"):
        table.add_column(col)
    for row in reply["actors"]:
        table.add_row(
            row["actor_id"],
            row["role"],
            row["parent"] or "",
            row["state"],
            f"{row['elapsed_s']:.0f}s",
            str(row["steps"]),
            f"{row['tokens']:,}",
            f"${row['cost_usd']:.4f}",
            human_size(row["rss_bytes"]) if row["rss_bytes"] else "",
        )
    Console().print(table)
    return EXIT_OK


def cancel_target(target: str, kill: bool) -> int:
    from stagecrew.orchestrator.runtime import RuntimeStartError, connect

    try:
        reply = connect(os.environ.get("RAY_ADDRESS"), start=False).call(
            "cancel", target=target, kill=kill
        )
    except (ControlError, RuntimeStartError) as exc:
        _say(str(exc))
        return EXIT_FAILED
    verb = "killed" if kill else "cancelling"
    print(f"{verb}: {', '.join(reply['cancelled']) or 'nothing running'}")
    return EXIT_OK
