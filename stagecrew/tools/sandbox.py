"""Plan mode never writes: how the bash tool runs a command when ``ctx.read_only`` is set.

Two layers, best first:

* **bubblewrap.** The command runs under ``bwrap`` with the whole filesystem (workspace
  included) bind-mounted read-only, a private tmpfs on ``/tmp`` and ``/run`` (the latter so
  that Unix sockets such as docker's or postgres's, which a read-only bind does *not* protect,
  are out of reach), fresh ``/dev`` and ``/proc``, no network, its own PID/IPC namespaces, every
  capability dropped (we may be root, and root keeps ``CAP_SYS_ADMIN`` inside bwrap otherwise,
  which is enough to remount ``/`` read-write), ``--die-with-parent`` and ``--new-session``. The
  kernel enforces read-only, so *any* command may run: ``sed -i`` simply fails with EROFS.
* **an allowlist**, when bwrap is missing or does not work here (containers without user
  namespaces). Nothing enforces anything at run time, so we only run commands we can prove
  read-only from their text: every simple command (see ``shell_parse``) must be on the list,
  with no writing flags, no redirection into a file, no substitutions and nothing we failed to
  parse. Everything else raises ``SandboxRefused`` *before* anything runs.

Force the second path with ``STAGECREW_NO_BWRAP=1`` or ``sandbox.FORCE_FALLBACK = True``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from stagecrew.tools.base import ToolContext
from stagecrew.tools.shell_parse import SHELLS, SimpleCommand, split_command

__all__ = [
    "ENV_NO_BWRAP",
    "FORCE_FALLBACK",
    "READONLY_COMMANDS",
    "SandboxRefused",
    "bwrap_argv",
    "check_readonly_command",
    "readonly_argv",
    "reset_sandbox_probe",
    "sandbox_available",
]

ENV_NO_BWRAP = "STAGECREW_NO_BWRAP"
# Module switch, for tests and for users who distrust bwrap on their machine.
FORCE_FALLBACK = False

_SUFFIX = "only read-only commands are allowed without a sandbox"


class SandboxRefused(Exception):
    """The allowlist could not prove a command read-only; ``part`` is the offending piece."""

    def __init__(self, detail: str, part: str | None = None) -> None:
        self.detail = detail
        self.part = part
        super().__init__(f"plan mode: {detail}; {_SUFFIX}")


# --------------------------------------------------------------------------------------------
# bubblewrap

_probe_lock = threading.Lock()
_probe_result: bool | None = None


def _bwrap() -> str | None:
    return shutil.which("bwrap")


def _forced_off() -> bool:
    return FORCE_FALLBACK or os.environ.get(ENV_NO_BWRAP, "").strip() not in ("", "0", "false")


def sandbox_available() -> bool:
    """True when bwrap exists *and* runs here; probed once per process, the env is read always."""
    global _probe_result
    if _forced_off():
        return False
    with _probe_lock:
        if _probe_result is None:
            _probe_result = _probe()
        return _probe_result


def reset_sandbox_probe() -> None:
    """Forget the cached probe (after installing bwrap, or in tests)."""
    global _probe_result
    with _probe_lock:
        _probe_result = None


def _probe() -> bool:
    """Run ``true`` with exactly the flags we use: some kernels allow bwrap but not, say, PID ns."""
    if _bwrap() is None:
        return False
    argv = bwrap_argv("true", Path("/"), Path("/"))
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def hidden_runtime_paths(masked: tuple[str, ...] = ("/tmp", "/run")) -> list[Path]:
    """This Python's prefixes and the PATH directories that the sandbox's private /tmp and
    /run would hide (a virtualenv created under /tmp, say): bound back read-only, so the
    interpreter and the person's tools stay reachable inside the sandbox."""
    import sys

    candidates = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent]
    candidates += [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    out: list[Path] = []
    for path in candidates:
        try:
            real = path.resolve()
        except OSError:
            continue
        hidden = any(str(real) == m or str(real).startswith(m + "/") for m in masked)
        if hidden and real.exists() and real not in out:
            out.append(real)
    return out


def bwrap_argv(command: str, workspace: Path, cwd: Path) -> list[str]:
    """The argv that runs ``bash -c command`` read-only under bubblewrap, in ``cwd``."""
    bwrap = _bwrap() or "bwrap"
    workspace = Path(os.path.realpath(workspace))
    cwd = Path(os.path.realpath(cwd))
    argv = [
        bwrap,
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        "--tmpfs", "/run",
    ]  # fmt: skip
    # The tmpfs mounts above would hide a workspace living under /tmp (pytest's tmp_path, say):
    # bind it back, read-only, on top.
    for path in _unique([*hidden_runtime_paths(), workspace, cwd]):
        if path != Path("/") and path.exists():
            argv += ["--ro-bind", str(path), str(path)]
    argv += [
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        # git status would otherwise try to refresh the index and print a read-only error.
        "--setenv", "GIT_OPTIONAL_LOCKS", "0",
        "--setenv", "TMPDIR", "/tmp",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--chdir", str(cwd),
        "--",
        "bash", "-c", command,
    ]  # fmt: skip
    return argv


def _unique(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p not in out and not any(p.is_relative_to(q) for q in out):
            out.append(p)
    return out


def readonly_argv(command: str, ctx: ToolContext) -> list[str]:
    """An argv that runs ``command`` without changing anything, or ``SandboxRefused``.

    With bwrap the argv is self-contained (it chdirs itself). Without, the argv is plain
    ``bash -c`` (behind ``env GIT_OPTIONAL_LOCKS=0``) and the caller must run it in ``ctx.cwd``
    as it does for any command.
    """
    cwd = ctx.cwd or ctx.workspace
    if sandbox_available():
        return bwrap_argv(command, ctx.workspace, cwd)
    check_readonly_command(command)
    return ["env", "GIT_OPTIONAL_LOCKS=0", "bash", "-c", command]


# --------------------------------------------------------------------------------------------
# The allowlist

# A validator returns None when the arguments are read-only, else why not (for the message).
Validator = Callable[[str, list[str]], str | None]


def _always(_name: str, _args: list[str]) -> str | None:
    return None


def _short_letters(args: list[str], with_arg: str = "") -> set[str]:
    """Every short option letter used, clusters expanded, stopping inside an option's value."""
    letters: set[str] = set()
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 1:
            for ch in arg[1:]:
                letters.add(ch)
                if ch in with_arg:
                    break
    return letters


def _long_names(args: list[str]) -> set[str]:
    names: set[str] = set()
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("--") and len(arg) > 2:
            names.add(arg[2:].split("=", 1)[0])
    return names


def _refuse_flags(
    short: str = "", long: tuple[str, ...] = (), with_arg: str = "", why: str = "can modify files"
) -> Validator:
    def check(name: str, args: list[str]) -> str | None:
        letters = sorted(_short_letters(args, with_arg) & set(short))
        if letters:
            return f"'{name} -{letters[0]}' {why}"
        names = sorted(_long_names(args) & set(long))
        if names:
            return f"'{name} --{names[0]}' {why}"
        return None

    return check


_FIND_ACTIONS = frozenset(
    {"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0", "-fprintf", "-fls"}
)


def _find(name: str, args: list[str]) -> str | None:
    for arg in args:
        if arg in _FIND_ACTIONS:
            return f"'{name} {arg}' can run commands or modify files"
    return None


def _uniq(name: str, args: list[str]) -> str | None:
    positional = _positionals(args, with_arg="fsw", long_with_arg=("skip-fields", "skip-chars"))
    if len(positional) > 1:
        return f"'{name} INPUT OUTPUT' writes its second operand ('{positional[1]}')"
    return None


def _date(name: str, args: list[str]) -> str | None:
    found = _refuse_flags("s", ("set",), with_arg="dfrI", why="sets the system clock")(name, args)
    if found:
        return found
    for arg in _positionals(args, with_arg="dfr", long_with_arg=("date", "file", "reference")):
        if not arg.startswith("+"):
            return f"'{name} {arg}' sets the system clock"
    return None


def _positionals(
    args: list[str], with_arg: str = "", long_with_arg: tuple[str, ...] = ()
) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i + 1 :])
            break
        if arg.startswith("--") and len(arg) > 2:
            i += 2 if "=" not in arg and arg[2:] in long_with_arg else 1
            continue
        if arg.startswith("-") and len(arg) > 1:
            takes = [k for k, ch in enumerate(arg[1:]) if ch in with_arg]
            i += 2 if takes and takes[0] == len(arg) - 2 else 1
            continue
        out.append(arg)
        i += 1
    return out


