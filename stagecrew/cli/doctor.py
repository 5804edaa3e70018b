"""``crew doctor``: one line per check, with the fix for each one that failed.

The checks live in ``stagecrew.doctor``; the state directories are checked here with the
same code every command runs before it starts (``cli/preflight.py``). Exit 1 when something a
session needs is broken (a missing key, an invalid config, no git, an unreachable primary
model, an unwritable state directory); warnings (no bubblewrap, no ripgrep, no node) and
skipped checks keep exit 0.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from stagecrew.doctor import Check

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LARGE_STATE_BYTES = 1 << 30
MARKS = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red"), "skip": ("-", "dim")}
NAME_WIDTH = 16


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def state_checks(workspace: Path) -> list[Check]:
    """The per-user state home and the project's state directory: writable, and how big."""
    from stagecrew.cli import preflight
    from stagecrew.cli.render import human_size
    from stagecrew.doctor import Check
    from stagecrew.layout import sessions_dir, state_dir

    checks: list[Check] = []
    home = preflight.state_home_path()
    try:
        preflight.check_state_home(write=True)
        checks.append(Check("state home", "ok", f"{home} is writable"))
    except preflight.PreflightError as exc:
        checks.append(
            Check(
                "state home",
                "fail",
                str(exc),
                f"fix the permissions, or point {preflight.STATE_HOME_VAR} at a writable directory",
            )
        )
    state = state_dir(workspace)
    if not state.exists():
        checks.append(
            Check("project state", "ok", f"{state} not created yet (the first crew run makes it)")
        )
        return checks
    try:
        preflight.check_project_state(workspace, write=True, create=False)
    except preflight.PreflightError as exc:
        checks.append(
            Check("project state", "fail", str(exc), f"make {state} writable for this user")
        )
        return checks
    size = _size(state)
    try:
        count = sum(1 for d in sessions_dir(workspace).iterdir() if d.is_dir())
    except OSError:
        count = 0
    detail = f"{state} is writable: {human_size(size)} in {count} session(s)"
    if size >= LARGE_STATE_BYTES:
        checks.append(
            Check(
                "project state",
                "warn",
                detail,
                f"remove old sessions ({sessions_dir(workspace)}/<id>; crew sessions --all "
                "lists them) and worktrees no longer used",
            )
        )
    else:
        checks.append(Check("project state", "ok", detail))
    return checks


def all_checks(workspace: Path) -> list[Check]:
    """Every check, in the order a person reads them: machine, head, state, models."""
    from stagecrew.cli import preflight
    from stagecrew.doctor import environment_checks, head_check, model_checks

    address = os.environ.get("RAY_ADDRESS") or None
    return [
        *environment_checks(),
        head_check(preflight.state_home_path(), address),
        *state_checks(workspace),
        *model_checks(workspace),
    ]


def _print(checks: list[Check], workspace: Path) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[dim]crew doctor · {escape(str(workspace))}[/dim]")
    for check in checks:
        mark, style = MARKS[check.status]
        line = f"[{style}]{mark}[/{style}] {escape(check.name.ljust(NAME_WIDTH))} "
        line += escape(check.detail)
        if check.fix and check.status in ("fail", "warn"):
            line += f" [{style}]→ fix: {escape(check.fix)}[/{style}]"
        console.print(line)
    failures = sum(c.status == "fail" for c in checks)
    warnings = sum(c.status == "warn" for c in checks)
    if failures:
        console.print(
            f"[red]{failures} failure(s), {warnings} warning(s): fix the failures "
            "before a session[/red]"
        )
    else:
        console.print(f"[green]ready[/green] ({warnings} warning(s))")


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    cwd: Annotated[
        Path | None, typer.Option(help="Project directory (default: the current one).")
    ] = None,
) -> None:
    """Check this machine and project for sessions: one line per check, a fix for each failure.

    Python and packages, git, bubblewrap, ripgrep, node/npx, the Ray head and its control
    port, the state directories, the config, each model role's key (names only) and whether
    its provider answers. Exit 1 when something a session needs is broken."""
    from stagecrew.cli import preflight

    try:
        workspace = preflight.workspace_for(cwd)
    except preflight.PreflightError as exc:
        sys.stderr.write(f"crew: {exc}\n")
        raise typer.Exit(EXIT_USAGE) from None
    checks = all_checks(workspace)
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        report = {
            "ok": not failed,
            "workspace": str(workspace),
            "failures": sum(c.status == "fail" for c in checks),
            "warnings": sum(c.status == "warn" for c in checks),
            "checks": [c.to_json() for c in checks],
        }
        print(json.dumps(report))
    else:
        _print(checks, workspace)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add ``crew doctor`` (called once by ``cli/main.py``)."""
    app.command()(doctor)
