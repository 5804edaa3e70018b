"""PreCompact: Claude Code's hook before a compaction runs before stagecrew rebuilds the
context from memory, with ``trigger: auto``, and is logged like every hook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagecrew.actors.inprocess import run_agent_inprocess
from stagecrew.actors.spec import AgentSpec
from stagecrew.messages import HookRan, ModelSpecWire, Notice, StopReason
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.filterwarnings("ignore:Accessing the 'model_:DeprecationWarning")


async def test_precompact_hook_runs_before_the_rebuild(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    seen = tmp_path / "precompact.json"
    hooks = {
        "PreCompact": [
            {"matcher": "auto", "hooks": [{"type": "command", "command": f"cat > {seen}"}]}
        ]
    }
    # Each step prints ~2,000 tokens, so a 12,000-token window fills within a few steps.
    noisy = {
        "tool_calls": [{"name": "bash", "arguments": {"command": "seq 1 2500"}}],
        "repeat": 8,
    }
    with ScriptedLLM([noisy, {"text": "done"}]) as llm:
        spec = AgentSpec(
            session="pc",
            actor_id="pc-primary",
            workspace=str(workspace),
            prompt="Print numbers.",
            model=ModelSpecWire(model="openai/m", api_base=llm.base_url, num_retries=0),
            user_config_dir=str(tmp_path / "cfg"),
            context_window=12_000,
            max_steps=12,
            hooks=[("settings.json", hooks)],
        )
        result, events = await run_agent_inprocess(spec)
    assert result.stop_reason == StopReason.DONE, result.error
    payload = json.loads(seen.read_text())
    assert payload["hook_event_name"] == "PreCompact" and payload["trigger"] == "auto"
    kinds = list(events)
    ran = [i for i, b in enumerate(kinds) if isinstance(b, HookRan) and b.event == "PreCompact"]
    rebuilt = [
        i for i, b in enumerate(kinds) if isinstance(b, Notice) and "context rebuilt" in b.text
    ]
    assert ran and rebuilt and ran[0] < rebuilt[0]
    assert len(ran) == len([1 for b in kinds if isinstance(b, Notice) and "rebuil" in b.text])
