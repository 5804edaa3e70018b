"""The workspace boundary every file tool goes through.

Two layers, because a check alone is not enough:

1. ``resolve_path`` turns what the model wrote into a real path and refuses anything that ends
   up outside the workspace (``..``, absolute paths, symlinks anywhere in the chain). Its answer
   is the *real* path, so later steps never see a link that was inside at check time.
2. The ``safe_*`` helpers do the actual I/O without trusting that answer: between the check and
   the open, another process (or the agent's own ``bash``) may swap a directory or the file
   itself for a symlink pointing out. They walk from the workspace root one component at a
   time with ``O_NOFOLLOW`` (so a link swapped in anywhere fails the open), and after opening
   they ask the kernel where the descriptor really points (``/proc/self/fd``) before reading or
   writing a byte. Writes go to a temporary file in the verified directory and are renamed over
   the target, so a reader never sees half a file and a symlink at the target is replaced, never
   followed.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from stagecrew.tools.base import ToolContext, ToolResult, WorkspaceError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK so that opening a FIFO planted in the workspace cannot hang the agent; it has no
# effect on regular files, and anything that is not a regular file is refused right after.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def is_within(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Component-wise containment (``/w2`` is not inside ``/w``)."""
    p = os.fspath(path)
    r = os.fspath(root).rstrip("/")
    return p == r or p.startswith(r + "/") or r == ""


def display_path(ctx: ToolContext, path: str | os.PathLike[str]) -> str:
    """Workspace-relative spelling for messages: shorter, and what the model can pass back."""
    p = os.fspath(path)
    if is_within(p, ctx.workspace):
        rel = os.path.relpath(p, ctx.workspace)
        return "." if rel == "." else rel
    return p


def _outside(raw: str, ctx: ToolContext, real: str, via_link: bool) -> WorkspaceError:
    ws = ctx.workspace
    if via_link:
        return WorkspaceError(
            f"path '{raw}' resolves through a symlink to {real}, which is outside the workspace "
            f"{ws}; file tools only work inside it"
        )
    return WorkspaceError(
        f"path '{raw}' is outside the workspace {ws}; file tools only work inside it"
    )


def resolve_path(
    ctx: ToolContext, path: str | os.PathLike[str], *, must_exist: bool = False
) -> Path:
    """The real path ``path`` names, or ``WorkspaceError`` when it leaves the workspace.

    Relative paths are taken from the workspace root (not the bash cwd), so the same string means
    the same file in every tool. ``~`` is expanded because models write it, and then refused like
    any other absolute path outside. ``must_exist`` raises ``FileNotFoundError`` with a message
    the model can act on.
    """
    raw = os.fspath(path)
    if "\x00" in raw:
        raise WorkspaceError(f"path {raw!r} contains a NUL byte; that is never a valid file name")
    expanded = os.path.expanduser(raw) if raw.startswith("~") else raw
    ws = os.fspath(ctx.workspace)
    joined = expanded if os.path.isabs(expanded) else os.path.join(ws, expanded)
    real = os.path.realpath(joined)
    if not is_within(real, ws):
        lexical = os.path.normpath(joined)
        raise _outside(raw, ctx, real, via_link=is_within(lexical, ws))
    if must_exist and not os.path.lexists(real):
        raise FileNotFoundError(f"path '{raw}' does not exist (looked for {real})")
    return Path(real)


