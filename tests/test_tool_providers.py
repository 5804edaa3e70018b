"""Tool providers: a provider's tools reach the model, run through the same permission
rules and plan mode as built-in tools, and are called end to end through Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import crew

from stagecrew.orchestrator.eventlog import read_events, session_dir
from stagecrew.testing.scripted_llm import ScriptedLLM
from stagecrew.tools.base import ToolContext
from stagecrew.tools.providers import (
    BuiltinTools,
    ProviderEnv,
    ProviderSpec,
    ToolSet,
    build_providers,
)
from stagecrew.tools.registry import default_tools


def _config(repo: Path, llm: ScriptedLLM, **extra: object) -> None:
    (repo / ".stagecrew").mkdir(exist_ok=True)
    cfg = {
        "models": {"primary": {"model": "openai/m", "api_base": llm.base_url}},
        "providers": [{"kind": "echo", "name": "echo", "options": {"prefix": ">> "}}],
        **extra,
    }
    (repo / ".stagecrew" / "config.json").write_text(json.dumps(cfg))


def call(name: str, **arguments: object) -> dict[str, object]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


async def test_toolset_merges_providers_and_filters_by_profile(tmp_path: Path) -> None:
    env = ProviderEnv(session="s", actor_id="a", workspace=str(tmp_path))
    providers, problems = await build_providers(
        [ProviderSpec(kind="echo"), ProviderSpec(kind="nope", name="ghost")], env
    )
    assert problems == [
        "tool provider 'ghost': unknown kind 'nope' (known: echo, mcp, skills)",
    ]
    every = ToolSet([BuiltinTools(default_tools()), *providers])
    assert {"read", "bash", "echo__say", "echo__write_note"} <= set(every)
    only = ToolSet([BuiltinTools(default_tools()), *providers], ["read", "echo__say"])
    assert set(only) == {"read", "echo__say"}
    assert "echo__write_note" in only.withheld
    ctx = ToolContext(workspace=tmp_path)
    said = await only.execute("echo__say", '{"text": "hi"}', ctx)
    assert said.content == "echo: hi" and not said.is_error
    bad = await only.execute("echo__say", '{"text": 3}', ctx)
    assert bad.is_error and bad.invalid_arguments
    garbled = await only.execute("echo__say", "{not json", ctx)
    assert garbled.invalid_arguments and "not valid JSON" in garbled.content
    plan = ToolContext(workspace=tmp_path, read_only=True)
    refused = await every.execute("echo__write_note", {"path": "n.txt", "text": "x"}, plan)
    assert refused.is_error and "read-only" in refused.content
    assert not (tmp_path / "n.txt").exists()


@pytest.mark.ray
def test_a_provider_tool_is_called_end_to_end_through_ray(ray_head: object, git_repo: Path) -> None:
    script = [
        call("echo__say", text="hello from the provider"),
        call("echo__write_note", path="../outside.txt", text="escape"),
        call("echo__write_note", path="secret/n.txt", text="nope"),
        {"text": "Done."},
    ]
    with ScriptedLLM(script) as llm:
        _config(git_repo, llm, permissions=["deny echo__write_note(secret/**)"])
        proc = crew("run", "Use the echo tools.", cwd=git_repo)
        requests = list(llm.requests)
    assert proc.returncode == 0, proc.stderr
    tools_offered = {t["function"]["name"] for t in requests[0].body["tools"]}
    assert {"echo__say", "echo__write_note", "bash"} <= tools_offered
    said = requests[1].messages[-1]
    assert said["role"] == "tool" and said["content"] == ">> hello from the provider"
    escaped = requests[2].messages[-1]["content"]
    assert "outside" in escaped and not (git_repo.parent / "outside.txt").exists()
    denied = requests[3].messages[-1]["content"]
    assert "deny" in denied.lower() and not (git_repo / "secret").exists()
    sid = next((git_repo / ".stagecrew" / "state" / "sessions").iterdir()).name
    events = list(read_events(session_dir(git_repo, sid) / "events.jsonl"))
    finished = [e.body for e in events if e.body.kind == "tool_finished"]
    assert [f.tool for f in finished] == ["echo__say", "echo__write_note", "echo__write_note"]