_SED_ADDR_RE = re.compile(
    r"\s*(?:(?:\d+(?:~\d+)?|\$|/(?:\\.|[^/\\\n])*/I?)"
    r"(?:\s*,\s*(?:\d+|\$|/(?:\\.|[^/\\\n])*/I?|[+~]\d+))?)?\s*!?\s*"
)
_SED_SIMPLE = set("pdDnNPhHgGxz=lF}")
_SED_S_FLAGS = set("gpiImM0123456789")


def _sed_script_safe(script: str) -> bool:
    """Only print/delete/substitute/quit scripts: no ``w``/``r``/``e``, no ``s///w`` or ``///e``."""
    i, n = 0, len(script)
    while i < n:
        m = _SED_ADDR_RE.match(script, i)
        i = m.end() if m else i
        if i >= n:
            break
        c = script[i]
        i += 1
        if c in ";\n{":
            continue  # ``{`` opens a block: the next command follows directly
        if c == "#":
            while i < n and script[i] != "\n":
                i += 1
            continue
        if c in "qQ":
            while i < n and (script[i].isdigit() or script[i] == " "):
                i += 1
        elif c in "sy":
            if i >= n or script[i] in "\\\n":
                return False
            delim = script[i]
            i += 1
            for _ in range(2):
                while i < n and script[i] != delim:
                    i += 2 if script[i] == "\\" else 1
                if i >= n:
                    return False
                i += 1
            if c == "s":
                while i < n and script[i] in _SED_S_FLAGS:
                    i += 1
        elif c not in _SED_SIMPLE:
            return False
        while i < n and script[i] in " \t":
            i += 1
        if i < n and script[i] not in ";\n}":
            return False
    return True


