"""Who may do what: ``allow | ask | deny`` rules per tool, bash command and path.

Grammar (one rule per string)::

    rule    := ACTION " " TOOL [ "(" PATTERN ")" ]
    ACTION  := "allow" | "ask" | "deny"
    TOOL    := a lowercase tool name or a glob over names ("*" = every tool)
    PATTERN := everything up to the final ")"; its meaning depends on the tool:
               bash            glob over the normalised simple command ("git push *")
               read write edit apply_patch glob grep ls
                               path glob, relative to the workspace ("src/**", "*.pem")
               webfetch        glob over the host ("*.github.com") or, with "://", the URL
               anything else   glob over each top-level string argument

Rules are concatenated in layer order (defaults < user < project < agent profile < flags) and
the **last matching rule wins**, so a later layer can both loosen and tighten an earlier one.

Bash patterns: ``*`` matches any run of characters (spaces and ``/`` included), ``?`` one
character; the match is anchored at both ends. A trailing ``" *"`` also matches nothing, so
``git push *`` covers a bare ``git push`` too (otherwise ``deny bash(git push *)`` would let the
most dangerous form through). A compound command is checked part by part, and every unwrapping
stage of a part is checked (``sudo rm x`` runs sudo *and* rm); the strictest answer wins
(deny > ask > allow) and the reason names the part. A stage spelled with a path
(``/bin/rm``) is also checked by its base name, but only to tighten: ``./ls`` must not ride on
``allow bash(ls *)``. git stages are also checked without git's global options
(``git -C x push`` as ``git push``), and through git aliases (``-c alias.x=push``, a
``git config alias.x …`` earlier on the line, the repository's and the person's git config read
at check time; a ``!shell`` alias is checked as the command it runs). Commands we could not
fully parse, or that contain substitutions, are at least ``ask``: we cannot see all of what they
run.

A deny rule fails closed: a list of wrappers is never complete (``setsid``, ``flock FILE``,
``busybox`` …), so a bash deny rule also matches from *any* word of a command that names the
denied program (``flock /tmp/x rm f`` is checked as ``rm f`` too), inside any argument that
parses as a command (``script -qc 'rm f' /dev/null``, ``ssh host 'rm f'``), and for a git
subcommand that is neither git's own nor an alias we can resolve, as every subcommand a deny
rule names (``git yolo`` could be ``git push``). A false deny is the price; a missed one is not
acceptable. These wider matches never apply to ``allow`` (or ``ask``) rules, so they can only
tighten. A command that names a path a deny rule protects is denied too (``cat .env`` under
``deny read(.env)``; writing into an edit-denied path unless the command is one plan mode knows
to be read-only): the pattern layer under the OS sandbox.

Path patterns are gitignore-like: a pattern without ``/`` matches the file name at any depth
(``.env`` matches ``sub/.env``, ``*.pem`` matches ``/etc/ssl/x.pem``); one with ``/`` is anchored
at the workspace root (or is absolute when it starts with ``/``); ``**`` spans directories, ``*``
and ``?`` do not cross ``/``; ``dir/**`` also matches ``dir`` itself. A path reaching a file
through a symlink is checked under both names.

A path rule is about the path, whichever tool touches it: ``deny``/``ask read(...)`` also holds
for grep, glob and ls (whose results are filtered too: ``PathPolicy``), a ``deny read`` also for
the writing tools, and ``deny``/``ask`` rules of edit, write or apply_patch hold for all three.
An ``allow`` rule stays with the tool it names, and a rule without a pattern is about its tool
alone (``deny write`` with ``allow edit`` keeps editing possible). An MCP tool's string
arguments that name paths are checked as reads, or as writes unless the server marks the tool
read-only.

Claude Code's rules are accepted as they are, marked by the settings file they came from::

    deny Read(./.env) from .claude/settings.json
    allow Bash(npm run test:*) from ~/.claude/settings.json

(``stagecrew.claude.permissions`` writes them so from ``permissions.allow/ask/deny``). They keep
Claude Code's meaning. ``Bash(npm run test:*)`` is the legacy prefix form: ``npm run test``
itself or followed by a space and anything, never ``npm run testx`` nor ``npm run test:unit``
(Claude Code checks a word boundary). ``Bash(git diff *)`` is a wildcard: ``*`` is any text,
a backslash before it a literal star, and a lone trailing `` *`` is optional. Anything else is
the exact command. Path specifiers follow gitignore: ``./x`` or ``x`` is relative to the
workspace (a name without ``/`` matches at any depth), ``/x`` is anchored at the directory
holding the settings file's ``.claude/`` (the workspace, or the home directory for ``~/...``
sources), ``//x`` is absolute, ``~/x`` is in the home directory, and a pattern matching a
directory covers what is inside it. ``Read`` rules apply to every reading tool (read, grep,
glob, ls), and a ``Read`` deny to every writing one too (edit, write, apply_patch): what must
not be read must not be replaced either. ``Edit`` rules apply to every writing tool.
``WebFetch(domain:example.com)`` names a host; ``mcp__server`` covers all of a server's tools.
Among Claude Code's rules the order is Claude Code's: a matching deny decides, then ask, then
allow, wherever each sits. A run of them counts as one rule in stagecrew's last-match order
(so stagecrew's own later layers refine them), except that their deny is final, as in Claude
Code: no later rule lifts it.

When no rule matches, the answer is ``ask``. ``ask_policy`` says what ``ask`` becomes when
nobody is at the terminal. Session memory turns a matching ``ask`` into ``allow`` but never
lifts a ``deny``: ``remember(tool, pattern)`` takes a rule-style glob, ``remember_call(tool,
arguments, workspace)`` remembers exactly one call (its command line, its normalised paths).
"""

from __future__ import annotations

import glob as globbing
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from stagecrew.tools.shell_parse import (
    WRAPPERS,
    GitCall,
    ParsedCommand,
    SimpleCommand,
    git_call,
    split_command,
)

if TYPE_CHECKING:
    from stagecrew.tools.base import ToolContext

__all__ = [
    "DEFAULT_RULES",
    "FILE_TOOLS",
    "LAYER_ORDER",
    "Action",
    "Decision",
    "PathPolicy",
    "PermissionChecker",
    "Rule",
    "RuleError",
    "attach_path_policy",
    "bash_pattern_matches",
    "claude_bash_matches",
    "claude_rule_tools",
    "combine_layers",
    "parse_rule",
    "parse_rules",
    "patch_paths",
    "path_pattern_matches",
    "path_policy",
    "withheld_note",
]

Action = Literal["allow", "ask", "deny"]
AskPolicy = Literal["ask", "allow", "deny"]
_STRICTNESS: dict[str, int] = {"allow": 0, "ask": 1, "deny": 2}

FILE_TOOLS = frozenset({"read", "write", "edit", "apply_patch", "glob", "grep", "ls"})
_READING = ("read", "grep", "glob", "ls")
_WRITING = ("edit", "write", "apply_patch")
LAYER_ORDER = ("defaults", "user", "project", "agent", "flags")

# Allow everything, but stop and ask before reading secrets or doing the classic irreversible
# things. The rm variants exist because patterns match text, and ``rm -fr`` is not ``rm -rf``.
DEFAULT_RULES: tuple[str, ...] = (
    "allow *",
    "ask read(.env)",
    "ask read(.env.*)",
    "ask read(*.pem)",
    "ask read(*.key)",
    "ask read(id_rsa*)",
    "ask read(**/.ssh/**)",
    "ask read(**/credentials*)",
    "ask bash(git push *)",
    "ask bash(rm -rf *)",
    "ask bash(rm -fr *)",
    "ask bash(rm -r *)",
    "ask bash(rm -R *)",
    "ask bash(sudo *)",
)

# Argument names the file tools use for the paths they touch (``file_path`` for read/write/edit,
# ``path`` for ls/glob/grep); other spellings are accepted so a renamed field fails closed.
_PATH_KEYS = ("file_path", "path", "filePath", "filepath", "file", "filename", "directory", "dir")
_DEFAULT_PATH_TOOLS = frozenset({"glob", "grep", "ls"})  # no path = the workspace root


