"""Split a shell command line into every simple command it would run.

Permission rules and the plan-mode allowlist reason about *commands*, but the model sends *shell
text*: ``cd x && sudo env A=1 timeout 5 rm -rf / | tee log`` hides ``rm -rf /`` behind a list,
three wrappers and a pipe. Matching the raw string against ``rm -rf *`` would miss it, so this
module turns the text into the flat list of simple commands bash would execute, with wrappers
peeled off (keeping every intermediate form, because ``sudo rm`` runs both sudo *and* rm), shell
strings (``sh -c``, ``eval``, ``env -S``, ``find -exec``) parsed recursively, and redirections
attached to the command they apply to (including ones inherited from ``( … ) > f``).

The parser is ``bashlex``. When it cannot parse something (``case``, ``$(( ))``, odd quoting) we
fall back to a crude tokenizer and mark every command ``unparseable``: callers must then treat
the command as the strictest case, because the structure we report may not be what bash runs.
Anything whose *name* is only known at run time (``$cmd``, ``$(echo rm) x``, ``sh`` reading a
script from stdin) is marked ``unparseable`` too, for the same reason.

The wrappers known here are the common ones (``setsid``, ``flock``, ``script -c``, ``su -c``,
``watch``, ``ssh host cmd``, ``parallel`` …). A list of wrappers is never complete, so the
permission checker does not rely on it alone: a deny rule also matches from any word of a
command that names the denied program (see ``stagecrew.tools.permissions``). Knowing a wrapper
here still matters for ``ask`` and ``allow`` rules and for plan mode, which refuses wrappers it
cannot vouch for.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import bashlex

__all__ = [
    "SHELLS",
    "WRAPPERS",
    "GitCall",
    "ParsedCommand",
    "Redirect",
    "SimpleCommand",
    "git_call",
    "git_canonical",
    "split_command",
    "unquote",
]

# Shells whose ``-c`` string is parsed recursively (and which read a script from stdin without).
SHELLS = frozenset(
    {"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "posh", "rbash", "yash", "fish", "csh",
     "tcsh"}
)  # fmt: skip

# ``sh -c "sh -c '…'"`` nests; past this depth we stop looking and call it unparseable.
_MAX_DEPTH = 6

_OUTPUT_OPS = frozenset({">", ">>", ">|", "&>", "&>>", "<>", ">&"})
_INPUT_OPS = frozenset({"<", "<<", "<<-", "<<<", "<&"})


@dataclass(frozen=True)
class Redirect:
    """One redirection; ``target`` is a file name, a file descriptor number, or ``-`` (close)."""

    op: str
    target: str | int | None
    fd: int | None = None
    heredoc: str | None = None

    @property
    def is_fd_dup(self) -> bool:
        """``2>&1``, ``>&2``, ``3>&-``: rewires descriptors, opens no file."""
        return self.op in (">&", "<&") and (
            isinstance(self.target, int) or self.target in ("-", None)
        )

    @property
    def is_input(self) -> bool:
        """Reads only: ``< file``, here-documents, here-strings."""
        return self.op in _INPUT_OPS

    @property
    def writes_file(self) -> bool:
        """True when this redirection opens a file for writing (``<>`` included: it creates)."""
        return not self.is_fd_dup and not self.is_input and self.op in _OUTPUT_OPS

    def __str__(self) -> str:
        fd = "" if self.fd is None else str(self.fd)
        if self.heredoc is not None:
            return f"{fd}{self.op}{self.target}"
        sep = "" if self.is_fd_dup else " "
        return f"{fd}{self.op}{sep}{self.target}"


@dataclass
class SimpleCommand:
    """One command bash would exec, after wrappers and shell strings were peeled off.

    ``stages`` is the argv at every unwrapping level, outermost first: for
    ``sudo env A=1 rm x`` it is ``[[sudo, env, A=1, rm, x], [env, A=1, rm, x], [rm, x]]``. Rules
    are checked against every stage because each of those programs really runs. ``argv`` is the
    last stage. ``span`` indexes the string this command was parsed from: the top-level command,
    or the inner string of ``sh -c`` / ``eval`` when ``depth`` > 0.
    """

    argv: list[str]
    text: str
    span: tuple[int, int]
    redirects: list[Redirect] = field(default_factory=list)
    stages: list[list[str]] = field(default_factory=list)
    wrappers: list[list[str]] = field(default_factory=list)
    assignments: list[str] = field(default_factory=list)
    has_substitution: bool = False
    unparseable: bool = False
    depth: int = 0

    def __post_init__(self) -> None:
        if not self.stages:
            self.stages = [list(self.argv)]

    @property
    def name(self) -> str:
        """The program name as typed (``/bin/rm`` stays ``/bin/rm``); empty for ``A=1`` alone."""
        return self.argv[0] if self.argv else ""

    @property
    def normalized(self) -> str:
        """Arguments joined by single spaces: what bash permission patterns are matched against."""
        return " ".join(self.argv)

    def __str__(self) -> str:
        return self.normalized


@dataclass
class ParsedCommand:
    """Every simple command in a command line, plus whole-line flags callers must respect."""

    source: str
    commands: list[SimpleCommand]
    has_substitution: bool = False
    unparseable: bool = False
    error: str | None = None

    def __iter__(self) -> Iterator[SimpleCommand]:
        return iter(self.commands)

    def __len__(self) -> int:
        return len(self.commands)


def split_command(command: str) -> ParsedCommand:
    """Parse ``command`` into its simple commands; never raises."""
    return _parse(command, depth=0)


# --------------------------------------------------------------------------------------------
# Parsing


def _parse(source: str, depth: int) -> ParsedCommand:
    if _is_blank(source):
        return ParsedCommand(source=source, commands=[])
    if depth > _MAX_DEPTH:
        cmd = SimpleCommand(argv=[], text=source, span=(0, len(source)), unparseable=True)
        return ParsedCommand(source, [cmd], unparseable=True, error="nested too deeply")
    try:
        trees = bashlex.parse(source)
        rewritten: _Rewrites | None = None
    except Exception as first_error:
        rewritten = _rewrite_for_bashlex(source)
        try:
            if rewritten is None:
                raise first_error
            trees = bashlex.parse(rewritten.text)
        except Exception:
            return _fallback(source, depth, f"{type(first_error).__name__}: {first_error}")
    walker = _Walker(source, depth, rewritten)
    try:
        for tree in trees:
            walker.walk(tree, [])
        if rewritten is not None:
            walker.verify_rewrites()
    except _RewriteMismatch as exc:
        return _fallback(source, depth, str(exc))
    except Exception as exc:  # an AST shape we did not expect: be strict, not crash
        return _fallback(source, depth, f"{type(exc).__name__}: {exc}")
    cmds = walker.commands
    return ParsedCommand(
        source=source,
        commands=cmds,
        has_substitution=walker.has_substitution or any(c.has_substitution for c in cmds),
        unparseable=walker.unparseable or any(c.unparseable for c in cmds),
    )


def _is_blank(source: str) -> bool:
    """Empty or only comments: bashlex crashes on these, and there is nothing to run."""
    return all(not line.strip() or line.lstrip().startswith("#") for line in source.splitlines())


class _RewriteMismatch(Exception):
    """A same-length rewrite did not land where we meant it to; the parse cannot be trusted."""


@dataclass
class _Rewrites:
    """Text bashlex can parse, with the positions we changed (same length as the original)."""

    text: str
    time_at: set[int]
    heredoc_quotes_at: set[int]
    heredoc_close_at: set[int] = field(default_factory=set)


_TIME_PLACEHOLDER = "_tm_"
_CMD_START = r"(?:^|(?<=[;&|({!\n])|(?<=\bthen)|(?<=\bdo)|(?<=\belse))"
_TIME_RE = re.compile(_CMD_START + r"(\s*)time(?=\s)", re.MULTILINE)
_DBL_OPEN_RE = re.compile(_CMD_START + r"(\s*)\[\[(?=\s)", re.MULTILINE)
_DBL_CLOSE_RE = re.compile(r"(?<=\s)\]\](?=\s|$|[;&|)])", re.MULTILINE)
_QUOTED_HEREDOC_RE = re.compile(r"<<-?[ \t]*(['\"])([A-Za-z_][A-Za-z0-9_]*)\1")


def _rewrite_for_bashlex(source: str) -> _Rewrites | None:
    """Same-length edits around constructs bashlex 0.18 rejects but bash accepts.

    ``time cmd`` (a keyword bashlex does not implement), ``[[ … ]]`` and quoted here-document
    delimiters (``<<'EOF'``, ubiquitous in model-written commands). Keeping the length keeps every
    span valid for the original text. The quote removal is the only edit that could change how
    the line is structured, so ``_Walker.verify_rewrites`` checks afterwards that every edited
    spot really was a here-document delimiter; otherwise the parse is thrown away.
    """
    text = source
    time_at: set[int] = set()
    quotes_at: set[int] = set()

    def _time(m: re.Match[str]) -> str:
        time_at.add(m.start() + len(m.group(1)))
        return m.group(1) + _TIME_PLACEHOLDER

    text = _TIME_RE.sub(_time, text)
    text = _DBL_OPEN_RE.sub(lambda m: m.group(1) + " [", text)
    text = _DBL_CLOSE_RE.sub("] ", text)

    close_at: set[int] = set()

    def _heredoc(m: re.Match[str]) -> str:
        quotes_at.add(m.start(1))
        close_at.add(m.end() - 1)
        inner = m.group(0)
        return inner.replace(m.group(1), " ")

    text = _QUOTED_HEREDOC_RE.sub(_heredoc, text)
    if text == source:
        return None
    return _Rewrites(text, time_at, quotes_at, close_at)


class _Walker:
    """Collects simple commands from bashlex trees, inheriting redirections from compounds."""

    def __init__(self, source: str, depth: int, rewrites: _Rewrites | None) -> None:
        self.source = source
        self.depth = depth
        self.rewrites = rewrites
        self.commands: list[SimpleCommand] = []
        self.has_substitution = False
        self.unparseable = False
        self._heredoc_delims_seen: set[int] = set()
        # Substitutions we detected but could not look inside (``${x:-$(…)}``, heredoc bodies).
        self._opaque = 0

    # -- tree traversal ----------------------------------------------------------------------

    def walk(self, node: Any, inherited: list[Redirect]) -> None:
        kind = getattr(node, "kind", None)
        if kind == "command":
            self._command(node, inherited)
        elif kind == "compound":
            redirects = inherited + [self._redirect(r) for r in getattr(node, "redirects", [])]
            for child in node.list:
                self.walk(child, redirects)
        elif kind in ("word", "assignment"):
            # Words outside a command: ``for i in $(ls)``, ``case $(x) in``.
            self._scan_word(node)
        elif kind == "redirect":
            self._redirect(node)
        else:
            for child in getattr(node, "parts", None) or []:
                self.walk(child, inherited)

    def _command(self, node: Any, inherited: list[Redirect]) -> None:
        argv: list[str] = []
        assignments: list[str] = []
        redirects = list(inherited)
        has_sub = False
        dynamic_name = False
        opaque_before = self._opaque
        # Substitutions are walked while scanning words; keep the outer command listed first.
        insert_at = len(self.commands)
        for part in node.parts:
            if part.kind == "word":
                subs = self._scan_word(part)
                has_sub = has_sub or subs
                if not argv and (subs or _has_parameter(part)):
                    dynamic_name = True
                argv.append(self._word_value(part))
            elif part.kind == "assignment" and not argv:
                has_sub = self._scan_word(part) or has_sub
                assignments.append(self._word_value(part))
            elif part.kind == "assignment":
                has_sub = self._scan_word(part) or has_sub
                argv.append(self._word_value(part))
            elif part.kind == "redirect":
                redirect = self._redirect(part)
                if redirect.op in ("<<", "<<-") and self._heredoc_expands(part):
                    has_sub = True
                redirects.append(redirect)
        start, end = node.pos
        if self.rewrites is not None and end in self.rewrites.heredoc_close_at:
            end += 1  # ``<<'EOF'``: bashlex saw ``<< EOF `` and stopped before the blank
        text = self.source[start:end]
        self.commands[insert_at:insert_at] = _from_argv(
            argv,
            text=text,
            span=(start, end),
            redirects=redirects,
            assignments=assignments,
            has_substitution=has_sub,
            unparseable=dynamic_name or self._opaque > opaque_before,
            depth=self.depth,
        )

    def _word_value(self, word: Any) -> str:
        """The word after quote removal, computed from the source text.

        bashlex's own ``word`` gets concatenated quotes wrong (``'it'\\''s'`` stays quoted,
        ``''x''`` keeps a pair), and a wrong argv makes permission patterns miss.
        """
        value: str = word.word
        if self.rewrites and word.pos[0] in self.rewrites.time_at and value == _TIME_PLACEHOLDER:
            return "time"
        start, end = word.pos
        if 0 <= start < end <= len(self.source):
            return unquote(self.source[start:end])
        return value

    def _scan_word(self, node: Any) -> bool:
        """Walk a word's parts for substitutions; their commands are collected too."""
        found = False
        for part in getattr(node, "parts", None) or []:
            kind = part.kind
            if kind in ("commandsubstitution", "processsubstitution"):
                found = True
                self.has_substitution = True
                self.walk(part.command, [])
            elif kind == "parameter":
                value = getattr(part, "value", "") or ""
                if "$(" in value or "`" in value or "<(" in value:
                    # ``${x:-$(rm y)}``: bashlex does not parse inside; we cannot see the command.
                    found = True
                    self.has_substitution = True
                    self._opaque += 1
                    self.unparseable = True
            else:
                found = self._scan_word(part) or found
        return found

    def _redirect(self, node: Any) -> Redirect:
        op: str = node.type
        fd = node.input if isinstance(getattr(node, "input", None), int) else None
        output = getattr(node, "output", None)
        heredoc = getattr(node, "heredoc", None)
        if output is None:
            target: str | int | None = None
        elif isinstance(output, int | str):
            target = output
        else:
            if self._scan_word(output):
                self.has_substitution = True
            target = self._word_value(output)
            if self.rewrites is not None and op in ("<<", "<<-"):
                self._heredoc_delims_seen.add(output.pos[0])
        if op in (">&", "<&") and isinstance(target, str) and target.isdigit():
            target = int(target)
        body = None
        if heredoc is not None:
            body = heredoc.value
            delim = str(target)
            if body.endswith(delim):
                body = body[: -len(delim)].rstrip("\n")
        return Redirect(op=op, target=target, fd=fd, heredoc=body)

    def _heredoc_expands(self, node: Any) -> bool:
        """An unquoted delimiter means ``$( )`` in the body runs; we cannot see what it runs."""
        heredoc = getattr(node, "heredoc", None)
        output = getattr(node, "output", None)
        if heredoc is None or output is None or isinstance(output, int | str):
            return False
        raw = self.source[output.pos[0] : output.pos[1]]
        start = output.pos[0]
        quoted = any(c in raw for c in "'\"\\") or (
            self.rewrites is not None
            and any(start - 1 <= q <= start + 1 for q in self.rewrites.heredoc_quotes_at)
        )
        if quoted:
            return False
        body: str = heredoc.value
        if "$(" in body or "`" in body:
            self.has_substitution = True
            self._opaque += 1
            self.unparseable = True
            return True
        return False

    def verify_rewrites(self) -> None:
        """Every quote we blanked must sit right before a delimiter bashlex saw as a heredoc."""
        assert self.rewrites is not None
        for q in self.rewrites.heredoc_quotes_at:
            # ``<< 'EOF'`` became ``<<  EOF ``: the delimiter word starts one char later.
            if q + 1 not in self._heredoc_delims_seen:
                raise _RewriteMismatch(f"quoted here-document at {q} did not parse as one")


