"""Instruction files: the AGENTS.md / CLAUDE.md a person already keeps, read as other agents do.

Why: people who come from Claude Code, OpenCode or Codex have their standing directives in
these files already. Reading them as those tools do — same names, same places, same ``@path``
imports — makes switching cost nothing, and the files stay the one place to change them.

What is read at the start of a run, in this order:

1. the person's files for every project: ``~/.claude/CLAUDE.md``, ``~/.claude/rules/**/*.md``,
   then stagecrew's own ``<config dir>/AGENTS.md`` (``~/.config/stagecrew/AGENTS.md``);
2. each directory from the repository root (the nearest ancestor holding ``.git``; without one,
   only the project root) down to the project root: ``AGENTS.md``, ``CLAUDE.md``,
   ``.claude/CLAUDE.md``, ``.claude/rules/**/*.md`` (sorted), ``CLAUDE.local.md``.

The order never depends on anything but the files, so the system prompt built from them is
byte-identical across runs and providers' prompt caches keep hitting; broader files come
first and the more specific ones after them, where a model weighs them most. A file reached
twice (the same real path, e.g. a CLAUDE.md symlinked to AGENTS.md, or a CLAUDE.md that
imports ``@AGENTS.md``) or with the same text as one already read enters once.

Imports follow Claude Code: ``@relative/path``, ``@~/path`` and ``@/abs/path`` as a
whitespace-separated token, resolved against the importing file, recursively to
``MAX_IMPORT_DEPTH`` levels. As in Claude Code the imported file is its own labelled block
right after the file that imports it (the ``@path`` stays in the importer's text, a pointer to
the block). An ``@`` inside a code span or a fenced code block is text, and so is an e-mail
address (the ``@`` must start the token). A token that names no existing file is a notice only
when it looks like a path (a ``/``, a known text extension, a ``./``/``~/`` prefix): ``@alice``
in prose is a mention, not a broken import.

Rules (``.claude/rules/*.md``) with a ``paths:`` front matter apply only to matching files:
like files in subdirectories below the project root, they are not read at the start but added
by ``InstructionTracker`` when the agent first reads a file they apply to.

Nothing here raises for a person's file: each problem (import cycle, missing import, imports
nested too deep, unreadable file, not UTF-8) becomes one line in ``Instructions.notices``
naming the file (and line) and what is wrong, and the rest of the setup still loads.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from stagecrew.memory.layers import fenced_lines
from stagecrew.memory.tokens import estimate_text_tokens

__all__ = [
    "MAX_IMPORT_DEPTH",
    "InstructionFile",
    "InstructionSource",
    "InstructionTracker",
    "Instructions",
    "SourceKind",
    "load_instructions",
    "repository_root",
]

SourceKind = Literal["user", "project", "rules", "local", "import"]

# Claude Code's limit: an imported file may import others, five hops deep at most.
MAX_IMPORT_DEPTH = 5
# A bigger "instruction file" is a mistake (a log, a dump); reading it would only be trimmed.
MAX_FILE_BYTES = 1_000_000

# Per directory, in this order; the rules directory sits between .claude/CLAUDE.md and the
# person's private CLAUDE.local.md, which comes last so it can refine everything shared.
_DIR_FILES: tuple[tuple[str, SourceKind], ...] = (
    ("AGENTS.md", "project"),
    ("CLAUDE.md", "project"),
    (".claude/CLAUDE.md", "project"),
)
_LOCAL_FILE = "CLAUDE.local.md"
_RULES_DIR = ".claude/rules"

# Tools that touch one file, and the argument naming it: reading (or writing) a file below a
# directory with its own instruction files brings those files in, as in Claude Code.
FILE_TOOLS: Mapping[str, str] = {"read": "file_path", "edit": "file_path", "write": "file_path"}

# Extensions that make a missing ``@token`` look like a broken import rather than a mention.
_TEXT_EXTENSIONS = frozenset(
    re.split(
        r"\s+",
        """md markdown mdx mdc txt rst adoc org tex json jsonc json5 yaml yml toml ini cfg conf
        env py pyi js mjs cjs ts tsx jsx go rs java kt kts rb php c h cc cpp hpp cs swift m sh
        bash zsh fish ps1 sql html htm css scss less xml csv tsv lock gradle proto graphql gql
        vue svelte lua r pl ex exs erl hs ml scala clj dart zig nim tf hcl nix cmake mk make""",
    )
)
_IMPORT = re.compile(r"(?<!\S)@((?:[^\s\\]|\\.)+)")
_TRAILING = ".,;:!?)]}>'\"*"
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?---[ \t]*(?:\n|\Z)", re.DOTALL)

_KIND_TEXT: Mapping[str, str] = {
    "user": "the person's instructions for every project",
    "project": "project instructions",
    "rules": "project rule",
    "local": "the person's private instructions for this project",
}


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class InstructionSource:
    """Where one block of instructions came from, for ``/memory`` and ``crew import claude``.

    ``path`` is the real path read; ``label`` is how people and the model see it (relative to
    the project root, ``~/`` for the home directory). ``paths`` and ``base`` are a conditional
    rule's globs and the directory they are relative to.
    """

    path: Path
    label: str
    kind: SourceKind
    imported_by: str | None = None
    size_bytes: int = 0
    tokens: int = 0
    paths: tuple[str, ...] = ()
    base: Path | None = None

    def describe(self) -> str:
        """What the file is, in a few words (the block header says it to the model)."""
        if self.kind == "import":
            return f"imported by {self.imported_by}"
        text = _KIND_TEXT[self.kind]
        if self.paths:
            text += " for " + ", ".join(self.paths)
        return text


@dataclass(frozen=True)
class InstructionFile:
    """One file's text as it enters the prompt (a rule's front matter removed)."""

    source: InstructionSource
    text: str

    def render(self) -> str:
        """The labelled block: the label tells the model which file says what."""
        return f"Contents of {self.source.label} ({self.source.describe()}):\n\n{self.text}"


@dataclass
class Instructions:
    """Everything read at the start of a run.

    ``files`` in prompt order (imports right after their importer); ``conditional`` holds the
    rules that wait for a matching file; ``notices`` one line per problem met.
    """

    files: list[InstructionFile] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    conditional: list[InstructionFile] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The blocks joined, ready for the system prompt ("" when there is nothing)."""
        return "\n\n".join(f.render() for f in self.files)

    @property
    def sources(self) -> list[InstructionSource]:
        return [f.source for f in self.files]


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Import:
    token: str  # as written after the @, for the notice
    path: str  # unescaped, fragment and trailing punctuation removed
    line: int


