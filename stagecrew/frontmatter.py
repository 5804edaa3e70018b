"""YAML front matter of markdown files: the one parser for profiles, custom commands and skills.

Agent profiles, Claude Code-style commands and ``SKILL.md`` files all put a few knobs in a
``---`` block above a markdown body; one parser keeps their error messages alike (file, line,
problem) and their quirks identical (BOM, ``...`` as the closing line, an empty block).
Profiles require the block; commands may omit it (the whole file is then the body).

``lenient`` reads one common slip the way Claude Code does: ``argument-hint: [pr] [priority]``
(its own documented example) is not YAML — a flow list followed by more text — so such a
value is retried as the quoted string it was meant to be. Anything else stays an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

__all__ = ["FrontmatterError", "split_frontmatter"]


class FrontmatterError(ValueError):
    """Front matter that cannot be read; the message starts with the file."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = Path(path)
        self.problem = message
        super().__init__(f"{path}: {message}")


def split_frontmatter(
    text: str,
    path: Path,
    *,
    required: bool = True,
    lenient: bool = False,
    error: Callable[[Path, str], Exception] = FrontmatterError,
) -> tuple[dict[str, Any], str]:
    """``(fields, body)`` of a markdown file. The body is stripped and ends with one newline
    (empty when there is none). Without a leading ``---`` line the file is all body when
    ``required`` is false. Problems are raised as ``error(path, message)`` so each caller keeps
    its own exception type (``ProfileError`` for profiles). ``lenient``: see the module doc."""
    text = text.lstrip("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        if not required:
            return {}, _tidy(text)
        raise error(path, "missing YAML frontmatter: the file must start with a '---' line")
    for i in range(1, len(lines)):
        if lines[i].strip() in ("---", "..."):
            header, body = "".join(lines[1:i]), "".join(lines[i + 1 :])
            break
    else:
        raise error(path, "unterminated YAML frontmatter: no closing '---' line")
    try:
        data = _load(header, lenient)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""  # +1 for '---', +1 base
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(path, f"invalid YAML frontmatter{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(path, "the frontmatter must be a mapping of field: value")
    return data, _tidy(body)


# `key: [a] [b]` (a flow list followed by more text on the same line).
_BRACKET_VALUE = re.compile(r"^([A-Za-z0-9_-]+):[ \t]+(\[[^\n]*\][ \t]+\S[^\n]*?)[ \t]*$", re.M)


def _load(header: str, lenient: bool) -> Any:
    if not header.strip():
        return {}
    try:
        return yaml.safe_load(header)
    except yaml.YAMLError:
        if not lenient or not _BRACKET_VALUE.search(header):
            raise
        quoted = _BRACKET_VALUE.sub(
            lambda m: f"{m.group(1)}: '{m.group(2).replace(chr(39), chr(39) * 2)}'", header
        )
        try:
            return yaml.safe_load(quoted)
        except yaml.YAMLError:
            pass
        raise


def _tidy(body: str) -> str:
    return body.strip() + "\n" if body.strip() else ""
