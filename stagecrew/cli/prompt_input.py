"""Where a ``crew run`` prompt comes from, and how its bytes become text.

Sources, joined in this order with a blank line between them:

1. the PROMPT argument — or, when the argument is ``-``, everything on stdin;
2. ``--prompt-file FILE``;
3. piped stdin, when stdin was not already taken by ``-`` (``cat log | crew run "explain"``
   gives ``explain``, a blank line, then the log), following the stdin rule below.

A source that is empty or only whitespace adds nothing; an empty prompt after all of them is a
usage error. The argument exists for short prompts: the kernel limits one argument to 128 KiB,
so anything longer comes through stdin or a file (up to ``MAX_PROMPT_BYTES``).

**Decoding.** Every source is read as UTF-8. Invalid bytes become U+FFFD, one per maximal
invalid sequence (what Python's ``"replace"`` and the WHATWG decoder do), and one warning line
says how many bytes were replaced in which source and where the first one is. An argument
arrives from Python with the bad bytes escaped as lone surrogates; they are turned back into
the original bytes first, so an argument is decoded exactly like a file with the same bytes. A
leading byte order mark in a file or on stdin is dropped.

**The stdin rule** (implicit stdin, i.e. not ``-``). Stdin is read only when something is
plainly being piped in, and a silent inherited pipe never hangs ``crew``:

* a terminal: never read (nobody is piping anything);
* a regular file (``crew run "…" < notes.txt``): read at once;
* a character device other than a terminal (``/dev/null``, ``/dev/zero``): never read;
* a pipe or a socket: wait up to ``STDIN_WAIT_S`` (1 s; ``STAGECREW_STDIN_WAIT_S`` overrides,
  ``0`` never waits) for it to become readable. Readable means data or end-of-file: a closed,
  empty pipe adds nothing; once data has arrived, it is read to end-of-file however long the
  writer takes. Nothing within the wait: stdin is left unread, with a note saying so. That is
  what a test harness or CI job that hands its own open stdin down to ``crew`` looks like.
  For a producer slow to print its first byte (``slow-build | crew run "why?"``), set a
  longer ``STAGECREW_STDIN_WAIT_S``, or use ``crew run -`` (which waits) with the instruction
  in ``--prompt-file`` (it then follows the piped text).

``crew run -`` (stdin *is* the prompt) always waits for end-of-file, from a terminal too
(Ctrl-D ends it). ``--prompt-file`` reads the named file whatever it is, a FIFO included.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

STDIN_WAIT_S = 1.0
STDIN_WAIT_VAR = "STAGECREW_STDIN_WAIT_S"
# No model reads more than a few MiB of text, and the control channel carries the prompt as
# one JSON line (64 MiB at most, with escapes up to 6 bytes per input byte). The limit also
# ends `yes | crew run -` and `crew run - < /dev/zero`, which would otherwise never stop.
MAX_PROMPT_BYTES = 8 * 1024 * 1024

_READ_CHUNK = 1 << 16
# Python escapes each undecodable byte as one lone surrogate in this range ("surrogateescape").
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
# Any other lone surrogate cannot come from bytes; it can only be replaced.
_OTHER_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")

NO_PROMPT = (
    'no prompt: give it as an argument (crew run "…"), on stdin (… | crew run -), '
    "or in a file (crew run --prompt-file FILE)"
)


class PromptError(Exception):
    """The prompt cannot be had; the message is one line saying what to do instead."""


@dataclass(frozen=True)
class Decoded:
    """A source's text and what decoding had to replace in it."""

    text: str
    invalid_bytes: int = 0
    first_byte: int | None = None  # offset of the first invalid byte in the source's bytes
    first_line: int | None = None  # 1-based line of that byte


@dataclass
class Prompt:
    """The prompt to send, and the warning lines (without the ``crew:`` prefix) to show."""

    text: str
    warnings: list[str] = field(default_factory=list)


# -- decoding ---------------------------------------------------------------------------------


