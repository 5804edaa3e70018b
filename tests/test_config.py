"""Configuration layering and its errors, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagecrew.config import ConfigError, load_config


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    user = tmp_path / "user"
    project = tmp_path / "project"
    (project / ".stagecrew").mkdir(parents=True)
    user.mkdir()
    monkeypatch.setenv("STAGECREW_CONFIG_DIR", str(user))
    return user, project


def write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def test_layers_merge_in_order(dirs: tuple[Path, Path]) -> None:
    user, project = dirs
    write(
        user / "config.json",
        {
            "models": {"primary": {"model": "anthropic/claude-x"}, "judge": {"model": "openai/j"}},
            "limits": {"max_steps": 7},
        },
    )
    write(
        project / ".stagecrew" / "config.json",
        {"models": {"primary": {"model": "openai/proj", "api_base": "http://127.0.0.1:1/v1"}}},
    )
    cfg = load_config(project, environ={})
    assert cfg.models.primary.model == "openai/proj"  # project beats user
    assert cfg.models.primary.api_base == "http://127.0.0.1:1/v1"
    assert (
        cfg.models.judge is not None and cfg.models.judge.model == "openai/j"
    )  # user survives the merge
    assert cfg.limits.max_steps == 7
    assert cfg.models.for_role("subagent").model == "openai/proj"  # unset roles use primary

    cfg = load_config(
        project, environ={"STAGECREW_MODEL": "openai/env", "STAGECREW_MAX_STEPS": "9"}
    )
    assert cfg.models.primary.model == "openai/env"  # environment beats files
    assert cfg.limits.max_steps == 9

    cfg = load_config(
        project,
        environ={"STAGECREW_MODEL": "openai/env"},
        flags={"models.primary.model": "openai/flag", "limits.max_steps": None},
    )
    assert cfg.models.primary.model == "openai/flag"  # flags beat everything; None flags are unset
    assert cfg.limits.max_steps == 7


def test_malformed_json_names_file_and_line(dirs: tuple[Path, Path]) -> None:
    _, project = dirs
    path = project / ".stagecrew" / "config.json"
    write(path, '{"models": {"primary": {"model": "x",}}}')
    with pytest.raises(ConfigError) as err:
        load_config(project, environ={})
    assert str(path) in str(err.value)
    assert "line 1" in str(err.value)


def test_unknown_model_role_is_named_with_its_file(dirs: tuple[Path, Path]) -> None:
    user, project = dirs
    write(user / "config.json", {"models": {"reviewer": {"model": "openai/x"}}})
    with pytest.raises(ConfigError) as err:
        load_config(project, environ={})
    msg = str(err.value)
    assert str(user / "config.json") in msg
    assert "unknown model role 'reviewer'" in msg
    assert "primary, subagent, judge, checkpoint, candidate" in msg


def test_wrong_type_names_key_path_and_expectation(dirs: tuple[Path, Path]) -> None:
    _, project = dirs
    path = project / ".stagecrew" / "config.json"
    write(path, {"limits": {"max_steps": "lots"}, "runtime": {"pool_size": -1}})
    with pytest.raises(ConfigError) as err:
        load_config(project, environ={})
    msg = str(err.value)
    assert f"{path}: 'limits.max_steps'" in msg and "valid integer" in msg and '"lots"' in msg
    assert "'runtime.pool_size'" in msg and "greater than or equal to 0" in msg


def test_bad_environment_value_blames_the_environment(dirs: tuple[Path, Path]) -> None:
    _, project = dirs
    with pytest.raises(ConfigError) as err:
        load_config(project, environ={"STAGECREW_MAX_STEPS": "0"})
    assert "environment: 'limits.max_steps'" in str(err.value)


def test_top_level_must_be_object(dirs: tuple[Path, Path]) -> None:
    user, project = dirs
    write(user / "config.json", "[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_config(project, environ={})


def test_unknown_key_is_refused(dirs: tuple[Path, Path]) -> None:
    _, project = dirs
    write(project / ".stagecrew" / "config.json", {"modle": {}})
    with pytest.raises(ConfigError, match="unknown key 'modle'"):
        load_config(project, environ={})


def test_public_dict_holds_key_names_not_keys(dirs: tuple[Path, Path]) -> None:
    _, project = dirs
    cfg = load_config(
        project, environ={"STAGECREW_API_KEY_ENV": "MY_KEY", "MY_KEY": "sk-secret-value"}
    )
    dumped = json.dumps(cfg.public_dict())
    assert "MY_KEY" in dumped and "sk-secret-value" not in dumped
