"""``crew``: the command line.

Kept light on purpose: nothing here imports ray or litellm, so ``crew --help`` answers in a
fraction of a second and ``crew run`` reaches its first model request fast. The CLI talks to
the supervisor over the control channel (see ``orchestrator.control``).
"""

from __future__ import annotations

import enum
import importlib
import json
import sys
import types
from pathlib import Path
from typing import Annotated

import typer

from stagecrew import __version__

app = typer.Typer(
    name="crew",
    help="stagecrew: a terminal coding agent for long autonomous work, built on Ray actors.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class OutputFormat(enum.StrEnum):
    text = "text"
    json = "json"
    stream_json = "stream-json"


class MaxPolicyOption(enum.StrEnum):
    best = "best"
    first_pass = "first-pass"


# Options shared by the commands that start agent runs (run, resume).
ModelOption = Annotated[str | None, typer.Option(help="litellm model string for the primary role.")]
ApiBaseOption = Annotated[
    str | None, typer.Option(help="OpenAI-compatible endpoint for the primary model.")
]
MaxStepsOption = Annotated[int | None, typer.Option(help="Stop after this many model turns.")]
OutputFormatOption = Annotated[
    OutputFormat, typer.Option("--output-format", help="text, json or stream-json.")
]
BackgroundOption = Annotated[
    bool, typer.Option("--background", help="Print the session id and return; the work goes on.")
]
AddressOption = Annotated[
    str | None, typer.Option(help="Ray cluster address (else RAY_ADDRESS, else a local head).")
]
CwdOption = Annotated[
    Path | None, typer.Option(help="Workspace directory (default: the current one).")
]


def _flags(
    model: str | None,
    api_base: str | None,
    max_steps: int | None,
    agent: str | None,
    address: str | None,
    ask_policy: str | None = None,
) -> dict[str, object]:
    """Command-line options as config key paths (the highest configuration layer)."""
    return {
        "models.primary.model": model,
        "models.primary.api_base": api_base,
        "limits.max_steps": max_steps,
        "agent": agent,
        "ask_policy": ask_policy,
        "runtime.address": address,
    }


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _err(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    sys.stderr.write(f"crew: {message}\n")
    return typer.Exit(code)


def _preflight(
    cwd: Path | None = None, *, project: str | None = "create", home: str | None = "write"
) -> None:
    """The directories the command will use, checked before it starts anything (exit 2).

    ``project``, the project's state dir (session logs): ``"create"`` (a new session: made if
    missing, then written to), ``"write"`` (a resume: written to if there), ``"read"``, or
    ``None``. ``home``, the per-user state home (the head record): ``"write"``, ``"read"`` or
    ``None``."""
    from stagecrew.cli import preflight

    try:
        if project is not None:
            workspace = preflight.workspace_for(cwd)
            preflight.check_project_state(
                workspace, write=project != "read", create=project == "create"
            )
        if home is not None:
            preflight.check_state_home(write=home == "write")
    except preflight.PreflightError as exc:
        raise _err(str(exc)) from None


def _check_option_text(options: dict[str, str | None]) -> None:
    from stagecrew.cli.prompt_input import undecodable_option

    for name, value in options.items():
        problem = undecodable_option(name, value)
        if problem:
            raise _err(problem)


def _read_prompt(
    prompt: str | None, prompt_file: Path | None, goal: str | None, *, continuing: bool
) -> tuple[str, str | None]:
    """The prompt from its sources (argument or ``-``, ``--prompt-file``, piped stdin) and the
    ``--goal`` text, both decoded as UTF-8 with one warning line for replaced bytes. The rules
    are in ``stagecrew.cli.prompt_input``."""
    from stagecrew.cli.prompt_input import (
        NO_PROMPT,
        PromptError,
        decode_argument,
        replacement_warning,
        resolve_prompt,
        write_warnings,
    )

    def on_terminal() -> None:
        sys.stderr.write("crew: reading the prompt from the terminal; end it with Ctrl-D\n")
        sys.stderr.flush()

    try:
        resolved = resolve_prompt(prompt, prompt_file, on_terminal_read=on_terminal)
    except PromptError as exc:
        message = str(exc)
        if continuing and message == NO_PROMPT:
            message += " (crew resume continues without a new message)"
        raise _err(message) from None
    if goal is not None:
        decoded = decode_argument(goal)
        warning = replacement_warning([("--goal", decoded)])
        if warning:
            resolved.warnings.append(warning)
        goal = decoded.text
    write_warnings(resolved)
    return resolved.text, goal


def _version(value: bool) -> None:
    if value:
        print(f"stagecrew {__version__}")
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    model: ModelOption = None,
    api_base: ApiBaseOption = None,
    max_steps: MaxStepsOption = None,
    agent: Annotated[str | None, typer.Option(help="Agent profile to start the chat with.")] = None,
    permission_mode: Annotated[
        str | None,
        typer.Option("--permission-mode", help="What `ask` rules become: ask, allow or deny."),
    ] = None,
    address: AddressOption = None,
    cwd: CwdOption = None,
) -> None:
    """Run `crew` to chat in this repository, `crew run "PROMPT"` for a headless session, or
    `crew demo` to see it work. The options before a command are the chat's (as
    `claude --model`); before `run` or `resume` they are that command's defaults."""
    options = {
        "--model": model,
        "--api-base": api_base,
        "--agent": agent,
        "--permission-mode": permission_mode,
        "--address": address,
    }
    _check_option_text(options)
    flags = _flags(model, api_base, max_steps, agent, address, ask_policy=permission_mode)
    given = [name for name, value in {**options, "--max-steps": max_steps}.items() if value]
    if ctx.invoked_subcommand is None:
        # The chat needs a person at a terminal; piped or scripted, `crew` keeps printing help.
        if sys.stdin.isatty() and sys.stdout.isatty():
            _preflight(cwd)
            from stagecrew.cli.chat import run_chat

            raise typer.Exit(run_chat(flags, cwd))
        typer.echo(ctx.get_help())
        return
    if (given or cwd) and ctx.invoked_subcommand not in ("run", "resume"):
        shown = ", ".join(given + (["--cwd"] if cwd else []))
        raise _err(f"{shown} before `{ctx.invoked_subcommand}` has no effect on it")
    ctx.obj = {"flags": flags, "cwd": cwd}


def _with_root(
    ctx: typer.Context, flags: dict[str, object], cwd: Path | None
) -> tuple[dict[str, object], Path | None]:
    """A command's flags over the ones given before it (``crew --model M run …``)."""
    root = ctx.obj or {}
    merged = {k: v if v is not None else root.get("flags", {}).get(k) for k, v in flags.items()}
    return merged, cwd if cwd is not None else root.get("cwd")


@app.command()
def run(
    ctx: typer.Context,
    prompt: Annotated[
        str | None,
        typer.Argument(
            help="What the agent should do; - reads it from stdin. Text piped into crew is "
            "added after it (a pipe that stays silent for 1 s is not read; "
            "STAGECREW_STDIN_WAIT_S changes the wait).",
            show_default=False,
        ),
    ] = None,
    model: ModelOption = None,
    api_base: ApiBaseOption = None,
    max_steps: MaxStepsOption = None,
    agent: Annotated[
        str | None, typer.Option(help="Agent profile (build, plan, or your own).")
    ] = None,
    output_format: OutputFormatOption = OutputFormat.text,
    background: BackgroundOption = False,
    permission_mode: Annotated[
        str | None,
        typer.Option(
            "--permission-mode", help="What `ask` rules become headless: ask, allow or deny."
        ),
    ] = None,
    address: AddressOption = None,
    cwd: CwdOption = None,
    goal: Annotated[
        str | None,
        typer.Option(
            "--goal",
            help="Stop only when an independent judge confirms this condition "
            "(verify_commands run first and overrule it).",
        ),
    ] = None,
    max_candidates: Annotated[
        int | None,
        typer.Option(
            "--max",
            min=1,
            max=64,
            help="Max Mode: N candidates in parallel git worktrees; the best verified patch "
            "is applied to your tree.",
        ),
    ] = None,
    max_policy: Annotated[
        MaxPolicyOption,
        typer.Option(
            "--max-policy",
            help="best: wait for every candidate and rank; first-pass: take the first one "
            "that passes verification and cancel the rest.",
        ),
    ] = MaxPolicyOption.best,
    node_resource: Annotated[
        str | None,
        typer.Option(
            "--node-resource",
            help="On a cluster: run the agent on a node with this Ray resource; the repository "
            "is shipped there and the result comes back as a patch.",
        ),
    ] = None,
    continue_: Annotated[
        bool,
        typer.Option(
            "--continue",
            help="Continue this project's latest session with PROMPT as your next message.",
        ),
    ] = False,
    prompt_file: Annotated[
        Path | None,
        typer.Option(
            "--prompt-file",
            help="Read the prompt from FILE (after PROMPT, if given); for prompts longer than "
            "a command line takes.",
        ),
    ] = None,
) -> None:
    """Run one task headless and exit 0 only if it ends in success."""
    from stagecrew.cli.runner import resume_session, run_session

    if node_resource and max_candidates is not None:
        raise _err("--node-resource places one agent; Max Mode places its own candidates")
    if continue_ and (goal is not None or max_candidates is not None):
        raise _err("--continue cannot be combined with --goal or --max")
    _check_option_text(
        {
            "--model": model,
            "--api-base": api_base,
            "--agent": agent,
            "--permission-mode": permission_mode,
            "--address": address,
            "--node-resource": node_resource,
        }
    )
    # The prompt first (a usage error must not create anything), then the directories.
    text, goal = _read_prompt(prompt, prompt_file, goal, continuing=continue_)
    flags = _flags(model, api_base, max_steps, agent, address, ask_policy=permission_mode)
    flags, cwd = _with_root(ctx, flags, cwd)
    _preflight(cwd, project="write" if continue_ else "create")
    if continue_:
        code = resume_session(
            None, text, flags, output_format.value, background=background, cwd=cwd
        )
        raise typer.Exit(code)
    code = run_session(
        text,
        flags,
        output_format.value,
        background=background,
        cwd=cwd,
        goal=goal,
        max_candidates=max_candidates,
        max_policy=max_policy.value,
        node_resource=node_resource,
    )
    raise typer.Exit(code)


@app.command()
def resume(
    ctx: typer.Context,
    session: Annotated[
        str | None, typer.Argument(help="Session id (default: this project's latest session).")
    ] = None,
    model: ModelOption = None,
    api_base: ApiBaseOption = None,
    max_steps: MaxStepsOption = None,
    agent: Annotated[
        str | None, typer.Option(help="Agent profile (default: the one the session used).")
    ] = None,
    output_format: OutputFormatOption = OutputFormat.text,
    background: BackgroundOption = False,
    address: AddressOption = None,
    cwd: CwdOption = None,
) -> None:
    """Continue a stopped session (crashed, killed, cancelled or done) where it left off.

    The context is rebuilt from its event log and memory files; its task tree is kept."""
    from stagecrew.cli.runner import resume_session

    _check_option_text(
        {"--model": model, "--api-base": api_base, "--agent": agent, "--address": address}
    )
    flags, cwd = _with_root(ctx, _flags(model, api_base, max_steps, agent, address), cwd)
    _preflight(cwd, project="write")
    raise typer.Exit(
        resume_session(session, None, flags, output_format.value, background=background, cwd=cwd)
    )


@app.command()
def tasks(
    session: Annotated[
        str | None, typer.Argument(help="Session id (default: this project's latest session).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    cwd: Annotated[
        Path | None, typer.Option(help="Workspace directory (default: the current one).")
    ] = None,
) -> None:
    """A session's task tree (T1, T1.1 …) with each task's status."""
    from stagecrew.cli.runner import show_tasks

    _preflight(cwd, project="read", home=None)

    raise typer.Exit(show_tasks(session, as_json, cwd=cwd))


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Keep the demo repository afterwards.")] = True,
) -> None:
    """Fix a failing test in a bundled sample repo with real actors and a scripted model."""
    from stagecrew.cli.demo import run_demo

    _preflight(project=None)

    raise typer.Exit(run_demo(keep=keep))


@app.command()
def down() -> None:
    """Stop the local Ray head that stagecrew started (and every session on it)."""
    from stagecrew.orchestrator.runtime import down as stop

    _preflight(project=None)

    print(stop())


@app.command()
def ps(
    session: Annotated[str | None, typer.Argument(help="Only this session.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The live actor tree: state, elapsed, steps, tokens, cost, memory."""
    from stagecrew.cli.runner import show_ps

    _preflight(project=None, home="read")
    raise typer.Exit(show_ps(session, as_json))


@app.command()
def logs(
    session: Annotated[str, typer.Argument(help="Session id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep following new events.")
    ] = False,
    output_format: Annotated[OutputFormat, typer.Option("--output-format")] = OutputFormat.text,
) -> None:
    """Show a session's events from its log (and follow it live with -f)."""
    from stagecrew.cli.runner import show_logs

    _preflight(project="read", home="read")

    raise typer.Exit(show_logs(session, follow, output_format.value))


@app.command()
def attach(session: Annotated[str, typer.Argument(help="Session id.")]) -> None:
    """Replay what you missed, then follow live. Ctrl-C detaches; the work goes on."""
    from stagecrew.cli.runner import show_logs

    _preflight(project="read", home="read")

    raise typer.Exit(show_logs(session, True, "text", detach_on_interrupt=True))


@app.command()
def cancel(target: Annotated[str, typer.Argument(help="A session id or an actor id.")]) -> None:
    """Cancel a session or an actor (children first, then a kill after a grace period)."""
    from stagecrew.cli.runner import cancel_target

    _preflight(project=None, home="read")

    raise typer.Exit(cancel_target(target, kill=False))


@app.command()
def kill(target: Annotated[str, typer.Argument(help="A session id or an actor id.")]) -> None:
    """Kill a session's actors or one actor at once."""
    from stagecrew.cli.runner import cancel_target

    _preflight(project=None, home="read")

    raise typer.Exit(cancel_target(target, kill=True))


# `crew mcp list|add|remove` (stagecrew/cli/mcp_cmd.py).
from stagecrew.cli.mcp_cmd import mcp_app  # noqa: E402

app.add_typer(mcp_app, name="mcp")
from stagecrew.cli.import_cmd import import_app  # noqa: E402

app.add_typer(import_app, name="import")

# `crew memory show|search|edit` (stagecrew/cli/memory_cmd.py).
from stagecrew.cli.memory_cmd import memory_app  # noqa: E402

app.add_typer(memory_app, name="memory")

# `crew sessions|show|replay|fork|export` (stagecrew/cli/sessions_cmd.py).
from stagecrew.cli import sessions_cmd  # noqa: E402

sessions_cmd.register(app)

# `crew doctor` (stagecrew/cli/doctor.py).
from stagecrew.cli import doctor  # noqa: E402

doctor.register(app)

# `crew rewind` (stagecrew/cli/rewind_cmd.py).
from stagecrew.cli import rewind_cmd  # noqa: E402

rewind_cmd.register(app)


# Loaded by typer's help renderer for a markup mode (Markdown, with markdown-it) and a
# pretty-traceback feature crew does not use: about a quarter of what `crew --help` costs.
HELP_UNUSED_MODULES = ("rich.markdown", "rich.traceback")


class _LoadOnUse(types.ModuleType):
    """A stand-in module whose names are classes that load the real module when called, so
    a help-only process skips the import and any other use still gets the real thing."""

    def __getattr__(self, attr: str) -> type:
        if attr.startswith("__"):
            raise AttributeError(attr)
        name = self.__name__

        def create(cls: type, *args: object, **kwargs: object) -> object:
            if sys.modules.get(name) is self:
                del sys.modules[name]
            real = importlib.import_module(name)
            return getattr(real, attr)(*args, **kwargs)

        return type(attr, (), {"__new__": create})


def _skip_help_only_imports(argv: list[str]) -> None:
    """When the command line asks for help (the process prints it and exits), stand in for
    the modules help rendering imports but never uses."""
    words = argv[: argv.index("--")] if "--" in argv else argv
    if "--help" in words:
        for name in HELP_UNUSED_MODULES:
            sys.modules.setdefault(name, _LoadOnUse(name))


def main() -> None:
    # A process started in the background inherits SIGINT as ignored, and Python then leaves
    # it ignored; Ctrl-C (cancel a run, detach from attach) must work however crew started.
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    _skip_help_only_imports(sys.argv[1:])
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()


__all__ = ["app", "json", "main"]