def _mask_code_spans(line: str) -> str:
    """``line`` with every inline code span blanked, so an ``@`` inside one is never seen."""
    out: list[str] = []
    i = 0
    while i < len(line):
        if line[i] != "`":
            out.append(line[i])
            i += 1
            continue
        j = i
        while j < len(line) and line[j] == "`":
            j += 1
        ticks = line[i:j]
        close = re.compile(rf"(?<!`){ticks}(?!`)")
        m = close.search(line, j)
        if m is None:  # an unmatched run of backticks is literal text
            out.append(ticks)
            i = j
            continue
        out.append(" " * (m.end() - i))
        i = m.end()
    return "".join(out)


def _find_imports(text: str) -> list[_Import]:
    """The ``@path`` imports of a file, in order, outside code spans and fenced blocks."""
    lines = text.split("\n")
    found: list[_Import] = []
    for number, (line, fenced) in enumerate(zip(lines, fenced_lines(lines), strict=True), 1):
        if fenced or "@" not in line:
            continue
        for m in _IMPORT.finditer(_mask_code_spans(line)):
            token = m.group(1)
            path = re.sub(r"\\(.)", r"\1", token).split("#", 1)[0].rstrip(_TRAILING)
            if path and path not in ("/", "~", "~/"):
                found.append(_Import(token, path, number))
    return found


def _looks_like_path(path: str) -> bool:
    if path.startswith(("./", "../", "~/", "/")) or "/" in path:
        return True
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return suffix in _TEXT_EXTENSIONS


def _split_front_matter(text: str) -> tuple[str, tuple[str, ...]]:
    """A rule's body and its ``paths:`` globs (a YAML list or a comma-separated string)."""
    m = _FRONT_MATTER.match(text)
    if m is None:
        return text, ()
    body = text[m.end() :]
    try:
        import yaml

        data = yaml.safe_load(m.group(1) or "")
    except Exception:  # a broken header is not worth losing the rule over: keep it whole
        return text, ()
    raw = data.get("paths") if isinstance(data, dict) else None
    if isinstance(raw, str):
        globs = [part.strip() for part in raw.split(",")]
    elif isinstance(raw, list):
        globs = [str(part).strip() for part in raw]
    else:
        globs = []
    return body, tuple(g for g in globs if g)


