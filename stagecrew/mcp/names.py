"""Tool names as the model sees them: ``mcp__<server>__<tool>``.

Claude Code's convention, so profiles and permission rules written for it (``mcp__github``,
``mcp__github__create_issue``) mean the same here. Model APIs accept function names of at most
64 characters from ``[A-Za-z0-9_-]``, while MCP tool names may hold dots, slashes or be long:
other characters become ``_``, an over-long name is cut and given a short hash of the original,
and a clash gets a numeric suffix. The mapping back to the server's own name is kept by the
caller, never parsed out of the string.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "mcp"
MAX_NAME = 64
_BAD = re.compile(r"[^A-Za-z0-9_-]")


def qualified_name(server: str, name: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """``mcp__<server>__<name>``, made valid for model APIs and unique among ``taken``."""
    base = f"{PREFIX}__{server}__{_BAD.sub('_', name)}"
    if len(base) > MAX_NAME:
        digest = hashlib.sha1(f"{server}/{name}".encode()).hexdigest()[:8]
        base = f"{base[: MAX_NAME - 9]}_{digest}"
    candidate, n = base, 2
    while candidate in taken:
        suffix = f"_{n}"
        candidate = base[: MAX_NAME - len(suffix)] + suffix
        n += 1
    return candidate
