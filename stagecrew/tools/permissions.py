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
(``git -C x push`` as ``git push``). Commands we could not fully parse, or that contain
substitutions, are at least ``ask``: we cannot see all of what they run.

Path patterns are gitignore-like: a pattern without ``/`` matches the file name at any depth
(``.env`` matches ``sub/.env``, ``*.pem`` matches ``/etc/ssl/x.pem``); one with ``/`` is anchored
at the workspace root (or is absolute when it starts with ``/``); ``**`` spans directories, ``*``
and ``?`` do not cross ``/``; ``dir/**`` also matches ``dir`` itself. A path reaching a file
through a symlink is checked under both names.

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

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from stagecrew.tools.shell_parse import SimpleCommand, git_canonical, split_command

__all__ = [
    "DEFAULT_RULES",
    "FILE_TOOLS",
    "LAYER_ORDER",
    "Action",
    "Decision",
    "PermissionChecker",
    "Rule",
    "RuleError",
    "bash_pattern_matches",
    "claude_bash_matches",
    "claude_rule_tools",
    "combine_layers",
    "parse_rule",
    "parse_rules",
    "patch_paths",
    "path_pattern_matches",
]

Action = Literal["allow", "ask", "deny"]
AskPolicy = Literal["ask", "allow", "deny"]
_STRICTNESS: dict[str, int] = {"allow": 0, "ask": 1, "deny": 2}

FILE_TOOLS = frozenset({"read", "write", "edit", "apply_patch", "glob", "grep", "ls"})
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
        return self.tool == tool or fnmatchcase(tool, self.tool)


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
_READING = ("read", "grep", "glob", "ls")
_WRITING = ("edit", "write", "apply_patch")
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


_PATCH_HEADER_RE = re.compile(
    r"^\*\*\* (?:(?:Add|Update|Delete) File|Move to):[ \t]*(.+?)[ \t]*$", re.MULTILINE
)


def patch_paths(patch: str) -> list[str]:
    """Every path an apply_patch text touches, moves' destinations included, in order."""
    seen: list[str] = []
    for m in _PATCH_HEADER_RE.finditer(patch):
        if m.group(1) not in seen:
            seen.append(m.group(1))
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
        targets = [t for raw in raws for t in _path_targets(raw, workspace)]
        return targets or [_Target("none", "")]
    if tool == "webfetch":
        url = arguments.get("url")
        return [_Target("url", url, url)] if isinstance(url, str) else [_Target("none", "")]
    strings = [v for v in arguments.values() if isinstance(v, str)]
    shown = json.dumps(dict(arguments), default=str)[:200] if arguments else ""
    return [_Target("text", shown, s) for s in strings] or [_Target("none", shown)]


# --------------------------------------------------------------------------------------------
# The checker


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
        self.rules: list[Rule] = parse_rules(rules)
        self.ask_policy: AskPolicy = ask_policy
        self.default: Action = default
        self.session: list[Rule] = []

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
        targets = _targets(tool, arguments, Path(os.path.realpath(workspace)))
        values = [t.value for t in targets if t.kind != "none" and t.value]
        if not values:
            return [self.remember(tool)]
        return [self.remember(tool, value, literal=True) for value in dict.fromkeys(values)]

    def check(
        self, tool_name: str, arguments: Mapping[str, Any] | None, workspace: Path
    ) -> Decision:
        tool = tool_name.lower()
        arguments = arguments or {}
        workspace = Path(os.path.realpath(workspace))
        if tool == "bash":
            decision = self._check_bash(arguments)
        else:
            decision = self._strictest(
                self._decide(tool, t) for t in _targets(tool, arguments, workspace)
            )
        return self._apply_policy(decision)

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

    def _check_bash(self, arguments: Mapping[str, Any]) -> Decision:
        command = arguments.get("command")
        if not isinstance(command, str):
            command = ""
        parsed = split_command(command)
        if not parsed.commands:
            return self._decide("bash", _Target("bash", command.strip(), command.strip()))
        part_decisions = [self._check_part(cmd) for cmd in parsed.commands]
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

    def _check_part(self, cmd: SimpleCommand) -> Decision:
        stage_decisions: list[Decision] = []
        for stage in _views(cmd.stages or [cmd.argv]):
            text = " ".join(stage)
            literal = self._match_stage(text)
            if literal is not None:
                stage_decisions.append(literal)
            if stage and "/" in stage[0]:
                base = " ".join([os.path.basename(stage[0]), *stage[1:]])
                by_name = self._match_stage(base)
                if by_name is not None and by_name.action != "allow":
                    stage_decisions.append(by_name)
        if not stage_decisions:
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
        return self._strictest(stage_decisions)

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


def _views(stages: list[list[str]]) -> list[list[str]]:
    """Every stage, plus git stages with global options removed (``git -C . push``)."""
    out: list[list[str]] = []
    for stage in stages:
        out.append(stage)
        canonical = git_canonical(stage)
        if canonical is not None:
            out.append(canonical)
    return out


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
