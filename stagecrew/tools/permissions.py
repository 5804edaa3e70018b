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
from dataclasses import dataclass
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

    def __str__(self) -> str:
        target = self.tool if self.pattern is None else f"{self.tool}({self.pattern})"
        return f"{self.action} {target}"

    def matches_tool(self, tool: str) -> bool:
        return self.tool == tool or fnmatchcase(tool, self.tool)


_RULE_RE = re.compile(r"^\s*(\w+)\s+([^\s(]+)\s*(?:\((.*)\))?\s*$", re.DOTALL)
_TOOL_RE = re.compile(r"^[a-z0-9_*?\-\[\]]+$")


def parse_rule(text: str | Rule, layer: str | None = None) -> Rule:
    """Parse ``"deny bash(git push *)"``; ``RuleError`` says what is wrong with which rule."""
    if isinstance(text, Rule):
        return text if layer is None or text.layer is not None else _with_layer(text, layer)
    if not isinstance(text, str):
        raise RuleError(f"permission rule must be a string, got {type(text).__name__}: {text!r}")
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
    return Rule(rule.action, rule.tool, rule.pattern, layer)


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
        found = None
        for rule in rules:
            if rule.matches_tool(tool) and _pattern_matches(rule, tool, target):
                found = rule
        return found

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
    if rule.literal:
        return rule.pattern in (target.value, target.absolute)
    if target.kind == "bash":
        return bash_pattern_matches(rule.pattern, target.value)
    if target.kind == "path":
        return path_pattern_matches(rule.pattern, target.value, target.absolute)
    if target.kind == "url":
        return _url_matches(rule.pattern, target.value)
    return fnmatchcase(target.value, rule.pattern)