def decode_bytes(data: bytes, *, strip_bom: bool = False) -> Decoded:
    """UTF-8 text from ``data``; invalid bytes become U+FFFD and are counted."""
    if strip_bom and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return Decoded(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    escaped = data.decode("utf-8", "surrogateescape")  # one lone surrogate per invalid byte
    count = len(_ESCAPED_BYTE.findall(escaped))
    first = _ESCAPED_BYTE.search(escaped)
    assert first is not None
    head = escaped[: first.start()]
    return Decoded(
        data.decode("utf-8", "replace"),
        invalid_bytes=count,
        first_byte=len(head.encode("utf-8", "surrogateescape")),
        first_line=head.count("\n") + 1,
    )


def decode_argument(value: str) -> Decoded:
    """An argument from ``sys.argv`` as text: the bytes Python could not decode (escaped as
    lone surrogates) are restored and decoded like any other source's bytes."""
    if not _ESCAPED_BYTE.search(value) and not _OTHER_SURROGATE.search(value):
        return Decoded(value)
    # A lone surrogate that is not an escaped byte becomes bytes no decoder accepts (it is
    # then replaced and counted like any invalid byte).
    value = _OTHER_SURROGATE.sub("\udcff", value)
    return decode_bytes(value.encode("utf-8", "surrogateescape"))


def undecodable_option(name: str, value: str | None) -> str | None:
    """A one-line error when a non-prompt option (a model name, an address) is not valid
    UTF-8: replacing bytes in a name would only make a different, wrong name."""
    if value is None or decode_argument(value).invalid_bytes == 0:
        return None
    return f"{name} is not valid UTF-8; give it in UTF-8"


def replacement_warning(decoded: list[tuple[str, Decoded]]) -> str | None:
    """One line for every source that had invalid bytes, or ``None``."""
    parts = []
    for source, d in decoded:
        if d.invalid_bytes:
            noun = "byte" if d.invalid_bytes == 1 else "bytes"
            parts.append(
                f"{d.invalid_bytes} {noun} in {source} "
                f"(first at byte {d.first_byte}, line {d.first_line})"
            )
    if not parts:
        return None
    return "warning: invalid UTF-8 replaced with U+FFFD: " + ", ".join(parts)


# -- reading ----------------------------------------------------------------------------------


def stdin_kind(fd: int = 0) -> str:
    """``tty``, ``file``, ``pipe`` (pipes and sockets), ``device``, ``closed`` or ``other``."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return "closed"
    if os.isatty(fd):
        return "tty"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "pipe"
    if stat.S_ISCHR(mode):
        return "device"
    return "other"


def stdin_wait_s(environ: dict[str, str] | None = None) -> float:
    raw = (os.environ if environ is None else environ).get(STDIN_WAIT_VAR, "").strip()
    if not raw:
        return STDIN_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also catches nan
        raise PromptError(f"{STDIN_WAIT_VAR} must be a number of seconds, got {raw!r}")
    return value


def _too_large(source: str) -> PromptError:
    return PromptError(
        f"the prompt from {source} is over {MAX_PROMPT_BYTES // (1024 * 1024)} MiB; save it to "
        "a file in the workspace and ask the agent to read it"
    )


def read_fd(fd: int, source: str) -> bytes:
    """Everything up to end-of-file (blocking), or ``PromptError`` past ``MAX_PROMPT_BYTES``."""
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:  # a parent left the descriptor non-blocking: wait for it
            select.select([fd], [], [])
            continue
        except OSError as exc:
            raise PromptError(
                f"cannot read the prompt from {source}: {(exc.strerror or str(exc)).lower()}"
            ) from exc
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > MAX_PROMPT_BYTES:
            raise _too_large(source)


def _readable_within(fd: int, seconds: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    # POLLHUP (the writer is gone) is always reported, so end-of-file counts as readable.
    return bool(poller.poll(int(min(seconds, 86_400.0) * 1000)))


def read_piped_stdin(
    fd: int = 0, *, wait_s: float | None = None
) -> tuple[bytes | None, str | None]:
    """Implicit stdin, by the rule in the module docstring: ``(bytes or None, note or None)``."""
    kind = stdin_kind(fd)
    if kind == "file":
        return read_fd(fd, "stdin"), None
    if kind != "pipe":
        return None, None
    wait = stdin_wait_s() if wait_s is None else wait_s
    if not _readable_within(fd, wait):
        return None, (
            f"note: stdin is a pipe with nothing on it after {wait:g} s, so it is not read "
            f"(crew run - waits for it; {STDIN_WAIT_VAR} sets the wait; </dev/null skips it)"
        )
    return read_fd(fd, "stdin"), None


def read_prompt_file(path: Path) -> bytes:
    """The bytes of ``--prompt-file``; ``PromptError`` naming the file and the fix."""
    from stagecrew.config import describe_os_error

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise PromptError(f"--prompt-file {path}: no such file") from exc
        raise PromptError(f"--prompt-file {path}: {describe_os_error(path, exc)}") from exc
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise PromptError(f"--prompt-file {path}: is a directory; give a file")
        return read_fd(fd, f"--prompt-file {path}")
    finally:
        os.close(fd)


# -- all together -----------------------------------------------------------------------------


def resolve_prompt(
    argument: str | None,
    prompt_file: Path | None = None,
    *,
    stdin_fd: int = 0,
    wait_s: float | None = None,
    on_terminal_read: Callable[[], None] | None = None,
) -> Prompt:
    """The prompt from every source (see the module docstring), or ``PromptError``."""
    parts: list[tuple[str, Decoded]] = []
    stdin_taken = argument == "-"
    warnings: list[str] = []
    if stdin_taken:
        kind = stdin_kind(stdin_fd)
        if kind == "closed":
            raise PromptError("crew run - reads the prompt from stdin, but stdin is closed")
        if kind == "tty" and on_terminal_read is not None:
            on_terminal_read()
        data = read_fd(stdin_fd, "stdin")
        parts.append(("stdin", decode_bytes(data, strip_bom=True)))
    elif argument is not None:
        parts.append(("the prompt argument", decode_argument(argument)))
    if prompt_file is not None:
        data = read_prompt_file(prompt_file)
        parts.append((f"--prompt-file {prompt_file}", decode_bytes(data, strip_bom=True)))
    if not stdin_taken:
        data, note = read_piped_stdin(stdin_fd, wait_s=wait_s)
        if note:
            warnings.append(note)
        if data is not None:
            parts.append(("piped stdin", decode_bytes(data, strip_bom=True)))
    total = sum(len(d.text) for _, d in parts)
    if total > MAX_PROMPT_BYTES:  # characters, a lower bound on bytes: good enough for a limit
        raise _too_large("its sources together")
    warning = replacement_warning(parts)
    if warning:
        warnings.insert(0, warning)
    text = "\n\n".join(d.text for _, d in parts if d.text.strip())
    if not text:
        raise PromptError(NO_PROMPT)
    return Prompt(text, warnings)


def write_warnings(prompt: Prompt) -> None:
    for line in prompt.warnings:
        sys.stderr.write(f"crew: {line}\n")
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()


__all__ = [
    "MAX_PROMPT_BYTES",
    "NO_PROMPT",
    "STDIN_WAIT_S",
    "STDIN_WAIT_VAR",
    "Decoded",
    "Prompt",
    "PromptError",
    "decode_argument",
    "decode_bytes",
    "read_piped_stdin",
    "read_prompt_file",
    "replacement_warning",
    "resolve_prompt",
    "stdin_kind",
    "undecodable_option",
]
