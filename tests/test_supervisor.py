"""The supervisor with real Ray: actor trees, recursive cancel, stuck workers, limits, faults.

The scripted model server keeps one queue per model name, so the primary agent (``root``),
its subagents (``mid``) and theirs (``deep``, via a project profile) each get their own script
even though they run concurrently.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from conftest import follow, marked_pids, start_session, wait_for

from stagecrew.messages import ActorFailed, ActorFinished, Notice, SessionFinished, ToolFinished
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.ray

DEEP_PROFILE = """---
description: A worker one level further down.
model: openai/deep
---
You are a worker. Do what you are asked with the tools.
"""


def models(llm: ScriptedLLM, **extra_limits: object) -> dict[str, object]:
    return {
        "models": {
            "primary": {"model": "openai/root", "api_base": llm.base_url, "num_retries": 0},
            "subagent": {"model": "openai/mid", "api_base": llm.base_url, "num_retries": 0},
        },
        "limits": {"heartbeat_timeout_s": 20, **extra_limits},
    }


def task(prompt: str, profile: str = "build") -> dict[str, object]:
    return {
        "tool_calls": [{"name": "task", "arguments": {"prompt": prompt, "subagent_type": profile}}]
    }


def by_kind(events: list[object], cls: type) -> list[object]:
    return [e.body for e in events if isinstance(e.body, cls)]


def test_recursive_cancel_of_a_three_level_tree(ray_head: object, git_repo: Path) -> None:
    (git_repo / ".stagecrew" / "agents").mkdir(parents=True)
    (git_repo / ".stagecrew" / "agents" / "deep.md").write_text(DEEP_PROFILE)
    marker = f"sc-deep-sleep-{time.monotonic_ns()}"
    long_call = f"(exec -a {marker} sleep 300) & (exec -a {marker} sleep 300) & echo started; wait"
    script = {
        "root": [task("Delegate the work."), {"text": "The subtree was cancelled; I carried on."}],
        "mid": [task("Run the long job.", "deep"), {"text": "unreachable"}],
        "deep": [
            {
                "tool_calls": [
                    {"name": "bash", "arguments": {"command": long_call, "timeout": 600000}}
                ]
            }
        ],
    }
    with ScriptedLLM(script) as llm:
        client, sid = start_session(git_repo, "Orchestrate.", {}, config_json=models(llm))
        wait_for(lambda: len(marked_pids(marker)) == 2, timeout=60)
        pids = marked_pids(marker)
        assert all(psutil.pid_exists(p) for p in pids)
        actors = client.call("ps", session=sid)["actors"]
        primary = next(a for a in actors if a["role"] == "primary")
        middle = next(a for a in actors if a["parent"] == primary["actor_id"])
        deep = next(a for a in actors if a["parent"] == middle["actor_id"])

        t0 = time.monotonic()
        reply = client.call("cancel", target=middle["actor_id"])
        ack = time.monotonic() - t0
        assert reply["cancelled"] == [deep["actor_id"], middle["actor_id"]]  # children first
        wait_for(lambda: not any(psutil.pid_exists(p) for p in pids), timeout=5)
        gone = time.monotonic() - t0
        events = follow(client, sid)
    assert ack < 1.0 and gone < 5.0  # the benchmark measures these properly
    finished = {f.actor_id: f for f in by_kind(events, ActorFinished)}
    assert finished[deep["actor_id"]].stop_reason == "cancelled"
    assert finished[middle["actor_id"]].stop_reason == "cancelled"
    session = by_kind(events, SessionFinished)[0]
    assert session.stop_reason == "done"  # the parent got the result and carried on
    assert session.summary == "The subtree was cancelled; I carried on."
    task_result = next(
        t
        for t in by_kind(events, ToolFinished)
        if t.tool == "task" and t.actor_id == primary["actor_id"]
    )
    assert "cancelled" in task_result.content


def test_subagent_spinning_in_identical_calls_is_stopped_as_stuck(
    ray_head: object, git_repo: Path
) -> None:
    spin = {
        "tool_calls": [{"name": "grep", "arguments": {"pattern": "needle"}}],
        "repeat": "forever",
    }
    script = {
        "root": [task("Find the needle."), {"text": "The subagent got stuck; reported."}],
        "mid": [spin],
    }
    with ScriptedLLM(script) as llm:
        client, sid = start_session(git_repo, "Search.", {}, config_json=models(llm))
        events = follow(client, sid)
        mid_requests = [r.body for r in llm.requests if r.body.get("model") == "mid"]
    sub = next(f for f in by_kind(events, ActorFinished) if f.actor_id != f"{sid}-primary")
    assert sub.stop_reason == "stuck"
    assert sub.steps == 9  # 3 repeats to a reminder, 3 more to a re-plan, 3 more to the stop
    sent = [m["content"] for r in mid_requests for m in r["messages"] if m["role"] == "user"]
    assert any("You are repeating yourself" in c for c in sent)
    assert any("write a short new plan" in c for c in sent)
    notices = [n.text for n in by_kind(events, Notice) if "loop detected" in n.text]
    assert len(notices) == 3
    assert by_kind(events, SessionFinished)[0].stop_reason == "done"


@pytest.mark.parametrize(
    ("limits", "turn", "reason"),
    [
        ({"agent_wall_time_s": 2}, {"text": "slow", "delay": 30}, "timeout"),
        (
            {"max_tokens": 500},
            {
                "tool_calls": [{"name": "ls", "arguments": {}}],
                "repeat": "forever",
                "usage": {"prompt_tokens": 400, "completion_tokens": 10},
            },
            "budget",
        ),
        (
            {"max_steps": 2},
            {"tool_calls": [{"name": "ls", "arguments": {}}], "repeat": "forever"},
            "max_steps",
        ),
        ({"wall_time_s": 2}, {"text": "slow", "delay": 30}, "timeout"),
    ],
    ids=["agent-wall-time", "tokens", "steps", "session-wall-time"],
)
def test_each_limit_produces_its_stop_reason(
    ray_head: object,
    git_repo: Path,
    limits: dict[str, object],
    turn: dict[str, object],
    reason: str,
) -> None:
    with ScriptedLLM({"root": [turn]}) as llm:
        client, sid = start_session(git_repo, "Work.", {}, config_json=models(llm, **limits))
        events = follow(client, sid, timeout=60)
    finished = by_kind(events, SessionFinished)[0]
    assert finished.stop_reason == reason, finished


def test_cost_budget(ray_head: object, git_repo: Path) -> None:
    # A model litellm has a price for, served by the scripted server: 1M prompt tokens a turn.
    turn = {
        "tool_calls": [{"name": "ls", "arguments": {}}],
        "repeat": "forever",
        "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 10},
    }
    with ScriptedLLM({"gpt-4o-mini": [turn]}) as llm:
        cfg = {
            "models": {"primary": {"model": "openai/gpt-4o-mini", "api_base": llm.base_url}},
            "limits": {"max_cost_usd": 0.2},
        }
        client, sid = start_session(git_repo, "Work.", {}, config_json=cfg)
        events = follow(client, sid, timeout=60)
    finished = by_kind(events, SessionFinished)[0]
    assert finished.stop_reason == "budget" and "$" in (finished.error or "")
    assert finished.usage.cost_usd >= 0.2


def test_hung_actor_without_heartbeat_is_killed(ray_head: object, git_repo: Path) -> None:
    with ScriptedLLM({"root": [{"text": "never", "delay": 60}]}) as llm:
        client, sid = start_session(
            git_repo, "Work.", {}, config_json=models(llm, heartbeat_timeout_s=3)
        )
        actor = wait_for(
            lambda: next((a for a in client.call("ps", session=sid)["actors"] if a["pid"]), None)
        )
        os.kill(actor["pid"], signal.SIGSTOP)  # frozen: no heartbeats, no answer
        try:
            events = follow(client, sid, timeout=30)
        finally:
            if psutil.pid_exists(actor["pid"]):
                os.kill(actor["pid"], signal.SIGKILL)
    failed = by_kind(events, ActorFailed)
    assert failed and "no heartbeat" in failed[0].error
    assert by_kind(events, SessionFinished)[0].stop_reason == "error"


def test_sigkilled_subagent_is_detected_and_parent_carries_on(
    ray_head: object, git_repo: Path
) -> None:
    script = {
        "root": [task("Think hard."), {"text": "My subagent died; I carried on."}],
        "mid": [{"text": "slow", "delay": 60}],
    }
    with ScriptedLLM(script) as llm:
        client, sid = start_session(git_repo, "Work.", {}, config_json=models(llm))
        wait_for(lambda: any(r.body.get("model") == "mid" for r in llm.requests), timeout=60)
        sub = next(a for a in client.call("ps", session=sid)["actors"] if a["role"] == "subagent")
        t0 = time.monotonic()
        os.kill(sub["pid"], signal.SIGKILL)
        events = follow(client, sid, timeout=60)
        detected = wait_for(
            lambda: next(
                (
                    a
                    for a in client.call("ps", session=sid)["actors"]
                    if a["actor_id"] == sub["actor_id"] and a["state"] == "failed"
                ),
                None,
            )
        )
        assert detected
    assert time.monotonic() - t0 < 30
    failed = [f for f in by_kind(events, ActorFailed) if f.actor_id == sub["actor_id"]]
    assert failed and "died" in failed[0].error
    finished = by_kind(events, SessionFinished)[0]
    assert finished.stop_reason == "done" and "carried on" in finished.summary