_ANSI_ESCAPES = {
    "n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b",
    "f": "\f", "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?",
}  # fmt: skip


def unquote(raw: str) -> str:
    """Bash quote removal for one word: ``'…'``, ``"…"``, ``\\x``, ``$'…'`` and ``$"…"``.

    Expansions (``$x``, ``$(…)``, backticks) are kept as written; callers learn about them from
    the parse tree, not from this string.
    """
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == "\\":
            if i + 1 < n and raw[i + 1] != "\n":
                out.append(raw[i + 1])
            i += 2
        elif c == "'":
            j = raw.find("'", i + 1)
            j = n if j == -1 else j
            out.append(raw[i + 1 : j])
            i = j + 1
        elif c == '"':
            i = _unquote_double(raw, i + 1, out)
        elif c == "$" and raw.startswith("$'", i):
            i = _unquote_ansi(raw, i + 2, out)
        elif c == "$" and raw.startswith('$"', i):
            i = _unquote_double(raw, i + 2, out)
        elif (c == "$" and raw.startswith("$(", i)) or c == "`":
            j = _skip_substitution(raw, i)
            out.append(raw[i:j])
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _unquote_double(raw: str, i: int, out: list[str]) -> int:
    n = len(raw)
    while i < n and raw[i] != '"':
        c = raw[i]
        if c == "\\" and i + 1 < n and raw[i + 1] in '$`"\\\n':
            if raw[i + 1] != "\n":
                out.append(raw[i + 1])
            i += 2
        elif (c == "$" and raw.startswith("$(", i)) or c == "`":
            j = _skip_substitution(raw, i)
            out.append(raw[i:j])
            i = j
        else:
            out.append(c)
            i += 1
    return i + 1


