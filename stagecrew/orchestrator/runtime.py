"""Finding, starting and stopping the Ray head that stagecrew's actors live on.

The hot path never pays for Ray: a command reads the head record (``head.json`` in the state
dir), pings the supervisor's control port, and is connected in a few milliseconds. Only the
first command on a machine starts a head (``ray start``, about 6 s here) and bootstraps the
supervisor and model gateway in a child process; the head then stays up for every later
command until ``crew down``. A record whose head is gone — crashed, killed, or living in
another network namespace where its ports are unreachable — fails the ping at once (loopback
refuses immediately) and is replaced, never waited on.

A local head binds to 127.0.0.1, with usage statistics off and proxy variables pointing at a
closed loopback port so Ray's own start-up requests (cloud metadata, usage reports) go nowhere;
every actor restores the person's real environment at start (see ``envutil``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stagecrew import __version__, layout
from stagecrew.envutil import blackhole_env
from stagecrew.orchestrator.control import ControlError
from stagecrew.orchestrator.control_api import SupervisorClient
from stagecrew.orchestrator.names import HEAD_ID_VAR

if TYPE_CHECKING:
    from stagecrew.config import RuntimeConfig

# Ray's switch that makes a node take 127.0.0.1 as its own address instead of finding its
# route address by "connecting" to 8.8.8.8: right for a local head, wrong for a real cluster.
LOOPBACK_ONLY_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray turns token authentication on for `ray start` whenever ~/.ray/auth_token exists (any
# earlier `ray.init()` may have written one), but a driver only sends the token when this says
# "token": the bootstrap could then never attach. A local head says "disabled" to both sides
# unless the person chose a mode, as it was before the file appeared; it listens on 127.0.0.1.
AUTH_MODE_VAR = "RAY_AUTH_MODE"


class RuntimeStartError(Exception):
    """The head or the supervisor could not be started; the message says what to look at."""


@dataclass
class HeadRecord:
    gcs_address: str
    temp_dir: str
    pgid: int
    control_host: str
    control_port: int
    token: str
    started_at: float
    version: str
    local: bool = True
    namespace: str = "stagecrew"

    def client(self, timeout: float = 10.0) -> SupervisorClient:
        return SupervisorClient(self.control_host, self.control_port, self.token, timeout=timeout)


NAMESPACE_VAR = "STAGECREW_NAMESPACE"


def resolve_namespace(configured: str | None, *, local: bool) -> str:
    """The Ray namespace the supervisor lives in: the configured one (``runtime.namespace``,
    ``STAGECREW_NAMESPACE``), else ``stagecrew`` on a private local head and
    ``stagecrew-<user>`` on a cluster, so two people on one cluster never share a supervisor
    (nor its gateways, which hold their keys)."""
    chosen = configured or os.environ.get(NAMESPACE_VAR)
    if chosen:
        return chosen
    if local:
        return "stagecrew"
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"stagecrew-{user}"


def state_home() -> Path:
    """Per-user runtime state (head record, logs of the head's start), created if missing."""
    path = layout.runtime_home()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def record_path() -> Path:
    return state_home() / "head.json"


def read_record() -> HeadRecord | None:
    try:
        data = json.loads(record_path().read_text())
        return HeadRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_record(record: HeadRecord) -> None:
    path = record_path()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(record), fh)
    os.replace(tmp, path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(record: HeadRecord) -> bool:
    try:
        record.client().ping(timeout=0.5)
        return True
    except (ControlError, OSError, ValueError):
        return False


def _gcs_reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.3):
            return True
    except (OSError, ValueError):
        return False


def head_alive(record: HeadRecord) -> bool:
    """Whether the record's supervisor answers a ping now. For readers that must never start
    or wait for anything (``crew doctor``, ``crew sessions``); a dead head fails at once."""
    return _alive(record)


def head_ray_up(record: HeadRecord) -> bool:
    """Whether the record's Ray head (its GCS port) accepts connections now."""
    return _gcs_reachable(record.gcs_address)


