"""Hook configuration: Claude Code's settings files and stagecrew's config, merged.

People already have hooks in ``~/.claude/settings.json`` and ``<project>/.claude/settings*.json``;
reading those files as they are is the point of this package. Every source adds hooks, none
replaces another's (as in Claude Code, where hooks from all settings files run). The order is
fixed and is the "config order" that outcomes are combined in, broadest first:

1. ``~/.claude/settings.json``           (the person's, for every project)
2. stagecrew's user config ``hooks``      (passed in by the caller)
3. ``<project>/.claude/settings.json``    (the team's)
4. ``<project>/.claude/settings.local.json`` (the person's, for this project)
5. stagecrew's project config ``hooks``   (passed in by the caller)

A file that is not there is no source. Anything wrong in a source raises ``ConfigError``
naming the file, the key path and what was expected, in one line, so the CLI can report it
and exit 2 before any agent starts. What Claude Code accepts but stagecrew cannot run (hook
types other than ``command``, events stagecrew never sends) loads with a warning instead, so
a valid Claude Code settings file never stops stagecrew.

A command that one invocation matches twice (configured in ``~/.claude`` and in stagecrew's
config, say, or under two matching groups) runs once, as Claude Code deduplicates identical
commands: at its first place, with the stricter settings of the copies (the longest timeout,
``on_failure: block``). See ``select``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from stagecrew.claude.settings import read_settings
from stagecrew.config import ConfigError
from stagecrew.hooks.events import CLAUDE_ONLY_EVENTS, EVENTS

DEFAULT_TIMEOUT_S = 60.0
OnFailure = Literal["continue", "block"]
# A stagecrew config's ``hooks`` value with the label errors name it by (usually its path).
HookSource = tuple[str, Mapping[str, Any]]

_LITERAL_MATCHER = re.compile(r"[A-Za-z0-9_|]+")


@dataclass(frozen=True)
class HookCommand:
    """One command to run: what Claude Code calls a hook of ``type: command``."""

    command: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    on_failure: OnFailure = "continue"
    # Where it was configured, for logs: "<file>: hooks.PreToolUse[0].hooks[1]".
    origin: str = ""


@dataclass(frozen=True)
class Matcher:
    """A matcher as Claude Code reads it: empty or ``*`` matches everything; letters, digits,
    ``_`` and ``|`` only is a list of exact names; anything else is a regular expression
    searched for anywhere in the name (JavaScript's ``RegExp.test``)."""

    text: str = ""
    names: frozenset[str] | None = None
    pattern: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Raises ``re.error`` for a regular expression that does not compile."""
        if text in ("", "*"):
            return cls(text)
        if _LITERAL_MATCHER.fullmatch(text):
            return cls(text, names=frozenset(n for n in text.split("|") if n))
        return cls(text, pattern=re.compile(text))

    @property
    def matches_all(self) -> bool:
        return self.names is None and self.pattern is None

    def matches(self, candidates: Sequence[str]) -> bool:
        """Whether any of ``candidates`` (one subject under its several names) matches."""
        if self.names is not None:
            return any(c in self.names for c in candidates)
        if self.pattern is not None:
            return any(self.pattern.search(c) for c in candidates)
        return True


@dataclass(frozen=True)
class MatcherGroup:
    """A ``{"matcher": ..., "hooks": [...]}`` entry of one event."""

    matcher: Matcher
    hooks: tuple[HookCommand, ...]


@dataclass(frozen=True)
class HookConfig:
    """Every configured hook, merged, in config order; cheap to ask "anything for X?"."""

    events: Mapping[str, tuple[MatcherGroup, ...]] = field(default_factory=dict)
    # Things that load but will not run (unsupported types and events), one line each.
    warnings: tuple[str, ...] = ()
    # The files and labels that contributed hooks, in order (for ``crew doctor``-like output).
    sources: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.events

    def groups(self, event: str) -> tuple[MatcherGroup, ...]:
        return self.events.get(event, ())


# -- parsing ---------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return json.dumps(value)
    return type(value).__name__


class _Parser:
    """Validates one source; errors are ``<source>: '<key path>' <what was expected>``."""

    def __init__(self, source: str, prefix: str) -> None:
        self.source = source
        self.prefix = prefix
        self.warnings: list[str] = []

    def fail(self, path: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: '{path}' {problem}")

    def parse(self, hooks: Any) -> dict[str, list[MatcherGroup]]:
        root = self.prefix
        if not isinstance(hooks, Mapping):
            raise self.fail(
                root, f"expected an object of events to lists of matchers, got {_shown(hooks)}"
            )
        out: dict[str, list[MatcherGroup]] = {}
        for event, groups in hooks.items():
            path = f"{root}.{event}"
            if event not in EVENTS:
                if event in CLAUDE_ONLY_EVENTS:
                    self.warnings.append(
                        f"{self.source}: '{path}': stagecrew does not send {event} events; "
                        "these hooks never run"
                    )
                    continue
                close = difflib.get_close_matches(str(event), EVENTS, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise self.fail(
                    path, f"is not a hook event{hint}: expected one of {', '.join(EVENTS)}"
                )
            if not isinstance(groups, list):
                raise self.fail(path, f"expected a list of matcher groups, got {_shown(groups)}")
            parsed = [self._group(g, f"{path}[{i}]") for i, g in enumerate(groups)]
            parsed = [g for g in parsed if g.hooks]
            if parsed:
                out.setdefault(str(event), []).extend(parsed)
        return out

    def _group(self, group: Any, path: str) -> MatcherGroup:
        if not isinstance(group, Mapping):
            raise self.fail(
                path, f'expected an object {{"matcher": ..., "hooks": [...]}}, got {_shown(group)}'
            )
        text = group.get("matcher", "")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise self.fail(f"{path}.matcher", f"expected a string, got {_shown(text)}")
        try:
            matcher = Matcher.parse(text)
        except re.error as exc:
            raise self.fail(
                f"{path}.matcher", f"is not a valid regular expression ({exc}): {text!r}"
            ) from None
        if "hooks" not in group:
            raise self.fail(f"{path}.hooks", "is required (a list of hooks)")
        hooks = group["hooks"]
        if not isinstance(hooks, list):
            raise self.fail(f"{path}.hooks", f"expected a list of hooks, got {_shown(hooks)}")
        parsed = [self._hook(h, f"{path}.hooks[{i}]") for i, h in enumerate(hooks)]
        return MatcherGroup(matcher, tuple(h for h in parsed if h is not None))

    def _hook(self, hook: Any, path: str) -> HookCommand | None:
        if not isinstance(hook, Mapping):
            raise self.fail(
                path, f'expected an object {{"type": "command", ...}}, got {_shown(hook)}'
            )
        kind = hook.get("type")
        if kind is None:
            raise self.fail(f"{path}.type", 'is required (use "command")')
        if not isinstance(kind, str):
            raise self.fail(f"{path}.type", f'expected "command", got {_shown(kind)}')
        if kind != "command":
            self.warnings.append(
                f"{self.source}: '{path}': hooks of type {kind!r} are not supported; only "
                "'command' hooks run"
            )
            return None
        command = hook.get("command")
        if not isinstance(command, str) or not command.strip():
            raise self.fail(
                f"{path}.command", f"expected a non-empty string, got {_shown(command)}"
            )
        timeout = hook.get("timeout", DEFAULT_TIMEOUT_S)
        if timeout is None:
            timeout = DEFAULT_TIMEOUT_S
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise self.fail(
                f"{path}.timeout", f"expected a positive number of seconds, got {_shown(timeout)}"
            )
        on_failure = hook.get("on_failure", "continue")
        if on_failure not in ("continue", "block"):
            raise self.fail(
                f"{path}.on_failure", f'expected "continue" or "block", got {_shown(on_failure)}'
            )
        return HookCommand(command, float(timeout), on_failure, f"{self.source}: {path}")


def parse_hooks(hooks: Any, source: str, *, prefix: str = "hooks") -> HookConfig:
    """One source's ``hooks`` value as a ``HookConfig``; raises ``ConfigError``."""
    parser = _Parser(source, prefix)
    events = parser.parse(hooks)
    return HookConfig(
        {e: tuple(g) for e, g in events.items()},
        tuple(parser.warnings),
        (source,) if events else (),
    )


# -- matching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selected:
    """A hook chosen for one invocation, with the matcher that chose it (for the record)."""

    matcher: str
    hook: HookCommand


def select(config: HookConfig, event: str, subject: Sequence[str] | None) -> tuple[Selected, ...]:
    """The hooks to run for ``event``, in config order, each command once.

    ``subject`` is what matchers are matched against (a tool under all its names), or None
    for events without one, where every group runs. A command matched twice (configured in
    two sources, or under two matching groups) runs once, as in Claude Code: at the first
    place, with the longest timeout and ``on_failure: block`` if any copy asks for it.
    """
    chosen: dict[str, Selected] = {}
    for group in config.groups(event):
        if subject is not None and not group.matcher.matches(subject):
            continue
        for hook in group.hooks:
            kept = chosen.get(hook.command)
            if kept is None:
                chosen[hook.command] = Selected(group.matcher.text, hook)
                continue
            stricter: OnFailure = (
                "block" if "block" in (kept.hook.on_failure, hook.on_failure) else "continue"
            )
            merged = replace(
                kept.hook, timeout_s=max(kept.hook.timeout_s, hook.timeout_s), on_failure=stricter
            )
            chosen[hook.command] = Selected(kept.matcher, merged)
    return tuple(chosen.values())


# -- merging and loading ---------------------------------------------------------------------


def merge(configs: Sequence[HookConfig]) -> HookConfig:
    """All hooks of all ``configs``, in the order given (nothing replaces anything)."""
    events: dict[str, list[MatcherGroup]] = {}
    for config in configs:
        for event, groups in config.events.items():
            events.setdefault(event, []).extend(groups)
    return HookConfig(
        {e: tuple(g) for e, g in events.items()},
        tuple(w for c in configs for w in c.warnings),
        tuple(s for c in configs for s in c.sources),
    )


def hook_sources(
    project_root: Path,
    *,
    home: Path | None = None,
    user_hooks: HookSource | None = None,
    project_hooks: HookSource | None = None,
) -> list[HookSource]:
    """Every source's raw ``hooks`` value with its label, in config order, each validated
    (``ConfigError`` otherwise): what a session carries to the process that runs its hooks,
    which parses them again with ``parse_hooks``."""
    home = Path.home() if home is None else home
    seen: set[str] = set()
    out: list[HookSource] = []

    def settings(path: Path) -> None:
        real = os.path.realpath(path)
        if real in seen:
            return
        seen.add(real)
        data = read_settings(path)
        if data and "hooks" in data:
            parse_hooks(data["hooks"], str(path))
            out.append((str(path), data["hooks"]))

    def layer(source: HookSource | None) -> None:
        if source is not None:
            parse_hooks(source[1], source[0])
            out.append(source)

    settings(home / ".claude" / "settings.json")
    layer(user_hooks)
    settings(project_root / ".claude" / "settings.json")
    settings(project_root / ".claude" / "settings.local.json")
    layer(project_hooks)
    return out


def load_hooks(
    project_root: Path,
    *,
    home: Path | None = None,
    user_hooks: HookSource | None = None,
    project_hooks: HookSource | None = None,
) -> HookConfig:
    """Every hook for a session in ``project_root``, from all five sources (module docstring).

    ``home`` is the directory holding ``.claude/`` for the person (default ``~``; tests point
    it elsewhere). ``user_hooks``/``project_hooks`` are stagecrew's config layers' ``hooks``
    values with their labels, e.g. ``("~/.config/stagecrew/config.json", data["hooks"])``;
    stagecrew's config is not loaded here. Raises ``ConfigError`` for anything invalid.
    """
    sources = hook_sources(
        project_root, home=home, user_hooks=user_hooks, project_hooks=project_hooks
    )
    return merge([parse_hooks(hooks, source) for source, hooks in sources])
