"""A parent fans out subagents with ``task`` over several directories, in parallel; every
result comes back to the parent; read-only parents have read-only children."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import follow, start_session

from stagecrew.messages import ActorFinished, ActorStarted, SessionFinished, ToolFinished
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.ray


def test_parallel_fan_out_over_directories(ray_head: object, git_repo: Path) -> None:
    for name in ("alpha", "beta", "gamma"):
        (git_repo / name).mkdir()
        (git_repo / name / f"{name}.txt").write_text(f"{name} content\n")
    fan_out = {
        "tool_calls": [
            {
                "name": "task",
                "arguments": {
                    "tasks": [
                        {"prompt": f"Survey the directory {d}/ and report.", "description": d}
                        for d in ("alpha", "beta", "gamma")
                    ]
                },
            }
        ]
    }
    mid = []
    for d in ("alpha", "beta", "gamma"):
        when = {"contains": f"directory {d}/"}
        # A model latency longer than a cold actor start, so all three are alive at once.
        ls = {"name": "ls", "arguments": {"path": d}}
        mid.append({"when": when, "tool_calls": [ls], "delay": 5})
        mid.append({"when": {"any_contains": f"directory {d}/"}, "text": f"{d}: one file, {d}.txt"})
    script = {"root": [fan_out, {"text": "All three surveyed."}], "mid": mid}
    with ScriptedLLM(script) as llm:
        cfg = {
            "models": {
                "primary": {"model": "openai/root", "api_base": llm.base_url},
                "subagent": {"model": "openai/mid", "api_base": llm.base_url},
            }
        }
        client, sid = start_session(git_repo, "Survey the repo.", {}, config_json=cfg)
        events = follow(client, sid)
        root_requests = [r.body for r in llm.requests if r.body["model"] == "root"]
    subs = [
        e.body for e in events if isinstance(e.body, ActorStarted) and e.body.role == "subagent"
    ]
    assert len(subs) == 3 and all(s.parent == f"{sid}-primary" for s in subs)
    finished = {e.body.actor_id: e.body for e in events if isinstance(e.body, ActorFinished)}
    assert all(finished[s.actor_id].stop_reason == "done" for s in subs)
    # The three ran at the same time: each started before any finished.
    starts = {e.body.actor_id: e.seq for e in events if isinstance(e.body, ActorStarted)}
    ends = {e.body.actor_id: e.seq for e in events if isinstance(e.body, ActorFinished)}
    assert max(starts[s.actor_id] for s in subs) < min(ends[s.actor_id] for s in subs)
    result = next(
        e.body for e in events if isinstance(e.body, ToolFinished) and e.body.tool == "task"
    )
    for d in ("alpha", "beta", "gamma"):
        assert f"{d}: one file, {d}.txt" in result.content
    # ...and the parent's model was sent all three results.
    tool_msg = next(m for m in root_requests[-1]["messages"] if m["role"] == "tool")
    assert all(f"{d}: one file" in tool_msg["content"] for d in ("alpha", "beta", "gamma"))
    assert next(e.body for e in events if isinstance(e.body, SessionFinished)).stop_reason == "done"
    # A fan-out wider than the warm pool teaches the pool to keep that many hosts ready.
    assert client.call("ping")["pool_target"] >= 3


READ_ONLY_LEAD = """---
description: A read-only lead that delegates.
tools: [task, read, ls]
read_only: true
---
You investigate and delegate; you never change files.
"""


def test_children_of_a_read_only_parent_cannot_write(ray_head: object, git_repo: Path) -> None:
    (git_repo / ".stagecrew" / "agents").mkdir(parents=True)
    (git_repo / ".stagecrew" / "agents" / "lead.md").write_text(READ_ONLY_LEAD)
    write = {"tool_calls": [{"name": "write", "arguments": {"file_path": "x.txt", "content": "x"}}]}
    script = {
        "root": [
            {
                "tool_calls": [
                    {
                        "name": "task",
                        "arguments": {"prompt": "Write x.txt", "subagent_type": "build"},
                    }
                ]
            },
            {"text": "Could not."},
        ],
        "mid": [write, {"text": "Refused."}],
    }
    with ScriptedLLM(script) as llm:
        cfg = {
            "models": {
                "primary": {"model": "openai/root", "api_base": llm.base_url},
                "subagent": {"model": "openai/mid", "api_base": llm.base_url},
            }
        }
        client, sid = start_session(git_repo, "Plan it.", {"agent": "lead"}, config_json=cfg)
        events = follow(client, sid)
    refused = [
        e.body for e in events if isinstance(e.body, ToolFinished) and e.body.tool == "write"
    ]
    assert refused and refused[0].is_error and "read-only" in refused[0].content
    assert not (git_repo / "x.txt").exists()
