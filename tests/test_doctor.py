"""``crew doctor`` through the real command line: what it finds wrong, the fix it names for
each failure, its ``--json`` shape and its exit codes. The model endpoints are the scripted
server (which answers ``/models``) and closed ports on 127.0.0.1; a machine without bubblewrap,
ripgrep or node is a ``PATH`` that only holds git.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import crew

from stagecrew.doctor.environment import satisfies
from stagecrew.llm.providers import PROVIDER_KEY_ENV
from stagecrew.testing.scripted_llm import ScriptedLLM

KEY_VAR = "DOCTOR_TEST_KEY"
SECRET = "sk-doctor-SECRET-0123456789"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def only_git_path(tmp_path: Path) -> str:
    """A PATH with git and nothing else: no bwrap, no rg, no node or npx."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = "/usr/bin/git" if os.path.exists("/usr/bin/git") else None
    assert git is not None, "these tests need git"
    (bin_dir / "git").symlink_to(git)
    return str(bin_dir)


def primary(llm: ScriptedLLM) -> dict[str, str]:
    return {"model": "openai/agent", "api_base": llm.base_url, "api_key_env": KEY_VAR}


def write_config(repo: Path, models: dict[str, Any]) -> None:
    (repo / ".stagecrew").mkdir(exist_ok=True)
    (repo / ".stagecrew" / "config.json").write_text(json.dumps({"models": models}))


def doctor(repo: Path, env: dict[str, str], *args: str) -> Any:
    """``crew doctor`` without any provider key of the person running the tests: with no key,
    a hosted provider is not tried, so nothing leaves 127.0.0.1."""
    hosted_keys = set(PROVIDER_KEY_ENV.values()) | {KEY_VAR}
    full = {k: v for k, v in os.environ.items() if k not in hosted_keys}
    full.update(env)
    return crew("doctor", *args, cwd=repo, env=full)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in report["checks"]}


def test_doctor_reports_missing_key_unreachable_provider_and_no_sandbox(
    git_repo: Path, tmp_path: Path
) -> None:
    dead_sub, dead_judge = closed_port(), closed_port()
    with ScriptedLLM([]) as llm:
        write_config(
            git_repo,
            {
                "primary": {
                    "model": "openai/agent",
                    "api_base": llm.base_url,
                    "api_key_env": KEY_VAR,
                },
                "subagent": {"model": "openai/sub", "api_base": f"http://127.0.0.1:{dead_sub}/v1"},
                "judge": {"model": "openai/judge", "api_base": f"http://127.0.0.1:{dead_judge}/v1"},
            },
        )
        env = {"PATH": only_git_path(tmp_path), "STAGECREW_HOME": str(tmp_path / "home")}
        started = time.monotonic()
        proc = doctor(git_repo, env, "--json")
        elapsed = time.monotonic() - started
        probes = [r for r in llm.requests if r.path == "/v1/models"]
        text = doctor(git_repo, env)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["workspace"] == str(git_repo)
    assert all(set(c) == {"name", "status", "detail", "fix"} for c in report["checks"])
    checks = by_name(report)

    key = checks[f"key {KEY_VAR}"]
    assert key["status"] == "fail" and "not set" in key["detail"] and "primary" in key["detail"]
    assert f"export {KEY_VAR}=" in key["fix"]

    # The scripted server answered /models; the subagent's port is closed (a role a session
    # needs: failure), so is the judge's (only --goal needs it: warning).
    assert checks[f"provider {llm.base_url}"]["status"] == "ok"
    assert len(probes) == 1 and "authorization" not in probes[0].headers  # no key, none sent
    sub = checks[f"provider http://127.0.0.1:{dead_sub}/v1"]
    assert sub["status"] == "fail" and "unreachable for subagent" in sub["detail"]
    assert f"start the server at http://127.0.0.1:{dead_sub}/v1" in sub["fix"]
    judge = checks[f"provider http://127.0.0.1:{dead_judge}/v1"]
    assert judge["status"] == "warn" and "models.judge.api_base" in judge["fix"]

    # A PATH without bubblewrap, ripgrep and node: warnings, each with its fix.
    for name, fix in (
        ("bubblewrap", "install bubblewrap"),
        ("ripgrep", "install ripgrep"),
        ("node/npx", "install Node.js"),
    ):
        assert checks[name]["status"] == "warn" and fix in checks[name]["fix"], checks[name]
    assert "plan-mode bash falls back" in checks["bubblewrap"]["detail"]
    assert checks["git"]["status"] == "ok"
    assert checks["config"]["status"] == "ok" and checks["session setup"]["status"] == "ok"
    assert checks["ray head"]["status"] == "ok" and "none running" in checks["ray head"]["detail"]
    assert checks["litellm"]["status"] == "ok" and "1.83" in checks["litellm"]["detail"]
    assert report["failures"] == 2 and report["warnings"] == 4
    assert elapsed < 20

    # The same as text: one line per check, a fix after each failure and warning.
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    key_line = next(line for line in lines if line.startswith(f"✗ key {KEY_VAR}"))
    assert "→ fix: export" in key_line
    assert any(line.startswith("! bubblewrap") and "→ fix:" in line for line in lines)
    assert lines[-1].startswith("2 failure(s), 4 warning(s)")