def _unquote_ansi(raw: str, i: int, out: list[str]) -> int:
    n = len(raw)
    while i < n and raw[i] != "'":
        c = raw[i]
        if c == "\\" and i + 1 < n:
            nxt = raw[i + 1]
            if nxt in _ANSI_ESCAPES:
                out.append(_ANSI_ESCAPES[nxt])
                i += 2
                continue
            m = re.match(r"x([0-9a-fA-F]{1,2})|([0-7]{1,3})", raw[i + 1 :])
            if m:
                out.append(chr(int(m.group(1), 16) if m.group(1) else int(m.group(2), 8)))
                i += 1 + m.end()
                continue
            out.append(c + nxt)
            i += 2
        else:
            out.append(c)
            i += 1
    return i + 1


def _skip_substitution(raw: str, i: int) -> int:
    """End index of the ``$( … )`` or backtick substitution starting at ``i`` (quote-aware)."""
    n = len(raw)
    if raw[i] == "`":
        j = i + 1
        while j < n and raw[j] != "`":
            j += 2 if raw[j] == "\\" else 1
        return min(j + 1, n)
    depth, j = 0, i + 1
    while j < n:
        c = raw[j]
        if c == "\\":
            j += 2
            continue
        if c == "'":
            k = raw.find("'", j + 1)
            j = n if k == -1 else k + 1
            continue
        if c == '"':
            j += 1
            while j < n and raw[j] != '"':
                j += 2 if raw[j] == "\\" else 1
            j += 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return n


