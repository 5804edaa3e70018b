"""``@name`` in a person's message: a request to hand the work to that agent.

Claude Code turns ``@agent-name`` (and OpenCode ``@name``) into an instruction for the main
agent to delegate to that subagent; the person's words stay as they wrote them. stagecrew does
the same for any profile the ``task`` tool can start — its own and Claude Code's agents — in
the chat and in ``crew run``. ``@something`` that names a file of the workspace is a file
reference, not an agent (unless written ``@agent-name``), and an e-mail address is neither.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

_MENTION = re.compile(r"(?<![\w@.])@(agent-)?([A-Za-z0-9][\w.-]*[\w])")


def agent_mentions(text: str, agents: Iterable[str], workspace: Path | None = None) -> list[str]:
    """The agents ``text`` mentions, in order, each once."""
    known = set(agents)
    found: list[str] = []
    for match in _MENTION.finditer(text):
        explicit, name = match.group(1), match.group(2)
        if name not in known or name in found:
            continue
        if not explicit and workspace is not None and (workspace / name).exists():
            continue  # @path: a file reference
        found.append(name)
    return found


def with_delegation(text: str, mentioned: list[str]) -> str:
    """The message with the instruction the mention stands for."""
    if not mentioned:
        return text
    names = ", ".join(f"'{n}'" for n in mentioned)
    return (
        f"{text}\n\n[stagecrew: the person asked for the agent {names}: hand this work to it "
        f"with the task tool (subagent_type {names}) rather than doing it yourself]"
    )