def _glob_regex(glob: str) -> re.Pattern[str]:
    """A path glob as a regex: ``**`` crosses directories, ``*`` and ``?`` do not, ``{a,b}``
    alternates (the shapes Claude Code's ``paths:`` examples use)."""
    glob = glob.lstrip("/").removeprefix("./")
    out: list[str] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "{" and "}" in glob[i:]:
            end = glob.index("}", i)
            out.append("(?:" + "|".join(re.escape(a) for a in glob[i + 1 : end].split(",")) + ")")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _matches(globs: Iterable[str], rel: str) -> bool:
    return any(_glob_regex(g).match(rel) for g in globs)


# ----------------------------------------------------------------------------- discovery


def _stat(path: Path) -> os.stat_result | OSError | None:
    """``os.stat``; ``None`` when there is nothing there, the error when something is in the
    way (a directory the person cannot enter is worth a notice, a missing file is not)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return exc


def repository_root(project_root: Path) -> Path | None:
    """The nearest directory at or above ``project_root`` holding ``.git`` (a directory, or a
    file as in a worktree); ``None`` outside a repository."""
    for d in (project_root, *project_root.parents):
        if isinstance(_stat(d / ".git"), os.stat_result):
            return d
    return None


def _walk_dirs(project_root: Path) -> list[Path]:
    """The repository root down to the project root, both included."""
    repo = repository_root(project_root)
    if repo is None or repo == project_root:
        return [project_root]
    dirs = [repo]
    for part in project_root.relative_to(repo).parts:
        dirs.append(dirs[-1] / part)
    return dirs


def _rule_files(rules_dir: Path) -> list[Path]:
    """Every ``*.md`` under a rules directory, sorted by relative path (none if unreadable)."""
    if not isinstance(_stat(rules_dir), os.stat_result):
        return []
    try:
        found = list(rules_dir.rglob("*.md"))
    except OSError:
        return []
    return sorted(found, key=lambda p: p.relative_to(rules_dir).as_posix())


def _is_rule(path: Path) -> bool:
    """A file under a ``.claude/rules`` directory (its front matter may make it conditional)."""
    parts = path.parts
    return any(a == ".claude" and b == "rules" for a, b in itertools.pairwise(parts))


def _dir_candidates(d: Path) -> list[tuple[Path, SourceKind]]:
    """One directory's instruction files, in their fixed order (whether they exist or not)."""
    out: list[tuple[Path, SourceKind]] = [(d / name, kind) for name, kind in _DIR_FILES]
    out += [(p, "rules") for p in _rule_files(d / _RULES_DIR)]
    out.append((d / _LOCAL_FILE, "local"))
    return out


def _user_candidates(home: Path | None, config_dir: Path) -> list[tuple[Path, SourceKind]]:
    out: list[tuple[Path, SourceKind]] = []
    if home is not None:
        out.append((home / ".claude" / "CLAUDE.md", "user"))
        out += [(p, "user") for p in _rule_files(home / ".claude" / "rules")]
    out.append((config_dir / "AGENTS.md", "user"))
    return out


# ----------------------------------------------------------------------------- loading


