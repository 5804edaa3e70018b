"""Local input that used to crash or could not be given: prompts that are not valid UTF-8,
prompts longer than a command line (stdin, ``--prompt-file``), unreadable config and state
directories. Each ends as one ``crew:`` line with a sensible exit code, creates nothing it
should not, or reaches the model whole.

The real ``crew`` command runs as a subprocess with its stdin given explicitly (the conftest
helper inherits the test's). Permission errors are real where they can be: the tests run as
root here, which ignores permissions, so those subprocesses run as user 65534 in a scratch
directory under /tmp; the same paths are covered in-process by making ``os`` calls fail.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stagecrew.cli import preflight, prompt_input
from stagecrew.cli.preflight import PreflightError
from stagecrew.cli.prompt_input import (
    NO_PROMPT,
    PromptError,
    decode_argument,
    decode_bytes,
    resolve_prompt,
    stdin_kind,
)
from stagecrew.config import ConfigError, find_blocker, find_project_root, load_config
from stagecrew.orchestrator.eventlog import read_events
from stagecrew.profiles import ProfileError, discover_profiles, load_profile
from stagecrew.testing.scripted_llm import ScriptedLLM, message_text

BAD = b"fix the \xff\xfe parser \xe2\x82 now"  # two lone bytes and a truncated sequence
BAD_TEXT = BAD.decode("utf-8", "replace")
NOBODY = 65534


def run_crew(
    *args: str | bytes,
    cwd: Path,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """The real CLI, with stdin given explicitly (``None``: /dev/null, never the test's)."""
    proc = subprocess.run(
        [*(prefix or []), sys.executable, "-m", "stagecrew.cli.main", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        timeout=timeout,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single ``crew:`` line a refused command prints (and nothing else on stderr)."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("crew: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def configure(workspace: Path, llm: ScriptedLLM, **primary: Any) -> None:
    (workspace / ".stagecrew").mkdir(exist_ok=True)
    model = {"model": "openai/x", "api_base": llm.base_url, **primary}
    (workspace / ".stagecrew" / "config.json").write_text(
        json.dumps({"models": {"primary": model}})
    )


def user_messages(llm: ScriptedLLM, index: int = 0) -> list[str]:
    return [message_text(m) for m in llm.chat_requests[index].messages if m["role"] == "user"]


def no_session_started(workspace: Path, state_home: Path | None = None) -> None:
    assert not (workspace / ".stagecrew" / "state" / "sessions").exists()
    if state_home is not None:
        assert not (state_home / "head.json").exists()


# -- decoding ---------------------------------------------------------------------------------


def test_decode_bytes_counts_and_locates_invalid_bytes() -> None:
    assert decode_bytes(b"plain \xc3\xa9") == prompt_input.Decoded("plain é")
    d = decode_bytes(b"ok\nok\n\xff and \xe2\x82!")
    assert d.text == "ok\nok\n\ufffd and \ufffd!"  # one U+FFFD per maximal invalid sequence
    assert (d.invalid_bytes, d.first_byte, d.first_line) == (3, 6, 3)
    assert decode_bytes(b"\xef\xbb\xbfhi", strip_bom=True).text == "hi"
    assert decode_bytes(b"\xef\xbb\xbfhi").text == "\ufeffhi"


def test_an_argument_is_decoded_from_its_original_bytes() -> None:
    arg = os.fsdecode(BAD)  # what sys.argv holds for these bytes: lone surrogates
    assert "\udcff" in arg
    d = decode_argument(arg)
    assert d.text == BAD_TEXT and "\udcff" not in d.text
    assert (d.invalid_bytes, d.first_byte) == (4, BAD.index(b"\xff"))
    assert decode_argument("déjà vu") == prompt_input.Decoded("déjà vu")
    warning = prompt_input.replacement_warning([("the prompt argument", d)])
    assert warning is not None and "\n" not in warning
    assert "4 bytes in the prompt argument (first at byte 8, line 1)" in warning


def test_options_that_are_names_are_refused_not_repaired() -> None:
    assert prompt_input.undecodable_option("--model", "openai/x") is None
    assert prompt_input.undecodable_option("--model", None) is None
    problem = prompt_input.undecodable_option("--model", os.fsdecode(b"openai/\xff"))
    assert problem == "--model is not valid UTF-8; give it in UTF-8"


# -- sources and the stdin rule ---------------------------------------------------------------


@contextlib.contextmanager
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        for fd in (r, w):
            with contextlib.suppress(OSError):
                os.close(fd)


def write_later(fd: int, data: bytes, delay: float, close: bool = True) -> threading.Thread:
    def go() -> None:
        time.sleep(delay)
        os.write(fd, data)
        if close:
            os.close(fd)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def test_piped_stdin_is_appended_after_a_blank_line() -> None:
    with pipe() as (r, w):
        os.write(w, b"Traceback: \xff boom\n")
        os.close(w)
        got = resolve_prompt("explain", stdin_fd=r)
    assert got.text == "explain\n\nTraceback: \ufffd boom\n"
    assert got.warnings == [
        "warning: invalid UTF-8 replaced with U+FFFD: 1 byte in piped stdin "
        "(first at byte 11, line 1)"
    ]


def test_a_silent_pipe_is_not_waited_for() -> None:
    with pipe() as (r, _w):  # the write end stays open and nobody writes: a harness's stdin
        start = time.monotonic()
        got = resolve_prompt("hi", stdin_fd=r, wait_s=0.3)
        took = time.monotonic() - start
    assert got.text == "hi" and 0.25 < took < 2
    assert len(got.warnings) == 1 and "not read" in got.warnings[0]


def test_an_empty_closed_pipe_adds_nothing_at_once() -> None:
    with pipe() as (r, w):
        os.close(w)
        start = time.monotonic()
        got = resolve_prompt("hi", stdin_fd=r, wait_s=5)
    assert got.text == "hi" and got.warnings == [] and time.monotonic() - start < 1


def test_once_data_arrives_the_pipe_is_read_to_the_end() -> None:
    with pipe() as (r, w):
        os.write(w, b"first ")
        thread = write_later(w, b"and last", 0.6)
        got = resolve_prompt("x", stdin_fd=r, wait_s=0.2)
        thread.join()
    assert got.text == "x\n\nfirst and last"


def test_dash_always_waits_for_stdin() -> None:
    with pipe() as (r, w):
        thread = write_later(w, b"late prompt", 0.8)
        got = resolve_prompt("-", stdin_fd=r, wait_s=0.1)
        thread.join()
    assert got.text == "late prompt" and got.warnings == []


def test_a_non_blocking_stdin_is_still_read_to_the_end() -> None:
    with pipe() as (r, w):
        os.set_blocking(r, False)
        os.write(w, b"part one, ")
        thread = write_later(w, b"part two", 0.5)
        got = resolve_prompt("-", stdin_fd=r)
        thread.join()
    assert got.text == "part one, part two"


def test_regular_file_and_devices_on_stdin(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"\xef\xbb\xbffrom a file")
    with open(path, "rb") as fh:
        assert stdin_kind(fh.fileno()) == "file"
        assert resolve_prompt("x", stdin_fd=fh.fileno()).text == "x\n\nfrom a file"
    with open(os.devnull, "rb") as fh:
        assert stdin_kind(fh.fileno()) == "device"
        assert resolve_prompt("x", stdin_fd=fh.fileno()).text == "x"
        with pytest.raises(PromptError) as exc:
            resolve_prompt("-", stdin_fd=fh.fileno())
        assert str(exc.value) == NO_PROMPT
    with open("/dev/zero", "rb") as fh:  # never read implicitly: it would never end
        assert resolve_prompt("x", stdin_fd=fh.fileno()).text == "x"


def test_a_terminal_is_not_read_implicitly() -> None:
    master, slave = os.openpty()
    try:
        os.write(master, b"typed ahead\n")
        assert stdin_kind(slave) == "tty"
        assert resolve_prompt("x", stdin_fd=slave, wait_s=5).text == "x"
    finally:
        os.close(master)
        os.close(slave)


def test_closed_stdin(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    os.close(fd)  # a descriptor number that is not open
    assert stdin_kind(fd) == "closed"
    assert resolve_prompt("x", stdin_fd=fd).text == "x"
    with pytest.raises(PromptError, match="stdin is closed"):
        resolve_prompt("-", stdin_fd=fd)


def test_prompt_file_sources_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        path = tmp_path / "task.md"
        path.write_bytes(b"Do the \xff thing.\n")
        got = resolve_prompt(None, path, stdin_fd=devnull)
        assert got.text == "Do the \ufffd thing.\n"
        assert f"1 byte in --prompt-file {path} (first at byte 7, line 1)" in got.warnings[0]
        assert resolve_prompt("Context:", path, stdin_fd=devnull).text.startswith(
            "Context:\n\nDo the"
        )
        with pytest.raises(PromptError, match="no such file"):
            resolve_prompt(None, tmp_path / "nope.md", stdin_fd=devnull)
        with pytest.raises(PromptError, match="is a directory"):
            resolve_prompt(None, tmp_path, stdin_fd=devnull)
        empty = tmp_path / "empty.md"
        empty.write_text(" \n")
        with pytest.raises(PromptError) as exc:
            resolve_prompt(None, empty, stdin_fd=devnull)
        assert str(exc.value) == NO_PROMPT

        real_open = os.open

        def denied(p: Any, *a: Any, **k: Any) -> int:
            if Path(p) == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(p))
            return real_open(p, *a, **k)

        monkeypatch.setattr(os, "open", denied)
        monkeypatch.setattr(os, "access", lambda p, m: Path(p) != path)
        with pytest.raises(PromptError) as exc:
            resolve_prompt(None, path, stdin_fd=devnull)
        assert str(exc.value) == (
            f"--prompt-file {path}: permission denied; fix it with chmod u+r {path}"
        )
    finally:
        os.close(devnull)


def test_size_limit_ends_an_endless_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prompt_input, "MAX_PROMPT_BYTES", 100_000)
    with open("/dev/zero", "rb") as fh, pytest.raises(PromptError, match="save it to a file"):
        resolve_prompt("-", stdin_fd=fh.fileno())


def test_stdin_wait_setting() -> None:
    assert prompt_input.stdin_wait_s({}) == prompt_input.STDIN_WAIT_S
    assert prompt_input.stdin_wait_s({"STAGECREW_STDIN_WAIT_S": "0"}) == 0
    assert prompt_input.stdin_wait_s({"STAGECREW_STDIN_WAIT_S": "2.5"}) == 2.5
    for bad in ("soon", "-1", "nan"):
        with pytest.raises(PromptError, match="STAGECREW_STDIN_WAIT_S"):
            prompt_input.stdin_wait_s({"STAGECREW_STDIN_WAIT_S": bad})


# -- the CLI, refusing before anything starts -------------------------------------------------


def test_cli_empty_prompt_is_one_line_and_creates_nothing(
    git_repo: Path, stagecrew_home: Path
) -> None:
    for args, stdin in ((("run",), None), (("run", "  \n"), None), (("run", "-"), b"\n\n")):
        proc = run_crew(*args, cwd=git_repo, stdin=stdin)
        assert proc.returncode == 2, proc.stderr
        assert one_line(proc) == f"crew: {NO_PROMPT}"
    proc = run_crew("run", "--continue", cwd=git_repo)
    assert proc.returncode == 2 and "crew resume continues without" in one_line(proc)
    proc = run_crew("run", "--prompt-file", "missing.md", cwd=git_repo)
    assert proc.returncode == 2
    assert one_line(proc) == "crew: --prompt-file missing.md: no such file"
    proc = run_crew("run", "--model", os.fsdecode(b"openai/\xff"), "hi", cwd=git_repo)
    assert proc.returncode == 2 and "--model is not valid UTF-8" in one_line(proc)
    proc = run_crew("run", "hi", "--cwd", "nope", cwd=git_repo)
    assert proc.returncode == 2
    assert one_line(proc) == "crew: --cwd nope: no such directory"
    # Commands that only read the project's state do not create it either.
    assert run_crew("tasks", cwd=git_repo).returncode == 2
    assert run_crew("logs", "abc", cwd=git_repo).returncode == 2
    assert not (git_repo / ".stagecrew").exists()


def test_cli_does_not_hang_on_a_silent_inherited_pipe(git_repo: Path, stagecrew_home: Path) -> None:
    # No model key: the run is refused after the prompt is read, before anything starts.
    cmd = [sys.executable, "-m", "stagecrew.cli.main", "run", "hi", "--model", "openai/gpt-4.1"]
    env = {**os.environ, "OPENAI_API_KEY": "", "STAGECREW_STDIN_WAIT_S": "0.5"}
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(cmd, cwd=git_repo, env=env, stdin=subprocess.PIPE, stderr=errfile)
        try:
            proc.wait(timeout=30)  # our end of its stdin stays open, and we never write
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdin is not None
            proc.stdin.close()
        errfile.seek(0)
        err = errfile.read().decode()
    assert proc.returncode == 2, err
    lines = err.splitlines()
    assert len(lines) == 2 and "Traceback" not in err, err
    assert lines[0].startswith("crew: note: stdin is a pipe with nothing on it after 0.5 s")
    assert "OPENAI_API_KEY" in lines[1]


# -- the CLI, through a real session ----------------------------------------------------------


@pytest.mark.ray
@pytest.mark.parametrize("source", ["argument", "stdin", "file"])
def test_invalid_utf8_prompt_reaches_the_model_replaced(
    ray_head: object, git_repo: Path, source: str
) -> None:
    with ScriptedLLM([{"text": "done"}, {"text": "resumed"}]) as llm:
        configure(git_repo, llm)
        if source == "argument":
            args: list[str | bytes] = [BAD]  # bytes in argv, exactly as a shell passes them
            stdin, where = None, "the prompt argument"
        elif source == "stdin":
            args, stdin, where = ["-"], BAD, "stdin"
        else:
            (git_repo / "task.txt").write_bytes(BAD)
            args, stdin = ["--prompt-file", "task.txt"], None
            where = "--prompt-file task.txt"
        proc = run_crew("run", *args, "--output-format", "json", cwd=git_repo, stdin=stdin)
        assert proc.returncode == 0, proc.stderr
        assert one_line(proc) == (
            f"crew: warning: invalid UTF-8 replaced with U+FFFD: 4 bytes in {where} "
            "(first at byte 8, line 1)"
        )
        assert user_messages(llm)[0] == BAD_TEXT
        result = json.loads(proc.stdout)
        log = Path(result["log"])
        assert result["stop_reason"] == "done"
        assert [e.body.kind for e in read_events(log)][-1] == "session_finished"

        # The project is still usable: the session is listed and resumes from its log.
        ps = run_crew("ps", "--json", cwd=git_repo)
        assert ps.returncode == 0, ps.stderr
        assert result["session_id"] in ps.stdout
        resumed = run_crew("resume", "--output-format", "json", cwd=git_repo)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["result"] == "resumed"
        assert BAD_TEXT in "\n".join(user_messages(llm, 1))


@pytest.mark.ray
def test_a_megabyte_prompt_on_stdin_reaches_the_model_whole(
    ray_head: object, git_repo: Path
) -> None:
    line = "line {:06d}: the quick brown fox — jumps over the lazy dog; ünïcödé ✓\n"
    prompt = "".join(line.format(i) for i in range(14_000))
    assert len(prompt.encode()) > 1_000_000
    with ScriptedLLM([{"text": "read it"}]) as llm:
        configure(git_repo, llm, context_window=2_000_000)
        cmd = [sys.executable, "-m", "stagecrew.cli.main", "run", "-", "--output-format", "json"]
        proc = subprocess.Popen(
            cmd,
            cwd=git_repo,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            time.sleep(1.5)  # longer than the implicit wait: `-` waits for its writer
            out, err = proc.communicate(prompt.encode(), timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err.decode()
        assert err == b""
        assert user_messages(llm) == [prompt]
    assert json.loads(out)["result"] == "read it"


@pytest.mark.ray
def test_piped_stdin_prompt_file_and_continue(ray_head: object, git_repo: Path) -> None:
    with ScriptedLLM([{"text": "one"}, {"text": "two"}, {"text": "three"}]) as llm:
        configure(git_repo, llm)
        log = "E   AssertionError: 1 != 2\n"
        proc = run_crew("run", "explain this", cwd=git_repo, stdin=log.encode())
        assert proc.returncode == 0, proc.stderr
        assert user_messages(llm, 0) == [f"explain this\n\n{log}"]

        (git_repo / "task.md").write_text("Write the changelog.\n")
        proc = run_crew("run", "--prompt-file", "task.md", cwd=git_repo)
        assert proc.returncode == 0, proc.stderr
        assert user_messages(llm, 1) == ["Write the changelog.\n"]

        # --continue takes its prompt the same ways: here from stdin with `-`.
        proc = run_crew("run", "--continue", "-", cwd=git_repo, stdin=b"And the release notes.")
        assert proc.returncode == 0, proc.stderr
        sent = llm.chat_requests[2].messages
        assert message_text(sent[-1]) == "And the release notes."
        assert any(message_text(m) == "Write the changelog.\n" for m in sent)


# -- permissions as another user --------------------------------------------------------------


@pytest.fixture
def other_user() -> Iterator[tuple[list[str], Path]]:
    """A command prefix running as an unprivileged user, and a scratch directory it can use.

    Root ignores file permissions, so as root the command runs as uid 65534; as anyone else
    it runs as is (permissions already apply)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot run crew as another user")
        prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        probe = subprocess.run(
            [*prefix, sys.executable, "-c", "import stagecrew.cli.main"],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
        )
        if probe.returncode != 0:
            pytest.skip(
                f"uid {NOBODY} cannot run {sys.executable} with stagecrew "
                f"(the venv must be readable by it): {probe.stderr.strip()[-300:]}"
            )
    base = Path(tempfile.mkdtemp(prefix="crew-perm-", dir="/tmp"))
    try:
        base.chmod(0o777)
        yield prefix, base
    finally:
        for dirpath, dirnames, _ in os.walk(base):  # top-down: open each before entering it
            for name in dirnames:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(dirpath, name), 0o700)
        shutil.rmtree(base, ignore_errors=True)


def _hand_over(path: Path) -> None:
    if os.geteuid() == 0:
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.chown(name, NOBODY, NOBODY)


def _user_workspace(base: Path) -> tuple[Path, dict[str, str]]:
    """A project owned by the other user with a valid config, and that user's environment."""
    ws = base / "ws"
    (ws / ".stagecrew" / "agents").mkdir(parents=True)
    config = {"models": {"primary": {"model": "openai/x", "api_base": "http://127.0.0.1:9/v1"}}}
    (ws / ".stagecrew" / "config.json").write_text(json.dumps(config))
    (base / "home" / "config").mkdir(parents=True)
    (base / "home" / "config" / "config.json").write_text("{}")
    _hand_over(base)
    env = {
        "HOME": str(base / "home"),
        "STAGECREW_HOME": str(base / "home" / "state"),
        "STAGECREW_CONFIG_DIR": str(base / "home" / "config"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return ws, env


PERMISSION_CASES = {
    # name: (path to chmod, relative to the scratch dir; mode; what the line must name)
    "project dir 000": (
        "ws/.stagecrew",
        0o000,
        "permission denied on {b}/ws/.stagecrew; fix it with chmod u+rwx {b}/ws/.stagecrew",
    ),
    "project config 000": (
        "ws/.stagecrew/config.json",
        0o000,
        "{b}/ws/.stagecrew/config.json: cannot read config file: permission denied; "
        "fix it with chmod u+r {b}/ws/.stagecrew/config.json",
    ),
    "user config dir 000": (
        "home/config",
        0o000,
        "{b}/home/config/config.json: cannot read config file: permission denied on "
        "{b}/home/config; fix it with chmod u+rwx {b}/home/config",
    ),
    "agents dir 000": (
        "ws/.stagecrew/agents",
        0o000,
        "{b}/ws/.stagecrew/agents: cannot list agent profiles: permission denied; "
        "fix it with chmod u+rx {b}/ws/.stagecrew/agents",
    ),
    "state dir read-only": (
        "ws/.stagecrew/state",
        0o500,
        "cannot use {b}/ws/.stagecrew/state (where session logs go): permission denied; "
        "fix it with chmod u+rwx {b}/ws/.stagecrew/state",
    ),
    "state home read-only": (
        "home/state",
        0o500,
        "cannot use {b}/home/state (stagecrew's state directory; STAGECREW_HOME chooses "
        "another): permission denied; fix it with chmod u+rwx {b}/home/state",
    ),
    "state home parent 000": (
        "home",
        0o000,
        "permission denied on {b}/home; fix it with chmod u+x {b}/home",
    ),
}


@pytest.mark.parametrize("case", sorted(PERMISSION_CASES))
def test_unusable_directories_as_another_user(
    other_user: tuple[list[str], Path], case: str
) -> None:
    prefix, base = other_user
    ws, env = _user_workspace(base)
    (ws / ".stagecrew" / "state").mkdir()
    (base / "home" / "state").mkdir()
    _hand_over(base)
    rel, mode, expected = PERMISSION_CASES[case]
    (base / rel).chmod(mode)
    if case == "state home parent 000":  # the config dir must stay reachable for this one
        env["STAGECREW_CONFIG_DIR"] = str(base / "cfg-elsewhere")
    proc = run_crew("run", "hi", cwd=ws, env=env, prefix=prefix, timeout=60)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc)
    assert expected.format(b=base) in line, line
    (base / rel).chmod(0o700)
    no_session_started(ws, base / "home" / "state")


def test_read_commands_in_an_unreadable_project(other_user: tuple[list[str], Path]) -> None:
    prefix, base = other_user
    ws, env = _user_workspace(base)
    (ws / ".stagecrew").chmod(0o000)
    dot = ws / ".stagecrew"
    for args in (("logs", "abc"), ("attach", "abc"), ("tasks",), ("resume",)):
        proc = run_crew(*args, cwd=ws, env=env, prefix=prefix, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert f"permission denied on {dot}; fix it with chmod u+rwx {dot}" in one_line(proc)
    dot.chmod(0o700)
    no_session_started(ws, base / "home" / "state")


def test_state_home_owned_by_someone_else(other_user: tuple[list[str], Path]) -> None:
    prefix, base = other_user
    if not prefix:
        pytest.skip("needs a directory owned by another user")
    ws, env = _user_workspace(base)
    theirs = base / "theirs"
    theirs.mkdir(mode=0o755)  # root's, readable but not writable by the other user
    env["STAGECREW_HOME"] = str(theirs / "state")
    proc = run_crew("run", "hi", cwd=ws, env=env, prefix=prefix, timeout=60)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc)
    assert f"cannot use {theirs}/state (stagecrew's state directory" in line
    assert f"permission denied on {theirs}, which belongs to root" in line
    no_session_started(ws, theirs / "state")
    # Commands that only talk to the head say the same instead of a traceback.
    for args in (("ps",), ("resume",), ("down",)):
        proc = run_crew(*args, cwd=ws, env=env, prefix=prefix, timeout=60)
        assert proc.returncode == 2 and f"cannot use {theirs}/state" in one_line(proc)


# -- the same errors in-process (any user) ----------------------------------------------------


@pytest.fixture
def denied(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``denied(blocked)``: behave as if this user may not enter or use the path ``blocked``
    (as ``chmod 000`` does for anyone but root): ``os`` calls below it fail with EACCES."""

    def install(blocked: Path) -> None:
        blocked = Path(os.path.abspath(blocked))
        real_stat, real_scandir, real_access = os.stat, os.scandir, os.access

        def inside(p: Any) -> bool:
            p = Path(os.path.abspath(os.fsdecode(p)))
            return blocked in p.parents

        def fake_stat(p: Any, *a: Any, **k: Any) -> Any:
            if isinstance(p, int) or not inside(p):
                return real_stat(p, *a, **k)
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(p))

        def fake_scandir(p: Any = ".") -> Any:
            if not isinstance(p, int) and (inside(p) or Path(os.path.abspath(p)) == blocked):
                raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(p))
            return real_scandir(p)

        def fake_access(p: Any, mode: int, *a: Any, **k: Any) -> bool:
            p = Path(os.path.abspath(os.fsdecode(p)))
            if p == blocked or blocked in p.parents:
                return False
            return real_access(p, mode, *a, **k)

        monkeypatch.setattr(os, "stat", fake_stat)
        monkeypatch.setattr(os, "scandir", fake_scandir)
        monkeypatch.setattr(os, "access", fake_access)

    return install


def test_config_in_an_unreadable_project_dir_is_a_config_error(
    tmp_path: Path, denied: Any, stagecrew_home: Path
) -> None:
    (tmp_path / ".stagecrew").mkdir()
    (tmp_path / ".stagecrew" / "config.json").write_text("{}")
    denied(tmp_path / ".stagecrew")
    assert find_project_root(tmp_path) == tmp_path
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path)
    dot = tmp_path / ".stagecrew"
    assert str(exc.value) == (
        f"{dot}/config.json: cannot read config file: permission denied on {dot}; "
        f"fix it with chmod u+rwx {dot}"
    )


def test_config_file_problems_are_config_errors(tmp_path: Path, stagecrew_home: Path) -> None:
    path = tmp_path / ".stagecrew" / "config.json"
    path.parent.mkdir()
    path.write_bytes(b'{"agent": "b\xffuild"}')
    with pytest.raises(ConfigError, match=r"config.json: not valid UTF-8 \(byte 12\)"):
        load_config(tmp_path)
    path.unlink()
    path.mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(tmp_path)
    path.rmdir()
    (tmp_path / ".stagecrew").rmdir()
    (tmp_path / ".stagecrew").write_text("a file where the directory should be")
    load_config(tmp_path)  # no project config there: defaults, as before


def test_unreadable_profiles_are_profile_errors(tmp_path: Path, denied: Any) -> None:
    agents = tmp_path / ".stagecrew" / "agents"
    agents.mkdir(parents=True)
    (agents / "mine.md").write_text("---\ndescription: mine\n---\nDo it.\n")
    assert "mine" in discover_profiles(tmp_path)
    (agents / "bad.md").write_bytes(b"---\ndescription: x\n---\n\xff\n")
    with pytest.raises(
        ProfileError, match=r"bad.md: cannot read profile: not valid UTF-8 \(byte 23\)"
    ):
        load_profile(agents / "bad.md")
    (agents / "bad.md").unlink()
    denied(agents)
    with pytest.raises(ProfileError) as exc:
        discover_profiles(tmp_path)
    assert str(exc.value) == (
        f"{agents}: cannot list agent profiles: permission denied; fix it with chmod u+rx {agents}"
    )


def test_find_blocker_names_the_directory_in_the_way(tmp_path: Path, denied: Any) -> None:
    target = tmp_path / "a" / "b" / "c.json"
    target.parent.mkdir(parents=True)
    target.write_text("{}")
    assert find_blocker(target, "r") is None
    denied(tmp_path / "a")
    assert find_blocker(target, "r") == (tmp_path / "a", "x")
    assert find_blocker(target, "r", own=tmp_path / "a") == (tmp_path / "a", "rwx")


def test_preflight_creates_missing_state_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stagecrew.orchestrator import runtime

    home = tmp_path / "home" / "state"
    monkeypatch.setenv("STAGECREW_HOME", str(home))
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".git").mkdir()
    preflight.check_project_state(ws, write=False)  # a reader creates nothing
    assert not (ws / ".stagecrew").exists()
    assert preflight.check_for_session(ws) == ws
    assert (ws / ".stagecrew" / "state" / ".gitignore").is_file()  # ignored from inside
    assert [p.name for p in (ws / ".stagecrew" / "state").iterdir()] == [".gitignore"]
    assert home.is_dir() and list(home.iterdir()) == []  # the probe is gone
    assert preflight.state_home_path() == runtime.state_home()


def test_preflight_errors_name_the_directory_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, denied: Any
) -> None:
    state = tmp_path / "state"
    state.write_text("a file")
    with pytest.raises(PreflightError, match="it is not a directory; move it away"):
        preflight.check_dir(state, "logs")
    state.unlink()
    state.mkdir()

    def read_only(**kw: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system", kw.get("dir"))

    monkeypatch.setattr(preflight.tempfile, "mkstemp", read_only)
    with pytest.raises(PreflightError) as exc:
        preflight.check_dir(state, "logs")
    assert str(exc.value) == (
        f"cannot use {state} (logs): read-only file system; use a writable location"
    )
    monkeypatch.undo()
    (tmp_path / "locked").mkdir()
    denied(tmp_path / "locked")
    with pytest.raises(PreflightError) as exc:
        preflight.check_dir(tmp_path / "locked" / "state", "logs", own=tmp_path / "locked")
    locked = tmp_path / "locked"
    assert str(exc.value) == (
        f"cannot use {locked}/state (logs): permission denied on {locked}; "
        f"fix it with chmod u+rwx {locked}"
    )


def test_cli_checks_state_dirs_before_starting_anything(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process: the run is refused (exit 2, one line) and the runner is never called."""
    from stagecrew.cli import main, runner

    def must_not_run(*a: Any, **k: Any) -> int:
        raise AssertionError("run_session was called")

    monkeypatch.setattr(runner, "run_session", must_not_run)
    monkeypatch.setenv("STAGECREW_STDIN_WAIT_S", "0")
    monkeypatch.setenv("STAGECREW_HOME", str(git_repo.parent / "home"))
    real_mkstemp = tempfile.mkstemp

    def no_write(**kw: Any) -> Any:
        if str(kw.get("dir", "")).endswith(".stagecrew/state"):
            raise PermissionError(errno.EACCES, "Permission denied", kw["dir"])
        return real_mkstemp(**kw)

    monkeypatch.setattr(preflight.tempfile, "mkstemp", no_write)
    state = git_repo / ".stagecrew" / "state"
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: Path(p) != state and os.path.lexists(p))
    code = main.app(["run", "hi", "--cwd", str(git_repo)], standalone_mode=False)
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        f"crew: cannot use {state} (where session logs go): permission denied; "
        f"fix it with chmod u+rwx {state}\n"
    )
    assert not (state / "sessions").exists()