class RuleError(ValueError):
    """A rule string that does not follow the grammar; the message quotes it."""


@dataclass(frozen=True)
class Rule:
    """One parsed rule. ``layer`` records where it came from, for people reading decisions."""

    action: Action
    tool: str
    pattern: str | None = None
    layer: str | None = None
    # Session answers about one exact call: compared for equality, never as a glob, so
    # remembering ``rm -rf *`` does not allow ``rm -rf /``.
    literal: bool = False
    # Set for a rule in Claude Code's syntax: the settings file it came from, as people name
    # it (``.claude/settings.json``). ``tool`` and ``pattern`` are then Claude Code's, as written.
    source: str | None = None

    def __str__(self) -> str:
        target = self.tool if self.pattern is None else f"{self.tool}({self.pattern})"
        origin = f" from {self.source}" if self.source is not None else ""
        return f"{self.action} {target}{origin}"

    @property
    def claude(self) -> bool:
        """Whether the rule is in Claude Code's syntax (and so has its meaning)."""
        return self.source is not None

    def matches_tool(self, tool: str) -> bool:
        if self.claude:
            return _claude_covers(self.tool, self.action, tool)
        if self.tool == tool or fnmatchcase(tool, self.tool):
            return True
        return self.pattern is not None and tool in _path_rule_reach(self.tool, self.action)


def _path_rule_reach(tool: str, action: str) -> tuple[str, ...]:
    """The other tools a stagecrew path rule holds for (see the module docstring): a path
    rule is about the path, so denying or asking before ``read(.env)`` must not be undone by
    grepping it, and ``deny edit(secret/**)`` by writing or patching there. Never for allow."""
    if action == "allow":
        return ()
    if tool == "read":
        return _READING + _WRITING if action == "deny" else _READING
    if tool in _WRITING:
        return _WRITING
    return ()


_RULE_RE = re.compile(r"^\s*(\w+)\s+([^\s(]+)\s*(?:\((.*)\))?\s*$", re.DOTALL)
_TOOL_RE = re.compile(r"^[a-z0-9_*?\-\[\]]+$")


def parse_rule(text: str | Rule, layer: str | None = None) -> Rule:
    """Parse ``"deny bash(git push *)"`` or Claude Code's ``"deny Read(./.env) from
    .claude/settings.json"``; ``RuleError`` says what is wrong with which rule."""
    if isinstance(text, Rule):
        return text if layer is None or text.layer is not None else _with_layer(text, layer)
    if not isinstance(text, str):
        raise RuleError(f"permission rule must be a string, got {type(text).__name__}: {text!r}")
    claude = _CLAUDE_RULE_RE.match(text)
    if claude is not None:
        return _parse_claude_rule(text, claude, layer)
    m = _RULE_RE.match(text)
    if not m:
        raise RuleError(
            f"invalid permission rule {text!r}: expected 'ACTION TOOL' or 'ACTION TOOL(PATTERN)', "
            "e.g. 'deny bash(git push *)'"
        )
    action, tool, pattern = m.group(1).lower(), m.group(2).lower(), m.group(3)
    if action not in _STRICTNESS:
        raise RuleError(
            f"invalid permission rule {text!r}: action must be allow, ask or deny, not {action!r}"
        )
    if not _TOOL_RE.match(tool):
        raise RuleError(f"invalid permission rule {text!r}: bad tool name {tool!r}")
    if pattern is not None:
        pattern = pattern.strip()
        if not pattern:
            raise RuleError(
                f"invalid permission rule {text!r}: empty pattern; write '{action} {tool}' "
                "to match every call"
            )
    return Rule(action=action, tool=tool, pattern=pattern, layer=layer)  # type: ignore[arg-type]


def _with_layer(rule: Rule, layer: str) -> Rule:
    return replace(rule, layer=layer)


# -- Claude Code's rules ---------------------------------------------------------------------

# ``ACTION Tool[(specifier)] from SOURCE``: the source has no parentheses, so the specifier
# runs to the last ")" before it and may itself hold " from " or parentheses.
_CLAUDE_RULE_RE = re.compile(
    r"^\s*(\w+)\s+([A-Za-z][\w*-]*)(?:\((.*)\))?\s+from\s+([^()\s][^()]*?)\s*$", re.DOTALL
)
_MCP_NAME_RE = re.compile(r"^mcp__[\w-]+(?:__[\w*-]+)?$")
# Which stagecrew tools a rule of Claude Code's file tools covers beyond the tool of that
# name: Claude Code applies Read rules to every reading tool and Edit rules to every writing
# one; a Read deny also guards the writing tools (what must not be read must not be replaced).
_WIDER: dict[str, tuple[str, ...]] = {"Read": _READING, "Edit": _WRITING}


@lru_cache(maxsize=256)
def claude_rule_tools(tool: str, action: str = "allow") -> frozenset[str]:
    """The stagecrew tools a Claude Code rule for ``tool`` applies to (empty: none, including
    for ``mcp__`` names, which are matched by prefix instead)."""
    # Imported here: the name table belongs to the hooks package, whose import reads settings
    # through ``stagecrew.claude``, which imports this module.
    from stagecrew.hooks.names import stagecrew_tools

    if tool.startswith("mcp__"):
        return frozenset()
    tools = set(stagecrew_tools(tool)) | set(_WIDER.get(tool, ()))
    if tool == "Read" and action == "deny":
        tools |= set(_WRITING)
    return frozenset(tools)


def _claude_covers(claude_tool: str, action: str, tool: str) -> bool:
    if claude_tool.startswith("mcp__"):
        name, wanted = claude_tool.lower(), tool.lower()
        if "*" in name:
            return fnmatchcase(wanted, name)
        server_only = name.count("__") == 1
        return wanted == name or (server_only and wanted.startswith(name + "__"))
    return tool in claude_rule_tools(claude_tool, action)


def _parse_claude_rule(text: str, m: re.Match[str], layer: str | None) -> Rule:
    action, tool, spec, source = m.group(1).lower(), m.group(2), m.group(3), m.group(4)
    if action not in _STRICTNESS:
        raise RuleError(
            f"invalid permission rule {text!r}: action must be allow, ask or deny, not {action!r}"
        )
    from stagecrew.hooks.names import CLAUDE_ONLY_TOOLS  # see claude_rule_tools

    shown = tool if spec is None else f"{tool}({spec})"
    if tool.startswith("mcp__"):
        if not _MCP_NAME_RE.match(tool):
            raise RuleError(f"{shown!r}: not an MCP tool name (mcp__server or mcp__server__tool)")
    elif tool in CLAUDE_ONLY_TOOLS:
        raise RuleError(f"{shown!r}: stagecrew has no {tool} tool, so the rule never applies")
    elif not claude_rule_tools(tool):
        raise RuleError(f"{shown!r}: unknown Claude Code tool {tool!r}")
    spec = spec.strip() if spec is not None else None
    if spec == "":
        spec = None  # ``Bash()`` is ``Bash``, as in Claude Code
    if tool == "WebFetch" and spec is not None and not spec.startswith("domain:"):
        raise RuleError(
            f"{shown!r}: WebFetch rules name a host, as in WebFetch(domain:example.com)"
        )
    return Rule(action, tool, spec, layer, source=source.strip())  # type: ignore[arg-type]


def parse_rules(texts: Iterable[str | Rule], layer: str | None = None) -> list[Rule]:
    return [parse_rule(t, layer) for t in texts]


def combine_layers(
    layers: Sequence[Iterable[str | Rule] | None] | Mapping[str, Iterable[str | Rule] | None],
) -> list[Rule]:
    """Concatenate layers, lowest precedence first; last matching rule wins downstream.

    A mapping is ordered by ``LAYER_ORDER`` (``{"project": [...], "defaults": [...]}`` works);
    a sequence is taken in the order given. ``None`` layers are skipped.
    """
    if isinstance(layers, Mapping):
        unknown = set(layers) - set(LAYER_ORDER)
        if unknown:
            raise RuleError(
                f"unknown permission layer(s) {sorted(unknown)}; expected {list(LAYER_ORDER)}"
            )
        named: list[tuple[str | None, Iterable[str | Rule] | None]] = [
            (name, layers.get(name)) for name in LAYER_ORDER
        ]
    else:
        named = [
            (LAYER_ORDER[i] if len(layers) == len(LAYER_ORDER) else None, layer)
            for i, layer in enumerate(layers)
        ]
    rules: list[Rule] = []
    for name, layer in named:
        if layer is not None:
            rules.extend(parse_rules(layer, name))
    return rules