class _Loader:
    """Reads files and their imports once each; collects notices instead of raising."""

    def __init__(self, project_root: Path, home: Path | None) -> None:
        self.project_root = project_root
        self.repo_root = repository_root(project_root)
        self.home = home
        self.seen_paths: set[str] = set()
        self.seen_texts: set[str] = set()
        self.notices: list[str] = []

    def label(self, path: Path) -> str:
        """How a file is named to people and the model: short and stable across machines."""
        p = Path(os.path.abspath(path))
        if p.is_relative_to(self.project_root):
            return p.relative_to(self.project_root).as_posix()
        if self.repo_root is not None and p.is_relative_to(self.repo_root):
            return Path(os.path.relpath(p, self.project_root)).as_posix()
        if self.home is not None and p.is_relative_to(self.home):
            return "~/" + p.relative_to(self.home).as_posix()
        return str(p)

    def _read(self, path: Path, where: str) -> str | None:
        """The file's text, or ``None`` after a notice naming what is wrong with it."""
        st = _stat(path)
        if st is None:
            return None
        try:
            if isinstance(st, OSError):
                raise st
            if not stat.S_ISREG(st.st_mode):  # a directory, or a FIFO that would block a read
                what = "a directory" if stat.S_ISDIR(st.st_mode) else "a special file"
                self.notices.append(f"{where}: is {what}, not a regular file; skipped")
                return None
            if st.st_size > MAX_FILE_BYTES:
                self.notices.append(
                    f"{where}: {st.st_size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit "
                    "for an instruction file; skipped"
                )
                return None
            data = path.read_bytes()
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            self.notices.append(f"{where}: cannot read ({reason}); skipped")
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.notices.append(
                f"{where}: not UTF-8 (byte {exc.start}); skipped; save the file as UTF-8"
            )
            return None
        return text.removeprefix("\ufeff").replace("\r\n", "\n")

    def load(
        self,
        path: Path,
        kind: SourceKind,
        *,
        base: Path | None = None,
        conditional: list[InstructionFile] | None = None,
    ) -> list[InstructionFile]:
        """A top-level file and its imports, in prompt order; ``[]`` if absent or seen.

        A rule with ``paths:`` globs goes to ``conditional`` (when given) instead of loading;
        without that list it loads (its globs just matched).
        """
        label = self.label(path)
        real = os.path.realpath(path)
        if real in self.seen_paths:
            return []
        text = self._read(path, label)
        if text is None:
            return []
        globs: tuple[str, ...] = ()
        if _is_rule(path):
            text, globs = _split_front_matter(text)
        source = InstructionSource(Path(real), label, kind, paths=globs, base=base)
        if globs and conditional is not None:
            body = text.strip()
            conditional.append(InstructionFile(_sized(source, body), body))
            return []
        return self._accept(source, text, 0, ())

    def _accept(
        self,
        source: InstructionSource,
        text: str,
        depth: int,
        chain: tuple[tuple[str, str], ...],
    ) -> list[InstructionFile]:
        """Take a read file (unless its text is already in), then its imports depth-first."""
        real = str(source.path)
        self.seen_paths.add(real)
        body = text.strip()
        if not body or body in self.seen_texts:
            return []
        self.seen_texts.add(body)
        source = _sized(source, body)
        out = [InstructionFile(source, body)]
        chain = (*chain, (real, source.label))
        for imp in _find_imports(body):
            out += self._import(imp, source, depth + 1, chain)
        return out

    def _resolve(self, imp: _Import, importer: InstructionSource) -> Path | None:
        if imp.path.startswith("~/"):
            return None if self.home is None else self.home / imp.path[2:]
        if imp.path.startswith("/"):
            return Path(imp.path)
        return Path(os.path.normpath(importer.path.parent / imp.path))

    def _import(
        self,
        imp: _Import,
        importer: InstructionSource,
        depth: int,
        chain: tuple[tuple[str, str], ...],
    ) -> list[InstructionFile]:
        """One ``@path`` of ``importer``: a notice for each way it can fail, else its file."""
        where = f"{importer.label}:{imp.line}"
        target = self._resolve(imp, importer)
        if target is None:
            return []
        real = os.path.realpath(target)
        in_chain = [label for path, label in chain if path == real]
        if in_chain:
            loop = " → ".join([*(label for _, label in chain), in_chain[0]])
            self.notices.append(f"{where}: import @{imp.token} refused: import cycle ({loop})")
            return []
        if real in self.seen_paths:
            return []  # already in the prompt, e.g. a CLAUDE.md importing @AGENTS.md
        st = _stat(target)
        if st is None:
            if _looks_like_path(imp.path):
                self.notices.append(
                    f"{where}: import @{imp.token}: no such file {self.label(target)} "
                    "(write it in backticks if it is not an import)"
                )
            return []
        if depth > MAX_IMPORT_DEPTH:
            self.notices.append(
                f"{where}: import @{imp.token} refused: imports nest deeper than "
                f"{MAX_IMPORT_DEPTH} levels"
            )
            return []
        text = self._read(target, f"{where}: import @{imp.token}")
        if text is None:
            return []
        source = InstructionSource(
            Path(real), self.label(target), "import", imported_by=importer.label
        )
        return self._accept(source, text, depth, chain)


def _sized(source: InstructionSource, body: str) -> InstructionSource:
    return replace(source, size_bytes=len(body.encode("utf-8")), tokens=estimate_text_tokens(body))