def test_doctor_passes_with_warnings_and_never_prints_the_key(
    git_repo: Path, tmp_path: Path
) -> None:
    with ScriptedLLM([]) as llm:
        write_config(
            git_repo,
            {
                "primary": {
                    "model": "openai/agent",
                    "api_base": llm.base_url,
                    "api_key_env": KEY_VAR,
                },
                "checkpoint": {
                    "model": "openai/cp",
                    "api_base": f"http://127.0.0.1:{closed_port()}",
                },
            },
        )
        env = {
            "PATH": only_git_path(tmp_path),
            "STAGECREW_HOME": str(tmp_path / "home"),
            KEY_VAR: SECRET,
        }
        proc = doctor(git_repo, env, "--json")
        text = doctor(git_repo, env)
        probes = [r for r in llm.requests if r.path == "/v1/models"]
    assert proc.returncode == 0, proc.stdout
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["failures"] == 0 and report["warnings"] == 4
    assert by_name(report)[f"key {KEY_VAR}"]["status"] == "ok"
    # The key went to its own provider (as a session would send it) and nowhere else.
    assert probes and probes[0].headers.get("authorization") == f"Bearer {SECRET}"
    for out in (proc.stdout, proc.stderr, text.stdout, text.stderr):
        assert SECRET not in out
    assert text.returncode == 0 and text.stdout.splitlines()[-1].startswith("ready (4 warning")


def test_doctor_fails_on_invalid_config_and_missing_git(git_repo: Path, tmp_path: Path) -> None:
    (git_repo / ".stagecrew").mkdir()
    (git_repo / ".stagecrew" / "config.json").write_text('{"limits": {"max_steps": -1}}')
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = doctor(git_repo, {"PATH": str(empty), "STAGECREW_HOME": str(tmp_path / "h")}, "--json")
    assert proc.returncode == 1
    checks = by_name(json.loads(proc.stdout))
    config = checks["config"]
    assert config["status"] == "fail" and "max_steps" in config["detail"]
    assert "\n" not in config["detail"] and config["fix"]
    assert checks["git"]["status"] == "fail" and "install git" in checks["git"]["fix"]
    assert "key OPENAI_API_KEY" not in checks  # nothing to check keys against


def test_doctor_names_a_stale_head_record(git_repo: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    record = {
        "gcs_address": f"127.0.0.1:{closed_port()}",
        "temp_dir": str(tmp_path / "gone"),
        "pgid": 2**22 + 12345,  # above the default pid_max: no such process
        "control_host": "127.0.0.1",
        "control_port": closed_port(),
        "token": "t",
        "started_at": time.time() - 7200,
        "version": "0.1.0",
    }
    (home / "head.json").write_text(json.dumps(record))
    proc = doctor(git_repo, {"STAGECREW_HOME": str(home)}, "--json")
    head = by_name(json.loads(proc.stdout))["ray head"]
    assert head["status"] == "warn" and "stale head record" in head["detail"]
    assert "crew down" in head["fix"]


@pytest.mark.ray
def test_doctor_sees_the_running_head(ray_head: object, git_repo: Path) -> None:
    from stagecrew.orchestrator.runtime import read_record

    record = read_record()
    assert record is not None
    proc = doctor(git_repo, {}, "--json")
    head = by_name(json.loads(proc.stdout))["ray head"]
    assert head["status"] == "ok" and "running for" in head["detail"]
    assert f"control port 127.0.0.1:{record.control_port}" in head["detail"]


def test_version_ranges() -> None:
    assert satisfies("1.106.2", ">=1.83,<1.106.3")
    assert not satisfies("1.106.3", ">=1.83,<1.106.3")
    assert not satisfies("1.82.8", ">=1.83,<1.106.3")
    assert satisfies("2.0rc1", ">=2") and satisfies("3.11.7", ">=3.11")
