"""Bad input gets a clear one-line error and loses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import crew

from stagecrew.testing.scripted_llm import ScriptedLLM


def test_missing_key_names_role_model_and_variable(git_repo: Path, stagecrew_home: Path) -> None:
    env = {"OPENAI_API_KEY": ""}
    proc = crew("run", "hi", "--model", "openai/gpt-4.1", cwd=git_repo, env=env)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "'primary'" in err and "openai/gpt-4.1" in err and "OPENAI_API_KEY" in err


def test_named_key_variable_must_exist(git_repo: Path, stagecrew_home: Path) -> None:
    (git_repo / ".stagecrew").mkdir()
    (git_repo / ".stagecrew" / "config.json").write_text(
        json.dumps(
            {
                "models": {
                    "primary": {
                        "model": "openai/x",
                        "api_base": "http://127.0.0.1:9/v1",
                        "api_key_env": "MY_LOCAL_KEY",
                    }
                }
            }
        )
    )
    proc = crew("run", "hi", cwd=git_repo, env={"MY_LOCAL_KEY": ""})
    assert proc.returncode == 2 and "MY_LOCAL_KEY" in proc.stderr


def test_malformed_config_names_the_file(git_repo: Path, stagecrew_home: Path) -> None:
    (git_repo / ".stagecrew").mkdir()
    path = git_repo / ".stagecrew" / "config.json"
    path.write_text('{"models": {"primary": {"model": 42}}}')
    proc = crew("run", "hi", cwd=git_repo)
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "models.primary.model" in proc.stderr


def test_unknown_model_role(git_repo: Path, stagecrew_home: Path) -> None:
    (git_repo / ".stagecrew").mkdir()
    (git_repo / ".stagecrew" / "config.json").write_text(
        json.dumps({"models": {"primary": {"model": "openai/x"}, "planner": {"model": "openai/y"}}})
    )
    proc = crew("run", "hi", cwd=git_repo)
    assert proc.returncode == 2 and "unknown model role 'planner'" in proc.stderr


def test_unknown_agent_profile(git_repo: Path, stagecrew_home: Path) -> None:
    proc = crew(
        "run",
        "hi",
        "--agent",
        "nosuch",
        "--model",
        "openai/x",
        "--api-base",
        "http://127.0.0.1:9/v1",
        cwd=git_repo,
    )
    assert proc.returncode == 2 and "unknown agent profile 'nosuch'" in proc.stderr


@pytest.mark.ray
def test_unreachable_api_base_is_one_line(ray_head: object, git_repo: Path) -> None:
    (git_repo / ".stagecrew").mkdir()
    (git_repo / ".stagecrew" / "config.json").write_text(
        json.dumps(
            {
                "models": {
                    "primary": {
                        "model": "openai/x",
                        "api_base": "http://127.0.0.1:9/v1",
                        "num_retries": 1,
                    }
                }
            }
        )
    )
    proc = crew("run", "hi", "--output-format", "json", cwd=git_repo)
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["stop_reason"] == "error"
    assert "model role 'primary' (openai/x): cannot reach http://127.0.0.1:9/v1" in result["error"]
    assert "\n" not in result["error"]


@pytest.mark.ray
def test_key_reaches_provider_but_never_the_log(ray_head: object, git_repo: Path) -> None:
    (git_repo / ".stagecrew").mkdir()
    secret = "sk-test-SECRET-0123456789"
    with ScriptedLLM([{"text": "ok"}]) as llm:
        (git_repo / ".stagecrew" / "config.json").write_text(
            json.dumps(
                {
                    "models": {
                        "primary": {
                            "model": "openai/x",
                            "api_base": llm.base_url,
                            "api_key_env": "SCRIPTED_KEY",
                        }
                    }
                }
            )
        )
        proc = crew(
            "run", "hi", "--output-format", "json", cwd=git_repo, env={"SCRIPTED_KEY": secret}
        )
        assert proc.returncode == 0, proc.stderr
        assert llm.requests[0].headers["authorization"] == f"Bearer {secret}"
    log = Path(json.loads(proc.stdout)["log"])
    assert secret not in log.read_text()
    assert "SCRIPTED_KEY" in log.read_text()  # the variable's name is fine to log