@dataclass(frozen=True)
class Decision:
    """The answer for one tool call. ``rule`` is the deciding rule's text, if a rule decided."""

    action: Action
    rule: str | None
    reason: str

    @property
    def allowed(self) -> bool:
        return self.action == "allow"

    @property
    def message(self) -> str:
        """What the model is told when the call does not go ahead."""
        if self.action == "deny":
            return f"Permission denied: {self.reason}"
        if self.action == "ask":
            return f"Permission required: {self.reason}"
        return self.reason


# --------------------------------------------------------------------------------------------
# Pattern matching


@lru_cache(maxsize=1024)
def _bash_regex(pattern: str) -> re.Pattern[str]:
    optional_tail = pattern.endswith(" *")
    body = pattern[:-2] if optional_tail else pattern
    out = []
    for ch in body:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    regex = "".join(out) + ("(?: .*)?" if optional_tail else "")
    return re.compile(regex, re.DOTALL)


def bash_pattern_matches(pattern: str, command: str) -> bool:
    """``git push *`` matches ``git push origin main`` and ``git push`` (documented above)."""
    return _bash_regex(pattern).fullmatch(command) is not None


@lru_cache(maxsize=1024)
def _path_regex(pattern: str) -> re.Pattern[str]:
    i, n, out = 0, len(pattern), []
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == n:
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def path_pattern_matches(pattern: str, rel: str, absolute: str) -> bool:
    """Gitignore-like match; ``rel`` is workspace-relative, or absolute for paths outside it."""
    if pattern.startswith("/"):
        return _path_regex(pattern).fullmatch(absolute) is not None
    pat = pattern[2:] if pattern.startswith("./") else pattern
    if "/" not in pat.rstrip("/"):
        regex = _path_regex(pat)
        if not rel.startswith("/") and regex.fullmatch(rel) is not None:
            return True  # "." names the workspace root itself
        return regex.fullmatch(os.path.basename(absolute.rstrip("/"))) is not None
    if not rel.startswith("/") and _path_regex(pat).fullmatch(rel) is not None:
        return True
    # ``**/.ssh/**`` should catch ~/.ssh/id_rsa even though it is outside the workspace.
    return pat.startswith("**/") and _path_regex(pat).fullmatch(absolute.lstrip("/")) is not None


@lru_cache(maxsize=1024)
def _claude_wildcard(pattern: str) -> re.Pattern[str]:
    # Claude Code's matchWildcardPattern: ``*`` is any text, ``\*`` a star, ``\\`` a backslash;
    # when the only wildcard is a trailing `` *``, the space and what follows are optional.
    out: list[str] = []
    stars = 0
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "*\\":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "*":
            stars += 1
            out.append(".*")
        else:
            out.append(re.escape(ch))
        i += 1
    if stars == 1 and len(out) >= 2 and out[-1] == ".*" and out[-2] == re.escape(" "):
        out[-2:] = ["(?: .*)?"]
    return re.compile("".join(out), re.DOTALL)


def claude_bash_matches(specifier: str, command: str) -> bool:
    """Whether a Claude Code ``Bash(...)`` specifier matches one simple command, as Claude Code
    decides it: ``prefix:*`` is the legacy prefix form (the prefix itself or the prefix, a
    space and anything: a word boundary, so ``ls:*`` never matches ``lsof``), a specifier with
    an unescaped ``*`` is a wildcard, anything else the exact command."""
    spec = specifier.strip()
    if spec.endswith(":*") and len(spec) > 2:
        prefix = spec[:-2]
        return command == prefix or command.startswith(prefix + " ")
    if re.search(r"(?<!\\)(?:\\\\)*\*", spec):
        return _claude_wildcard(spec).fullmatch(command) is not None
    return command == spec


def _gitignore_matches(pattern: str, rel: str) -> bool:
    """gitignore's reading of ``pattern`` against the relative path ``rel``: with a ``/`` at
    the start or inside, the pattern is anchored; without, it matches at any depth; and a
    pattern matching a directory matches everything inside it (the ``ignore`` library Claude
    Code uses checks every parent)."""
    pat = pattern.rstrip("/") if pattern not in ("/", "") else pattern
    anchored = "/" in pat
    pat = pat.lstrip("/")
    if not pat:
        return False
    regex = _path_regex(pat if anchored else "**/" + pat)
    parts = rel.split("/")
    return any(regex.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1))


def _claude_path_matches(specifier: str, source: str, target: _Target) -> bool:
    """A Claude Code path specifier against one path, relative to the root its form names."""
    if specifier.startswith("//"):
        root, pattern = "/", specifier[1:]
    elif specifier.startswith("~/"):
        root, pattern = os.path.expanduser("~"), specifier[1:]
    elif specifier.startswith("/"):
        # The directory holding the settings file's ``.claude/``: the person's home for
        # ``~/.claude/settings.json``, the project (the workspace) for the project's files.
        home_source = source.startswith("~")
        root, pattern = (os.path.expanduser("~") if home_source else None), specifier
    else:
        root, pattern = None, specifier[2:] if specifier.startswith("./") else specifier
    if root is None:
        rel = target.value  # workspace-relative, or absolute when outside the workspace
        if rel.startswith("/"):
            return False  # Claude Code skips paths outside the rule's root
    else:
        rel = os.path.relpath(target.absolute, root)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            return False
    if rel in ("", os.curdir):
        return False
    return _gitignore_matches(pattern, rel)


def _url_matches(pattern: str, url: str) -> bool:
    if "://" in pattern:
        return fnmatchcase(url, pattern)
    parts = urlsplit(url if "://" in url else f"https://{url}")
    host = (parts.hostname or "").lower()
    if "/" in pattern:
        return fnmatchcase(host + (parts.path or "/"), pattern.lower())
    return fnmatchcase(host, pattern.lower())


# --------------------------------------------------------------------------------------------
# Targets: what a rule's pattern is matched against, per tool


@dataclass(frozen=True)
class _Target:
    kind: Literal["bash", "path", "url", "text", "none"]
    shown: str
    value: str = ""
    absolute: str = ""


def _path_targets(raw: str, workspace: Path) -> list[_Target]:
    expanded = os.path.expanduser(raw)
    joined = expanded if os.path.isabs(expanded) else os.path.join(workspace, expanded)
    literal = os.path.normpath(joined)
    variants = [literal]
    real = os.path.realpath(literal)
    if real != literal:
        variants.append(real)
    out = []
    for absolute in variants:
        rel = os.path.relpath(absolute, workspace)
        if rel == os.curdir:
            rel = "."
        elif rel.startswith(os.pardir + os.sep) or rel == os.pardir:
            rel = absolute
        out.append(_Target("path", raw if absolute == literal else rel, rel, absolute))
    return out


_PATCH_HEADERS = ("*** Add File:", "*** Update File:", "*** Delete File:", "*** Move to:")


def patch_paths(patch: str) -> list[str]:
    """Every path an apply_patch text touches, moves' destinations included, in order.

    Read the way ``files.parse_patch`` reads them (CRLF line ends, the path stripped of any
    whitespace), and a little more loosely (indented headers): a path the checker missed is a
    file the patch could write unchecked, one it found in excess costs nothing.
    """
    seen: list[str] = []
    for line in patch.replace("\r\n", "\n").split("\n"):
        head = line.lstrip()
        for prefix in _PATCH_HEADERS:
            if head.startswith(prefix):
                path = head[len(prefix) :].strip()
                if path and path not in seen:
                    seen.append(path)
    return seen