def _has_parameter(word: Any) -> bool:
    """``$cmd args``: the program is only known at run time."""
    return any(p.kind == "parameter" for p in getattr(word, "parts", None) or [])


# --------------------------------------------------------------------------------------------
# From an argv to simple commands: wrappers, shells, eval, find -exec


def _from_argv(
    argv: list[str],
    *,
    text: str,
    span: tuple[int, int],
    redirects: list[Redirect],
    assignments: list[str],
    has_substitution: bool,
    unparseable: bool,
    depth: int,
) -> list[SimpleCommand]:
    """Build the command(s) one argv stands for; shell strings expand into several."""
    inner, stages, wrappers, opaque = _unwrap(argv)
    if not inner and not stages:
        stages = [[]]
    base = SimpleCommand(
        argv=inner,
        text=text,
        span=span,
        redirects=list(redirects),
        stages=stages,
        wrappers=wrappers,
        assignments=list(assignments),
        has_substitution=has_substitution,
        unparseable=unparseable or opaque,
        depth=depth,
    )
    name = os.path.basename(inner[0]) if inner else ""
    script: str | None = None
    if name in SHELLS:
        script, reads_stdin = _shell_script(inner[1:])
        if script is None and reads_stdin:
            fed = [r for r in redirects if r.op in ("<<", "<<-", "<<<")]
            if fed and fed[-1].op == "<<<" and isinstance(fed[-1].target, str):
                script = fed[-1].target  # ``bash <<< 'cmd'``: the script is right there
            elif fed and fed[-1].heredoc is not None:
                script = fed[-1].heredoc
            else:
                base.unparseable = True  # ``curl … | sh``: the commands arrive on stdin, unseen
    elif name == "eval" and len(inner) > 1:
        script = " ".join(inner[1:])
    elif name == "trap" and len(inner) > 2 and not inner[1].startswith("-"):
        script = inner[1]  # ``trap 'rm x' EXIT`` runs its first argument later
    out: list[SimpleCommand]
    if script is not None:
        nested = _parse(script, depth + 1)
        out = []
        for cmd in nested.commands:
            cmd.stages = [*stages, *cmd.stages]
            cmd.wrappers = [*wrappers, list(inner), *cmd.wrappers]
            cmd.redirects = [*redirects, *cmd.redirects]
            cmd.assignments = [*assignments, *cmd.assignments]
            cmd.has_substitution = cmd.has_substitution or has_substitution
            cmd.unparseable = cmd.unparseable or base.unparseable or nested.unparseable
            out.append(cmd)
        if not out:  # ``bash -c ''`` or only comments: keep the shell itself visible
            out = [base]
        elif nested.has_substitution:
            for cmd in out:
                cmd.has_substitution = True
    else:
        out = [base]
    if name == "find":
        out.extend(_find_exec_commands(inner, base, depth))
    return out