def _sed(name: str, args: list[str]) -> str | None:
    scripts: list[str] = []
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            positional.extend(args[i + 1 :])
            break
        if arg.startswith("--"):
            opt, _, value = arg[2:].partition("=")
            if opt == "in-place":
                return f"'{name} --in-place' can modify files"
            if opt == "file":
                return f"'{name} --file' runs a script that cannot be checked"
            if opt == "expression":
                if not value:
                    i += 1
                    value = args[i] if i < len(args) else ""
                scripts.append(value)
            elif opt == "line-length" and not value:
                i += 1
        elif arg.startswith("-") and len(arg) > 1:
            body = arg[1:]
            for k, ch in enumerate(body):
                if ch == "i":
                    return f"'{name} -i' can modify files"
                if ch == "f":
                    return f"'{name} -f' runs a script that cannot be checked"
                if ch in "el":
                    value = body[k + 1 :]
                    if not value:
                        i += 1
                        value = args[i] if i < len(args) else ""
                    if ch == "e":
                        scripts.append(value)
                    break
                if ch not in "nErszu":
                    return f"'{name} -{ch}' is not a flag plan mode knows to be safe"
        else:
            positional.append(arg)
        i += 1
    if not scripts and positional:
        scripts.append(positional[0])
    for script in scripts:
        if not _sed_script_safe(script):
            return (
                f"'{name}' script {script!r} may write files or run commands "
                "(only print/delete/substitute scripts are allowed)"
            )
    return None


_GIT_READ = frozenset(
    {
        "status", "diff", "log", "show", "blame", "rev-parse", "ls-files", "grep", "ls-tree",
        "cat-file", "rev-list", "describe", "shortlog", "show-ref", "branch", "remote",
    }
)  # fmt: skip
_GIT_BRANCH_OK = frozenset(
    {
        "-a", "--all", "-r", "--remotes", "-v", "-vv", "--verbose", "-l", "--list",
        "--show-current", "--contains", "--no-contains", "--merged", "--no-merged",
        "--points-at", "--sort", "--format", "--color", "--no-color", "--column", "--no-column",
        "-i", "--ignore-case", "--abbrev", "--no-abbrev", "--omit-empty",
    }
)  # fmt: skip
_GIT_BRANCH_WITH_ARG = frozenset(
    {"--contains", "--no-contains", "--merged", "--no-merged", "--points-at", "--sort", "--format"}
)