def _targets(tool: str, arguments: Mapping[str, Any], workspace: Path) -> list[_Target]:
    if tool == "apply_patch":
        texts = [v for v in arguments.values() if isinstance(v, str)]
        paths = [p for text in texts for p in patch_paths(text)]
        targets = [t for p in paths for t in _path_targets(p, workspace)]
        # An unreadable patch has no paths we can check: only tool-wide rules apply to it.
        return targets or [_Target("none", "(patch)")]
    if tool in FILE_TOOLS:
        raws: list[str] = []
        for key in (*_PATH_KEYS, "paths"):
            value = arguments.get(key)
            if isinstance(value, str) and value:
                raws.append(value)
            elif isinstance(value, list):
                raws.extend(v for v in value if isinstance(v, str) and v)
        if not raws and tool in _DEFAULT_PATH_TOOLS:
            raws = ["."]
        targets = [t for raw in raws if "\x00" not in raw for t in _path_targets(raw, workspace)]
        return targets or [_Target("none", "")]
    if tool == "webfetch":
        url = arguments.get("url")
        return [_Target("url", url, url)] if isinstance(url, str) else [_Target("none", "")]
    strings = [v for v in arguments.values() if isinstance(v, str)]
    shown = json.dumps(dict(arguments), default=str)[:200] if arguments else ""
    return [_Target("text", shown, s) for s in strings] or [_Target("none", shown)]


# Past these, an argument is prose or data, not a file name.
_MAX_PATH_ARGUMENT = 4096
_MAX_ARGUMENT_DEPTH = 4


def _argument_paths(arguments: Any, workspace: Path, depth: int = 0) -> list[str]:
    """The string arguments (nested ones too) of a tool we know nothing about that name a path:
    absolute ones, ``~/…`` and ``file://`` ones, and relative ones that stay inside the
    workspace. Prose passes too: only deny and ask path rules meet these (``_decide_view``),
    so a false match can only ask or deny more, never allow."""
    if depth > _MAX_ARGUMENT_DEPTH:
        return []
    if isinstance(arguments, Mapping):
        return [p for v in arguments.values() for p in _argument_paths(v, workspace, depth + 1)]
    if isinstance(arguments, list | tuple):
        return [p for v in arguments for p in _argument_paths(v, workspace, depth + 1)]
    if not isinstance(arguments, str):
        return []
    raw = arguments.removeprefix("file://").strip()
    if not raw or len(raw) > _MAX_PATH_ARGUMENT or "\n" in raw or "\x00" in raw:
        return []
    if raw.startswith(("/", "~")):
        return [raw]
    if "://" in raw:
        return []
    inside = os.path.normpath(os.path.join(workspace, raw))
    return [raw] if inside == str(workspace) or inside.startswith(str(workspace) + os.sep) else []


def _path_view_kinds(tool: str, read_only: bool | None) -> tuple[str, ...]:
    """Under which file tool's rules a tool's path arguments are checked: the built-in git
    tool's ``paths`` are read (a diff shows them), an MCP tool's are read when the server marks
    it read-only and read and written otherwise; other built-in tools have no path arguments."""
    if tool == "git":
        return ("read",)
    if read_only is None or tool in FILE_TOOLS or tool == "bash":
        return ()
    return ("read",) if read_only else ("read", "edit")


def _view_targets(tool: str, arguments: Mapping[str, Any], workspace: Path) -> list[_Target]:
    """The paths a non-file tool's arguments name (see ``_path_view_kinds``)."""
    values: Any = arguments.get("paths") if tool == "git" else arguments
    return [t for raw in _argument_paths(values, workspace) for t in _path_targets(raw, workspace)]


# --------------------------------------------------------------------------------------------
# The checker


@dataclass(frozen=True)
class _View:
    """One way of reading a simple command's words against the bash rules.

    ``strength`` says which answers it may give: ``any`` (the command as written), ``tighten``
    (deny and ask only: an alias expansion or a path spelling must never earn an allow the
    command as written did not get) or ``deny`` (only deny: the fail-closed guesses).
    ``script`` is set instead of ``words`` for a git ``!shell`` alias, checked as a command;
    ``unseen`` for what cannot be checked at all (an alias whose value only the shell will
    know), which is at least an ask.
    """

    words: tuple[str, ...]
    strength: Literal["any", "tighten", "deny"] = "any"
    script: str | None = None
    unseen: str | None = None


@dataclass
class _Line:
    """What a whole command line tells about each of its parts: git aliases it defines (``git
    config alias.x …``, ``GIT_CONFIG_KEY_n``), directories it enters (whose git config may
    hold aliases) and whether globs match dot files. Git config is read lazily, once per
    directory, only for a subcommand git does not know."""

    workspace: Path
    aliases: dict[str, str | None] = field(default_factory=dict)
    assignments: dict[str, str] = field(default_factory=dict)
    directories: list[str] = field(default_factory=list)
    dotglob: bool = False
    globstar: bool = False
    _configured: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, parsed: ParsedCommand, command: str, workspace: Path) -> _Line:
        line = cls(workspace, dotglob="dotglob" in command, globstar="globstar" in command)
        for cmd in parsed.commands:
            line._collect(cmd)
        return line

    def _collect(self, cmd: SimpleCommand) -> None:
        words = [*cmd.assignments, *(w for stage in cmd.stages for w in stage)]
        for word in words:
            name, eq, value = word.partition("=")
            if eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                self.assignments[name] = value
        for stage in cmd.stages:
            if stage[:1] == ["cd"] and len(stage) > 1:
                self.directories.append(stage[-1])
            call = git_call(stage)
            if call is not None and call.subcommand == "config":
                self.aliases.update(_aliases_set_by_git_config(call.canonical[2:]))
        self.aliases.update(_aliases_from_environment(self.assignments))

    def configured(self, directory: str) -> dict[str, str]:
        """The aliases git config defines for ``directory`` (its repository, the person's
        global and the system config), read now: one set earlier must be seen."""
        absolute = os.path.normpath(os.path.join(self.workspace, os.path.expanduser(directory)))
        if absolute not in self._configured:
            self._configured[absolute] = _read_git_aliases(absolute)
        return self._configured[absolute]