_GIT_GLOBAL_WITH_ARG = frozenset(
    {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--attr-source", "--super-prefix",
     "--config-env"}
)  # fmt: skip


@dataclass
class GitCall:
    """A git command line as git reads it: the global options, then the subcommand.

    ``config`` holds ``-c name=value`` settings by lower-cased name (``-c name`` alone is
    ``true``); ``config_env`` the ``--config-env=name=VAR`` ones, whose value comes from the
    environment. Both matter because ``-c alias.x=push`` turns ``git x`` into ``git push``.
    """

    canonical: list[str]
    config: dict[str, str] = field(default_factory=dict)
    config_env: dict[str, str] = field(default_factory=dict)
    directories: list[str] = field(default_factory=list)

    @property
    def subcommand(self) -> str | None:
        return self.canonical[1] if len(self.canonical) > 1 else None


def git_call(argv: list[str]) -> GitCall | None:
    """Read ``argv`` as a git invocation, or None when the program is not git."""
    if not argv or os.path.basename(argv[0]) != "git":
        return None
    call = GitCall(canonical=[])
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        opt, eq, attached = argv[i].partition("=")
        takes = opt in _GIT_GLOBAL_WITH_ARG and not eq
        value = (argv[i + 1] if i + 1 < len(argv) else "") if takes else attached
        if opt == "-c":
            name, has_value, setting = value.partition("=")
            call.config[name.lower()] = setting if has_value else "true"
        elif opt == "--config-env":
            name, _, variable = value.partition("=")
            call.config_env[name.lower()] = variable
        elif opt == "-C":
            call.directories.append(value)
        i += 2 if takes else 1
    call.canonical.extend(["git", *argv[i:]])
    return call


def git_canonical(argv: list[str]) -> list[str] | None:
    """``git -C x --no-pager push`` → ``git push``: global options hide the subcommand from
    patterns like ``git push *``. None when ``argv`` is not git or has no global options."""
    call = git_call(argv)
    if call is None or len(call.canonical) == len(argv):
        return None
    return call.canonical


def _find_exec_commands(argv: list[str], parent: SimpleCommand, depth: int) -> list[SimpleCommand]:
    """``find … -exec rm {} \\;`` runs ``rm``: surface it as a command of its own."""
    out: list[SimpleCommand] = []
    i = 1
    while i < len(argv):
        if argv[i] in ("-exec", "-execdir", "-ok", "-okdir"):
            j = i + 1
            while j < len(argv) and argv[j] not in (";", "+"):
                j += 1
            inner = argv[i + 1 : j]
            if inner:
                out.extend(
                    _from_argv(
                        inner,
                        text=parent.text,
                        span=parent.span,
                        redirects=[],
                        assignments=[],
                        has_substitution=parent.has_substitution,
                        unparseable=parent.unparseable,
                        depth=depth,
                    )
                )
            i = j
        i += 1
    return out


def _unwrap(argv: list[str]) -> tuple[list[str], list[list[str]], list[list[str]], bool]:
    """Peel wrappers: returns (inner argv, stages, wrapper prefixes, opaque)."""
    stages = [list(argv)] if argv else []
    wrappers: list[list[str]] = []
    current = list(argv)
    opaque = False
    while current:
        name = os.path.basename(current[0])
        handler = _WRAPPER_HANDLERS.get(name)
        if handler is None:
            break
        rest = current[1:]
        result = handler(rest)
        if result is None:
            break
        start, replacement = result
        inner = replacement if replacement is not None else rest[start:]
        if not inner:
            break
        wrappers.append(current[: 1 + start])
        current = list(inner)
        stages.append(list(current))
        if len(stages) > 32:  # ``env env env …``: absurd, not worth following
            opaque = True
            break
    return current, stages, wrappers, opaque