def _git(name: str, args: list[str]) -> str | None:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        opt = args[i]
        if opt in ("-C", "--git-dir", "--work-tree", "--namespace"):
            i += 2
        elif opt.startswith(("--git-dir=", "--work-tree=", "--namespace=")) or opt in (
            "--no-pager",
            "-P",
            "--no-optional-locks",
            "--bare",
            "--literal-pathspecs",
            "--no-replace-objects",
        ):
            i += 1
        else:
            return f"'{name} {opt}' can change what git runs"
    if i >= len(args):
        return None  # bare ``git`` prints usage
    sub, rest = args[i], args[i + 1 :]
    if sub not in _GIT_READ:
        return f"'{name} {sub}' can modify the repository or files"
    for opt in _long_names(rest):
        if opt in ("output", "ext-diff", "open-files-in-pager", "edit"):
            return f"'{name} {sub} --{opt}' can write files or run programs"
    if sub == "grep" and "O" in _short_letters(rest, with_arg="efABCm"):
        return f"'{name} grep -O' runs a pager program"
    if sub == "branch":
        return _git_branch(name, rest)
    if sub == "remote" and any(a not in ("-v", "--verbose") for a in rest):
        return f"'{name} remote {' '.join(rest)}' can modify the repository (only listing)"
    return None


def _git_branch(name: str, args: list[str]) -> str | None:
    listing = any(a in ("-l", "--list") for a in args)
    i = 0
    while i < len(args):
        arg = args[i]
        opt = arg.split("=", 1)[0]
        if arg.startswith("-"):
            if opt not in _GIT_BRANCH_OK:
                return f"'{name} branch {arg}' can modify branches (only listing is allowed)"
            if opt in _GIT_BRANCH_WITH_ARG and "=" not in arg:
                i += 1
        elif not listing:
            return f"'{name} branch {arg}' creates a branch (only listing is allowed)"
        i += 1
    return None


def _assigns_dangerous(name: str, args: list[str]) -> str | None:
    """``read PATH`` and ``printf -v PATH …`` assign variables too."""
    for arg in args:
        if _DANGEROUS_VARS.match(arg):
            return f"'{name} {arg}' sets {arg}, which changes which programs run"
    return None


def _env(name: str, args: list[str]) -> str | None:
    if _short_letters(args, with_arg="uCS") & {"S"} or "split-string" in _long_names(args):
        return f"'{name} -S' builds a command line plan mode cannot check"
    return None


def _shell(name: str, args: list[str]) -> str | None:
    """``bash -c`` is fine (its script is checked) unless it would source profiles first."""
    letters = _short_letters(args, with_arg="oO")
    if letters & {"l", "i"} or _long_names(args) & {"login", "rcfile", "init-file"}:
        return f"'{name}' as a login or interactive shell runs profile scripts"
    return None


def _words(text: str) -> list[str]:
    """Command lists read better as prose than as 80 quoted strings."""
    return text.split()


_READ_ANY = _words("""
    ls cat head tail wc grep egrep fgrep stat pwd echo printf diff cmp comm true false test [
    which type basename dirname realpath readlink du df cut tr nl rev column paste fold expand
    unexpand od hexdump strings whoami id uname printenv seq sleep md5sum sha1sum sha224sum
    sha256sum sha384sum sha512sum b2sum cksum jq cd pushd popd dirs tac nproc ps pgrep
    : set export unset local declare readonly shift exit return wait read
""")

READONLY_COMMANDS: dict[str, Validator] = dict.fromkeys(_READ_ANY, _always)
READONLY_COMMANDS.update(
    {
        "find": _find,
        "rg": _refuse_flags(long=("pre",), why="runs a preprocessor program"),
        "file": _refuse_flags("C", ("compile",), with_arg="mfFeP", why="writes a magic file"),
        "tree": _refuse_flags("oR", ("output",), with_arg="PILH", why="writes an output file"),
        "sort": _refuse_flags(
            "o", ("output", "compress-program"), with_arg="kTSt", why="can write files"
        ),
        "uniq": _uniq,
        "date": _date,
        "sed": _sed,
        "git": _git,
        "env": _env,
        "read": _assigns_dangerous,
        "printf": _assigns_dangerous,
    }
)
# With xargs, arguments arrive on stdin where we cannot see them (``echo -delete | xargs find``),
# so only commands that have no dangerous flag at all may follow it.
_SAFE_UNDER_XARGS = frozenset(
    _words("""cat head tail wc grep egrep fgrep ls stat echo basename dirname realpath readlink
    du md5sum sha1sum sha256sum sha512sum cksum printf diff cmp""")
)
# Wrappers whose own options we understand and which run nothing but the command they wrap.
_WRAPPER_CHECKS: dict[str, Validator] = {
    "env": _env,
    "timeout": _always,
    "nice": _always,
    "command": _always,
    "exec": _always,
    "stdbuf": _always,
    "xargs": _always,
    "eval": _always,
    "trap": lambda n, a: f"'{n}' runs commands later, outside what plan mode can check",
    "time": _refuse_flags("o", ("output", "append"), with_arg="of", why="writes an output file"),
    "sudo": lambda n, a: f"'{n}' is not allowed",
    "nohup": lambda n, a: f"'{n}' detaches the command and may write nohup.out",
}
_BIN_DIRS = frozenset({"/bin", "/usr/bin", "/usr/local/bin", "/sbin", "/usr/sbin"})
# Variables that change which program runs or what a shell executes.
_DANGEROUS_VARS = re.compile(
    r"^(PATH|IFS|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|PROMPT_COMMAND|PS4|PAGER|MANPAGER|EDITOR|VISUAL"
    r"|LESSOPEN|LESSCLOSE|LD_\w*|DYLD_\w*|GIT_\w*|BASH_FUNC_\w*)$"
)
_OK_WRITE_TARGETS = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})
# Assignments the parse tree does not show as such: loop variables and ``${X:=…}`` / ``${X=…}``.
# Matched on the raw text, quotes and all: a false alarm only costs a refusal.
_HIDDEN_ASSIGNMENT_RE = re.compile(r"\b(?:for|select)\s+(\w+)|\$\{(\w+):?=")