class PermissionChecker:
    """Answers ``check(tool, arguments, workspace)`` from an ordered rule list.

    ``ask_policy`` is what an ``ask`` becomes when nobody can answer (headless runs, subagents):
    ``"ask"`` leaves it for the UI, ``"allow"``/``"deny"`` decide on the spot.
    """

    def __init__(
        self,
        rules: Iterable[str | Rule],
        *,
        ask_policy: AskPolicy = "ask",
        default: Action = "ask",
    ) -> None:
        if ask_policy not in _STRICTNESS:
            raise ValueError(f"ask_policy must be ask, allow or deny, not {ask_policy!r}")
        # Fixed once built: the indexes below are derived from them.
        self.rules: list[Rule] = parse_rules(rules)
        self.ask_policy: AskPolicy = ask_policy
        self.default: Action = default
        self.session: list[Rule] = []
        self._denied = _DeniedPrograms.of(self.rules)
        # The deny path rules for reading and for writing: a path no one of them matches
        # cannot be denied, so the shell's words skip the full last-match walk.
        self._path_denies = {
            kind: [
                r
                for r in self.rules
                if r.action == "deny" and r.pattern is not None and r.matches_tool(kind)
            ]
            for kind in ("read", "edit")
        }

    def remember(self, tool: str, pattern: str | None = None, *, literal: bool = False) -> Rule:
        """Record an "always allow this for the session" answer; it only ever lifts ``ask``.

        ``pattern`` follows the rule grammar (a glob); pass ``literal=True`` when it is the
        exact command or path the user saw, so glob characters in it stay literal.
        """
        text = pattern.strip() if pattern else None
        rule = Rule("allow", tool.lower(), text, "session", literal=literal and text is not None)
        if rule not in self.session:
            self.session.append(rule)
        return rule

    def remember_call(
        self, tool_name: str, arguments: Mapping[str, Any] | None, workspace: Path
    ) -> list[Rule]:
        """Remember exactly this call: its command, its normalised paths, or its URL."""
        tool = tool_name.lower()
        arguments = arguments or {}
        if tool == "bash":
            command = arguments.get("command")
            if isinstance(command, str) and command.strip():
                return [self.remember(tool, command, literal=True)]
            return [self.remember(tool)]
        workspace = Path(os.path.realpath(workspace))
        targets = [
            *_targets(tool, arguments, workspace),
            *_view_targets(tool, arguments, workspace),
        ]
        values = [t.value for t in targets if t.kind != "none" and t.value]
        if not values:
            return [self.remember(tool)]
        return [self.remember(tool, value, literal=True) for value in dict.fromkeys(values)]

    def check(
        self,
        tool_name: str,
        arguments: Mapping[str, Any] | None,
        workspace: Path,
        *,
        read_only: bool | None = None,
    ) -> Decision:
        """The answer for one call. ``read_only`` is the read-only annotation of a tool whose
        arguments the checker does not know (an MCP server's): given, the string arguments
        naming paths meet the path rules as reads (or as writes when it is False)."""
        tool = tool_name.lower()
        arguments = arguments or {}
        workspace = Path(os.path.realpath(workspace))
        if tool == "bash":
            return self._apply_policy(self._check_bash(arguments, workspace))
        decisions = [self._decide(tool, t) for t in _targets(tool, arguments, workspace)]
        kinds = _path_view_kinds(tool, read_only)
        if kinds:
            views = _view_targets(tool, arguments, workspace)
            decisions += [self._decide_view(k, tool, t) for k in kinds for t in views]
        return self._apply_policy(self._strictest(decisions))

    def decide_path(self, tool_name: str, path: str, workspace: Path) -> Decision | None:
        """What the path rules say about ``tool`` touching ``path``, before ``ask_policy``, or
        None when no rule with a pattern decides (a tool-wide rule already decided the call).
        For a tool filtering what it found (``PathPolicy``), not for a call."""
        tool = tool_name.lower()
        workspace = Path(os.path.realpath(workspace))
        decisions: list[Decision] = []
        for target in _path_targets(path, workspace) if "\x00" not in path else []:
            rule = self._last_match(self.rules, tool, target)
            if rule is None or rule.pattern is None:
                continue
            decision = Decision(rule.action, str(rule), f"{tool} '{path}' matches rule '{rule}'")
            if decision.action == "ask" and self._last_match(self.session, tool, target):
                decision = Decision("allow", None, f"{tool} '{path}' was allowed for this session")
            decisions.append(decision)
        return self._strictest(decisions) if decisions else None

    def may_withhold(self, tool_name: str, *, asks: bool) -> bool:
        """Whether any path rule could keep a path from ``tool`` (deny, or ask too): a tool
        with thousands of results skips asking about each when none could."""
        tool = tool_name.lower()
        actions = ("deny", "ask") if asks else ("deny",)
        return any(
            r.pattern is not None and r.action in actions and r.matches_tool(tool)
            for r in self.rules
        )

    # -- internals ---------------------------------------------------------------------------

    def _apply_policy(self, decision: Decision) -> Decision:
        if decision.action != "ask" or self.ask_policy == "ask":
            return decision
        note = f" (nobody is at the terminal to approve; ask_policy={self.ask_policy})"
        return Decision(self.ask_policy, decision.rule, decision.reason + note)

    @staticmethod
    def _strictest(decisions: Iterable[Decision]) -> Decision:
        best: Decision | None = None
        for d in decisions:
            if best is None or _STRICTNESS[d.action] > _STRICTNESS[best.action]:
                best = d
        assert best is not None
        return best

    def _last_match(self, rules: Iterable[Rule], tool: str, target: _Target) -> Rule | None:
        """The deciding rule: the last match, where a run of Claude Code rules counts as one
        rule deciding deny, then ask, then allow, and a Claude Code deny is final."""
        found: Rule | None = None
        final: Rule | None = None
        run = 0  # which run of consecutive Claude Code rules we are in
        found_run: int | None = None  # the run ``found`` belongs to (None: not a Claude rule)
        previous_claude = False
        for rule in rules:
            if rule.claude and not previous_claude:
                run += 1
            previous_claude = rule.claude
            if not (rule.matches_tool(tool) and _pattern_matches(rule, tool, target)):
                continue
            if not rule.claude:
                found, found_run = rule, None
                continue
            if rule.action == "deny" and final is None:
                final = rule
            if (
                found is not None
                and found_run == run
                and _STRICTNESS[found.action] >= _STRICTNESS[rule.action]
            ):
                continue  # an earlier rule of this run is at least as strict
            found, found_run = rule, run
        return final if final is not None else found

    def _decide(self, tool: str, target: _Target) -> Decision:
        shown = f"{tool} '{target.shown}'" if target.shown else tool
        rule = self._last_match(self.rules, tool, target)
        if rule is None:
            decision = Decision(self.default, None, f"{shown} matches no permission rule")
        else:
            decision = Decision(rule.action, str(rule), f"{shown} matches rule '{rule}'")
        if decision.action == "ask":
            remembered = self._last_match(self.session, tool, target)
            if remembered is not None:
                return Decision("allow", str(remembered), f"{shown} was allowed for this session")
        return decision

    def _decide_view(self, kind: str, tool: str, target: _Target) -> Decision:
        """``tool`` touching ``target`` as a ``kind`` (read, edit): only a deny or ask path rule
        counts (an allow for reading files says nothing about this tool), and the session's
        answers about this tool lift an ask as they do for its own rules."""
        rule = self._last_match(self.rules, kind, target)
        shown = f"{tool} '{target.shown}'"
        if rule is None or rule.pattern is None or rule.action == "allow":
            return Decision("allow", None, f"{shown} matches no path rule")
        if rule.action == "ask" and self._last_match(self.session, tool, target) is not None:
            return Decision("allow", None, f"{shown} was allowed for this session")
        return Decision(rule.action, str(rule), f"{shown} {_VERB[kind]} a path of rule '{rule}'")

    # -- bash ----------------------------------------------------------------------------------

    def _check_bash(self, arguments: Mapping[str, Any], workspace: Path) -> Decision:
        command = arguments.get("command")
        if not isinstance(command, str):
            command = ""
        parsed = split_command(command)
        if not parsed.commands:
            return self._decide("bash", _Target("bash", command.strip(), command.strip()))
        line = _Line.of(parsed, command, workspace)
        part_decisions = [self._check_part(cmd, line) for cmd in parsed.commands]
        decision = self._strictest(part_decisions)
        whole = command.strip()
        if (parsed.unparseable or parsed.has_substitution) and decision.action == "allow":
            why = (
                "could not be fully parsed"
                if parsed.unparseable
                else "contains a command substitution"
            )
            decision = Decision(
                "ask", None, f"bash '{whole}' {why}, so not every part could be checked"
            )
        if decision.action == "ask":
            # The user may have approved this exact command line before (``remember_call``).
            # Only literal answers count here: a glob such as ``echo *`` matched against the
            # whole line would also swallow ``echo x && rm -rf /`` or ``echo $(rm -rf /)``.
            exact = [r for r in self.session if r.literal]
            remembered = self._last_match(exact, "bash", _Target("bash", whole, whole))
            if remembered is not None:
                return Decision("allow", str(remembered), f"bash '{whole}' allowed for the session")
        return decision

    def _check_part(self, cmd: SimpleCommand, line: _Line, depth: int = 0) -> Decision:
        """One simple command: its stages as written decide (or the default does), and every
        wider reading (aliases, path spellings, the fail-closed deny, paths it names) may only
        make that answer stricter."""
        decided: list[Decision] = []
        stricter: list[Decision] = []
        stages = cmd.stages or [cmd.argv]
        for k, stage in enumerate(stages):
            mine: list[Decision] = []
            for view in self._views([stage], line):
                found = self._view_decisions(view, line, depth)
                (mine if view.strength == "any" else stricter).extend(found)
            if not mine and k < len(stages) - 1 and _answers_for_itself(stage):
                mine.append(self._unmatched_stage(stage))
            decided += mine
        if depth <= _MAX_FAIL_CLOSED_DEPTH:
            stricter += self._fail_closed(cmd, line, depth)
        stricter += self._denied_paths(cmd, line)
        base = self._strictest(decided) if decided else self._unmatched(cmd)
        return self._strictest([base, *stricter])

    def _unmatched(self, cmd: SimpleCommand) -> Decision:
        """No rule spoke about the command as written: the default, unless the session
        remembered one of its stages."""
        shown = cmd.normalized or cmd.text
        if self.default == "ask":
            for stage in cmd.stages or [cmd.argv]:
                text = " ".join(stage)
                remembered = self._last_match(self.session, "bash", _Target("bash", text, text))
                if remembered is not None:
                    return Decision(
                        "allow", str(remembered), f"bash '{text}' allowed for the session"
                    )
        return Decision(self.default, None, f"bash '{shown}' matches no permission rule")

    def _unmatched_stage(self, stage: list[str]) -> Decision:
        """A wrapper stage no rule speaks about: the default, unless the session allowed it."""
        text = " ".join(stage)
        remembered = self._last_match(self.session, "bash", _Target("bash", text, text))
        if remembered is not None and self.default == "ask":
            return Decision("allow", str(remembered), f"bash '{text}' allowed for the session")
        return Decision(self.default, None, f"bash '{text}' matches no permission rule")

    def _views(self, stages: list[list[str]], line: _Line) -> list[_View]:
        """Every stage as written; with a path, by its base name too (``/bin/rm``, tightening
        only: ``./ls`` must not ride on ``allow bash(ls *)``); git stages without global
        options, and through their aliases."""
        out: list[_View] = []
        for stage in stages:
            out.append(_View(tuple(stage)))
            if stage and "/" in stage[0]:
                out.append(_View((os.path.basename(stage[0]), *stage[1:]), "tighten"))
            out += self._git_views(stage, line)
        return out

    def _view_decisions(self, view: _View, line: _Line, depth: int) -> list[Decision]:
        if view.unseen is not None:
            found = [Decision("ask", None, view.unseen)]
        elif view.script is not None:
            found = [self._check_part(c, line, depth + 1) for c in split_command(view.script)]
        else:
            decision = self._match_stage(" ".join(view.words))
            found = [decision] if decision is not None else []
        return [d for d in found if _STRICTNESS[d.action] >= _MIN_STRICTNESS[view.strength]]

    def _match_stage(self, text: str) -> Decision | None:
        target = _Target("bash", text, text)
        rule = self._last_match(self.rules, "bash", target)
        if rule is None:
            return None
        decision = Decision(rule.action, str(rule), f"bash '{text}' matches rule '{rule}'")
        if decision.action == "ask":
            remembered = self._last_match(self.session, "bash", target)
            if remembered is not None:
                return Decision("allow", str(remembered), f"bash '{text}' allowed for the session")
        return decision

    def _denies(self, words: Sequence[str], line: _Line, depth: int) -> Decision | None:
        """A deny for ``words`` read as a command: as written, without git's global options,
        through git aliases, or as any subcommand a deny rule names when git does not know it."""
        views = [_View(tuple(words)), *self._git_views(list(words), line)]
        for view in views:
            for decision in self._view_decisions(view, line, depth):
                if decision.action == "deny":
                    return decision
        return None

    # -- git aliases -------------------------------------------------------------------------

    def _git_views(self, stage: list[str], line: _Line) -> list[_View]:
        """``git -C x push`` as ``git push``; ``git yolo`` as what the alias ``yolo`` runs
        (``-c alias.yolo=push``, set on this line, or in git config); and a subcommand git
        does not know and no alias explains as each one a deny rule names (fail closed)."""
        call = git_call(stage)
        if call is None:
            return []
        views = [_View(tuple(call.canonical))] if len(call.canonical) != len(stage) else []
        for _ in range(_MAX_ALIAS_DEPTH):
            sub = call.subcommand
            if sub is None or sub.startswith("-") or sub in _git_commands():
                return views
            rest = call.canonical[2:]
            value = _git_alias(sub, call, line)
            if value is None or value is _UNKNOWN_ALIAS:
                return views + self._git_guesses(sub, rest, known_alias=value is _UNKNOWN_ALIAS)
            if value.startswith("!"):
                script = " ".join([value[1:], *(shlex.quote(w) for w in rest)])
                return [*views, _View((), "tighten", script=script)]
            expanded = git_call(["git", *_split_alias(value), *rest])
            if expanded is None or expanded.subcommand in (None, sub):
                return views
            expanded.config.update(
                {k: v for k, v in call.config.items() if k not in expanded.config}
            )
            call = expanded
            views.append(_View(tuple(call.canonical), "tighten"))
        return views

    def _git_guesses(self, sub: str, rest: list[str], *, known_alias: bool) -> list[_View]:
        """``git yolo`` that nothing explains could be any git command: check it as each one a
        deny rule names. An alias whose value we cannot read is at least an ask."""
        views = [_View(("git", s, *rest), "deny") for s in self._denied.git_subcommands]
        if known_alias:
            why = f"bash 'git {sub}' runs an alias whose value is only known when it runs"
            views.append(_View((), "tighten", unseen=why))
        return views

    # -- the fail-closed deny ----------------------------------------------------------------

    def _fail_closed(self, cmd: SimpleCommand, line: _Line, depth: int) -> list[Decision]:
        """Deny rules matched from any word naming a denied program and inside any argument
        that reads as a command; see the module docstring for why."""
        if not self._denied.any_rule:
            return []
        stages = cmd.stages or [cmd.argv]
        for stage in stages:
            found = self._deny_from_a_word(stage, line, depth)
            if found is not None:
                return [found]
        for text in self._embedded_scripts(cmd):
            for inner in split_command(text).commands:
                decision = self._deny_everywhere(inner, line, depth + 1)
                if decision is not None:
                    return [decision]
        return []

    def _deny_everywhere(self, cmd: SimpleCommand, line: _Line, depth: int) -> Decision | None:
        """A deny for a command found inside an argument: as written, or fail closed."""
        for stage in cmd.stages or [cmd.argv]:
            found = self._denies(stage, line, depth)
            if found is not None:
                return found
        if depth > _MAX_FAIL_CLOSED_DEPTH:
            return None
        return next(iter(self._fail_closed(cmd, line, depth)), None)

    def _deny_from_a_word(self, stage: list[str], line: _Line, depth: int) -> Decision | None:
        if _only_looks_up(stage):
            return None
        for i, word in enumerate(stage):
            for program in self._denied.named_by(word, first=i == 0):
                found = self._denies([program, *stage[i + 1 :]], line, depth)
                if found is not None:
                    return Decision(
                        "deny",
                        found.rule,
                        f"bash '{' '.join(stage)}' runs {program!r}: {found.reason}",
                    )
        return None

    def _embedded_scripts(self, cmd: SimpleCommand) -> list[str]:
        """Arguments, assignments and here-documents that may be a command line for some
        program (``ssh host 'rm f'``, ``perl -e 'system("rm f")'``) and mention a denied
        program: worth parsing as one."""
        texts = [*cmd.assignments, *(w for stage in cmd.stages for w in stage)]
        for redirect in cmd.redirects:
            if redirect.heredoc is not None:
                texts.append(redirect.heredoc)
            elif redirect.op == "<<<" and isinstance(redirect.target, str):
                texts.append(redirect.target)
        out: list[str] = []
        for text in texts:
            if _SCRIPT_HINT.search(text) is None or not self._denied.mentioned_in(text):
                continue
            for candidate in _script_candidates(text):
                if candidate not in out:
                    out.append(candidate)
        return out

    # -- paths named on the command line -----------------------------------------------------

    def _denied_paths(self, cmd: SimpleCommand, line: _Line) -> list[Decision]:
        """``cat .env`` under ``deny read(.env)``: a word naming a read-denied path denies the
        command; one naming an edit-denied path does unless the command is one plan mode knows
        to be read-only (writing into it through a redirection always does)."""
        if not any(self._path_denies.values()):
            return []
        readonly: bool | None = None
        for word, writes in _path_words(cmd):
            for raw in _path_candidates(word, line):
                for target in _path_targets(raw, line.workspace):
                    rule = self._denying_path_rule("read", target)
                    if rule is None and (writes or not (readonly := _is_readonly(cmd, readonly))):
                        rule = self._denying_path_rule("edit", target)
                    if rule is not None:
                        shown = cmd.text.strip() or cmd.normalized
                        reason = f"bash '{shown}' names {raw!r}, a path of rule '{rule}'"
                        return [Decision("deny", str(rule), reason)]
        return []

    def _denying_path_rule(self, kind: str, target: _Target) -> Rule | None:
        if not any(_pattern_matches(r, kind, target) for r in self._path_denies[kind]):
            return None
        rule = self._last_match(self.rules, kind, target)
        return rule if rule is not None and rule.action == "deny" and rule.pattern else None