@contextlib.contextmanager
def _start_lock() -> Any:
    """Two commands starting at once must not start two heads."""
    with open(state_home() / "head.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# How long a command waits for a supervisor that Ray is restarting (it comes back on the
# same endpoint in about 2 s) before it bootstraps one itself.
SUPERVISOR_RESTART_WAIT_S = 8.0
FIRST_USE = "starting a local Ray head (first use; about 10 s)…"
RESTARTING = "the stagecrew supervisor is not answering; waiting for its restart…"


def _wait_alive(record: HeadRecord, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _alive(record):
            return True
        time.sleep(0.1)
    return False


def connect(
    address: str | None = None,
    *,
    start: bool = True,
    on_start: Any = None,
    pool_size: int = 2,
    wait_restart: bool = True,
    namespace: str | None = None,
) -> SupervisorClient:
    """A client for the supervisor: attach to what runs (or to the supervisor Ray is
    restarting), start a local head if nothing runs. ``on_start(line)`` is told, in one line,
    when the command has to wait for a start."""
    if address:
        return _connect_cluster(address, pool_size, resolve_namespace(namespace, local=False))
    record = read_record()
    if record and _alive(record):
        return record.client()
    gcs_up = bool(record and record.local and _gcs_reachable(record.gcs_address))
    if not start and not gcs_up:
        raise RuntimeStartError(
            "no stagecrew head is running (any command that needs one starts it)"
        )
    if record and gcs_up:
        if on_start:
            on_start(RESTARTING)
        if wait_restart and _wait_alive(record, SUPERVISOR_RESTART_WAIT_S):
            return record.client()
    with _start_lock():
        record = read_record()  # another command may have started it meanwhile
        if record and _alive(record):
            return record.client()
        if record and record.local and _gcs_reachable(record.gcs_address):
            # Ray is up, only the supervisor was lost: the same namespace finds its logs.
            record = _bootstrap(record, pool_size)
        else:
            if not start:
                raise RuntimeStartError(
                    "the stagecrew head stopped (any command that needs one starts it)"
                )
            if on_start:
                on_start(FIRST_USE)
            if record:
                stop_head(record)
                _end_sessions_of(record, "vanished")
            head = start_head()
            head.namespace = resolve_namespace(namespace, local=True)
            record = _bootstrap(head, pool_size)
        write_record(record)
        return record.client()


def connect_configured(
    settings: RuntimeConfig, *, start: bool = True, on_start: Any = None
) -> SupervisorClient:
    """``connect`` where the ``runtime`` configuration says: address, namespace, pool size
    (every command that has a configuration connects through here, so none forgets one)."""
    return connect(
        settings.address,
        pool_size=settings.pool_size,
        namespace=settings.namespace,
        on_start=on_start,
        start=start,
    )


def _end_sessions_of(record: HeadRecord, why: str) -> list[str]:
    """Stop records for the sessions a head that is gone left without one."""
    from stagecrew.orchestrator import recovery

    ending = recovery.HEAD_VANISHED if why == "vanished" else recovery.HEAD_STOPPED
    try:
        ended = recovery.recover(state_home(), record.gcs_address, ending)
    except OSError:
        return []
    return [cut.session for cut, _ in ended]


def _connect_cluster(address: str, pool_size: int, namespace: str) -> SupervisorClient:
    """On a cluster the supervisor is found (or created) through Ray itself, in the person's
    namespace."""
    out = _run_bootstrap(address, state_home() / "bootstrap.log", pool_size, namespace)
    return SupervisorClient(out["host"], out["port"], out["token"])


def start_head() -> HeadRecord:
    temp_dir = tempfile.mkdtemp(prefix="sc-ray-", dir="/tmp")  # short: Ray's socket paths
    gcs_port = _free_port()
    env = blackhole_env(os.environ)
    env[HEAD_ID_VAR] = temp_dir
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env[LOOPBACK_ONLY_VAR] = "0"
    env.setdefault(AUTH_MODE_VAR, "disabled")
    env["RAY_DEDUP_LOGS"] = "0"
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs_port}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        "--include-dashboard=false",
        f"--dashboard-port={_free_port()}",
        f"--num-cpus={os.cpu_count() or 1}",
    ]
    log_path = Path(temp_dir) / "start.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            code = -1
    record = HeadRecord(
        gcs_address=f"127.0.0.1:{gcs_port}",
        temp_dir=temp_dir,
        pgid=proc.pid,
        control_host="",
        control_port=0,
        token="",
        started_at=time.time(),
        version=__version__,
    )
    if code != 0:
        tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
        stop_head(record)  # removes the temp dir, so the log is read first
        raise RuntimeStartError(
            f"could not start a local Ray head (ray start exited {code}):\n{tail}"
        )
    return record


