"""A session's provider endpoint comes from the command that starts it, not from the
environment the head was started with: export another ``OPENAI_BASE_URL``, run again, and
the new session calls the new server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import crew

from stagecrew.llm.providers import apply_endpoint, endpoint_settings
from stagecrew.messages import ModelSpecWire
from stagecrew.testing.scripted_llm import ScriptedLLM


def test_endpoint_settings_pick_the_provider_and_config_wins() -> None:
    env = {
        "OPENAI_BASE_URL": "http://127.0.0.1:1/v1",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:2",
        "AZURE_API_BASE": "http://127.0.0.1:3",
        "AZURE_API_VERSION": "2024-10-21",
    }
    openai = ModelSpecWire(model="openai/gpt-x")
    assert endpoint_settings(openai, env) == {"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}
    assert apply_endpoint(openai, env).api_base == "http://127.0.0.1:1/v1"
    configured = ModelSpecWire(model="openai/gpt-x", api_base="http://127.0.0.1:9/v1")
    assert apply_endpoint(configured, env).api_base == "http://127.0.0.1:9/v1"
    azure = apply_endpoint(
        ModelSpecWire(model="azure/dep"), endpoint_settings(ModelSpecWire(model="azure/dep"), env)
    )
    assert azure.api_base == "http://127.0.0.1:3" and azure.extra == {"api_version": "2024-10-21"}
    assert apply_endpoint(ModelSpecWire(model="groq/x"), env).api_base is None


@pytest.mark.ray
def test_each_run_uses_the_endpoint_of_its_own_command(ray_head: object, git_repo: Path) -> None:
    (git_repo / ".stagecrew").mkdir()
    (git_repo / ".stagecrew" / "config.json").write_text(
        json.dumps({"models": {"primary": {"model": "openai/m"}}})
    )
    with ScriptedLLM([{"text": "first"}]) as first, ScriptedLLM([{"text": "second"}]) as second:
        for llm, key in ((first, "sk-first"), (second, "sk-second")):
            env = {"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": key}
            proc = crew("run", "hi", cwd=git_repo, env=env)
            assert proc.returncode == 0, proc.stderr
        assert len(first.requests) == 1 and len(second.requests) == 1
        assert first.requests[0].headers.get("authorization") == "Bearer sk-first"
        assert second.requests[0].headers.get("authorization") == "Bearer sk-second"
