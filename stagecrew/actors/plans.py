"""Saving a plan-mode agent's final answer under ``.stagecrew/plans/``.

A read-only (plan) agent cannot write files through its tools, and must not be able to: the
sandbox and the permission rules forbid it. Its plan is its final answer, and the agent loop
(outside the tools, after the run ended with ``done``) keeps it here, so a later build session
or a person can pick it up. One file per plan, never overwritten: the name carries the time
and the session, and a second plan in the same second gets a numbered suffix.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path

from stagecrew.layout import plans_dir

__all__ = ["PLANS_DIR", "plan_title", "save_plan"]

PLANS_DIR = plans_dir(".")

_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(?P<title>.+?)[ \t#]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def plan_title(text: str) -> str:
    """The plan's title: its first Markdown heading, else its first non-empty line.

    Models often open with a sentence ("Here is the plan:") before the first heading, so the
    heading is preferred wherever it is; a plan without any heading still gets a title.
    """
    lines = text.splitlines()
    for line in lines:
        match = _HEADING.match(line)
        if match:
            return match.group("title").strip()
    for line in lines:
        if line.strip():
            return line.strip().lstrip("#").strip() or "Plan"
    return "Plan"


def _file_text(text: str) -> str:
    """The plan as saved: unchanged when it already opens with a heading, else with a
    ``# title`` line added on top, so every plan file starts with its title."""
    body = text.strip("\n").rstrip()
    if not body.strip():
        return f"# {plan_title(body)}\n"
    first = next(line for line in body.splitlines() if line.strip())
    if _HEADING.match(first):
        return body.lstrip() + "\n"
    return f"# {plan_title(body)}\n\n{body}\n"


def _session_slug(session: str) -> str:
    """Session ids come from the CLI (safe today) or from a resumed transcript; a ``/`` or
    ``..`` in one must never choose another directory, so only filename-safe characters stay."""
    slug = _UNSAFE.sub("-", session).strip(".-")
    return slug[:80] or "session"


def _plans_dir(root: Path) -> Path:
    """Create ``.stagecrew/plans`` one level at a time, checking each level *before* creating
    it: a symlinked ``.stagecrew`` must not even get a ``plans`` directory made at its target."""
    current = root
    for part in PLANS_DIR.parts:
        current = current / part
        real = Path(os.path.realpath(current))
        if not real.is_relative_to(root):
            raise ValueError(
                f"{current} resolves to {real}, outside the workspace {root}; "
                "refusing to save the plan there"
            )
        real.mkdir(exist_ok=True)
        current = real
    return current


def save_plan(workspace: Path, session: str, text: str, *, now: float | None = None) -> Path:
    """Write ``text`` to ``<workspace>/.stagecrew/plans/<YYYYmmdd-HHMMSS>-<session>.md``.

    The write is atomic (a temporary file in the same directory, flushed, then linked into
    place), so a reader never sees half a plan and a crash leaves no partial file. An existing
    plan is never replaced: the name gets ``-2``, ``-3``, ... instead. ``now`` (seconds since
    the epoch, local time) is for callers that stamp several artefacts with one time.

    Raises ``ValueError`` when ``.stagecrew/plans`` resolves outside the workspace (a cloned
    repository may ship ``.stagecrew`` as a symlink to anywhere; the plan must not follow it),
    and ``OSError`` when the directory cannot be created or written.
    """
    root = Path(os.path.realpath(workspace))
    real_dir = _plans_dir(root)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    stem = f"{stamp}-{_session_slug(session)}"
    data = _file_text(text).encode("utf-8")

    fd, tmp_name = tempfile.mkstemp(prefix=".plan-", suffix=".tmp", dir=real_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600; a plan is an ordinary project file
        for n in range(1, 1000):
            target = real_dir / (f"{stem}.md" if n == 1 else f"{stem}-{n}.md")
            try:
                os.link(tmp_name, target)  # fails if the name exists: never clobbers a plan
            except FileExistsError:
                continue
            except OSError:
                # No hard links on this filesystem: a rename is still atomic, only the
                # no-clobber check becomes a (tiny) race with another writer.
                if target.exists():
                    continue
                os.replace(tmp_name, target)
            return target
        raise FileExistsError(f"no free plan file name for {stem} in {real_dir}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