def _run_bootstrap(
    address: str, log_path: Path, pool_size: int = 2, namespace: str = "stagecrew"
) -> dict[str, Any]:
    env = blackhole_env(os.environ)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    if address.startswith(("127.0.0.1:", "localhost:")):
        env[LOOPBACK_ONLY_VAR] = "0"
        env.setdefault(AUTH_MODE_VAR, "disabled")
    cmd = [
        sys.executable,
        "-m",
        "stagecrew.orchestrator.bootstrap",
        "--address",
        address,
        "--state-home",
        str(state_home()),
        "--pool-size",
        str(pool_size),
        "--namespace",
        namespace,
    ]
    with open(log_path, "w") as log:
        proc = subprocess.run(
            cmd, env=env, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, timeout=180
        )
    lines = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = log_path.read_text(errors="replace")[-1500:]
        raise RuntimeStartError(f"could not start the stagecrew supervisor on {address}:\n{tail}")
    return json.loads(lines[-1])


def _bootstrap(record: HeadRecord, pool_size: int = 2) -> HeadRecord:
    try:
        log = Path(record.temp_dir) / "bootstrap.log"
        out = _run_bootstrap(record.gcs_address, log, pool_size, record.namespace)
    except (RuntimeStartError, subprocess.TimeoutExpired):
        stop_head(record)
        raise
    record.control_host = out["host"]
    record.control_port = out["port"]
    record.token = out["token"]
    return record


def head_processes(record: HeadRecord) -> list[Any]:
    """Every process of this head: its process group, plus anything its actors started
    (found by the head id every actor process and tool subprocess inherits)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue  # a zombie is already dead; its parent (or init) reaps it
            if os.getpgid(proc.pid) == record.pgid:
                found.append(proc)
                continue
            if proc.environ().get(HEAD_ID_VAR) == record.temp_dir:
                found.append(proc)
        except (psutil.Error, ProcessLookupError, PermissionError, OSError):
            continue
    return found


def stop_head(record: HeadRecord, grace_s: float = 3.0) -> int:
    """Stop exactly this head's processes (never other Ray instances), then its files.

    Sweeps until nothing is found: a worker the raylet was starting during the first sweep
    (a pool refill, say) would otherwise survive it."""
    import psutil

    stopped: set[int] = set()
    for attempt in range(5):
        procs = head_processes(record)
        if not procs:
            break
        stopped.update(p.pid for p in procs)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM if attempt == 0 else signal.SIGKILL)
        _, alive = psutil.wait_procs(procs, timeout=grace_s if attempt == 0 else 1.0)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=2.0)
    shutil.rmtree(record.temp_dir, ignore_errors=True)
    return len(stopped)


def down() -> str:
    """Stop the local head if one is recorded; says what it did."""
    record = read_record()
    if record is None:
        return "no stagecrew head is recorded"
    if _alive(record):
        with contextlib.suppress(ControlError, OSError):
            record.client(timeout=10).shutdown(timeout=10)
    count = stop_head(record)
    # Whatever the supervisor could not end (it was dead, or too slow) gets its stop record.
    _end_sessions_of(record, "stopped")
    with contextlib.suppress(OSError):
        record_path().unlink()
    return f"stopped the stagecrew head ({count} processes)"
