"""A custom command's body turned into the prompt the model receives.

Placeholders, as Claude Code and OpenCode write them:

* ``$ARGUMENTS`` — everything after the name; ``$1 … $N`` — the arguments split like a shell
  would (a missing one is empty); ``$ARGUMENTS[N]`` — the same, counted from 0. A body with
  no placeholder gets the arguments appended (``ARGUMENTS: …``), so they are never lost.
* ``@path`` — the file's content, inlined; the path is relative to the project root and must
  stay inside it (the workspace checks of the file tools). A name that is not a file (``@param``
  in prose) stays as written. Inside code spans and code blocks ``@`` is text.
* ``!`cmd``` — run in the project root when the command is expanded, its output inlined (a
  failing command's output too, with its exit status). Inside a code block it is text.

Both ``!`cmd``` and ``@path`` go through the session's permission rules first, as a ``bash``
and a ``read`` call would: a ``deny`` fails the whole command naming the rule; an ``ask``
follows the ask policy, or asks the person through ``confirm`` where one is at the terminal.

The arguments are substituted in one pass *after* the body has been taken apart, so text the
person passes can never become a new ``!`cmd``` or ``@path``; inside a ``!`cmd``` each argument
is shell-quoted, so it stays one word for the shell.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stagecrew.commands.catalog import CustomCommand
from stagecrew.tools.base import ToolContext, WorkspaceError
from stagecrew.tools.paths import resolve_path, safe_read_bytes
from stagecrew.tools.permissions import Decision, PermissionChecker

__all__ = ["CommandExpansionError", "Confirm", "Expansion", "expand_command", "split_arguments"]

# Asked with a one-line question ("/name runs !`git log`: allow it?"); True means go ahead.
Confirm = Callable[[str], bool]

SHELL_TIMEOUT_S = 30.0
_OUTPUT_LIMIT = 30_000
_FILE_LIMIT = 100_000

_PLACEHOLDER = re.compile(r"\$ARGUMENTS\[(\d+)\]|\$ARGUMENTS\b|\$([1-9]\d*)")
_PIECES = re.compile(
    r"(?P<fence>^[ \t]*(?P<ticks>```+)[^\n]*\n.*?^[ \t]*(?P=ticks)[ \t]*$)"
    r"|!`(?P<shell>[^`\n]+)`"
    r"|(?P<code>`[^`\n]+`)"
    r"|(?<![\w@./\\-])@(?P<file>[\w.~/$-][^\s`'\"<>()\[\]{},;]*)",
    re.MULTILINE | re.DOTALL,
)


class CommandExpansionError(ValueError):
    """A command that cannot be expanded; one line naming the command and the cause."""


@dataclass(frozen=True)
class Expansion:
    """What running ``/name args`` means: the prompt text, plus what the command asks of the
    run (its pre-approved tools as allow rules, a model, an agent profile)."""

    command: CustomCommand
    arguments: str
    text: str
    allow_rules: tuple[str, ...]
    model: str | None
    agent: str | None
    ran: tuple[str, ...] = ()  # the ``!`` commands that ran, in order


def split_arguments(arguments: str) -> list[str]:
    """The arguments as a shell would split them; unbalanced quotes fall back to blanks."""
    try:
        return shlex.split(arguments)
    except ValueError:
        return arguments.split()


def expand_command(
    command: CustomCommand,
    arguments: str,
    workspace: Path,
    *,
    checker: PermissionChecker,
    confirm: Confirm | None = None,
    timeout_s: float = SHELL_TIMEOUT_S,
) -> Expansion:
    """Expand ``command`` with ``arguments``; ``CommandExpansionError`` when a ``!`cmd``` or an
    ``@path`` is refused or fails. ``checker`` holds the rules of the run (the command's own
    pre-approvals included) and its ask policy."""
    root = Path(os.path.realpath(workspace))
    argv = split_arguments(arguments)
    ran: list[str] = []

    def args_in(text: str, quote: bool) -> str:
        def one(m: re.Match[str]) -> str:
            if m.group(0).startswith("$ARGUMENTS") and m.group(1) is None:
                return " ".join(shlex.quote(a) for a in argv) if quote else arguments
            index = int(m.group(1)) if m.group(1) is not None else int(m.group(2)) - 1
            value = argv[index] if 0 <= index < len(argv) else ""
            return shlex.quote(value) if quote and value else value

        return _PLACEHOLDER.sub(one, text)

    def piece(m: re.Match[str]) -> str:
        if m.group("shell") is not None:
            line = args_in(m.group("shell"), quote=True).strip()
            output = _run_shell(command, line, root, checker, confirm, timeout_s)
            ran.append(line)
            return output
        if m.group("file") is not None:
            return _inline_file(
                command, args_in(m.group("file"), quote=False), root, checker, confirm
            )
        return args_in(m.group(0), quote=False)

    out: list[str] = []
    last = 0
    for m in _PIECES.finditer(command.body):
        out.append(args_in(command.body[last : m.start()], quote=False))
        out.append(piece(m))
        last = m.end()
    out.append(args_in(command.body[last:], quote=False))
    text = "".join(out).strip()
    if arguments and not _PLACEHOLDER.search(command.body):
        text += f"\n\nARGUMENTS: {arguments}"
    return Expansion(
        command=command,
        arguments=arguments,
        text=text,
        allow_rules=command.allow_rules,
        model=command.model,
        agent=command.agent,
        ran=tuple(ran),
    )


def _permit(
    command: CustomCommand,
    what: str,
    decision: Decision,
    confirm: Confirm | None,
) -> None:
    """Raise unless ``decision`` (already through the ask policy) lets ``what`` go ahead."""
    if decision.action == "allow":
        return
    if decision.action == "ask" and confirm is not None:
        if confirm(f"{command.slash} runs {what}: allow it?"):
            return
        raise CommandExpansionError(f"{command.slash}: {what} was refused by you")
    by = f"rule '{decision.rule}'" if decision.rule else "the permission rules"
    verb = "is denied by" if decision.action == "deny" else "needs approval under"
    detail = "" if decision.action == "deny" else " and nobody can give it here"
    raise CommandExpansionError(
        f"{command.slash} ({command.source}): {what} {verb} {by}{detail}; the command was not run"
    )


def _run_shell(
    command: CustomCommand,
    line: str,
    root: Path,
    checker: PermissionChecker,
    confirm: Confirm | None,
    timeout_s: float,
) -> str:
    _permit(command, f"!`{line}`", checker.check("bash", {"command": line}, root), confirm)
    proc = subprocess.Popen(
        ["bash", "-c", line],
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so a timeout kills what it started
    )
    try:
        raw, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise CommandExpansionError(
            f"{command.slash}: !`{line}` did not finish within {timeout_s:g} s; the command "
            "was not run"
        ) from None
    output = raw.decode("utf-8", errors="replace").rstrip("\n")
    if len(output) > _OUTPUT_LIMIT:
        output = output[:_OUTPUT_LIMIT] + f"\n[… cut at {_OUTPUT_LIMIT:,} characters]"
    if proc.returncode:
        output += f"\n[exit status {proc.returncode}]"
    return output


def _inline_file(
    command: CustomCommand,
    raw: str,
    root: Path,
    checker: PermissionChecker,
    confirm: Confirm | None,
) -> str:
    written = f"@{raw}"
    raw = raw.rstrip(".:!?")  # sentence punctuation after a path is not part of it
    tail = written[len(raw) + 1 :]
    ctx = ToolContext(workspace=root)
    try:
        path = resolve_path(ctx, raw)
    except WorkspaceError as exc:
        raise CommandExpansionError(f"{command.slash} ({command.source}): @{raw}: {exc}") from None
    if not path.is_file():
        return written  # not a file: prose such as "@param" or a mention
    _permit(command, f"@{raw}", checker.check("read", {"file_path": raw}, root), confirm)
    try:
        data = safe_read_bytes(ctx, path)
    except (OSError, WorkspaceError) as exc:
        raise CommandExpansionError(f"{command.slash}: @{raw} cannot be read: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandExpansionError(
            f"{command.slash}: @{raw} is not a UTF-8 text file; it cannot be inlined"
        ) from None
    if len(text) > _FILE_LIMIT:
        text = text[:_FILE_LIMIT] + f"\n[… cut at {_FILE_LIMIT:,} characters]"
    return f'<file path="{raw}">\n{text.rstrip()}\n</file>{tail}'
