"""What a point captures: every file of the workspace — tracked, untracked or ignored by the
person's ``.gitignore`` — within size caps, decided from what git lists as changed or new.

Rewinding has to bring back what the agent destroyed, and ``rm -rf build/`` or an overwritten
``.env`` destroys ignored files as surely as tracked ones, so the person's ignore rules do not
apply here. Caps keep one point cheap instead (constants, no configuration):

* ``MAX_FILE_BYTES`` — a file larger than this is not captured (listed as skipped; a rewind
  leaves it alone unless an older point holds it).
* Bulk directories — a directory named like a dependency or cache tree (``node_modules``,
  ``.venv``, ``target`` ... see ``BULK_DIR_NAMES``) holding more than ``BULK_DIR_MAX_FILES``
  files or ``BULK_DIR_MAX_BYTES`` is skipped whole, and remembered so it is never walked again.
* ``MAX_NEW_DIR_FILES`` — a directory new since the last point with more files than this
  (generated output) is skipped whole and remembered.
* ``MAX_NEW_BYTES`` — the new content one point may add; a new entry that would pass it is
  skipped whole and remembered.
* Never captured: ``.git`` anywhere, ``.stagecrew/`` at the root (the session's own state),
  nested git repositories, sockets and other special files.

Paths are bytes throughout, as git and the file system give them (names need not be UTF-8).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from stagecrew.rewind.points import Skip

MIB = 1 << 20
MAX_FILE_BYTES = 16 * MIB
MAX_NEW_BYTES = 512 * MIB
MAX_NEW_DIR_FILES = 100_000
BULK_DIR_MAX_FILES = 1_000
BULK_DIR_MAX_BYTES = 32 * MIB
BULK_DIR_NAMES = frozenset(
    {
        b"node_modules",
        b"bower_components",
        b".venv",
        b"venv",
        b".tox",
        b".nox",
        b".eggs",
        b"__pycache__",
        b".mypy_cache",
        b".pytest_cache",
        b".ruff_cache",
        b".gradle",
        b".next",
        b".nuxt",
        b".parcel-cache",
        b".turbo",
        b".cache",
        b".terraform",
        b"target",
    }
)

# Always left out (anchored patterns for the shadow repository's exclude file).
BASE_EXCLUDES = (b"/.stagecrew/",)


def text(path: bytes) -> str:
    """A path for people and JSON (undecodable bytes survive as surrogate escapes)."""
    return path.decode("utf-8", errors="surrogateescape")


@dataclass
class CapturePlan:
    """What to tell the shadow index: ``update`` goes to ``update-index --add --remove``
    (new, changed and vanished paths), ``force_remove`` drops entries that may no longer be
    captured. ``skipped`` is what this point lacks and later points check again (big files,
    nested repositories); ``remember`` is what to exclude from now on (bulk directories, new
    entries over a cap), so it is never walked again."""

    update: list[bytes] = field(default_factory=list)
    force_remove: list[bytes] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    remember: list[Skip] = field(default_factory=list)


class _TooBig(Exception):
    pass


def plan_capture(workspace: bytes, listed: list[tuple[bytes, bytes]]) -> CapturePlan:
    """Turn ``git ls-files -t -m -d -o --directory`` output — ``(tag, path)`` pairs, ``?`` for
    paths the store has not seen (a trailing ``/`` for a whole new directory), other tags
    for known entries that changed or vanished — into a plan within the caps."""
    plan = CapturePlan()
    budget = MAX_NEW_BYTES
    seen: set[bytes] = set()
    for tag, rel in listed:
        if rel in seen:
            continue  # a deleted entry is listed as both changed and removed
        seen.add(rel)
        if tag != b"?":
            st = _lstat(workspace, rel)
            if st is not None and stat.S_ISDIR(st.st_mode):
                # A file became a directory: git does not list what is inside, so walk it.
                plan.force_remove.append(rel)
                budget -= _new_entry(workspace, rel + b"/", plan, budget)
            elif st is None or stat.S_ISLNK(st.st_mode):
                plan.update.append(rel)
            elif stat.S_ISREG(st.st_mode) and st.st_size <= MAX_FILE_BYTES:
                if _readable(workspace, rel, plan):
                    plan.update.append(rel)
                else:
                    plan.force_remove.append(rel)
            else:
                plan.force_remove.append(rel)
                plan.skipped.append(Skip(path=text(rel), reason=_why_not(st)))
            continue
        budget -= _new_entry(workspace, rel, plan, budget)
    return plan


def _new_entry(workspace: bytes, rel: bytes, plan: CapturePlan, budget: int) -> int:
    """Plan one path the store has not seen; returns the bytes it adds."""
    if not rel.endswith(b"/"):
        st = _lstat(workspace, rel)
        if st is None:
            return 0
        if stat.S_ISLNK(st.st_mode):
            plan.update.append(rel)
            return 0
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            plan.skipped.append(Skip(path=text(rel), reason=_why_not(st)))
            return 0
        if st.st_size > budget:
            _skip_and_remember(plan, rel, "new content over the cap of one point")
            return 0
        if not _readable(workspace, rel, plan):
            return 0
        plan.update.append(rel)
        return st.st_size
    top = rel.rstrip(b"/")
    files: list[bytes] = []
    skipped: list[Skip] = []
    remember: list[Skip] = []
    try:
        size = _walk(workspace, top, files, skipped, remember)
    except _TooBig as big:
        _skip_and_remember(plan, rel, str(big))
        return 0
    if size > budget:
        _skip_and_remember(plan, rel, f"new content over the cap of one point ({size:,} bytes)")
        return 0
    plan.update.extend(files)
    plan.skipped.extend(skipped)
    plan.remember.extend(remember)
    return size


def _walk(
    workspace: bytes,
    top: bytes,
    files: list[bytes],
    skipped: list[Skip],
    remember: list[Skip],
) -> int:
    """Collect the capturable files under ``top`` (relative); returns their total size."""
    if _is_nested_repo(workspace, top):
        skipped.append(Skip(path=text(top) + "/", reason="nested git repository"))
        return 0
    name = os.path.basename(top)
    if name in BULK_DIR_NAMES:
        over = _bulk_over_cap(os.path.join(workspace, top))
        if over:
            remember.append(Skip(path=text(top) + "/", reason=over))
            return 0
    total = 0
    stack = [top]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(workspace, rel_dir)))
        except OSError as exc:
            skipped.append(Skip(path=text(rel_dir) + "/", reason=f"unreadable: {exc.strerror}"))
            continue
        for entry in entries:
            if entry.name == b".git":
                continue
            rel = rel_dir + b"/" + entry.name
            try:
                if entry.is_symlink():
                    files.append(rel)
                elif entry.is_dir(follow_symlinks=False):
                    if _is_nested_repo(workspace, rel):
                        skipped.append(Skip(path=text(rel) + "/", reason="nested git repository"))
                    elif entry.name in BULK_DIR_NAMES and (over := _bulk_over_cap(entry.path)):
                        remember.append(Skip(path=text(rel) + "/", reason=over))
                    else:
                        stack.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    size = entry.stat(follow_symlinks=False).st_size
                    if size > MAX_FILE_BYTES:
                        skipped.append(Skip(path=text(rel), reason=_size_reason(size)))
                    elif not os.access(entry.path, os.R_OK):
                        skipped.append(Skip(path=text(rel), reason="unreadable"))
                    else:
                        files.append(rel)
                        total += size
                else:
                    skipped.append(Skip(path=text(rel), reason="special file"))
            except OSError:
                continue  # gone while we looked
        if len(files) > MAX_NEW_DIR_FILES:
            raise _TooBig(f"more than {MAX_NEW_DIR_FILES:,} new files")
    return total


def _bulk_over_cap(path: bytes) -> str | None:
    """Why a bulk directory is too big to capture, or None; stops counting at the cap."""
    count = 0
    size = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                count += 1
                size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
            if count > BULK_DIR_MAX_FILES:
                return f"bulk directory of more than {BULK_DIR_MAX_FILES:,} files"
            if size > BULK_DIR_MAX_BYTES:
                return f"bulk directory of more than {BULK_DIR_MAX_BYTES // MIB} MiB"
    return None


def _readable(workspace: bytes, rel: bytes, plan: CapturePlan) -> bool:
    """git stops at the first file it cannot open, so an unreadable one is left out here."""
    if os.access(os.path.join(workspace, rel), os.R_OK):
        return True
    plan.skipped.append(Skip(path=text(rel), reason="unreadable"))
    return False


def _is_nested_repo(workspace: bytes, rel: bytes) -> bool:
    return os.path.lexists(os.path.join(workspace, rel, b".git"))


def _lstat(workspace: bytes, rel: bytes) -> os.stat_result | None:
    try:
        return os.lstat(os.path.join(workspace, rel))
    except OSError:
        return None


def _why_not(st: os.stat_result) -> str:
    if stat.S_ISREG(st.st_mode):
        return _size_reason(st.st_size)
    return "special file"


def _size_reason(size: int) -> str:
    return f"file of {size / MIB:.1f} MiB (cap {MAX_FILE_BYTES // MIB} MiB)"


def _skip_and_remember(plan: CapturePlan, rel: bytes, reason: str) -> None:
    plan.remember.append(Skip(path=text(rel), reason=reason))


def exclude_pattern(path: str) -> bytes | None:
    """An anchored exclude-file pattern matching exactly ``path`` (``dir/`` for a directory);
    None for a name no pattern can express (a newline in it)."""
    raw = path.encode("utf-8", errors="surrogateescape")
    if b"\n" in raw or b"\r" in raw:
        return None
    escaped = bytearray()
    for byte in raw:
        if byte in b"\\*?[":
            escaped += b"\\"
        escaped.append(byte)
    if escaped.endswith(b" "):
        escaped[-1:] = b"\\ "
    return b"/" + bytes(escaped)


__all__ = [
    "BASE_EXCLUDES",
    "BULK_DIR_MAX_BYTES",
    "BULK_DIR_MAX_FILES",
    "BULK_DIR_NAMES",
    "MAX_FILE_BYTES",
    "MAX_NEW_BYTES",
    "MAX_NEW_DIR_FILES",
    "CapturePlan",
    "exclude_pattern",
    "plan_capture",
    "text",
]
