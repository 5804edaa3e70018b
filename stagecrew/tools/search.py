"""grep: content search with ripgrep, and a pure-Python fallback that gives the same answers.

ripgrep is fast and honours .gitignore by itself, so it is used whenever ``rg`` is on the tool
PATH. The fallback exists because stagecrew must work on machines without rg; it mirrors rg's
choices (hidden files searched, ``.git`` skipped, binary files skipped, .gitignore honoured
only inside a git repository, globs without ``/`` match file names at any depth, a glob naming
an ignored file explicitly still finds it) so the model sees one behaviour, not two. Both feed
the same formatter, which is also what makes their outputs comparable in tests.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import json
import os
import re
import shutil
import signal
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stagecrew.tools.base import Tool, ToolContext, ToolResult, WorkspaceError
from stagecrew.tools.files import (
    BINARY_SNIFF,
    compile_glob,
    git_lines,
    list_files,
    sort_newest_first,
)
from stagecrew.tools.lifetime import die_with_parent_argv
from stagecrew.tools.paths import display_path, resolve_path, safe_read_bytes
from stagecrew.tools.permissions import path_policy, withheld_note
from stagecrew.tools.shell import tool_subprocess_env

# Set to False to force the Python fallback even where rg exists (tests, debugging).
USE_RIPGREP = True
OUTPUT_LIMIT = 30_000
LINE_LIMIT = 1000
COLLECT_LIMIT = 20_000  # match/context lines gathered before we stop the search
FILES_LIMIT = 10_000
RG_TIMEOUT = 60.0

# A subset of ``rg --type-list`` (rg 13) so ``type`` means the same without rg.
FILE_TYPES: dict[str, tuple[str, ...]] = {
    "asm": ("*.S", "*.asm", "*.s"),
    "c": ("*.[chH]", "*.[chH].in", "*.cats"),
    "clojure": ("*.clj", "*.cljc", "*.cljs", "*.cljx"),
    "cmake": ("*.cmake", "CMakeLists.txt"),
    "config": ("*.cfg", "*.conf", "*.config", "*.ini"),
    "cpp": (
        "*.[ChH]",
        "*.[ChH].in",
        "*.[ch]pp",
        "*.[ch]pp.in",
        "*.[ch]xx",
        "*.[ch]xx.in",
        "*.cc",
        "*.cc.in",
        "*.hh",
        "*.hh.in",
        "*.inl",
    ),
    "cs": ("*.cs",),
    "css": ("*.css", "*.scss"),
    "csv": ("*.csv",),
    "dart": ("*.dart",),
    "docker": ("*Dockerfile*",),
    "elixir": ("*.eex", "*.ex", "*.exs"),
    "erlang": ("*.erl", "*.hrl"),
    "go": ("*.go",),
    "h": ("*.h", "*.hpp"),
    "haskell": ("*.c2hs", "*.cpphs", "*.hs", "*.hsc", "*.lhs"),
    "html": ("*.ejs", "*.htm", "*.html"),
    "java": ("*.java", "*.jsp", "*.jspx", "*.properties"),
    "jl": ("*.jl",),
    "js": ("*.js", "*.jsx", "*.vue"),
    "json": ("*.json", "composer.lock"),
    "jsonl": ("*.jsonl",),
    "julia": ("*.jl",),
    "kotlin": ("*.kt", "*.kts"),
    "less": ("*.less",),
    "lua": ("*.lua",),
    "make": (
        "*.mak",
        "*.mk",
        "[Gg][Nn][Uu]makefile",
        "[Mm]akefile",
        "[Mm]akefile.am",
        "[Mm]akefile.in",
    ),
    "markdown": ("*.markdown", "*.md", "*.mdown", "*.mkdn"),
    "md": ("*.markdown", "*.md", "*.mdown", "*.mkdn"),
    "nix": ("*.nix",),
    "ocaml": ("*.ml", "*.mli", "*.mll", "*.mly"),
    "perl": ("*.PL", "*.perl", "*.pl", "*.plh", "*.plx", "*.pm", "*.t"),
    "php": ("*.php", "*.php3", "*.php4", "*.php5", "*.phtml"),
    "protobuf": ("*.proto",),
    "py": ("*.py",),
    "r": ("*.R", "*.Rmd", "*.Rnw", "*.r"),
    "rst": ("*.rst",),
    "ruby": ("*.gemspec", "*.rb", "*.rbw", "Gemfile", "Rakefile", "config.ru"),
    "rust": ("*.rs",),
    "scala": ("*.sbt", "*.scala"),
    "sh": ("*.bash", "*.sh", "*.zsh", "*.ksh", ".bashrc", ".zshrc", ".profile"),
    "sql": ("*.psql", "*.sql"),
    "svg": ("*.svg",),
    "swift": ("*.swift",),
    "tex": ("*.bib", "*.cls", "*.sty", "*.tex"),
    "tf": ("*.tf",),
    "toml": ("*.toml", "Cargo.lock"),
    "ts": ("*.ts", "*.tsx"),
    "txt": ("*.txt",),
    "xml": ("*.dtd", "*.xhtml", "*.xml", "*.xsd", "*.xsl", "*.xslt"),
    "yaml": ("*.yaml", "*.yml"),
    "zig": ("*.zig",),
}


class GrepArgs(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    pattern: str = Field(description="Regular expression to search for (ripgrep syntax).")
    path: str | None = Field(
        default=None, description="File or directory to search (default: the workspace root)."
    )
    glob: str | None = Field(
        default=None,
        description="Only search files matching this glob, e.g. '*.py' or 'src/**/*.{ts,tsx}'; "
        "prefix with '!' to exclude.",
    )
    output_mode: Literal["content", "files_with_matches", "count"] = Field(
        default="files_with_matches",
        description="'content' shows matching lines; 'files_with_matches' (default) lists "
        "files; 'count' gives matching lines per file.",
    )
    before: int | None = Field(
        default=None, alias="-B", ge=0, le=100, description="Lines of context before each match."
    )
    after: int | None = Field(
        default=None, alias="-A", ge=0, le=100, description="Lines of context after each match."
    )
    context: int | None = Field(
        default=None,
        alias="-C",
        ge=0,
        le=100,
        description="Lines of context before and after each match.",
    )
    line_numbers: bool | None = Field(
        default=None, alias="-n", description="Show line numbers (content mode; default true)."
    )
    case_insensitive: bool = Field(default=False, alias="-i", description="Ignore case.")
    type: str | None = Field(
        default=None, description="File type to search, e.g. 'py', 'js', 'rust', 'go', 'md'."
    )
    head_limit: int | None = Field(
        default=None, ge=1, description="Only the first N output lines/entries (like | head -N)."
    )
    multiline: bool = Field(
        default=False,
        description="Let patterns span lines ('.' also matches newlines). Default off.",
    )


@dataclass
class FileHits:
    """Matching (and context) lines of one file: line number -> (text, is_match)."""

    lines: dict[int, tuple[str, bool]] = field(default_factory=dict)

    def add(self, number: int, text: str, is_match: bool) -> None:
        prev = self.lines.get(number)
        self.lines[number] = (text, is_match or (prev is not None and prev[1]))

    @property
    def match_count(self) -> int:
        return sum(1 for _, m in self.lines.values() if m)


@dataclass
class SearchResult:
    files: list[str] = field(default_factory=list)  # files_with_matches mode
    hits: dict[str, FileHits] = field(default_factory=dict)  # content / count modes
    partial: str | None = None  # why the search stopped early, if it did
    warning: str | None = None
    backend: str = "rg"
    withheld: str | None = None  # what the permission rules left out, for the model


class SearchError(Exception):
    """A precise, model-readable reason the search could not run (bad regex, unknown type)."""


# --------------------------------------------------------------------------------------------
# Shared helpers


def _context(args: GrepArgs) -> tuple[int, int]:
    before = args.before if args.before is not None else (args.context or 0)
    after = args.after if args.after is not None else (args.context or 0)
    return before, after


def _rel(ctx: ToolContext, target: Path) -> str:
    return display_path(ctx, target)


def _clean_rg_path(p: str) -> str:
    return p[2:] if p.startswith("./") else p


def _split_globs(glob: str | None) -> tuple[list[str], list[str]]:
    if not glob:
        return [], []
    g = glob.strip()
    return ([], [g[1:]]) if g.startswith("!") else ([g], [])


def _glob_matches(glob: str, rel_path: str) -> bool:
    """rg's override semantics: no '/' means the file name anywhere; with '/', the path from
    the workspace root (where rg runs)."""
    g = glob.lstrip("/") if "/" in glob.rstrip("/") else glob
    rx = compile_glob(g)
    if "/" in glob.rstrip("/"):
        return bool(rx.match(rel_path))
    return bool(rx.match(rel_path.rsplit("/", 1)[-1]))


# --------------------------------------------------------------------------------------------
# ripgrep backend


def find_rg(env: dict[str, str]) -> str | None:
    if not USE_RIPGREP:
        return None
    return shutil.which("rg", path=env.get("PATH", ""))


def _rg_text(obj: dict[str, Any]) -> str:
    if "text" in obj:
        return str(obj["text"])
    return base64.b64decode(obj.get("bytes", "")).decode("utf-8", errors="replace")


async def _rg_stream(
    argv: list[str], ctx: ToolContext, env: dict[str, str], on_line: Any, sep: bytes = b"\n"
) -> tuple[int, str, bool]:
    """Run rg, feeding stdout records (split on ``sep``) to ``on_line`` until it returns False.

    Returns (exit code, stderr, stopped early). rg runs in its own process group, registered so
    a cancelled agent takes it down too.
    """
    argv, preexec = die_with_parent_argv(argv)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ctx.workspace,
        env=env,
        start_new_session=True,
        preexec_fn=preexec,
    )
    ctx.processes.add(proc.pid)
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read(64 * 1024))
    stopped = False

    async def pump() -> None:
        nonlocal stopped
        assert proc.stdout is not None
        buf = b""
        while True:
            chunk = await proc.stdout.read(256 * 1024)
            if not chunk:
                break
            buf += chunk
            *complete, buf = buf.split(sep)
            for raw in complete:
                if raw and on_line(raw) is False:
                    stopped = True
                    return
        if buf and on_line(buf) is False:
            stopped = True

    try:
        await asyncio.wait_for(pump(), RG_TIMEOUT)
    except TimeoutError:
        stopped = True
        _kill(proc.pid)
        stderr_task.cancel()
        raise SearchError(
            f"the search took longer than {int(RG_TIMEOUT)} s and was stopped; narrow it with "
            "path, glob or type"
        ) from None
    except asyncio.CancelledError:
        _kill(proc.pid)
        raise
    finally:
        if stopped or proc.returncode is None:
            if stopped:
                _kill(proc.pid)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
        ctx.processes.discard(proc.pid)
    code = await proc.wait()
    try:
        err = await asyncio.wait_for(stderr_task, 5)
    except TimeoutError:
        err = b""
    return code, err.decode("utf-8", errors="replace"), stopped


def _kill(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _rg_common(args: GrepArgs, pcre2: bool) -> list[str]:
    argv = ["--no-config", "--hidden", "--no-ignore-dot", "--glob", "!.git"]
    if args.case_insensitive:
        argv.append("--ignore-case")
    if args.multiline:
        argv += ["--multiline", "--multiline-dotall"]
    if pcre2:
        argv.append("--pcre2")
    if args.glob:
        argv += ["--glob", args.glob.strip()]
    if args.type:
        argv += ["--type", args.type]
    return argv


def _rg_error(args: GrepArgs, stderr: str) -> SearchError:
    text = stderr.strip()
    if "regex parse error" in text or "error parsing" in text:
        return SearchError(f"Invalid regular expression {args.pattern!r}:\n{text}")
    if "unrecognized file type" in text:
        known = ", ".join(sorted(FILE_TYPES))
        return SearchError(f"Unknown file type {args.type!r}. Common types: {known}")
    return SearchError(f"ripgrep failed: {text or 'no error message'}")


async def _search_rg(
    rg: str, args: GrepArgs, ctx: ToolContext, target: str, env: dict[str, str]
) -> SearchResult:
    result = SearchResult(backend="rg")
    pcre2 = False
    for _attempt in range(2):
        result = SearchResult(backend="rg")
        common = _rg_common(args, pcre2)
        if args.output_mode == "files_with_matches":
            argv = [rg, "--files-with-matches", "--null", *common, "-e", args.pattern, "--", target]

            sep = b"\0"

            def on_line(raw: bytes, result: SearchResult = result) -> bool:
                result.files.append(_clean_rg_path(raw.decode("utf-8", errors="surrogateescape")))
                return len(result.files) < FILES_LIMIT
        else:
            before, after = _context(args) if args.output_mode == "content" else (0, 0)
            ctx_flags = []
            if before:
                ctx_flags += ["--before-context", str(before)]
            if after:
                ctx_flags += ["--after-context", str(after)]
            argv = [rg, "--json", *common, *ctx_flags, "-e", args.pattern, "--", target]
            sep = b"\n"
            collected = [0]
            binary: set[str] = set()

            def on_line(
                raw: bytes,
                result: SearchResult = result,
                collected: list[int] = collected,
                binary: set[str] = binary,
            ) -> bool:
                msg = json.loads(raw)
                kind = msg.get("type")
                data = msg.get("data", {})
                if kind == "end" and data.get("binary_offset") is not None:
                    binary.add(_clean_rg_path(_rg_text(data["path"])))
                if kind not in ("match", "context"):
                    return True
                path = _clean_rg_path(_rg_text(data["path"]))
                hits = result.hits.setdefault(path, FileHits())
                text = _rg_text(data["lines"])
                parts = text.split("\n")
                if parts and parts[-1] == "":
                    parts.pop()
                for k, line in enumerate(parts):
                    hits.add(data["line_number"] + k, line.rstrip("\r"), kind == "match")
                    collected[0] += 1
                return collected[0] < COLLECT_LIMIT

        code, stderr, stopped = await _rg_stream(argv, ctx, env, on_line, sep)
        if code == 2 and not stopped and not (result.files or result.hits):
            if not pcre2 and ("look-around" in stderr or "backreferences" in stderr):
                pcre2 = True  # rg's default engine lacks these; PCRE2 has them
                continue
            raise _rg_error(args, stderr)
        if args.output_mode != "files_with_matches":
            # rg searches a binary file up to its first NUL; the fallback skips it. Agree.
            for name in binary:
                result.hits.pop(name, None)
        if code == 2 and stderr.strip():
            result.warning = stderr.strip().splitlines()[0]
        if stopped:
            result.partial = "the search stopped early because there were too many results"
        return result
    return result  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Python fallback


def _compile(args: GrepArgs) -> re.Pattern[str]:
    flags = re.MULTILINE
    if args.case_insensitive:
        flags |= re.IGNORECASE
    if args.multiline:
        flags |= re.DOTALL
    try:
        return re.compile(args.pattern, flags)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise SearchError(
            f"Invalid regular expression {args.pattern!r}: {exc.msg}{where}"
        ) from None


def _candidates(ctx: ToolContext, root: Path, args: GrepArgs) -> list[str]:
    """Workspace-relative files to search, filtered like rg would."""
    include, exclude = _split_globs(args.glob)
    if args.type is not None and args.type not in FILE_TYPES:
        known = ", ".join(sorted(FILE_TYPES))
        raise SearchError(f"Unknown file type {args.type!r}. Common types: {known}")
    prefix = "" if root == ctx.workspace else display_path(ctx, root) + "/"
    listing = list_files(root)
    rel = [prefix + p for p in listing.paths]
    if include and listing.used_git:
        # An explicit glob overrides .gitignore in rg, for files whose directory is not ignored.
        ignored = git_lines(
            root, "ls-files", "--others", "--ignored", "--exclude-standard", "--directory", "-z"
        )
        extra = [prefix + p for p in (ignored or []) if not p.endswith("/")]
        rel = sorted(set(rel) | {p for p in extra if _glob_matches(include[0], p)})
    out: list[str] = []
    for p in rel:
        if include and not _glob_matches(include[0], p):
            continue
        if exclude and _glob_matches(exclude[0], p):
            continue
        if args.type is not None:
            name = p.rsplit("/", 1)[-1]
            if not any(fnmatchcase(name, g) for g in FILE_TYPES[args.type]):
                continue
        out.append(p)
    return out


def _line_starts(text: str) -> list[int]:
    starts = [0]
    at = text.find("\n")
    while at != -1:
        starts.append(at + 1)
        at = text.find("\n", at + 1)
    return starts


def _search_text(text: str, regex: re.Pattern[str], args: GrepArgs) -> FileHits | None:
    lines = text.split("\n")
    if lines and lines[-1] == "" and text.endswith("\n"):
        lines.pop()
    matched: set[int] = set()  # 0-based
    if args.multiline:
        starts = _line_starts(text)
        for m in regex.finditer(text):
            first = bisect.bisect_right(starts, m.start()) - 1
            end = m.end() - 1 if m.end() > m.start() else m.start()
            last = bisect.bisect_right(starts, end) - 1
            for k in range(first, min(last, len(lines) - 1) + 1):
                matched.add(k)
    else:
        for k, line in enumerate(lines):
            if regex.search(line):
                matched.add(k)
    if not matched:
        return None
    hits = FileHits()
    before, after = _context(args) if args.output_mode == "content" else (0, 0)
    for k in sorted(matched):
        for c in range(max(0, k - before), min(len(lines), k + after + 1)):
            hits.add(c + 1, lines[c].rstrip("\r"), c in matched)
    return hits


def _search_python(ctx: ToolContext, target: Path, args: GrepArgs) -> SearchResult:
    regex = _compile(args)
    result = SearchResult(backend="python")
    is_dir = target.is_dir()
    files = _candidates(ctx, target, args) if is_dir else [display_path(ctx, target)]
    collected = 0
    for rel in files:
        path = ctx.workspace / rel
        try:
            data = safe_read_bytes(ctx, path)
        except (OSError, WorkspaceError):
            continue  # vanished, a symlink, unreadable: rg skips these silently too
        if b"\x00" in data[:BINARY_SNIFF]:
            continue
        hits = _search_text(data.decode("utf-8", errors="replace"), regex, args)
        if hits is None:
            continue
        if args.output_mode == "files_with_matches":
            result.files.append(rel)
            if len(result.files) >= FILES_LIMIT:
                result.partial = "the search stopped early because there were too many results"
                break
        else:
            result.hits[rel] = hits
            collected += len(hits.lines)
            if collected >= COLLECT_LIMIT:
                result.partial = "the search stopped early because there were too many results"
                break
    return result


# --------------------------------------------------------------------------------------------
# Formatting (one formatter for both backends)


def _cut(line: str) -> str:
    if len(line) > LINE_LIMIT:
        return line[:LINE_LIMIT] + f" [... line cut, {len(line)} characters]"
    return line


def _render(ctx: ToolContext, args: GrepArgs, result: SearchResult) -> ToolResult:
    limit = args.head_limit
    notes: list[str] = []
    meta: dict[str, Any] = {"backend": result.backend}
    if args.output_mode == "files_with_matches":
        files = sort_newest_first(sorted(set(result.files)), ctx.workspace)
        meta["count"] = len(files)
        if not files:
            return ToolResult(content="No files found", metadata=meta)
        shown = files[:limit] if limit else files
        body = "\n".join(shown)
        header = f"Found {len(files)} file{'s' if len(files) != 1 else ''}"
        if len(shown) < len(files):
            notes.append(f"(showing the first {len(shown)} of {len(files)}; head_limit={limit})")
        content = f"{header}\n{body}"
    elif args.output_mode == "count":
        entries = [(p, h.match_count) for p, h in sorted(result.hits.items()) if h.match_count]
        total = sum(n for _, n in entries)
        meta["count"] = total
        if not entries:
            return ToolResult(content="No matches found", metadata=meta)
        shown_entries = entries[:limit] if limit else entries
        body = "\n".join(f"{p}:{n}" for p, n in shown_entries)
        content = (
            f"{body}\n\nFound {total} matching line{'s' if total != 1 else ''} in "
            f"{len(entries)} file{'s' if len(entries) != 1 else ''}"
        )
        if len(shown_entries) < len(entries):
            notes.append(
                f"(showing the first {len(shown_entries)} of {len(entries)} files; "
                f"head_limit={limit})"
            )
    else:
        numbers = args.line_numbers is not False
        out: list[str] = []
        total_matches = 0
        for path, hits in sorted(result.hits.items()):
            prev: int | None = None
            for number in sorted(hits.lines):
                text, is_match = hits.lines[number]
                total_matches += is_match
                if (prev is not None and number != prev + 1) or (prev is None and out):
                    out.append("--")
                sep = ":" if is_match else "-"
                lead = f"{path}{sep}{number}{sep}" if numbers else f"{path}{sep}"
                out.append(lead + _cut(text))
                prev = number
        meta["count"] = total_matches
        if not out:
            return ToolResult(content="No matches found", metadata=meta)
        # "--" separators only make sense with context; without it they are noise.
        if not any(_context(args)):
            out = [line for line in out if line != "--"]
        shown_lines = out[:limit] if limit else out
        if len(shown_lines) < len(out):
            notes.append(f"(showing the first {len(shown_lines)} of {len(out)} lines; head_limit)")
        content = "\n".join(shown_lines)
    if len(content) > OUTPUT_LIMIT:
        cut_at = content.rfind("\n", 0, OUTPUT_LIMIT)
        cut_at = cut_at if cut_at > 0 else OUTPUT_LIMIT
        omitted = content[cut_at:].count("\n")
        content = content[:cut_at]
        notes.append(
            f"(output cut at {OUTPUT_LIMIT} characters; {omitted} more lines not shown. Narrow "
            "the search with path, glob, type or head_limit)"
        )
    if result.withheld:
        notes.append(result.withheld)
    if result.partial:
        notes.append(f"({result.partial}; results are incomplete)")
    if result.warning:
        notes.append(f"(warning: {result.warning})")
    if notes:
        content += "\n" + "\n".join(notes)
    return ToolResult(content=content, metadata=meta)


# --------------------------------------------------------------------------------------------
# The tool


async def grep_search(args: GrepArgs, ctx: ToolContext) -> SearchResult:
    """Run the search with the best backend available (rg, else Python)."""
    target = resolve_path(ctx, args.path or ".", must_exist=True)
    env = tool_subprocess_env(ctx.env, ctx.hidden_env)
    rg = find_rg(env)
    rel = display_path(ctx, target)
    if rg is not None:
        result = await _search_rg(rg, args, ctx, rel, env)
    else:
        result = await asyncio.to_thread(_search_python, ctx, target, args)
    return _apply_path_policy(ctx, result, rel)


def _apply_path_policy(ctx: ToolContext, result: SearchResult, searched: str) -> SearchResult:
    """Drop every file the permission rules keep from grep, in every output mode.

    The call was checked for its ``path`` (``searched``); a directory search also finds files
    the rules protect (``.env`` under ``deny read(.env)``, or under the default ``ask``), and a
    match (or even its count, or its file's name among the matches) tells what is inside.
    Nobody can be asked in the middle of a search, so an ``ask`` withholds the file too (the
    note names it, and a grep with it as the path asks) -- unless the search itself needed
    the question, which someone then answered for everything under it.
    """
    policy = path_policy(ctx)
    if policy is None:
        return result
    asked = policy.withheld("grep", searched, ctx.workspace, contents=True) is not None
    found = [p for p in [*result.files, *result.hits] if p != searched]
    _kept, withheld = policy.filter("grep", found, ctx.workspace, contents=not asked)
    if not withheld:
        return result
    hidden = {path for path, _ in withheld}
    result.files = [p for p in result.files if p not in hidden]
    result.hits = {p: h for p, h in result.hits.items() if p not in hidden}
    result.withheld = withheld_note(withheld)
    return result


class Grep(Tool):
    name = "grep"
    description = (
        "Search file contents with a regular expression (ripgrep syntax: escape literal braces, "
        "e.g. 'interface\\{\\}'). Searches the workspace by default; narrow with path, glob "
        "(e.g. '*.py', '**/*.{ts,tsx}') or type (e.g. 'py', 'js', 'rust'). output_mode: "
        "'files_with_matches' (default; file paths, most recently modified first), 'content' "
        "(matching lines as path:line:text, with -A/-B/-C context and -n line numbers, on by "
        "default) or 'count'. -i ignores case; multiline lets a pattern span lines. head_limit "
        "keeps the first N lines/entries. Files ignored by .gitignore, binary files and .git "
        "are skipped. Use this instead of running grep or rg through bash."
    )
    Args = GrepArgs
    read_only = True

    async def run(self, args: GrepArgs, ctx: ToolContext) -> ToolResult:
        try:
            result = await grep_search(args, ctx)
        except SearchError as exc:
            return ToolResult(content=str(exc), is_error=True)
        except WorkspaceError as exc:
            return ToolResult(content=str(exc), is_error=True)
        except OSError as exc:
            return ToolResult(content=f"grep failed: {exc}", is_error=True)
        return _render(ctx, args, result)