def _shell_script(args: list[str]) -> tuple[str | None, bool]:
    """For ``bash [opts] -c SCRIPT …``: (SCRIPT, False). Without ``-c``: (None, reads_stdin)."""
    has_c = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if arg in ("-o", "+o", "--rcfile", "--init-file", "-O", "+O"):
            i += 2
            continue
        if arg.startswith("--"):
            if arg in ("--version", "--help"):
                return None, False
            i += 1
            continue
        if len(arg) > 1 and arg[0] in "-+":
            if "c" in arg[1:] and arg[0] == "-":
                has_c = True
            if "s" in arg[1:] and arg[0] == "-" and not has_c:
                return None, True
            i += 1
            continue
        break
    positional = args[i:]
    if has_c:
        return (positional[0] if positional else ""), False
    return None, not positional


# Each handler gets the wrapper's arguments and returns (index where the wrapped command starts,
# optional replacement argv) or None when the wrapper runs nothing (``command -v x``).
_Handler = Any


def _skip_options(
    args: list[str],
    short_with_arg: str = "",
    long_with_arg: tuple[str, ...] = (),
    numeric_flags: bool = False,
) -> int:
    """Index of the first non-option argument, getopt style (clusters, ``--x=y``, ``--``)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1
        if arg.startswith("--"):
            if "=" not in arg and arg[2:] in long_with_arg:
                i += 2
            else:
                i += 1
            continue
        if arg.startswith("-") and len(arg) > 1:
            if numeric_flags and arg[1:].lstrip("+-").isdigit():
                i += 1
                continue
            body = arg[1:]
            consumed_next = False
            for k, ch in enumerate(body):
                if ch in short_with_arg:
                    consumed_next = k == len(body) - 1
                    break
            i += 2 if consumed_next else 1
            continue
        return i
    return i


def _h_sudo(args: list[str]) -> tuple[int, None] | None:
    for arg in args:
        if arg in ("-e", "--edit", "-l", "--list", "-v", "--validate", "-k", "-K"):
            return None
        if not arg.startswith("-"):
            break
    return _skip_options(
        args,
        short_with_arg="ugCDhprtTUR",
        long_with_arg=(
            "user", "group", "close-from", "chdir", "host", "prompt", "role", "type",
            "command-timeout", "other-user", "chroot",
        ),
    ), None  # fmt: skip


def _h_env(args: list[str]) -> tuple[int, list[str] | None] | None:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if arg in ("-S", "--split-string") or arg.startswith(("-S", "--split-string=")):
            if arg in ("-S", "--split-string"):
                split, i = (args[i + 1] if i + 1 < len(args) else ""), i + 2
            else:
                split, i = arg.split("=", 1)[1] if "=" in arg else arg[2:], i + 1
            try:
                words = shlex.split(split)
            except ValueError:
                words = split.split()
            rest = args[i:]
            j = 0
            while j < len(words) and "=" in words[j] and not words[j].startswith("-"):
                j += 1
            return i, [*words[j:], *rest]
        if arg in ("-u", "-C", "--unset", "--chdir", "-P"):
            i += 2
            continue
        if arg == "-" or arg.startswith("-"):
            i += 1
            continue
        if "=" in arg:
            i += 1
            continue
        break
    return i, None


def _h_timeout(args: list[str]) -> tuple[int, None] | None:
    i = _skip_options(args, short_with_arg="sk", long_with_arg=("signal", "kill-after"))
    return (i + 1 if i < len(args) else i), None  # skip DURATION


def _h_nice(args: list[str]) -> tuple[int, None] | None:
    return _skip_options(
        args, short_with_arg="n", long_with_arg=("adjustment",), numeric_flags=True
    ), None


def _h_nohup(args: list[str]) -> tuple[int, None] | None:
    return (1 if args[:1] == ["--"] else 0), None


def _h_xargs(args: list[str]) -> tuple[int, list[str] | None] | None:
    i = _skip_options(
        args,
        short_with_arg="adEILnPs",
        long_with_arg=(
            "arg-file", "delimiter", "max-args", "max-procs", "max-chars", "process-slot-var",
        ),
    )  # fmt: skip
    if i >= len(args):
        return i, ["echo"]  # xargs with no command runs echo
    return i, None


def _h_command(args: list[str]) -> tuple[int, None] | None:
    for arg in args:
        if not arg.startswith("-") or arg == "--":
            break
        if "v" in arg or "V" in arg:
            return None  # ``command -v x`` only looks x up
    return _skip_options(args), None


def _h_time(args: list[str]) -> tuple[int, None] | None:
    return _skip_options(args, short_with_arg="of", long_with_arg=("output", "format")), None


def _h_exec(args: list[str]) -> tuple[int, None] | None:
    return _skip_options(args, short_with_arg="a"), None


def _h_stdbuf(args: list[str]) -> tuple[int, None] | None:
    return _skip_options(
        args, short_with_arg="ioe", long_with_arg=("input", "output", "error")
    ), None


def _as_shell(script: str) -> list[str]:
    """A command string a wrapper hands to ``/bin/sh -c``: parsed like ``sh -c`` would be."""
    return ["sh", "-c", script]


def _option_value(args: list[str], short: str, long: tuple[str, ...]) -> str | None:
    """The value of ``-c VALUE`` / ``-qcVALUE`` / ``--command=VALUE`` anywhere in ``args`` (GNU
    getopt permutes, so an option may follow the operands), or None when it is not given."""
    for i, arg in enumerate(args):
        if arg == "--":
            return None
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name in long:
                return value if eq else (args[i + 1] if i + 1 < len(args) else "")
            continue
        if arg.startswith("-") and len(arg) > 1:
            at = arg.find(short, 1)
            if at != -1:
                rest = arg[at + 1 :]
                return rest if rest else (args[i + 1] if i + 1 < len(args) else "")
    return None


def _h_plain(args: list[str]) -> tuple[int, None] | None:
    """Wrappers whose options take no argument: ``setsid -w cmd``, ``unbuffer -p cmd``."""
    i = _skip_options(args)
    return (i, None) if i < len(args) else None


def _h_busybox(args: list[str]) -> tuple[int, None] | None:
    """``busybox rm f`` runs the applet named by its first argument."""
    return (0, None) if args and not args[0].startswith("-") else None


def _h_ionice(args: list[str]) -> tuple[int, None] | None:
    i = _skip_options(
        args, short_with_arg="cnpPu", long_with_arg=("class", "classdata", "pid", "pgid", "uid")
    )
    acts_on_pids = any(
        a[:2] in ("-p", "-P", "-u") or a[2:] in ("pid", "pgid", "uid") for a in args[:i]
    )
    return None if acts_on_pids or i >= len(args) else (i, None)


def _h_chrt(args: list[str]) -> tuple[int, None] | None:
    i = _skip_options(
        args,
        short_with_arg="TPD",
        long_with_arg=("sched-runtime", "sched-period", "sched-deadline"),
    )
    if any(
        a in ("-p", "--pid", "-m", "--max") or (a[:1] == "-" and "p" in a[1:2]) for a in args[:i]
    ):
        return None
    if i < len(args) and args[i].isdigit():
        i += 1  # the priority
    return (i, None) if i < len(args) else None


def _h_taskset(args: list[str]) -> tuple[int, None] | None:
    i = _skip_options(args)
    if any(a in ("-p", "--pid") or (a[:1] == "-" and a[1:2] != "-" and "p" in a) for a in args[:i]):
        return None
    i += 1  # the mask or CPU list
    return (i, None) if i < len(args) else None


def _h_flock(args: list[str]) -> tuple[int, list[str] | None] | None:
    """``flock [opts] FILE cmd …`` or ``flock [opts] FILE -c 'cmd'``; ``flock FD`` runs nothing."""
    i = _skip_options(
        args,
        short_with_arg="wEc",
        long_with_arg=("timeout", "wait", "conflict-exit-code", "command"),
    )
    script = _option_value(args[:i], "c", ("command",))
    if script is not None:
        return len(args), _as_shell(script)
    i += 1  # the lock file
    if i < len(args) and args[i] in ("-c", "--command"):
        return len(args), _as_shell(args[i + 1] if i + 1 < len(args) else "")
    return (i, None) if i < len(args) else None


def _h_script(args: list[str]) -> tuple[int, list[str]] | None:
    """``script -qc 'cmd' /dev/null`` runs ``cmd`` through a shell; without ``-c`` an
    interactive shell reads its commands from stdin (which we cannot see)."""
    script = _option_value(args, "c", ("command",))
    return len(args), _as_shell(script) if script is not None else ["sh"]


def _h_su(args: list[str]) -> tuple[int, list[str]] | None:
    """``su -c 'cmd' user`` (and ``runuser``); ``runuser -u user -- cmd`` runs cmd directly."""
    user = _option_value(args, "u", ("user",))
    if user is not None:
        i = _skip_options(
            args, short_with_arg="ugGsw", long_with_arg=("user", "group", "supp-group", "shell")
        )
        return i, list(args[i:]) if i < len(args) else ["sh"]
    script = _option_value(args, "c", ("command", "session-command"))
    if script is not None:
        return len(args), _as_shell(script)
    return len(args), ["sh"]  # an interactive shell reading stdin


def _h_sg(args: list[str]) -> tuple[int, list[str]] | None:
    """``sg GROUP -c 'cmd'`` or ``sg GROUP 'cmd'``: the command goes to ``/bin/sh -c``."""
    rest = [a for a in args if a != "-"]
    if len(rest) < 2:
        return None
    tail = rest[1:]
    if tail[0] == "-c":
        tail = tail[1:]
    return len(args), _as_shell(" ".join(tail))


def _h_doas(args: list[str]) -> tuple[int, None] | None:
    i = _skip_options(args, short_with_arg="Cu")
    return (i, None) if i < len(args) else None


def _h_chroot(args: list[str]) -> tuple[int, list[str] | None] | None:
    i = _skip_options(args, long_with_arg=("userspec", "groups")) + 1  # NEWROOT
    return (i, None) if i < len(args) else (len(args), ["sh"])


def _h_watch(args: list[str]) -> tuple[int, list[str] | None] | None:
    """procps ``watch`` joins its arguments and runs them with ``sh -c`` (``-x``: directly)."""
    i = _skip_options(args, short_with_arg="nq", long_with_arg=("interval", "equexit"))
    if i >= len(args):
        return None
    if any(
        a in ("-x", "--exec") or (a[:1] == "-" and a[1:2] != "-" and "x" in a) for a in args[:i]
    ):
        return i, None
    return len(args), _as_shell(" ".join(args[i:]))


def _h_ssh(args: list[str]) -> tuple[int, list[str]] | None:
    """``ssh host cmd args``: the remote shell runs the words joined by spaces."""
    i = _skip_options(args, short_with_arg="BbcDEeFIiJLlmOoPpQRSWw")
    if i + 1 >= len(args):
        return None  # no remote command: a login shell (or -N, a tunnel)
    return len(args), _as_shell(" ".join(args[i + 1 :]))


_PARALLEL_SEPARATORS = frozenset({":::", "::::", ":::+", "::::+"})


def _h_parallel(args: list[str]) -> tuple[int, list[str]] | None:
    """GNU parallel runs its command through a shell; with none, every input is a command."""
    i = _skip_options(
        args,
        short_with_arg="jSadEIlLnNsP",
        long_with_arg=("jobs", "sshlogin", "arg-file", "delimiter", "colsep", "results",
                       "joblog", "tmpdir", "workdir", "timeout", "max-args", "max-lines"),
    )  # fmt: skip
    end = next((k for k in range(i, len(args)) if args[k] in _PARALLEL_SEPARATORS), len(args))
    if end > i:
        return len(args), _as_shell(" ".join(args[i:end]))
    inputs = [a for a in args[end:] if a not in _PARALLEL_SEPARATORS]
    if not inputs:
        return None
    return len(args), _as_shell("\n".join(inputs))


def _h_tracer(args: list[str]) -> tuple[int, None] | None:
    """``strace -o log cmd``, ``ltrace -f cmd``: the command is run under the tracer."""
    i = _skip_options(args, short_with_arg="abeEIoOpPsSuUX", long_with_arg=("output",))
    return (i, None) if i < len(args) else None


_WRAPPER_HANDLERS: dict[str, _Handler] = {
    "sudo": _h_sudo,
    "env": _h_env,
    "timeout": _h_timeout,
    "nice": _h_nice,
    "nohup": _h_nohup,
    "xargs": _h_xargs,
    "command": _h_command,
    "time": _h_time,
    "exec": _h_exec,
    "stdbuf": _h_stdbuf,
    "setsid": _h_plain,
    "unbuffer": _h_plain,
    "eatmydata": _h_plain,
    "fakeroot": _h_plain,
    "torsocks": _h_plain,
    "proxychains": _h_plain,
    "proxychains4": _h_plain,
    "dbus-run-session": _h_plain,
    "catchsegv": _h_plain,
    "nocache": _h_plain,
    "busybox": _h_busybox,
    "ionice": _h_ionice,
    "chrt": _h_chrt,
    "taskset": _h_taskset,
    "flock": _h_flock,
    "script": _h_script,
    "su": _h_su,
    "runuser": _h_su,
    "sg": _h_sg,
    "doas": _h_doas,
    "chroot": _h_chroot,
    "watch": _h_watch,
    "ssh": _h_ssh,
    "parallel": _h_parallel,
    "strace": _h_tracer,
    "ltrace": _h_tracer,
}
# Commands that run another command given as their remaining arguments.
WRAPPERS = frozenset(_WRAPPER_HANDLERS)


# --------------------------------------------------------------------------------------------
# Fallback


_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "|&", ";;", "(", ")", "{", "}", "\n"})
_REDIRECT_TOKENS = frozenset({">", ">>", ">|", "&>", "&>>", "<", "<<", "<<<", "<>", ">&", "<&"})


def _fallback(source: str, depth: int, error: str) -> ParsedCommand:
    """Best-effort split when bashlex fails; everything it yields is marked ``unparseable``.

    The argv are still useful: a ``deny bash(rm *)`` rule should fire on ``rm -rf x; case …``
    even though we could not parse the ``case``.
    """
    lexer = shlex.shlex(source.replace("\n", " ; "), posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes
        tokens = re.split(r"\s+", source.strip())
    commands: list[SimpleCommand] = []
    current: list[str] = []
    redirects: list[Redirect] = []

    def flush() -> None:
        nonlocal current, redirects
        if current or redirects:
            assignments: list[str] = []
            while current and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", current[0]):
                assignments.append(current.pop(0))
            commands.extend(
                _from_argv(
                    current,
                    text=" ".join(current),
                    span=(0, len(source)),
                    redirects=redirects,
                    assignments=assignments,
                    has_substitution=False,
                    unparseable=True,
                    depth=depth,
                )
            )
        current, redirects = [], []

    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in _SEPARATORS:
            flush()
        elif tok in _REDIRECT_TOKENS:
            fd = None
            if current and current[-1].isdigit():
                fd = int(current.pop())
            target = tokens[i + 1] if i + 1 < len(tokens) else None
            redirects.append(Redirect(op=tok, target=target, fd=fd))
            i += 1
        else:
            current.append(tok)
        i += 1
    flush()
    for cmd in commands:
        cmd.unparseable = True
    has_sub = "$(" in source or "`" in source or "<(" in source or ">(" in source
    if has_sub:
        for cmd in commands:
            cmd.has_substitution = True
    if not commands:
        commands = [SimpleCommand(argv=[], text=source, span=(0, len(source)), unparseable=True)]
    return ParsedCommand(source, commands, has_substitution=has_sub, unparseable=True, error=error)
