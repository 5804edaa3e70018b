"""Start an MCP server so that it cannot outlive stagecrew: ``python -I -S launcher.py PARENT
TAG CMD ARGS...``.

Why a launcher: the SDK's ``stdio_client`` spawns the server itself (``anyio.open_process``
with ``start_new_session=True``) and takes no ``preexec_fn``, so the server sits in a session
of its own, out of reach of the terminal's signals and of anything that would end it when
stagecrew's process is killed with ``kill -9``. Servers are also often wrappers (``npx``,
``uvx``, a shell script) whose real server is a grandchild, which ``PR_SET_PDEATHSIG`` alone
(one process, not inherited across ``fork``) would miss.

So this small stdlib-only program is the command ``stdio_client`` runs. It is the leader of
the new session and process group; it asks the kernel for SIGTERM when its parent (the
stagecrew process that spawned it) dies, closes the race where the parent died first, and
runs the real server as its child in the same process group. Then:

* parent killed (even ``kill -9``): the kernel sends SIGTERM; the handler sees the parent gone
  and SIGKILLs the whole process group (server, wrapper and grandchildren together);
* SIGTERM from the SDK's own shutdown (sent to the group): forwarded to the server, so the
  server's orderly exit still works;
* server exits (stdin closed at stop, or a crash): whatever it left in the group is killed and
  the launcher exits with the server's status, so the SDK sees the exit as before.

The launcher holds none of the server's pipes (its stdin and stdout point at /dev/null after
the fork), so EOF and broken pipes behave as if it were not there. It costs one small Python
process per server (no site packages are imported: ``-I -S``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def _group_members() -> list[int]:
    """Pids in our process group other than ourselves (Linux: read from /proc)."""
    me = os.getpid()
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.getpgid(int(entry)) == me:
                out.append(int(entry))
        except OSError:
            continue
    return out


def _kill_group(child: list[int]) -> None:
    """SIGKILL everything in our process group, this process included. Run any other way than
    by ``stdio_client`` (not a group leader), only our own child and we go."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    for pid in child:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    os._exit(137)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: launcher.py PARENT_PID TAG COMMAND [ARGS...]\n")
        return 2
    parent = int(argv[0])
    command = argv[2:]  # argv[1] is a tag that names this server in `ps` and in sweeps
    child: list[int] = []

    def on_term(signum: int, _frame: object) -> None:
        if os.getppid() != parent or not child:
            _kill_group(child)  # stagecrew is gone (or we are not running anything yet)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child[0], signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the SDK's own group kill at stop still applies
    if os.getppid() != parent:  # the parent died before the prctl took effect
        _kill_group(child)

    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(2, f"stagecrew: cannot run {command[0]}: {exc.strerror}\n".encode())
        os._exit(127)
    child.append(pid)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)

    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 0
            break
    for member in _group_members():  # what the server left behind in its group
        with contextlib.suppress(OSError):
            os.kill(member, signal.SIGKILL)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
