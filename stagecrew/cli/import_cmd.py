"""``crew import claude``: what stagecrew makes of a Claude Code setup, and an optional copy.

stagecrew reads Claude Code's files live, so by default (and with ``--dry-run``) the command
only reports: every item found, how it maps, what is unsupported, what cannot be resolved.
``--write`` copies the project's part into ``.stagecrew/`` and never replaces a file (see
``stagecrew.claude.importer``). ``--json`` prints the same as one JSON object.

Exit codes: 0 when the setup was read (also when there was nothing to read: a note says so),
1 when ``--write`` left something out because something else was there (a file kept, a
server configured differently) or could not write, 2 for usage errors. The reading and
translating live in ``stagecrew.claude.importer``; this module only parses, calls and prints,
and imports nothing heavy before the command runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from stagecrew.claude.importer import ClaudeSetup, Item, WritePlan, Written

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2

import_app = typer.Typer(
    name="import",
    help="Bring another agent's setup into stagecrew.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@import_app.callback()
def _group() -> None:
    """Bring another agent's setup into stagecrew (it already reads Claude Code's files live)."""


@import_app.command("claude")
def claude(
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only report (with --write: what would be written)."),
    ] = False,
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="Copy the project's setup into .stagecrew/ (commands, skills, agents as "
            "profiles; rules, hooks and MCP servers into config.json). Never replaces a file.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    cwd: Annotated[
        Path | None, typer.Option(help="Project directory (default: the current one).")
    ] = None,
) -> None:
    """Report your Claude Code setup (the project's and yours) and how stagecrew uses it.

    Nothing runs while reading: no hook, no !`cmd` of a command, no MCP server."""
    from stagecrew.claude.importer import apply_plan, read_claude_setup, write_plan
    from stagecrew.cli.preflight import PreflightError, workspace_for

    try:
        root = workspace_for(cwd)
    except PreflightError as exc:
        sys.stderr.write(f"crew: {exc}\n")
        raise typer.Exit(EXIT_USAGE) from None
    setup = read_claude_setup(root)
    plan = write_plan(setup) if write and setup.found else None
    written = apply_plan(plan, root, dry_run=dry_run) if plan is not None else None
    if as_json:
        print(json.dumps(_as_json(setup, plan, written, dry_run), ensure_ascii=False))
    else:
        _print_text(setup, plan, written, dry_run, write)
    incomplete = written is not None and any(w.incomplete for w in written)
    raise typer.Exit(EXIT_INCOMPLETE if incomplete else EXIT_OK)


# ----------------------------------------------------------------------------- JSON


def _as_json(
    setup: ClaudeSetup, plan: WritePlan | None, written: list[Written] | None, dry_run: bool
) -> dict[str, Any]:
    out = setup.to_json()
    if not setup.found:
        out["note"] = _NOTHING
    if written is not None and plan is not None:
        out["write"] = {
            "dry_run": dry_run,
            "files": [w.to_json() for w in written],
            "permissions": list(plan.permissions),
            "notes": list(plan.notes),
        }
    return out


# ----------------------------------------------------------------------------- text

_NOTHING = "no Claude Code setup found here or in ~/.claude: nothing to import"
_LIVE = (
    "stagecrew reads these files live: nothing needs importing. To leave Claude Code's files "
    "behind, `crew import claude --write` copies the project's setup into .stagecrew/."
)
_STATUS_DRY = {"created": "would create", "updated": "would update"}


def _print_text(
    setup: ClaudeSetup,
    plan: WritePlan | None,
    written: list[Written] | None,
    dry_run: bool,
    write: bool,
) -> None:
    if not setup.found:
        print(_NOTHING[0].upper() + _NOTHING[1:] + ".")
        return
    for line in summary_lines(setup):
        print(line)
    if written is None or plan is None:
        print()
        print(_LIVE)
        return
    for line in write_lines(written, plan, dry_run):
        print(line)


def _user_dir(setup: ClaudeSetup) -> str:
    return "no home directory" if setup.home is None else f"{setup.home}/.claude"


def summary_lines(setup: ClaudeSetup) -> list[str]:
    """The report: one section per kind found, then what is unsupported and the warnings."""
    lines = [f"Claude Code setup of {setup.project_root} (and {_user_dir(setup)})"]
    for kind, row in _ROWS.items():
        items = setup.of_kind(kind)  # type: ignore[arg-type]
        if items:
            lines += ["", _heading(kind, items), *_table([row(item) for item in items])]
    for title, entries in (("Unsupported", setup.unsupported), ("Warnings", setup.warnings)):
        if entries:
            lines += ["", f"{title} ({len(entries)}):", *(f"  {entry}" for entry in entries)]
    return lines


def write_lines(written: list[Written], plan: WritePlan, dry_run: bool) -> list[str]:
    """What ``--write`` did (or would do), file by file, and the notes on the translation."""
    title = "Would write (dry run, nothing written):" if dry_run else "Written into .stagecrew/:"
    rows = []
    for w in written:
        status = _STATUS_DRY.get(w.status, w.status) if dry_run else w.status
        detail = f"{w.what}: {w.detail}" if w.detail else w.what
        rows.append((status, w.path, detail))
    lines = ["", title, *_table(rows)]
    if not written:
        lines.append("  nothing of the project's to write (user-level items stay in ~/.claude)")
    if plan.notes:
        lines += ["", "Notes:", *(f"  {note}" for note in plan.notes)]
    return lines


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows with their columns aligned (the last one as it is)."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.append(("  " + "  ".join([*cells, row[-1]])).rstrip())
    return out


def _count(items: list[Item], key: Callable[[Item], str]) -> str:
    counts: dict[str, int] = {}
    for item in items:
        counts[key(item)] = counts.get(key(item), 0) + 1
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def _instructions_heading(items: list[Item]) -> str:
    imports = sum(1 for item in items if item.details.get("imported_by"))
    more = f", and {imports} import{'s' if imports != 1 else ''}" if imports else ""
    return f"Instruction files: {len(items) - imports}{more} (read as is, into the system prompt)"


def _instruction_row(item: Item) -> tuple[str, ...]:
    by = item.details.get("imported_by")
    notes = [f"imported by {by}" if by else "", item.scope if item.scope != "project" else ""]
    if not item.maps_to.endswith("system prompt"):
        notes.append(item.maps_to)
    return item.name, "; ".join(n for n in notes if n)


def _command_row(item: Item) -> tuple[str, ...]:
    replaced = item.maps_to if item.maps_to.startswith("replaced") else ""
    return item.name, item.source, replaced or item.details.get("description", "")


def _skill_row(item: Item) -> tuple[str, ...]:
    files = item.details.get("supporting_files", 0)
    name = item.name + (f" (+{files} file{'s' if files != 1 else ''})" if files else "")
    replaced = item.maps_to if item.maps_to.startswith("replaced") else ""
    return name, item.source, replaced or item.details.get("description", "")


def _agent_row(item: Item) -> tuple[str, ...]:
    return item.name, item.source, item.maps_to


def _mcp_row(item: Item) -> tuple[str, ...]:
    names = [*item.details.get("env", ()), *item.details.get("headers", ())]
    which = "env" if item.details.get("env") else "headers"
    extra = f" ({which} {', '.join(names)})" if names else ""
    return item.name, item.details["transport"], item.details["target"] + extra


def _rule_row(item: Item) -> tuple[str, ...]:
    return item.details["action"], item.name, item.source


def _hook_row(item: Item) -> tuple[str, ...]:
    return item.name, item.details["matcher"], item.details["command"], item.source


def _plain_row(item: Item) -> tuple[str, ...]:
    return item.name, item.source


_HEADINGS: dict[str, str] = {
    "command": 'Commands: {n} (read as is: /name in the chat and crew run "/name args")',
    "skill": "Skills: {n} (read as is: names in the prompt, a body when the model asks for it)",
    "agent": "Agents: {n} (profiles for the task tool and @name)",
    "mcp_server": "MCP servers: {n} (started with each session; ${{VAR}} filled in then)",
    "permission_rule": "Permission rules: {n} ({by}; Claude Code's syntax, deny > ask > allow)",
    "hook": "Hooks: {n} ({by}; run as in Claude Code)",
    "env": "Environment: {n} (names only; not used: export them in your shell)",
    "model": "Model (not used: stagecrew's model is models.primary in its config)",
}
_ROWS: dict[str, Callable[[Item], tuple[str, ...]]] = {
    "instruction": _instruction_row,
    "command": _command_row,
    "skill": _skill_row,
    "agent": _agent_row,
    "mcp_server": _mcp_row,
    "permission_rule": _rule_row,
    "hook": _hook_row,
    "env": _plain_row,
    "model": _plain_row,
}


def _heading(kind: str, items: list[Item]) -> str:
    """A section's first line: the count, and how stagecrew uses the kind."""
    if kind == "instruction":
        return _instructions_heading(items)
    by = ""
    if kind == "permission_rule":
        by = _count(items, lambda item: item.details["action"])
    elif kind == "hook":
        by = _count(items, lambda item: item.name)
    return _HEADINGS[kind].format(n=len(items), by=by)