def _program(word: str) -> str | None:
    """Bare names and system binaries only: ``./ls`` might be anything."""
    if "/" not in word:
        return word
    head, base = os.path.split(word)
    return base if head in _BIN_DIRS else None


def check_readonly_command(command: str) -> None:
    """Raise ``SandboxRefused`` unless every part of ``command`` is provably read-only."""
    parsed = split_command(command)
    for cmd in parsed.commands:
        _check_simple(cmd)
    for m in _HIDDEN_ASSIGNMENT_RE.finditer(command):
        var = m.group(1) or m.group(2)
        if _DANGEROUS_VARS.match(var):
            raise SandboxRefused(f"setting {var} changes which programs run", m.group(0))
    if parsed.unparseable:
        raise SandboxRefused(f"could not fully parse {command.strip()!r}", command)
    if parsed.has_substitution:
        raise SandboxRefused(
            f"{command.strip()!r} uses a command substitution, which cannot be checked", command
        )


def _check_simple(cmd: SimpleCommand) -> None:
    shown = cmd.text.strip() or cmd.normalized
    if cmd.unparseable:
        raise SandboxRefused(f"could not fully parse {shown!r}", shown)
    if cmd.has_substitution:
        raise SandboxRefused(f"{shown!r} uses a substitution, which cannot be checked", shown)
    for redirect in cmd.redirects:
        if redirect.writes_file and str(redirect.target) not in _OK_WRITE_TARGETS:
            raise SandboxRefused(f"'{redirect}' writes to a file", shown)
    assignments = list(cmd.assignments)
    for wrapper in cmd.wrappers:
        name = _program(wrapper[0]) if wrapper else None
        if name is None:
            raise SandboxRefused(f"'{wrapper[0]}' is not a known program", shown)
        if name == "env":
            assignments += [a for a in wrapper[1:] if "=" in a and not a.startswith("-")]
        check = _shell if name in SHELLS else _WRAPPER_CHECKS.get(name)
        if check is None:
            raise SandboxRefused(f"'{name}' is not on the read-only allowlist", shown)
        reason = check(name, wrapper[1:])
        if reason:
            raise SandboxRefused(reason, shown)
    if cmd.argv and cmd.argv[0] in ("export", "declare", "local", "readonly"):
        assignments += [a for a in cmd.argv[1:] if "=" in a]
    for assignment in assignments:
        var = assignment.split("=", 1)[0]
        if _DANGEROUS_VARS.match(var):
            raise SandboxRefused(f"setting {var} changes which programs run", shown)
    if not cmd.argv:
        return  # a bare assignment
    name = _program(cmd.argv[0])
    if name is None:
        raise SandboxRefused(f"'{cmd.argv[0]}' is not a known program", shown)
    validator = READONLY_COMMANDS.get(name)
    if validator is None:
        raise SandboxRefused(f"'{name}' is not on the read-only allowlist", shown)
    if any(w and _program(w[0]) == "xargs" for w in cmd.wrappers) and name not in _SAFE_UNDER_XARGS:
        raise SandboxRefused(
            f"'xargs {name}' takes arguments from stdin that plan mode cannot check", shown
        )
    reason = validator(name, cmd.argv[1:])
    if reason:
        raise SandboxRefused(reason, shown)