def _fd_target(fd: int) -> str | None:
    """Where the kernel says ``fd`` points, or None when /proc is unavailable."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def verify_fd(ctx: ToolContext, fd: int, expected: str | os.PathLike[str]) -> None:
    """Refuse (``WorkspaceError``) unless the open descriptor ``fd`` lives inside the workspace.

    This is the check that survives races: whatever happened to the path between the check and
    the open, the descriptor is what we will read or write. Without /proc (not Linux) we fall
    back to comparing the descriptor's inode with what ``expected`` is now.
    """
    target = _fd_target(fd)
    if target is not None:
        # A file unlinked after the open reads as "/w/x (deleted)"; still inside, still harmless.
        if not is_within(target, ctx.workspace):
            raise WorkspaceError(
                f"'{display_path(ctx, expected)}' was opened but actually points to {target}, "
                f"outside the workspace {ctx.workspace}; refusing to use it (it was probably "
                "replaced by a symlink after the path was checked)"
            )
        return
    st = os.fstat(fd)
    try:
        now = os.stat(expected, follow_symlinks=False)
    except OSError as exc:
        raise WorkspaceError(f"'{expected}' changed while it was being opened: {exc}") from exc
    if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino):
        raise WorkspaceError(f"'{expected}' changed while it was being opened; refusing to use it")


def _components(ctx: ToolContext, directory: Path) -> list[str]:
    rel = os.path.relpath(directory, ctx.workspace)
    if rel == ".":
        return []
    if rel == ".." or rel.startswith("../") or os.path.isabs(rel):
        raise WorkspaceError(
            f"directory {directory} is outside the workspace {ctx.workspace}; file tools only "
            "work inside it"
        )
    return rel.split(os.sep)


def open_dir(
    ctx: ToolContext,
    directory: Path,
    *,
    create: bool = False,
    created: list[Path] | None = None,
) -> int:
    """A descriptor for ``directory``, reached from the workspace root without following links.

    ``create`` makes missing components (like ``mkdir -p``) and appends each new one to
    ``created`` so a caller that has to roll back can remove them again. The caller closes the
    returned descriptor.
    """
    parts = _components(ctx, directory)
    fd = os.open(ctx.workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        here = Path(ctx.workspace)
        for part in parts:
            here = here / part
            if create:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                    if created is not None:
                        created.append(here)
                except FileExistsError:
                    pass
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    try:
                        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                        is_link = stat.S_ISLNK(st.st_mode)
                    except OSError:
                        is_link = False
                    if is_link:
                        raise WorkspaceError(
                            f"'{display_path(ctx, here)}' is now a symbolic link (it changed after "
                            "the path was checked); refusing to follow it"
                        ) from exc
                    raise NotADirectoryError(
                        f"'{display_path(ctx, here)}' is not a directory"
                    ) from exc
                if exc.errno == errno.ENOENT:
                    raise FileNotFoundError(
                        f"directory '{display_path(ctx, here)}' does not exist"
                    ) from exc
                raise
            os.close(fd)
            fd = nfd
        verify_fd(ctx, fd, directory)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _split(ctx: ToolContext, path: Path) -> tuple[Path, str]:
    if os.fspath(path) == os.fspath(ctx.workspace):
        raise IsADirectoryError(
            f"'{display_path(ctx, path)}' is the workspace directory, not a file"
        )
    return path.parent, path.name


@contextmanager
def safe_open_read(ctx: ToolContext, path: Path) -> Iterator[BinaryIO]:
    """Open a regular file inside the workspace for reading, race-safely (see module doc)."""
    parent, name = _split(ctx, path)
    dfd = open_dir(ctx, parent)
    try:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise WorkspaceError(
                    f"'{display_path(ctx, path)}' is now a symbolic link (it changed after the "
                    "path was checked); refusing to follow it"
                ) from exc
            if exc.errno == errno.ENOENT:
                raise FileNotFoundError(f"File does not exist: {display_path(ctx, path)}") from exc
            raise
    finally:
        os.close(dfd)
    try:
        verify_fd(ctx, fd, path)
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(
                f"'{display_path(ctx, path)}' is a directory, not a file; use ls to list it"
            )
        if not stat.S_ISREG(st.st_mode):
            raise OSError(
                f"'{display_path(ctx, path)}' is not a regular file (device, FIFO or socket)"
            )
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def safe_read_bytes(ctx: ToolContext, path: Path) -> bytes:
    with safe_open_read(ctx, path) as f:
        return f.read()


def read_if_exists(ctx: ToolContext, path: Path) -> bytes | None:
    """Contents of ``path``, or None if nothing is there (a dangling name is "nothing")."""
    try:
        return safe_read_bytes(ctx, path)
    except FileNotFoundError:
        return None


def safe_write_bytes(
    ctx: ToolContext,
    path: Path,
    data: bytes,
    *,
    make_parents: bool = True,
    created_dirs: list[Path] | None = None,
) -> int:
    """Atomically replace (or create) ``path`` with ``data``; returns the bytes written.

    An existing file keeps its permission bits. A symlink appearing at the target after the
    check is refused rather than silently replaced, so the model hears that something changed.
    """
    parent, name = _split(ctx, path)
    dfd = open_dir(ctx, parent, create=make_parents, created=created_dirs)
    try:
        try:
            st: os.stat_result | None = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"'{display_path(ctx, path)}' is a directory, not a file")
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise WorkspaceError(
                f"'{display_path(ctx, path)}' is now a symbolic link (it changed after the path "
                "was checked); refusing to write through it"
            )
        tmp = f".{name[:180]}.{secrets.token_hex(4)}.sc-tmp"
        tfd = os.open(tmp, _TMP_FLAGS, 0o666, dir_fd=dfd)
        try:
            with os.fdopen(tfd, "wb", closefd=False) as out:
                out.write(data)
            if st is not None:
                os.fchmod(tfd, stat.S_IMODE(st.st_mode))
            os.close(tfd)
            tfd = -1
            # The directory may have been moved since we opened it; the rename happens in the
            # directory the descriptor names, so it must still be inside.
            verify_fd(ctx, dfd, parent)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            if tfd >= 0:
                os.close(tfd)
            with suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
    finally:
        os.close(dfd)
    return len(data)


def safe_unlink(ctx: ToolContext, path: Path) -> None:
    """Remove the file (or the link itself, never its target) at ``path``."""
    parent, name = _split(ctx, path)
    dfd = open_dir(ctx, parent)
    try:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"File does not exist: {display_path(ctx, path)}") from exc
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"'{display_path(ctx, path)}' is a directory, not a file")
        os.unlink(name, dir_fd=dfd)
    finally:
        os.close(dfd)


def safe_rmdir(ctx: ToolContext, path: Path) -> None:
    """Remove an empty directory (used to undo directories a failed write created)."""
    parent, name = _split(ctx, path)
    dfd = open_dir(ctx, parent)
    try:
        os.rmdir(name, dir_fd=dfd)
    finally:
        os.close(dfd)


@dataclass
class DirEntry:
    name: str
    is_dir: bool
    size: int
    link_target: str | None = None


def safe_listdir(ctx: ToolContext, directory: Path) -> list[DirEntry]:
    """Entries of ``directory`` via a verified descriptor; links are shown, never followed."""
    dfd = open_dir(ctx, directory)
    try:
        entries: list[DirEntry] = []
        with os.scandir(dfd) as it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    try:
                        target = os.readlink(e.name, dir_fd=dfd)
                    except OSError:
                        target = "?"
                    entries.append(DirEntry(e.name, False, 0, target))
                else:
                    entries.append(DirEntry(e.name, stat.S_ISDIR(st.st_mode), st.st_size))
        return entries
    finally:
        os.close(dfd)


def describe_os_error(exc: OSError) -> str:
    """Our own OSErrors carry a finished sentence; system ones get the strerror and the name."""
    if exc.errno is None and exc.args:
        return str(exc.args[0])
    name = exc.filename if exc.filename is not None else ""
    return f"{exc.strerror or exc}{': ' + str(name) if name else ''}"


async def run_blocking(fn: Callable[..., ToolResult], *args: Any) -> ToolResult:
    """Run blocking file work off the event loop; expected failures become error results.

    File tools block (disk, git subprocesses); an agent actor serves other calls on the same loop,
    so the work goes to a thread. Path refusals and OS errors are turned into results here so a
    tool called directly (not through ``execute``) still never raises for them.
    """
    try:
        return await asyncio.to_thread(fn, *args)
    except WorkspaceError as exc:
        return ToolResult(content=str(exc), is_error=True)
    except OSError as exc:
        return ToolResult(content=describe_os_error(exc), is_error=True)
