"""Shared fixtures: a real local Ray head for the whole run, the scripted model server, git repos.

The head is started once per test run (``ray start`` costs about 6 s here) in a private state
dir, and stopped at the end — after which the run asserts that no process it started is left.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Every Ray node and driver in the tests is on loopback: take 127.0.0.1 as the node address
# instead of letting Ray "connect" to 8.8.8.8 to find a route address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# The test head is started with token auth off (see runtime.AUTH_MODE_VAR); tests that attach
# to it with ray.init must say the same, whatever ~/.ray holds.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from stagecrew.testing.fixtures import scripted_llm  # noqa: F401  (re-exported fixture)

ROOT = Path(__file__).resolve().parent.parent
# The hook and MCP test folders keep their helpers beside them; their fixtures load here as
# plugins (a second conftest.py would shadow this one's helpers, imported as `conftest`).
sys.path[:0] = [str(ROOT / "tests" / "hooks"), str(ROOT / "tests" / "mcp")]
pytest_plugins = ["hook_fixtures", "mcp_fixtures"]


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """After the whole run, no process started by the tests may be left (zombies aside).

    Session fixtures set up later (the Ray head) are torn down before this one, so whatever
    is still a descendant of pytest at the end was leaked by a test."""
    import time as _time

    import psutil

    yield
    me = psutil.Process()
    deadline = _time.monotonic() + 15

    def alive() -> list[tuple[int, str]]:
        found = []
        for proc in me.children(recursive=True):
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append((proc.pid, " ".join(proc.cmdline())[:120]))
            except psutil.Error:
                continue
        return found

    while True:
        left = alive()
        if not left or _time.monotonic() > deadline:
            break
        _time.sleep(0.2)
    described = left
    assert not left, f"processes left behind by the test run: {described}"


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A real git repository with one commit, as a workspace."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# test repo\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    return repo


@pytest.fixture(scope="session")
def stagecrew_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private state dir and config dir, so tests never touch a person's real head."""
    home = tmp_path_factory.mktemp("stagecrew-home")
    old = {k: os.environ.get(k) for k in ("STAGECREW_HOME", "STAGECREW_CONFIG_DIR")}
    os.environ["STAGECREW_HOME"] = str(home / "state")
    os.environ["STAGECREW_CONFIG_DIR"] = str(home / "config")
    yield home
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def ray_head(stagecrew_home: Path) -> Iterator[object]:
    """A real local Ray head with the supervisor and gateway, shared by the whole run."""
    from stagecrew.orchestrator import runtime

    client = runtime.connect()
    record = runtime.read_record()
    assert record is not None
    yield client
    runtime.down()
    leftover = runtime.head_processes(record)
    assert not leftover, f"processes left behind by the test run: {[p.pid for p in leftover]}"


def crew(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the real ``crew`` command line as a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "stagecrew.cli.main", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_session(
    workspace: Path,
    prompt: str,
    flags: dict[str, object],
    *,
    config_json: dict[str, object] | None = None,
    interactive: bool = False,
) -> tuple[object, str]:
    """Start a session through the real control channel, as the CLI does; returns (client, id)."""
    import json as _json

    from stagecrew.actors.builder import prepare_session
    from stagecrew.config import load_config
    from stagecrew.orchestrator import runtime

    if config_json is not None:
        (workspace / ".stagecrew").mkdir(exist_ok=True)
        (workspace / ".stagecrew" / "config.json").write_text(_json.dumps(config_json))
    config = load_config(workspace, flags=flags)
    prepared = prepare_session(config, prompt, workspace)
    client = runtime.connect()
    reply = client.call(
        "start_session",
        spec=prepared.spec.model_dump(mode="json"),
        credentials=prepared.credentials,
        config=config.public_dict(),
        limits=config.limits.session_limits(),
        interactive=interactive,
    )
    return client, reply["session"]


def follow(client: object, sid: str, timeout: float = 120) -> list[object]:
    """Every envelope of the session until it finishes (raises on timeout)."""
    import threading

    from stagecrew.messages import Envelope

    out: list[object] = []
    done = threading.Event()

    def run() -> None:
        for msg in client.stream("follow", session=sid, after_seq=0):  # type: ignore[attr-defined]
            if msg.get("end"):
                break
            out.append(Envelope.model_validate(msg))
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert done.wait(timeout), f"session {sid} did not finish within {timeout} s"
    return out


def wait_for(predicate: object, timeout: float = 30, every: float = 0.05) -> object:
    import time as _time

    deadline = _time.monotonic() + timeout
    while _time.monotonic() < deadline:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        _time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def marked_pids(marker: str) -> list[int]:
    """Host pids of the processes named ``marker`` (``exec -a``). Tool commands run in the
    build sandbox, in a PID namespace of their own and unable to write outside the
    workspace, so they cannot report their pids through a file next to it."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if (
                proc.info["status"] != psutil.STATUS_ZOMBIE
                and marker in (proc.info["cmdline"] or [""])[0]
            ):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found
