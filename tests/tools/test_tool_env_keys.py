"""Tool processes never see the session's model keys: one ``env`` call would send them to the
model's provider, into the transcript and into memory. ``tools.env_passthrough`` keeps the
ones a person wants their commands to have."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagecrew.actors.inprocess import run_agent_inprocess
from stagecrew.actors.spec import AgentSpec
from stagecrew.messages import ModelSpecWire, StopReason
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.filterwarnings("ignore:Accessing the 'model_:DeprecationWarning")


async def test_bash_env_has_no_model_keys_but_keeps_passthrough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-standard-secret")
    monkeypatch.setenv("MY_MODEL_KEY", "sk-configured-secret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-judge-secret")
    monkeypatch.setenv("GROQ_API_KEY", "gsk-kept-on-purpose")
    monkeypatch.setenv("UNRELATED_SETTING", "still-here")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    script = [
        {"tool_calls": [{"name": "bash", "arguments": {"command": "env"}}]},
        {"text": "done"},
    ]
    with ScriptedLLM(script) as llm:
        spec = AgentSpec(
            session="env",
            actor_id="env-primary",
            workspace=str(workspace),
            prompt="Show the environment.",
            model=ModelSpecWire(
                model="openai/m", api_base=llm.base_url, api_key_env="MY_MODEL_KEY"
            ),
            role_models={"judge": ModelSpecWire(model="anthropic/claude-x")},
            user_config_dir=str(tmp_path / "cfg"),
            tool_env_passthrough=["GROQ_API_KEY"],
        )
        result, _ = await run_agent_inprocess(spec)
        shown = llm.requests[1].messages[-1]["content"]
    assert result.stop_reason == StopReason.DONE, result.error
    assert "UNRELATED_SETTING=still-here" in shown
    assert "GROQ_API_KEY=gsk-kept-on-purpose" in shown
    for secret in ("sk-standard-secret", "sk-configured-secret", "sk-judge-secret"):
        assert secret not in shown