_MIN_STRICTNESS = {"any": 0, "tighten": 1, "deny": 2}
# Wrappers a command behind is decided without: they change neither where, nor as whom, nor
# how often it runs (sudo has its own default ask). Any other wrapper (``ssh host``, ``su
# -c``, ``watch``, ``setsid`` …) must itself be allowed: ``allow bash(rm *)`` says nothing
# about ``ssh host rm f``, and knowing more wrappers must never allow more than before.
_TRANSPARENT_WRAPPERS = frozenset(
    {"sudo", "env", "timeout", "nice", "nohup", "xargs", "command", "time", "exec", "stdbuf"}
)


def _answers_for_itself(stage: list[str]) -> bool:
    name = os.path.basename(stage[0]) if stage else ""
    return name in WRAPPERS and name not in _TRANSPARENT_WRAPPERS


_VERB = {"read": "reads", "edit": "writes"}
# ``sh -c "perl -e '…'"`` inside arguments: enough to see through quoting, bounded for cost.
_MAX_FAIL_CLOSED_DEPTH = 3
_MAX_ALIAS_DEPTH = 8


# Commands that name a program only to look it up (``which rm``, ``man git``): their words
# are never run, though their quoted arguments are still read as commands.
_LOOKUP_ONLY = frozenset({"which", "type", "whereis", "whatis", "apropos", "man", "info", "help"})