def _home_or_none(home: Path | str | None) -> Path | None:
    if home is not None:
        return Path(os.path.realpath(home))
    try:
        return Path(os.path.realpath(Path.home()))
    except (RuntimeError, KeyError):  # no HOME and no passwd entry: no user files
        return None


def load_instructions(
    project_root: Path | str,
    home: Path | str | None = None,
    config_dir: Path | str | None = None,
) -> Instructions:
    """The person's instruction files for a run in ``project_root`` (see the module docstring).

    ``home`` defaults to ``Path.home()``; ``config_dir`` to stagecrew's user config directory
    (``STAGECREW_CONFIG_DIR`` or ``~/.config/stagecrew``). Never raises for a file's content.
    """
    if config_dir is None:
        from stagecrew.config import user_config_dir

        config_dir = user_config_dir()
    root = Path(os.path.realpath(project_root))
    loader = _Loader(root, _home_or_none(home))
    out = Instructions()
    for path, kind in _user_candidates(loader.home, Path(config_dir)):
        out.files += loader.load(path, kind, base=root, conditional=out.conditional)
    for d in _walk_dirs(root):
        for path, kind in _dir_candidates(d):
            out.files += loader.load(path, kind, base=d, conditional=out.conditional)
    out.notices = loader.notices
    return out


# ----------------------------------------------------------------------------- nested files


class InstructionTracker:
    """Instruction files below the project root, brought in when the agent first reaches them.

    Claude Code reads a subdirectory's CLAUDE.md the first time it reads a file under that
    directory, so a monorepo's package rules cost nothing until the agent works there. The
    tracker remembers what the run already has (everything ``load_instructions`` read), so
    each file comes once per run; ``notices`` collects the problems met on the way.
    """

    def __init__(
        self, loaded: Instructions, project_root: Path | str, home: Path | str | None = None
    ):
        self.project_root = Path(os.path.realpath(project_root))
        self._loader = _Loader(self.project_root, _home_or_none(home))
        self._loader.seen_paths = {str(f.source.path) for f in loaded.files}
        self._loader.seen_texts = {f.text for f in loaded.files}
        self._pending: list[InstructionFile] = list(loaded.conditional)
        self._visited: set[Path] = set()
        self.notices: list[str] = []

    def for_path(self, path: Path | str) -> list[InstructionFile]:
        """Files not yet in this run that apply to ``path`` (relative to the project root, or
        absolute): those of every directory between the project root (exclusive) and the
        file's directory (inclusive), then the waiting rules whose globs match it."""
        target = Path(os.path.realpath(self.project_root / path))
        if target == self.project_root or not target.is_relative_to(self.project_root):
            return []
        out: list[InstructionFile] = []
        is_dir = isinstance(st := _stat(target), os.stat_result) and stat.S_ISDIR(st.st_mode)
        here = target if is_dir else target.parent
        d = self.project_root
        for part in here.relative_to(self.project_root).parts:
            d = d / part
            if d not in self._visited:
                self._visited.add(d)
                for file, kind in _dir_candidates(d):
                    out += self._loader.load(file, kind, base=d, conditional=self._pending)
        out += self._matching_rules(target)
        self.notices += self._loader.notices
        self._loader.notices = []
        return out

    def _matching_rules(self, target: Path) -> list[InstructionFile]:
        out: list[InstructionFile] = []
        for rule in list(self._pending):
            base = rule.source.base or self.project_root
            if not target.is_relative_to(base):
                continue
            if _matches(rule.source.paths, target.relative_to(base).as_posix()):
                self._pending.remove(rule)
                out += self._loader.load(rule.source.path, rule.source.kind, base=base)
        return out

    def for_tool_call(self, tool: str, arguments: Mapping[str, Any]) -> str:
        """What to append to a file tool's result: the newly relevant files, each labelled
        (``""`` for other tools and when nothing is new)."""
        key = FILE_TOOLS.get(tool)
        value = arguments.get(key) if key else None
        if not isinstance(value, str) or not value.strip() or "\x00" in value:
            return ""
        return render_nested(self.for_path(os.path.expanduser(value)))


def render_nested(files: Iterable[InstructionFile]) -> str:
    """Nested files as an appendix to a tool result: a label line, then the file's text."""
    parts = []
    for f in files:
        src = f.source
        also = f", imported by {src.imported_by}" if src.kind == "import" else ""
        parts.append(f"\n\n[stagecrew: instructions from {src.label}{also}]\n{f.text}")
    return "".join(parts)
