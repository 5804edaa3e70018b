"""File tools: read, write, edit, apply_patch, ls, glob.

All of them go through ``paths`` (the workspace boundary and race-safe I/O), run their blocking
work in a thread, and answer with workspace-relative paths the model can pass straight back.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import re
import stat
import subprocess
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from stagecrew.tools.base import Tool, ToolContext, ToolResult, WorkspaceError
from stagecrew.tools.paths import (
    DirEntry,
    describe_os_error,
    display_path,
    read_if_exists,
    resolve_path,
    run_blocking,
    safe_listdir,
    safe_open_read,
    safe_read_bytes,
    safe_rmdir,
    safe_unlink,
    safe_write_bytes,
)
from stagecrew.tools.permissions import path_policy, withheld_note

READ_DEFAULT_LIMIT = 2000
READ_MAX_LINE = 2000
READ_MAX_FILE = 5 * 1024 * 1024
# 2000 lines of 2000 characters would be millions of characters: more than any context window.
READ_MAX_OUTPUT = 100_000
BINARY_SNIFF = 8192
LS_LIMIT = 1000
GLOB_LIMIT = 100
WALK_LIMIT = 200_000


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _error(message: str) -> ToolResult:
    return ToolResult(content=message, is_error=True)


def _not_found(ctx: ToolContext, path: Path) -> ToolResult:
    """A missing file, plus the nearest names in its directory: models often typo a path."""
    message = f"File does not exist: {display_path(ctx, path)}"
    try:
        siblings = os.listdir(path.parent)
    except OSError:
        return _error(message)
    close = difflib.get_close_matches(path.name, siblings, n=3, cutoff=0.6)
    if close:
        rel_parent = display_path(ctx, path.parent)
        names = [n if rel_parent == "." else f"{rel_parent}/{n}" for n in close]
        message += ". Did you mean: " + ", ".join(names) + "?"
    return _error(message)


# --------------------------------------------------------------------------------------------
# Globs (shared with search.py)


def _expand_braces(pattern: str, budget: int = 256) -> list[str]:
    """``a.{py,txt}`` -> ``a.py``, ``a.txt`` (nested braces too), as shells and rg do."""
    depth = 0
    start = -1
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                inner = pattern[start + 1 : i]
                options: list[str] = []
                level = 0
                last = 0
                for j, c in enumerate(inner):
                    if c == "{":
                        level += 1
                    elif c == "}":
                        level -= 1
                    elif c == "," and level == 0:
                        options.append(inner[last:j])
                        last = j + 1
                options.append(inner[last:])
                out: list[str] = []
                for opt in options:
                    for expanded in _expand_braces(pattern[:start] + opt + pattern[i + 1 :]):
                        out.append(expanded)
                        if len(out) >= budget:
                            return out
                return out
        i += 1
    return [pattern]


def _translate(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            seg_start = i == 0 or pattern[i - 1] == "/"
            seg_end = j == n or pattern[j] == "/"
            if j - i >= 2 and seg_start and seg_end:
                if j < n:  # "**/": zero or more directories
                    out.append("(?:.*/)?")
                    i = j + 1
                else:  # trailing "**": everything below
                    out.append(".*")
                    i = j
                continue
            out.append("[^/]*")
            i = j
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if i + 1 < n and pattern[i + 1] in "!^" else i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 1
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=512)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """A regex that full-matches ``/``-separated relative paths against a glob.

    ``*``/``?`` stay within one path segment, ``**`` spans directories, ``{a,b}`` alternates,
    ``[...]`` is a character class. Dotfiles are not special (matches rg and the models' habits).
    """
    alternatives = [_translate(p) for p in _expand_braces(pattern)]
    return re.compile("(?:" + "|".join(alternatives) + r")\Z", re.DOTALL)


# --------------------------------------------------------------------------------------------
# Listing files the way git sees them (shared with search.py)

GIT_ENV = {"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


def git_lines(directory: Path, *args: str, timeout: float = 60) -> list[str] | None:
    """NUL-separated output of a git command run in ``directory``; None if git fails there."""
    try:
        proc = subprocess.run(
            ["git", "-C", os.fspath(directory), *args],
            capture_output=True,
            timeout=timeout,
            env={**os.environ, **GIT_ENV},
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    text = proc.stdout.decode("utf-8", errors="surrogateescape")
    return [p for p in text.split("\0") if p]


@dataclass
class FileListing:
    paths: list[str]  # relative to the listed directory, "/"-separated
    used_git: bool
    truncated: bool = False


def git_visible_files(directory: Path) -> list[str] | None:
    """Tracked + untracked-but-not-ignored files under ``directory``; None outside a work tree."""
    listed = git_lines(directory, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    if listed is None:
        return None
    # Untracked nested repositories show up as "dir/"; --cached keeps deleted files: drop both.
    return sorted({p for p in listed if not p.endswith("/")})


def _walk_files(directory: Path, limit: int = WALK_LIMIT) -> tuple[list[str], bool]:
    out: list[str] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        rel_root = os.path.relpath(root, directory)
        for name in sorted(files):
            out.append(name if rel_root == "." else f"{rel_root}/{name}".replace(os.sep, "/"))
            if len(out) >= limit:
                return out, True
    return out, False


def list_files(directory: Path) -> FileListing:
    """Every file under ``directory``, honouring .gitignore when it is inside a git work tree.

    When ``directory`` is itself ignored (the model asked about ``node_modules/x`` explicitly)
    git lists nothing there, so we walk it plainly instead of answering "no files".
    """
    visible = git_visible_files(directory)
    if visible is None:
        paths, truncated = _walk_files(directory)
        return FileListing(paths, used_git=False, truncated=truncated)
    # check-ignore exits 0 (git_lines gives a list) only when the directory is ignored.
    if not visible and git_lines(directory, "check-ignore", "-q", ".") is not None:
        paths, truncated = _walk_files(directory)
        return FileListing(paths, used_git=False, truncated=truncated)
    return FileListing(visible, used_git=True)


def _mtime(path: str) -> float:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def sort_newest_first(paths: list[str], root: Path) -> list[str]:
    """Most recently modified first: the files the user is working on now come up top."""
    return sorted(paths, key=lambda p: (-_mtime(os.path.join(root, p)), p))


# --------------------------------------------------------------------------------------------
# read


class ReadArgs(BaseModel):
    file_path: str = Field(
        description="Path of the file to read (absolute, or relative to the workspace root)."
    )
    offset: int | None = Field(
        default=None,
        ge=0,
        description="1-based line number to start reading from. Only for files too long to "
        "read at once.",
    )
    limit: int | None = Field(
        default=None, ge=1, description=f"Number of lines to read (default {READ_DEFAULT_LIMIT})."
    )


def _read_sync(args: ReadArgs, ctx: ToolContext) -> ToolResult:
    path = resolve_path(ctx, args.file_path)
    shown = display_path(ctx, path)
    if not os.path.lexists(path):
        return _not_found(ctx, path)
    with safe_open_read(ctx, path) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(BINARY_SNIFF)
        if b"\x00" in head:
            return _error(
                f"{shown} is a binary file ({human_size(size)}); read only shows text files. "
                "Use bash (e.g. `file`, `xxd | head`) to inspect it."
            )
        if size > READ_MAX_FILE and args.offset is None and args.limit is None:
            return _error(
                f"{shown} is {human_size(size)}, over the {human_size(READ_MAX_FILE)} limit for "
                "reading a whole file. Read a slice with offset and limit (e.g. offset=1, "
                "limit=500), or use grep to find the part you need."
            )
        if size == 0:
            return ToolResult(
                content=f"(the file {shown} exists but is empty)",
                metadata={"path": shown, "total_lines": 0},
            )
        f.seek(0)
        start = max(1, args.offset or 1)
        limit = args.limit or READ_DEFAULT_LIMIT
        out: list[str] = []
        out_chars = 0
        cut_lines = 0
        last = start - 1
        capped = False
        total = 0
        for total, raw in enumerate(f, 1):
            if total < start or capped or total >= start + limit:
                continue
            line = raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8", errors="replace")
            if len(line) > READ_MAX_LINE:
                cut_lines += 1
                line = line[:READ_MAX_LINE] + f"... [line cut: {len(line)} characters in total]"
            rendered = f"{total:>6}\t{line}"
            if out and out_chars + len(rendered) > READ_MAX_OUTPUT:
                capped = True
                continue
            out.append(rendered)
            out_chars += len(rendered) + 1
            last = total
    if start > total:
        return _error(
            f"offset {start} is past the end of {shown}: the file has {total} line"
            f"{'s' if total != 1 else ''}."
        )
    notes: list[str] = []
    if start > 1 or last < total:
        notes.append(f"(showing lines {start}-{last} of {total}; use offset/limit to read more)")
    if capped:
        notes.append(
            f"(output stopped at {READ_MAX_OUTPUT} characters; continue with offset={last + 1})"
        )
    if cut_lines:
        notes.append(
            f"({cut_lines} line{'s were' if cut_lines > 1 else ' was'} longer than "
            f"{READ_MAX_LINE} characters and cut)"
        )
    content = "\n".join(out)
    if notes:
        content += "\n\n" + "\n".join(notes)
    return ToolResult(
        content=content,
        metadata={"path": shown, "start_line": start, "end_line": last, "total_lines": total},
    )


class Read(Tool):
    name = "read"
    description = (
        "Read a text file from the workspace. Output is numbered like `cat -n` (line number, a "
        "tab, then the line); the numbers are not part of the file. Reads up to "
        f"{READ_DEFAULT_LIMIT} lines from the start by default; for longer files pass offset "
        "(1-based first line) and limit. Lines over "
        f"{READ_MAX_LINE} characters are cut. Binary files are refused, and files over "
        f"{READ_MAX_FILE // (1024 * 1024)} MB need offset/limit. Relative paths are relative to "
        "the workspace root. Read a file before editing it. To list a directory use ls."
    )
    Args = ReadArgs
    read_only = True

    async def run(self, args: ReadArgs, ctx: ToolContext) -> ToolResult:
        return await run_blocking(_read_sync, args, ctx)


# --------------------------------------------------------------------------------------------
# write


class WriteArgs(BaseModel):
    file_path: str = Field(description="Path of the file to write (created if missing).")
    content: str = Field(description="The complete new contents of the file.")


def _write_sync(args: WriteArgs, ctx: ToolContext) -> ToolResult:
    path = resolve_path(ctx, args.file_path)
    shown = display_path(ctx, path)
    existed = os.path.lexists(path)
    if os.path.isdir(path):
        return _error(f"{shown} is a directory; give the path of a file inside it")
    data = args.content.encode("utf-8", errors="surrogatepass")
    written = safe_write_bytes(ctx, path, data)
    verb = "Overwrote" if existed else "Created"
    lines = args.content.count("\n") + (0 if args.content.endswith("\n") or not args.content else 1)
    return ToolResult(
        content=f"{verb} {shown} ({written} bytes, {lines} lines).",
        metadata={"path": shown, "bytes": written, "created": not existed},
    )


class Write(Tool):
    name = "write"
    description = (
        "Write a file in the workspace, replacing it entirely if it exists; parent directories "
        "are created. The write is atomic (no half-written file is ever visible). Prefer edit "
        "for changing part of an existing file; use write for new files or full rewrites. "
        "Returns the number of bytes written."
    )
    Args = WriteArgs

    async def run(self, args: WriteArgs, ctx: ToolContext) -> ToolResult:
        return await run_blocking(_write_sync, args, ctx)


# --------------------------------------------------------------------------------------------
# edit


class EditArgs(BaseModel):
    file_path: str = Field(description="Path of the file to modify.")
    old_string: str = Field(
        description="The exact text to replace, including indentation and line breaks "
        "(without read's line-number prefixes). Empty only to create a new file."
    )
    new_string: str = Field(description="The text to replace it with (must differ).")
    replace_all: bool = Field(
        default=False, description="Replace every occurrence instead of requiring exactly one."
    )


_LINE_PREFIX = re.compile(r"^\s*\d+\t", re.MULTILINE)


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _whitespace_hint(text: str, old: str) -> str:
    """Why the model's ``old_string`` missed, when we can tell: the usual causes are copying read's
    line numbers and getting indentation or trailing spaces slightly wrong."""
    hints: list[str] = []
    if _LINE_PREFIX.search(old) and all(
        _LINE_PREFIX.match(line) for line in old.splitlines() if line.strip()
    ):
        hints.append(
            "old_string seems to include the line-number prefixes from read's output; "
            "leave them out."
        )
    tokens = old.split()
    if tokens:
        loose = re.compile(r"\s+".join(re.escape(t) for t in tokens))
        m = loose.search(text)
        if m:
            snippet = m.group(0)
            if len(snippet) > 400:
                snippet = snippet[:400] + "..."
            hints.append(
                "A match that differs only in whitespace (indentation, tabs vs spaces, line "
                f"breaks) starts at line {_line_of(text, m.start())}:\n{snippet}\n"
                "Copy the text exactly as read shows it."
            )
    return ("\n" + "\n".join(hints)) if hints else " Read the file again to get the exact text."


def _snippet(text: str, first_line: int, span: int, context: int = 3, cap: int = 40) -> str:
    lines = text.split("\n")
    lo = max(1, first_line - context)
    hi = min(len(lines), first_line + span - 1 + context, lo + cap - 1)
    return "\n".join(f"{n:>6}\t{lines[n - 1]}" for n in range(lo, hi + 1))


def _edit_sync(args: EditArgs, ctx: ToolContext) -> ToolResult:
    path = resolve_path(ctx, args.file_path)
    shown = display_path(ctx, path)
    old, new = args.old_string, args.new_string
    if old == new:
        return _error("old_string and new_string are identical; there is nothing to change.")
    if not os.path.lexists(path):
        if old == "":
            written = safe_write_bytes(ctx, path, new.encode("utf-8", errors="surrogatepass"))
            return ToolResult(
                content=f"Created {shown} ({written} bytes).",
                metadata={"path": shown, "created": True},
            )
        result = _not_found(ctx, path)
        result.content += " (To create a file use write, or edit with an empty old_string.)"
        return result
    data = safe_read_bytes(ctx, path)
    if b"\x00" in data[:BINARY_SNIFF]:
        return _error(f"{shown} is a binary file; edit only changes text files.")
    # surrogateescape round-trips bytes that are not UTF-8, so an edit never mangles the rest.
    text = data.decode("utf-8", errors="surrogateescape")
    if old == "":
        if text:
            return _error(
                f"old_string is empty but {shown} is not empty. Give the exact text to replace, "
                "or use write to replace the whole file."
            )
        count = 1
        new_text = new
        first = 0
    else:
        count = text.count(old)
        if count == 0 and "\r\n" in text and "\n" in old and "\r\n" not in old:
            # The file uses CRLF; read shows lines without the \r, so the model sends LF.
            crlf_old, crlf_new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
            if text.count(crlf_old):
                old, new, count = crlf_old, crlf_new, text.count(crlf_old)
        if count == 0:
            return _error(f"old_string was not found in {shown}.{_whitespace_hint(text, old)}")
        if count > 1 and not args.replace_all:
            positions: list[int] = []
            at = text.find(old)
            while at != -1 and len(positions) < 10:
                positions.append(_line_of(text, at))
                at = text.find(old, at + 1)
            return _error(
                f"old_string matches {count} times in {shown} (at lines "
                f"{', '.join(map(str, positions))}{', ...' if count > len(positions) else ''}). "
                "Include more surrounding lines to make it unique, or set replace_all=true to "
                "replace every occurrence."
            )
        first = text.find(old)
        new_text = text.replace(old, new) if args.replace_all else text.replace(old, new, 1)
    safe_write_bytes(ctx, path, new_text.encode("utf-8", errors="surrogateescape"))
    first_line = _line_of(new_text, first)
    replaced = f"{count} occurrence{'s' if count > 1 else ''}"
    snippet = _snippet(new_text, first_line, new.count("\n") + 1)
    return ToolResult(
        content=f"Edited {shown}: replaced {replaced}. Around line {first_line} now:\n{snippet}",
        metadata={"path": shown, "replacements": count, "line": first_line},
    )


class Edit(Tool):
    name = "edit"
    description = (
        "Replace exact text in a file. old_string must match the file exactly (indentation, "
        "whitespace, line breaks; never include read's line-number prefixes) and must be "
        "unique unless replace_all is true; otherwise the edit fails and says how many matches "
        "there are, so add surrounding lines to disambiguate. new_string must differ from "
        "old_string. An empty old_string creates a new file. Read the file first."
    )
    Args = EditArgs

    async def run(self, args: EditArgs, ctx: ToolContext) -> ToolResult:
        return await run_blocking(_edit_sync, args, ctx)


# --------------------------------------------------------------------------------------------
# apply_patch


class PatchError(Exception):
    """The patch is malformed or does not apply; the message says where and why."""


@dataclass
class Hunk:
    contexts: list[str] = field(default_factory=list)
    old: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    eof: bool = False
    line: int = 0  # where it starts in the patch, for messages


@dataclass
class FileOp:
    kind: Literal["add", "delete", "update"]
    path: str
    line: int
    move_to: str | None = None
    add_lines: list[str] = field(default_factory=list)
    hunks: list[Hunk] = field(default_factory=list)


_BEGIN, _END = "*** Begin Patch", "*** End Patch"
_ADD = "*** Add File: "
_DELETE = "*** Delete File: "
_UPDATE = "*** Update File: "
_MOVE = "*** Move to: "
_EOF_MARK = "*** End of File"


def parse_patch(text: str) -> list[FileOp]:
    """Parse the Codex ``*** Begin Patch`` format (strictly, with the leniencies models need)."""
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    # Models sometimes send the shell form: apply_patch <<'EOF' ... EOF.
    if lines and re.fullmatch(r"(?:apply_patch\s*)?<<-?\s*['\"]?(\w+)['\"]?\s*", lines[0].strip()):
        tag = re.sub(r"\W", "", lines[0].split("<<", 1)[1])
        lines.pop(0)
        if lines and lines[-1].strip() == tag:
            lines.pop()
    if not lines or lines[0].strip() != _BEGIN:
        raise PatchError(f"the patch must start with a '{_BEGIN}' line")
    if lines[-1].strip() != _END:
        raise PatchError(f"the patch must end with a '{_END}' line")
    body = lines[1:-1]
    ops: list[FileOp] = []
    i = 0

    def where(k: int) -> str:
        return f"patch line {k + 2}"

    while i < len(body):
        line = body[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith(_ADD):
            op = FileOp("add", line[len(_ADD) :].strip(), i)
            i += 1
            while i < len(body) and not body[i].startswith("*** "):
                if body[i].startswith("+"):
                    op.add_lines.append(body[i][1:])
                elif body[i].strip():
                    raise PatchError(
                        f"{where(i)}: every line of an Add File section must start with '+' "
                        f"(got {body[i][:60]!r})"
                    )
                elif any(b.startswith("+") for b in body[i + 1 : _next_header(body, i)]):
                    op.add_lines.append("")  # a blank line inside the new file
                i += 1
            ops.append(op)
        elif line.startswith(_DELETE):
            ops.append(FileOp("delete", line[len(_DELETE) :].strip(), i))
            i += 1
        elif line.startswith(_UPDATE):
            op = FileOp("update", line[len(_UPDATE) :].strip(), i)
            i += 1
            if i < len(body) and body[i].startswith(_MOVE):
                op.move_to = body[i][len(_MOVE) :].strip()
                i += 1
            hunk: Hunk | None = None
            while i < len(body) and not (
                body[i].startswith("*** ") and body[i].strip() != _EOF_MARK
            ):
                cur = body[i]
                if cur.startswith("@@"):
                    label = cur[2:].strip()
                    if label.endswith("@@"):  # unified-diff style "@@ -1,2 +1,2 @@" header
                        label = ""
                    if hunk is not None and not hunk.old and not hunk.new:
                        if label:
                            hunk.contexts.append(label)
                    else:
                        hunk = Hunk(contexts=[label] if label else [], line=i)
                        op.hunks.append(hunk)
                elif cur.strip() == _EOF_MARK:
                    if hunk is None:
                        raise PatchError(f"{where(i)}: '{_EOF_MARK}' outside a hunk")
                    hunk.eof = True
                else:
                    if hunk is None:
                        hunk = Hunk(line=i)
                        op.hunks.append(hunk)
                    if cur.startswith("+"):
                        hunk.new.append(cur[1:])
                    elif cur.startswith("-"):
                        hunk.old.append(cur[1:])
                    elif cur.startswith(" ") or cur == "":
                        hunk.old.append(cur[1:])
                        hunk.new.append(cur[1:])
                    else:
                        raise PatchError(
                            f"{where(i)}: a hunk line must start with ' ', '-', '+' or '@@' "
                            f"(got {cur[:60]!r}); context lines need a leading space"
                        )
                i += 1
            op.hunks = [h for h in op.hunks if h.old or h.new]
            if not op.hunks and op.move_to is None:
                raise PatchError(f"{where(op.line)}: Update File {op.path} has no changes")
            ops.append(op)
        else:
            raise PatchError(
                f"{where(i)}: expected '*** Add File: ', '*** Update File: ', "
                f"'*** Delete File: ' or '{_END}', got {line[:60]!r}"
            )
    if not ops:
        raise PatchError("the patch contains no file operations")
    for op in ops:
        if not op.path:
            raise PatchError(f"{where(op.line)}: missing file path")
    return ops


def _next_header(body: list[str], i: int) -> int:
    for k in range(i, len(body)):
        if body[k].startswith("*** "):
            return k
    return len(body)


_PUNCT = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u00a0": " ",
    }
)


def _norm_exact(s: str) -> str:
    return s


def _norm_rstrip(s: str) -> str:
    return s.rstrip()


def _norm_strip(s: str) -> str:
    return s.strip()


def _norm_punct(s: str) -> str:
    return unicodedata.normalize("NFC", s).translate(_PUNCT).strip()


_NORMALISERS: tuple[Callable[[str], str], ...] = (
    _norm_exact,
    _norm_rstrip,
    _norm_strip,
    _norm_punct,
)


def _seek(lines: list[str], pattern: list[str], start: int, eof: bool) -> int | None:
    """First index >= start where ``pattern`` matches, trying ever looser comparisons (as Codex
    does: exact, then trailing whitespace, then surrounding whitespace, then typography)."""
    if not pattern:
        return start
    last = len(lines) - len(pattern)
    if last < 0:
        return None
    for norm in _NORMALISERS:
        want = [norm(p) for p in pattern]
        # "*** End of File" hunks belong at the very end; try there first.
        candidates = [last] if eof and last >= start else []
        candidates += list(range(start, last + 1))
        for idx in candidates:
            if all(norm(lines[idx + k]) == want[k] for k in range(len(pattern))):
                return idx
    return None


def _apply_hunks(original: str, op: FileOp) -> str:
    crlf = "\r\n" in original
    text = original.replace("\r\n", "\n") if crlf else original
    trailing_newline = text.endswith("\n")
    lines = text.split("\n")
    if trailing_newline:
        lines.pop()
    cursor = 0
    edits: list[tuple[int, int, int, list[str]]] = []
    for number, hunk in enumerate(op.hunks, 1):
        for label in hunk.contexts:
            idx = _seek(lines, [label], cursor, eof=False)
            if idx is None:
                raise PatchError(
                    f"Update File {op.path}: hunk {number} context '@@ {label}' was not found "
                    f"(after line {cursor})"
                )
            cursor = idx + 1
        old, new = hunk.old, hunk.new
        if not old:
            at = cursor if hunk.contexts else len(lines)
            edits.append((at, len(edits), 0, new))
            continue
        idx = _seek(lines, old, cursor, hunk.eof)
        if idx is None and old[-1] == "":
            old, new = old[:-1], new[:-1] if new and new[-1] == "" else new
            idx = _seek(lines, old, cursor, hunk.eof)
        if idx is None:
            expected = "\n".join(old[:12]) + ("\n..." if len(old) > 12 else "")
            raise PatchError(
                f"Update File {op.path}: hunk {number} does not match the current file; "
                f"these lines were not found (after line {cursor}):\n{expected}\n"
                "Read the file again and make the context and '-' lines match it exactly."
            )
        edits.append((idx, len(edits), len(old), new))
        cursor = idx + len(old)
    # Bottom-up so earlier indices stay valid; at equal indices the later edit goes first, so an
    # insertion lands before (not inside) a replacement that starts at the same line.
    for idx, _, n_old, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        lines[idx : idx + n_old] = new
    result = "\n".join(lines)
    if trailing_newline or (not text and lines):
        result += "\n"
    return result.replace("\n", "\r\n") if crlf else result


class ApplyPatchArgs(BaseModel):
    patch: str = Field(
        description="The full patch text, from '*** Begin Patch' to '*** End Patch'."
    )


@dataclass
class _Plan:
    """What every touched path holds now and will hold afterwards (None = no file)."""

    before: dict[Path, bytes | None] = field(default_factory=dict)
    after: dict[Path, bytes | None] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)


def _plan_patch(ctx: ToolContext, ops: list[FileOp]) -> _Plan:
    plan = _Plan()

    def current(p: Path) -> bytes | None:
        if p in plan.after:
            return plan.after[p]
        data = read_if_exists(ctx, p)
        plan.before[p] = data
        return data

    for op in ops:
        path = resolve_path(ctx, op.path)
        shown = display_path(ctx, path)
        if op.kind == "add":
            if current(path) is not None:
                raise PatchError(
                    f"Add File {op.path}: {shown} already exists; use Update File to change it"
                )
            content = "\n".join(op.add_lines) + ("\n" if op.add_lines else "")
            plan.after[path] = content.encode("utf-8", errors="surrogatepass")
            plan.summary.append(f"A {shown}")
        elif op.kind == "delete":
            if current(path) is None:
                raise PatchError(f"Delete File {op.path}: {shown} does not exist")
            plan.after[path] = None
            plan.summary.append(f"D {shown}")
        else:
            data = current(path)
            if data is None:
                raise PatchError(f"Update File {op.path}: {shown} does not exist")
            if b"\x00" in data[:BINARY_SNIFF]:
                raise PatchError(f"Update File {op.path}: {shown} is a binary file")
            text = data.decode("utf-8", errors="surrogateescape")
            new_text = _apply_hunks(text, op) if op.hunks else text
            new_data = new_text.encode("utf-8", errors="surrogateescape")
            if op.move_to is not None:
                dest = resolve_path(ctx, op.move_to)
                dest_shown = display_path(ctx, dest)
                if dest != path:
                    if current(dest) is not None:
                        raise PatchError(
                            f"Update File {op.path}: cannot move to {dest_shown}, which exists"
                        )
                    plan.after[path] = None
                plan.after[dest] = new_data
                plan.summary.append(f"R {shown} -> {dest_shown}")
            else:
                plan.after[path] = new_data
                plan.summary.append(f"M {shown}")
    return plan


def _commit_plan(ctx: ToolContext, plan: _Plan) -> None:
    """Write everything, or (on any failure) put back everything already written and re-raise."""
    done: list[tuple[Path, bytes | None]] = []
    created_dirs: list[Path] = []
    try:
        for path, data in plan.after.items():
            before = plan.before.get(path)
            # Another agent (or the user) may have changed the file since we verified it.
            if read_if_exists(ctx, path) != before:
                raise PatchError(
                    f"{display_path(ctx, path)} changed on disk while the patch was being applied"
                )
            if data == before:
                continue
            if data is None:
                safe_unlink(ctx, path)
            else:
                safe_write_bytes(ctx, path, data, created_dirs=created_dirs)
            done.append((path, before))
    except BaseException as exc:
        problems: list[str] = []
        for path, before in reversed(done):
            try:
                if before is None:
                    safe_unlink(ctx, path)
                else:
                    safe_write_bytes(ctx, path, before)
            except (OSError, WorkspaceError) as undo_exc:
                problems.append(f"{display_path(ctx, path)}: {undo_exc}")
        for directory in reversed(created_dirs):
            with contextlib.suppress(OSError, WorkspaceError):
                safe_rmdir(ctx, directory)
        if problems:
            exc.add_note("rollback failed for: " + "; ".join(problems))
        raise


def _check_patch_paths(ctx: ToolContext, ops: list[FileOp]) -> None:
    """Every file the parsed patch touches, as this parser read it, against the deny rules.

    The agent checked the call before it ran, with ``permissions.patch_paths``; this second
    look, on the very paths about to be written, means a header the two read differently can
    never carry a write past ``deny edit(...)``.
    """
    policy = path_policy(ctx)
    if policy is None:
        return
    for op in ops:
        for path in (op.path, op.move_to):
            denied = policy.denied("apply_patch", path, ctx.workspace) if path else None
            if denied is not None:
                raise PatchError(denied.message)


def apply_patch_sync(
    ctx: ToolContext, patch: str, *, after_verify: Callable[[], None] | None = None
) -> ToolResult:
    """Parse, verify every hunk against the files as they are, then write it all or nothing.

    ``after_verify`` runs between verification and writing; tests use it to change the tree at
    exactly that moment (what a concurrent agent could do) and prove the rollback.
    """
    try:
        ops = parse_patch(patch)
        _check_patch_paths(ctx, ops)
        plan = _plan_patch(ctx, ops)
    except PatchError as exc:
        return _error(f"Patch not applied (nothing was changed): {exc}")
    except (WorkspaceError, OSError) as exc:
        reason = str(exc) if isinstance(exc, WorkspaceError) else describe_os_error(exc)
        return _error(f"Patch not applied (nothing was changed): {reason}")
    if after_verify is not None:
        after_verify()
    try:
        _commit_plan(ctx, plan)
    except (PatchError, WorkspaceError, OSError) as exc:
        reason = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
        notes = getattr(exc, "__notes__", [])
        tail = (" " + " ".join(notes)) if notes else ""
        return _error(
            f"Patch failed while writing and was rolled back (nothing was changed): {reason}{tail}"
        )
    return ToolResult(
        content="Applied patch:\n" + "\n".join(plan.summary),
        metadata={"changes": plan.summary},
    )


class ApplyPatch(Tool):
    name = "apply_patch"
    description = (
        "Apply a multi-file patch atomically: every hunk is checked against the current files "
        "first, and if anything fails nothing is changed. Format:\n"
        "*** Begin Patch\n"
        "*** Add File: path/new.py\n"
        "+line of the new file\n"
        "*** Update File: path/old.py\n"
        "*** Move to: path/renamed.py   (optional)\n"
        "@@ def some_function():   (optional line to locate the hunk)\n"
        " context line (leading space)\n"
        "-removed line\n"
        "+added line\n"
        "*** Delete File: path/gone.py\n"
        "*** End Patch\n"
        "Give about 3 lines of unchanged context around each change. Paths are relative to the "
        "workspace root. Add File fails if the file exists; Delete/Update fail if it does not."
    )
    Args = ApplyPatchArgs

    async def run(self, args: ApplyPatchArgs, ctx: ToolContext) -> ToolResult:
        return await run_blocking(apply_patch_sync, ctx, args.patch)


# --------------------------------------------------------------------------------------------
# ls


class LsArgs(BaseModel):
    path: str = Field(default=".", description="Directory to list (default: the workspace root).")
    ignore: list[str] | None = Field(
        default=None, description="Glob patterns of entry names to leave out, e.g. ['*.pyc']."
    )


def _ls_sync(args: LsArgs, ctx: ToolContext) -> ToolResult:
    path = resolve_path(ctx, args.path, must_exist=True)
    shown = display_path(ctx, path)
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return _error(f"{shown} is a file, not a directory; use read to see its contents")
    ignores = [compile_glob(g) for g in (args.ignore or [])]
    entries = [
        e
        for e in safe_listdir(ctx, path)
        if e.name != ".git" and not any(rx.match(e.name) for rx in ignores)
    ]
    entries, note = _policy_filtered_entries(ctx, path, entries)
    entries.sort(key=lambda e: e.name)
    lines: list[str] = []
    for e in entries[:LS_LIMIT]:
        if e.link_target is not None:
            lines.append(f"{e.name} -> {e.link_target}")
        elif e.is_dir:
            lines.append(f"{e.name}/")
        else:
            lines.append(f"{e.name}  ({human_size(e.size)})")
    header = f"{shown}/ ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'})"
    tail = f"\n{note}" if note else ""
    if not entries:
        return ToolResult(content=f"{header}: empty directory{tail}", metadata={"count": 0})
    body = "\n".join(lines)
    if len(entries) > LS_LIMIT:
        body += (
            f"\n... {len(entries) - LS_LIMIT} more entries not shown (listing is capped at "
            f"{LS_LIMIT}); use glob with a pattern or ls a subdirectory."
        )
    return ToolResult(content=f"{header}\n{body}{tail}", metadata={"count": len(entries)})


def _policy_filtered_entries(
    ctx: ToolContext, directory: Path, entries: list[DirEntry]
) -> tuple[list[DirEntry], str | None]:
    """The entries the permission rules let ``ls`` show (a denied path is not even named)."""
    policy = path_policy(ctx)
    if policy is None:
        return entries, None
    by_path = {display_path(ctx, directory / e.name): e for e in entries}
    kept, withheld = policy.filter("ls", by_path, ctx.workspace, contents=False)
    return [by_path[p] for p in kept], withheld_note(withheld)


class Ls(Tool):
    name = "ls"
    description = (
        "List one directory of the workspace (not recursive): subdirectories end with '/', files "
        f"show their size, symlinks show their target. Sorted by name; .git is skipped; at most "
        f"{LS_LIMIT} entries. Use glob to find files by pattern across the tree."
    )
    Args = LsArgs
    read_only = True

    async def run(self, args: LsArgs, ctx: ToolContext) -> ToolResult:
        return await run_blocking(_ls_sync, args, ctx)


# --------------------------------------------------------------------------------------------
# glob


class GlobArgs(BaseModel):
    pattern: str = Field(
        description="Glob relative to path, e.g. '**/*.py', 'src/**/*.{ts,tsx}', '*.md'."
    )
    path: str | None = Field(
        default=None, description="Directory to search in (default: the workspace root)."
    )


def _glob_sync(args: GlobArgs, ctx: ToolContext) -> ToolResult:
    base = resolve_path(ctx, args.path or ".", must_exist=True)
    shown = display_path(ctx, base)
    if not os.path.isdir(base):
        return _error(f"{shown} is not a directory; path must be a directory to search in")
    pattern = args.pattern.strip()
    if os.path.isabs(pattern):
        if not pattern.startswith(os.fspath(base).rstrip("/") + "/"):
            return _error(
                f"pattern {pattern!r} is absolute but not under {base}; give a pattern relative "
                "to path (e.g. '**/*.py')"
            )
        pattern = pattern[len(os.fspath(base).rstrip("/")) + 1 :]
    while pattern.startswith("./"):
        pattern = pattern[2:]
    if not pattern:
        return _error("pattern is empty; e.g. '**/*.py'")
    rx = compile_glob(pattern)
    listing = list_files(base)
    prefix = "" if shown == "." else shown + "/"
    matched = [p for p in listing.paths if rx.match(p) and os.path.lexists(base / p)]
    matched, withheld = _policy_filtered_paths(ctx, "glob", prefix, matched)
    matched = sort_newest_first(matched, base)
    total = len(matched)
    out = [prefix + p for p in matched[:GLOB_LIMIT]]
    if not out:
        note = " (files ignored by .gitignore are not searched)" if listing.used_git else ""
        return ToolResult(
            content=f"No files match {args.pattern!r} in {shown}{note}."
            + (f"\n{withheld}" if withheld else ""),
            metadata={"count": 0},
        )
    content = "\n".join(out)
    if withheld:
        content += f"\n{withheld}"
    if total > GLOB_LIMIT:
        content += (
            f"\n(showing the {GLOB_LIMIT} most recently modified of {total} matches; use a more "
            "specific pattern or path)"
        )
    if listing.truncated:
        content += f"\n(the directory walk stopped after {WALK_LIMIT} files)"
    return ToolResult(content=content, metadata={"count": total})


def _policy_filtered_paths(
    ctx: ToolContext, tool: str, prefix: str, paths: list[str]
) -> tuple[list[str], str | None]:
    """``paths`` (relative to the searched directory, whose workspace-relative spelling is
    ``prefix``) without those the permission rules keep from ``tool``, and a note saying so."""
    policy = path_policy(ctx)
    if policy is None:
        return paths, None
    kept, withheld = policy.filter(tool, (prefix + p for p in paths), ctx.workspace, contents=False)
    return [p[len(prefix) :] for p in kept], withheld_note(withheld)


class Glob(Tool):
    name = "glob"
    description = (
        "Find files by name pattern. Supports '**' (any depth), '*', '?', '[abc]' and "
        "'{a,b}'; a pattern without '/' only matches directly inside path, so use "
        "'**/*.py' to search the whole tree. Returns workspace-relative paths, most recently "
        f"modified first, at most {GLOB_LIMIT}. Inside a git repository, files ignored by "
        ".gitignore are skipped. Use grep to search file contents."
    )
    Args = GlobArgs
    read_only = True

    async def run(self, args: GlobArgs, ctx: ToolContext) -> ToolResult:
        return await run_blocking(_glob_sync, args, ctx)