def _only_looks_up(stage: list[str]) -> bool:
    name = os.path.basename(stage[0]) if stage else ""
    looks_up = name == "command" and any(a in ("-v", "-V") for a in stage[1:2])
    return looks_up or name in _LOOKUP_ONLY


def _is_readonly(cmd: SimpleCommand, known: bool | None) -> bool:
    """Whether plan mode's allowlist vouches for ``cmd`` (computed once per command)."""
    if known is not None:
        return known
    from stagecrew.tools.sandbox import is_readonly_command_part

    return is_readonly_command_part(cmd)


@dataclass(frozen=True)
class _DeniedPrograms:
    """The programs bash deny rules name, so the fail-closed checks look only where a denied
    program could hide. ``anything``: some deny rule starts with a wildcard, so any word may
    be the program."""

    spellings: dict[str, frozenset[str]]
    git_subcommands: tuple[str, ...]
    anything: bool

    @property
    def any_rule(self) -> bool:
        return self.anything or bool(self.spellings)

    @classmethod
    def of(cls, rules: Sequence[Rule]) -> _DeniedPrograms:
        spellings: dict[str, set[str]] = {}
        git_subcommands: list[str] = []
        anything = False
        for rule in rules:
            if rule.action != "deny" or rule.pattern is None or not rule.matches_tool("bash"):
                continue
            words = _rule_words(rule)
            if not words or _has_wildcard(words[0]):
                anything = True
                continue
            spellings.setdefault(os.path.basename(words[0]), set()).add(words[0])
            is_git = os.path.basename(words[0]) == "git"
            if is_git and len(words) > 1 and not _has_wildcard(words[1]):
                git_subcommands.append(words[1])
        return cls(
            {k: frozenset(v) for k, v in spellings.items()},
            tuple(dict.fromkeys(git_subcommands)),
            anything,
        )

    def named_by(self, word: str, *, first: bool) -> list[str]:
        """The spellings of denied programs ``word`` may run: the word itself or its base
        name (``/bin/rm``), the value of ``--opt=rm``, or the end of a short-option cluster
        (``-crm``). The first word as written is the ordinary check's business."""
        candidates = [word, os.path.basename(word)]
        if "=" in word:
            value = word.split("=", 1)[1]
            candidates += [value, os.path.basename(value)]
        if word.startswith("-") and not word.startswith("--"):
            candidates += [name for name in self.spellings if word.endswith(name)]
        out: list[str] = []
        for candidate in candidates:
            if first and candidate == word:
                continue
            if not candidate or candidate.startswith("-"):
                continue
            names = [candidate] if self.anything else []
            names += sorted(self.spellings.get(os.path.basename(candidate), ()))
            if names and candidate not in names:
                names.append(candidate)
            out += [n for n in names if n not in out]
        return out

    def mentioned_in(self, text: str) -> bool:
        return self.anything or any(name in text for name in self.spellings)


def _rule_words(rule: Rule) -> list[str]:
    """The words of a bash rule's pattern (Claude Code's ``prefix:*`` without its suffix)."""
    assert rule.pattern is not None
    pattern = rule.pattern.strip()
    if rule.claude and pattern.endswith(":*"):
        pattern = pattern[:-2]
    return pattern.split()


def _has_wildcard(word: str) -> bool:
    return any(c in word for c in "*?[")


# A word worth parsing as a command line: it holds a blank or a shell operator.
_SCRIPT_HINT = re.compile(r"[\s;|&<>()`$]")


def _script_candidates(text: str) -> list[str]:
    """``text`` as a command line, and the forms a program may take it in: the value of
    ``--command=…`` or ``VAR=…``, and ``-c'rm f'`` written without a space (``-crm f``)."""
    out = [text]
    first = text.split(None, 1)
    if first and "=" in first[0]:
        out.append(text.split("=", 1)[1])
    if text.startswith("-") and not text.startswith("--"):
        out += [text[k:] for k in range(2, min(len(text), 6))]
    return out


# --------------------------------------------------------------------------------------------
# Paths named on a command line


# A run of characters that may spell a path inside a larger word (``open('.env')``).
_PATH_TOKEN = re.compile(r"[\w.~/@%+,-]+")
_MAX_GLOB_MATCHES = 200


def _path_words(cmd: SimpleCommand) -> list[tuple[str, bool]]:
    """Every word of ``cmd`` that may name a file, with whether the command writes it: its
    arguments at every stage, assignment values, redirection targets, here-documents."""
    out: list[tuple[str, bool]] = [(w, False) for stage in cmd.stages for w in stage]
    out += [(a.split("=", 1)[1], False) for a in cmd.assignments if "=" in a]
    for redirect in cmd.redirects:
        if redirect.heredoc is not None:
            out.append((redirect.heredoc, False))
        elif isinstance(redirect.target, str) and not redirect.is_fd_dup:
            out.append((redirect.target, redirect.writes_file))
    return list(dict.fromkeys(out))


def _path_candidates(word: str, line: _Line) -> list[str]:
    """The paths a word may name: the word, the value of ``--opt=…`` or ``-fVALUE``, runs of
    path characters inside it (``open('.env')``), and what a glob in it matches now."""
    if "\x00" in word or len(word) > _MAX_PATH_ARGUMENT * 4:
        return []
    out: list[str] = []
    if "\n" not in word and len(word) <= _MAX_PATH_ARGUMENT:
        out.append(word)
    if word.startswith("-") and not word.startswith("--") and len(word) > 2:
        out.append(word[2:])
    out += [t for t in _PATH_TOKEN.findall(word) if not t.startswith("-")]
    if "=" in word:
        out.append(word.split("=", 1)[1])
    expanded = [m for c in out if _has_wildcard(c) for m in _expand_glob(c, line)]
    return [c for c in dict.fromkeys([*out, *expanded]) if c and not c.startswith("-")]


def _expand_glob(pattern: str, line: _Line) -> list[str]:
    """What bash would expand ``pattern`` to in the workspace (dot files when the line turns
    on dotglob, ``**`` with globstar); a bounded number of matches."""
    try:
        matches = globbing.iglob(
            pattern,
            root_dir=line.workspace,
            recursive=line.globstar,
            include_hidden=line.dotglob,
        )
        out = []
        for match in matches:
            out.append(match)
            if len(out) >= _MAX_GLOB_MATCHES:
                break
        return out
    except (OSError, ValueError, re.error):
        return []


# --------------------------------------------------------------------------------------------
# Git aliases


class _UnknownAlias:
    """An alias that exists but whose value only the shell will know (``--config-env``)."""


_UNKNOWN_ALIAS: Any = _UnknownAlias()
_GIT_TIMEOUT = 5.0
# git's most used commands, for when the installed git cannot list its own.
_GIT_FALLBACK_NAMES = """
    add am apply archive bisect blame branch bundle cat-file checkout cherry-pick citool
    clean clone commit config describe diff difftool fetch format-patch fsck gc grep gui
    help init log ls-files ls-remote ls-tree merge mv notes pull push range-diff rebase
    reflog remote repack replace reset restore rev-list rev-parse revert rm shortlog show
    show-ref sparse-checkout stash status submodule switch tag worktree
"""
_GIT_FALLBACK_COMMANDS = frozenset(_GIT_FALLBACK_NAMES.split())


@lru_cache(maxsize=1)
def _git_commands() -> frozenset[str]:
    """git's own commands, which no alias can shadow, as the installed git lists them (once
    per process: about 3 ms)."""
    try:
        proc = subprocess.run(
            ["git", "--list-cmds=builtins,main,others"],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return _GIT_FALLBACK_COMMANDS
    names = frozenset(proc.stdout.split())
    return names if proc.returncode == 0 and names else _GIT_FALLBACK_COMMANDS


def _read_git_aliases(directory: str) -> dict[str, str]:
    """``alias.*`` as git config resolves it in ``directory`` (repository, global, system)."""
    if not os.path.isdir(directory):
        return {}
    try:
        proc = subprocess.run(
            ["git", "config", "-z", "--get-regexp", r"^alias\."],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    aliases: dict[str, str] = {}
    for record in proc.stdout.split("\0"):
        key, _, value = record.partition("\n")
        if key.startswith("alias."):
            aliases[key.lower()] = value
    return aliases


def _git_alias(sub: str, call: GitCall, line: _Line) -> str | None:
    """What ``git SUB`` expands to, looked up where git looks: ``-c`` on the command line,
    the environment set on this line, then git config of the directories it may run in."""
    key = f"alias.{sub.lower()}"
    if key in call.config:
        return call.config[key]
    if key in call.config_env:
        return line.assignments.get(call.config_env[key], _UNKNOWN_ALIAS)
    if key in line.aliases:
        value = line.aliases[key]
        return _UNKNOWN_ALIAS if value is None else value
    for directory in [*call.directories, *line.directories, "."]:
        found = line.configured(directory).get(key)
        if found is not None:
            return found
    return None


def _split_alias(value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError:
        return value.split()


def _aliases_set_by_git_config(args: list[str]) -> dict[str, str | None]:
    """``git config [--global] alias.yolo push`` (or ``set``, ``--add``) on this line: the
    alias exists before our config read could see it. None: the value is not given."""
    for i, arg in enumerate(args):
        if arg.lower().startswith("alias.") and len(arg) > len("alias."):
            values = [a for a in args[i + 1 :] if not a.startswith("-")]
            return {arg.lower(): " ".join(values) if values else None}
    return {}


_CONFIG_PARAMETER = re.compile(r"'(alias\.[^'=]+)'(?:='([^']*)')?")


def _aliases_from_environment(assignments: Mapping[str, str]) -> dict[str, str | None]:
    """Aliases handed to git through ``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n`` or
    ``GIT_CONFIG_PARAMETERS`` set on this line."""
    out: dict[str, str | None] = {}
    for name, key in assignments.items():
        m = re.fullmatch(r"GIT_CONFIG_KEY_(\d+)", name)
        if m and key.lower().startswith("alias."):
            out[key.lower()] = assignments.get(f"GIT_CONFIG_VALUE_{m.group(1)}")
    for m in _CONFIG_PARAMETER.finditer(assignments.get("GIT_CONFIG_PARAMETERS", "")):
        out[m.group(1).lower()] = m.group(2)
    return out


# --------------------------------------------------------------------------------------------
# The policy inside the file tools


class PathPolicy:
    """The permission rules as grep, glob and ls see them while they run.

    A call's check sees ``grep(path=".")``, not the files it will search: the tool asks here
    about each file it found before showing it. A listing hides what the rules deny; a result
    showing a file's contents (grep) also hides what would need a question, since nobody can
    be asked in the middle of a search (unless ``ask_policy`` says yes on everyone's behalf).
    """

    def __init__(self, checker: PermissionChecker) -> None:
        self.checker = checker

    def withheld(self, tool: str, path: str, workspace: Path, *, contents: bool) -> Decision | None:
        """Why ``path`` must stay out of ``tool``'s results, or None when it may be shown.
        ``contents``: the result shows what is in the file, so an ask withholds it too."""
        decision = self.checker.decide_path(tool, path, workspace)
        if decision is None or decision.action == "allow":
            return None
        if decision.action == "ask" and (not contents or self.checker.ask_policy == "allow"):
            return None
        return decision

    def filter(
        self, tool: str, paths: Iterable[str], workspace: Path, *, contents: bool
    ) -> tuple[list[str], list[tuple[str, Decision]]]:
        """``paths`` split into those ``tool`` may show and those withheld (with why)."""
        paths = list(paths)
        if not self.checker.may_withhold(tool, asks=contents):
            return paths, []
        kept: list[str] = []
        withheld: list[tuple[str, Decision]] = []
        for path in paths:
            decision = self.withheld(tool, path, workspace, contents=contents)
            if decision is None:
                kept.append(path)
            else:
                withheld.append((path, decision))
        return kept, withheld

    def denied(self, tool: str, path: str, workspace: Path) -> Decision | None:
        """The deny decision for ``tool`` writing ``path``, for a tool that re-checks each
        path it is about to touch (apply_patch: every file of the patch)."""
        decision = self.checker.decide_path(tool, path, workspace)
        return decision if decision is not None and decision.action == "deny" else None


def withheld_note(withheld: Sequence[tuple[str, Decision]]) -> str | None:
    """One line telling the model what a result leaves out and why: the files that need a
    question by name (it may ask for one by path), the denied ones only by number."""
    if not withheld:
        return None
    asks = [path for path, d in withheld if d.action == "ask"]
    denied = len(withheld) - len(asks)
    parts = []
    if denied:
        parts.append(f"{denied} path{'s' if denied != 1 else ''} left out by a deny rule")
    if asks:
        shown = ", ".join(asks[:20]) + (" …" if len(asks) > 20 else "")
        parts.append(
            f"left out until permission is given (name one as the path to be asked): {shown}"
        )
    return "(" + "; ".join(parts) + ")"


def attach_path_policy(ctx: ToolContext, checker: PermissionChecker) -> PathPolicy:
    """Let the tools running under ``ctx`` filter their results by ``checker``'s rules."""
    policy = PathPolicy(checker)
    ctx.path_policy = policy
    return policy


def path_policy(ctx: ToolContext) -> PathPolicy | None:
    """The policy attached to ``ctx``; None for a tool run outside an agent (tests, scripts)."""
    return ctx.path_policy


def _pattern_matches(rule: Rule, tool: str, target: _Target) -> bool:
    if rule.pattern is None:
        return True
    if target.kind == "none":
        return False
    if rule.claude:
        return _claude_pattern_matches(rule, rule.pattern, target)
    if rule.literal:
        return rule.pattern in (target.value, target.absolute)
    if target.kind == "bash":
        return bash_pattern_matches(rule.pattern, target.value)
    if target.kind == "path":
        return path_pattern_matches(rule.pattern, target.value, target.absolute)
    if target.kind == "url":
        return _url_matches(rule.pattern, target.value)
    return fnmatchcase(target.value, rule.pattern)


def _claude_pattern_matches(rule: Rule, specifier: str, target: _Target) -> bool:
    assert rule.source is not None
    if target.kind == "bash":
        return claude_bash_matches(specifier, target.value)
    if target.kind == "path":
        return _claude_path_matches(specifier, rule.source, target)
    if target.kind == "url":
        parts = urlsplit(target.value if "://" in target.value else f"https://{target.value}")
        domain = specifier.removeprefix("domain:").strip().lower()
        return fnmatchcase((parts.hostname or "").lower(), domain)
    return fnmatchcase(target.value, specifier)
