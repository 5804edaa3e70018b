"""Persistent memory in the real agent, end to end: real Ray actors, the real checkpoint-writer
service, real files, and the scripted model server through litellm.

Every assertion about context is made on what the scripted server RECORDED, i.e. on what the
model was actually sent, not on what the agent believes it sent. A tiny ``context_window``
makes a few steps cross the 40/60/80 % checkpoint thresholds and the 90 % rebuild.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import crew, follow

from stagecrew.memory.context import CONTEXT_MARKER
from stagecrew.memory.layers import Checkpoint
from stagecrew.messages import (
    ActorStarted,
    CheckpointRequest,
    CheckpointWritten,
    Notice,
    SessionFinished,
    TaskTreeChanged,
)
from stagecrew.testing.scripted_llm import RecordedRequest, ScriptedLLM

LEAN_PROFILE = """---
description: A lean agent for memory tests (few tools, so a small window is mostly context).
role: primary
tools: [read, bash, memory, tasks]
---
You are a test agent. Use the tools to do the task, then answer without calling a tool.
"""

# Prints a test log of ~3.5 kB; the first run also prints a unique error line that the test
# later looks for in the archive, after the rebuild masked and archived this output.
TESTLOG = """\
import sys

run = sys.argv[1]
if run == "1":
    print("ERR-7781 checksum mismatch in upload_big.bin at offset 4096")
for i in range(60):
    print(f"run {run}: tests/test_upload.py::test_chunk_{i:02d} PASSED in 0.{i:03d}s")
"""

PROMPT = (
    "Make the flaky upload test pass. The staging API is at http://127.0.0.1:8731/v2 and the "
    "fixture lives in tests/fixtures/upload_big.bin."
)
WINDOW = 12_000
USABLE = WINDOW - WINDOW // 4  # the agent keeps a quarter of a small window for the reply


def setup_workspace(repo: Path, llm: ScriptedLLM, checkpoint_model: dict[str, Any]) -> None:
    (repo / ".stagecrew" / "agents").mkdir(parents=True, exist_ok=True)
    (repo / ".stagecrew" / "agents" / "lean.md").write_text(LEAN_PROFILE)
    (repo / "tools").mkdir(exist_ok=True)
    (repo / "tools" / "testlog.py").write_text(TESTLOG)
    config = {
        "models": {
            "primary": {"model": "openai/main", "api_base": llm.base_url, "num_retries": 0},
            "checkpoint": {"api_base": llm.base_url, "num_retries": 0, **checkpoint_model},
        },
        "limits": {"heartbeat_timeout_s": 30},
    }
    (repo / ".stagecrew" / "config.json").write_text(json.dumps(config))


def start(repo: Path, prompt: str, **spec_updates: Any) -> tuple[Any, str]:
    """Start a session as the CLI does, with spec fields the CLI does not set (yet): the
    model's context window and a private global-memory directory."""
    from stagecrew.actors.builder import prepare_session
    from stagecrew.config import load_config
    from stagecrew.orchestrator import runtime

    config = load_config(repo, flags={})
    prepared = prepare_session(config, prompt, repo, agent="lean")
    spec = prepared.spec.model_copy(update=spec_updates)
    client = runtime.connect()
    reply = client.call(
        "start_session",
        spec=spec.model_dump(mode="json"),
        credentials=prepared.credentials,
        config=config.public_dict(),
        limits=config.limits.session_limits(),
    )
    return client, reply["session"]


def bodies(events: list[Any], cls: type) -> list[Any]:
    return [e.body for e in events if isinstance(e.body, cls)]


def of_model(llm: ScriptedLLM, name: str) -> list[RecordedRequest]:
    return [r for r in llm.chat_requests if r.model == name]


def sent_tokens(request: RecordedRequest) -> int:
    """The request's size as the scripted server counts (and reports) prompt tokens."""
    body = request.body
    size = len(json.dumps(body.get("messages", []))) + len(json.dumps(body.get("tools", [])))
    return math.ceil(size / 4)


def tool(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


@pytest.mark.ray
def test_layers_reach_the_system_prompt_and_memory_is_saved_through_the_writer(
    ray_head: object, git_repo: Path, tmp_path: Path
) -> None:
    (git_repo / "AGENTS.md").write_text("# Agents\n\nUse uv for every Python command.\n")
    (git_repo / "CLAUDE.md").write_text("# Claude\n\nKeep commits small.\n")
    (git_repo / ".stagecrew" / "memory").mkdir(parents=True)
    memory_md = git_repo / ".stagecrew" / "memory" / "MEMORY.md"
    memory_md.write_text("# Project memory\n\n## Rules\n\n- Never edit files under gen/.\n")
    config_dir = tmp_path / "person-config"
    config_dir.mkdir()
    (config_dir / "MEMORY.md").write_text("## Durable knowledge\n\n- Prefers British spelling.\n")
    script = {
        "main": [
            tool("memory", action="save", section="decisions", text="Cache in SQLite, not Redis."),
            tool("tasks", action="create", title="Wire the cache"),
            tool("tasks", action="create", title="Write the adapter", parent="T1"),
            tool("tasks", action="start", id="T1.1"),
            tool("memory", action="search", query="Redis cache"),
            {"text": "Saved and planned."},
        ]
    }
    with ScriptedLLM(script) as llm:
        setup_workspace(git_repo, llm, {"model": "openai/cp"})
        client, sid = start(git_repo, "Plan the cache.", user_config_dir=str(config_dir))
        events = follow(client, sid)
        requests = of_model(llm, "main")

    assert bodies(events, SessionFinished)[0].stop_reason == "done"
    assert len(requests) == 6
    system = requests[0].messages[0]
    assert system["role"] == "system"
    text = system["content"]
    assert text.startswith("You are a test agent.")
    for layer in (
        "Use uv for every Python command.",  # AGENTS.md
        "Keep commits small.",  # CLAUDE.md
        "- Never edit files under gen/.",  # project MEMORY.md
        "- Prefers British spelling.",  # global MEMORY.md
    ):
        assert layer in text
    # Byte-stable across steps, even though project memory changed on disk during the run.
    assert all(r.messages[0] == system for r in requests)

    # The save went through the session's checkpoint-writer actor, the single writer.
    assert any(
        a.role == "checkpoint-writer" and a.actor_id == f"{sid}-checkpoint"
        for a in bodies(events, ActorStarted)
    )
    saved = requests[1].messages[-1]["content"]
    assert "Saved to project memory under 'Architecture decisions'" in saved
    memory = memory_md.read_text()
    assert "## Architecture decisions\n\n- Cache in SQLite, not Redis." in memory
    assert "- Never edit files under gen/." in memory  # the person's entry is kept
    found = requests[5].messages[-1]["content"]
    assert "Cache in SQLite, not Redis." in found and "MEMORY.md" in found

    # The task tree: each change is an event, the ledger is on disk, `crew tasks` shows it.
    trees = bodies(events, TaskTreeChanged)
    assert len(trees) == 3 and "[~] T1.1 Write the adapter" in trees[-1].ledger
    shown = crew("tasks", cwd=git_repo)  # no id: the project's latest session
    assert shown.returncode == 0, shown.stderr
    assert sid in shown.stdout
    assert "- [ ] T1 Wire the cache" in shown.stdout
    assert "  - [~] T1.1 Write the adapter" in shown.stdout
    as_json = json.loads(crew("tasks", sid, "--json", cwd=git_repo).stdout)
    assert [(t["id"], t["owner"]) for t in as_json["tasks"]] == [
        ("T1", f"{sid}-primary"),
        ("T1.1", f"{sid}-primary"),
    ]


@pytest.mark.ray
def test_checkpoints_in_the_background_rebuild_under_budget_and_archive_search(
    ray_head: object, git_repo: Path
) -> None:
    paraphrase = textwrap.dedent(
        """\
        ## Active intent

        fix the upload test

        ## Next action

        Re-run the upload test against staging.

        ## Live resources

        - the staging API on localhost (port eight-seven-three-one)
        """
    )
    runs = [tool("bash", command=f"python3 tools/testlog.py {i}") for i in range(1, 15)]
    script = {
        "main": [
            {
                **tool("memory", action="search", query="ERR-7781"),
                "when": {"any_contains": CONTEXT_MARKER},
            },
            {"text": "All green.", "when": {"contains": "result(s) for 'ERR-7781'"}},
            *runs,
        ],
        # A slow writer model: the agent must keep working while it thinks.
        "cp": [{"text": paraphrase, "delay": 1.5, "repeat": "forever"}],
    }
    with ScriptedLLM(script) as llm:
        setup_workspace(git_repo, llm, {"model": "openai/cp"})
        client, sid = start(git_repo, PROMPT, context_window=WINDOW)
        events = follow(client, sid, timeout=150)
        main = of_model(llm, "main")
        writer = of_model(llm, "cp")

    finished = bodies(events, SessionFinished)[0]
    assert finished.stop_reason == "done" and finished.summary == "All green.", finished

    # Checkpoints were asked for at each threshold, in order, then again at the rebuild.
    asked = [c.reason for c in bodies(events, CheckpointRequest)]
    assert asked[:3] == [f"{p}% of the context window" for p in (40, 60, 80)], asked
    assert "context rebuilt" in asked
    written = bodies(events, CheckpointWritten)
    assert written and all(w.reason in asked for w in written)
    assert len(writer) <= len(asked)  # requests that arrived while one ran were coalesced
    # In the background: the agent kept calling its model between asking for the first
    # checkpoint and the writer (a new actor, then a slow model) finishing it.
    kinds = [(e.body.kind, e.sender) for e in events]
    asked_at = kinds.index(("checkpoint_request", f"{sid}-primary"))
    written_at = kinds.index(("checkpoint_written", f"{sid}-checkpoint"))
    steps_meanwhile = kinds[asked_at:written_at].count(("model_requested", f"{sid}-primary"))
    assert steps_meanwhile >= 3, kinds

    # What the writer model was sent: the person's goal and the literals, verbatim.
    sent = writer[0].messages[-1]["content"]
    assert f"<person_goal>\n{PROMPT}\n</person_goal>" in sent
    assert "- `http://127.0.0.1:8731/v2`" in sent
    assert "- `tests/fixtures/upload_big.bin`" in sent
    # What landed on disk: the model's update, with every literal restored byte for byte
    # and the goal in the person's own words, although the model paraphrased both.
    checkpoint_md = git_repo / ".stagecrew" / "state" / "sessions" / sid / "checkpoint.md"
    checkpoint = Checkpoint.load(checkpoint_md)
    assert checkpoint.active_intent == PROMPT
    assert checkpoint.get("Next action") == "Re-run the upload test against staging."
    raw = checkpoint_md.read_text()
    assert "http://127.0.0.1:8731/v2" in raw and "tests/fixtures/upload_big.bin" in raw

    # The rebuild: announced, under its budget, and the model's requests stayed in the window.
    notices = [n.text for n in bodies(events, Notice) if "context rebuilt from memory" in n.text]
    assert notices, [n.text for n in bodies(events, Notice)]
    before, after, budget = (
        int(x.replace(",", ""))
        for x in re.search(r": ([\d,]+) → ([\d,]+) tokens \(budget ([\d,]+)", notices[0]).groups()
    )
    assert after <= budget < before
    sizes = [sent_tokens(r) for r in main]
    assert max(sizes) <= USABLE, sizes
    rebuilt_at = next(i for i, r in enumerate(main) if CONTEXT_MARKER in json.dumps(r.messages))
    assert sizes[rebuilt_at] < sizes[rebuilt_at - 1] / 2 + 1000, sizes
    assert sizes[rebuilt_at] <= USABLE // 2 * 1.15, sizes  # the rebuild target, calibrated
    # The person's goal is in every request after the rebuild, in their own words.
    for r in main[rebuilt_at:]:
        assert PROMPT in json.dumps(r.messages, ensure_ascii=False)
    # The system prompt stayed byte-identical through the rebuild (cache-friendly).
    assert all(r.messages[0] == main[0].messages[0] for r in main)
    # The first test log was masked and archived; the memory tool finds it again.
    rebuilt = main[rebuilt_at].messages
    assert any("masked" in str(m.get("content")) for m in rebuilt if m["role"] == "tool")
    search_result = main[-1].messages[-1]["content"]
    assert "result(s) for 'ERR-7781'" in search_result
    assert "ERR-7781 checksum mismatch in upload_big.bin" in search_result
    assert "archive" in search_result


@pytest.mark.ray
def test_a_failing_checkpoint_model_never_stops_the_agent(ray_head: object, git_repo: Path) -> None:
    runs = [tool("bash", command=f"python3 tools/testlog.py {i}") for i in range(1, 5)]
    script = {
        "main": [*runs, {"text": "Done despite the writer."}],
        "cp": [{"status": 500, "error_message": "checkpoint model is down", "repeat": "forever"}],
    }
    with ScriptedLLM(script) as llm:
        setup_workspace(git_repo, llm, {"model": "openai/cp"})
        client, sid = start(git_repo, PROMPT, context_window=WINDOW)
        events = follow(client, sid)
        main = of_model(llm, "main")
        writer = of_model(llm, "cp")

    finished = bodies(events, SessionFinished)[0]
    assert finished.stop_reason == "done" and finished.summary == "Done despite the writer."
    assert len(main) == 5 and writer  # the writer was asked, and its model failed
    assert bodies(events, CheckpointWritten)  # …and it still wrote a checkpoint
    warnings = [n.text for n in bodies(events, Notice) if n.level == "warning"]
    assert any("openai/cp failed" in w and "without it" in w for w in warnings), warnings
    checkpoint_md = git_repo / ".stagecrew" / "state" / "sessions" / sid / "checkpoint.md"
    raw = checkpoint_md.read_text()
    assert "Updated without the checkpoint model" in raw
    assert "http://127.0.0.1:8731/v2" in raw and "tests/fixtures/upload_big.bin" in raw
    assert Checkpoint.parse(raw).active_intent == PROMPT


# -- in-process: the same classes without Ray, where a property is cheaper to pin down -------


async def test_writer_coalesces_requests_without_losing_messages(tmp_path: Path) -> None:
    from stagecrew.actors.checkpoint_writer import CheckpointWriter
    from stagecrew.actors.gateway import ModelGateway
    from stagecrew.actors.inprocess import InProcessModelPort
    from stagecrew.messages import ModelSpecWire

    workspace = tmp_path / "ws"
    sdir = workspace / ".stagecrew" / "state" / "sessions" / "s1"
    sdir.mkdir(parents=True)
    goal = "Ship it; the API key lives in $BILLING_TOKEN."
    answer = "## Next action\n\nGo on.\n\n## Current work\n\nWorking."
    with ScriptedLLM({"cp": [{"text": answer, "delay": 0.5, "repeat": "forever"}]}) as llm:
        writer = CheckpointWriter(
            "s1",
            workspace,
            sdir,
            InProcessModelPort(ModelGateway(preload=False)),
            ModelSpecWire(model="openai/cp", api_base=llm.base_url, num_retries=0),
        )
        await writer.request("40%", [{"role": "user", "content": goal}], goal)
        await llm_wait(llm, 1)  # the first update is in flight now
        b = {"role": "assistant", "content": "Running `pytest --maxfail=1` next."}
        c = {"role": "assistant", "content": "The bug is in src/billing/c.py:42."}
        await writer.request("60%", [b], goal)
        await writer.request("80%", [c], goal)  # joins the waiting one
        saves = [writer.save_memory("rules", f"rule number {i}") for i in range(5)]
        replies = await asyncio.gather(*saves)
        assert await writer.wait_idle(30)
        calls = of_model(llm, "cp")
    assert len(calls) == 2 and [r.reason for r in writer.history] == ["40%", "80%"]
    second = calls[1].messages[-1]["content"]
    assert second.index("pytest --maxfail=1") < second.index("src/billing/c.py:42")
    checkpoint = Checkpoint.load(sdir / "checkpoint.md")
    assert checkpoint.active_intent == goal and checkpoint.get("Next action") == "Go on."
    raw = (sdir / "checkpoint.md").read_text()
    for literal in ("$BILLING_TOKEN", "pytest --maxfail=1", "src/billing/c.py:42"):
        assert literal in raw
    # Concurrent saves all land: the writer is MEMORY.md's one, serialised, writer.
    assert all(r.startswith("Saved to project memory under 'Rules'") for r in replies)
    memory = (workspace / ".stagecrew" / "memory" / "MEMORY.md").read_text()
    assert all(f"- rule number {i}" in memory for i in range(5))


async def llm_wait(llm: ScriptedLLM, n: int) -> None:
    await asyncio.to_thread(llm.wait_for_requests, n, 10)


@pytest.mark.parametrize("seed", range(6))
def test_rebuild_never_exceeds_its_budget_and_keeps_goal_and_pairs(
    tmp_path: Path, seed: int
) -> None:
    """Random transcripts (huge outputs, several calls per turn, reminders) at random window
    sizes: the rebuilt list fits its budget by the manager's own count, starts with the same
    system prompt, keeps the person's goal, never separates a call from its results, and
    what it drops is searchable."""
    import random

    from stagecrew.actors.context import ContextManager, pair_tool_calls
    from stagecrew.memory.index import MemoryIndex
    from stagecrew.memory.layers import MemoryPaths
    from stagecrew.memory.tokens import ContextWindow
    from stagecrew.tools.registry import default_tools

    rng = random.Random(seed)
    workspace = tmp_path / "ws"
    (workspace / ".stagecrew" / "state" / "sessions" / "s1").mkdir(parents=True)
    paths = MemoryPaths(workspace, "s1", tmp_path / "cfg")
    goal = f"Find why job {seed} fails; do not touch the migrations."
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a test agent."},
        {"role": "user", "content": goal},
    ]
    for step in range(rng.randint(20, 60)):
        calls = [
            {"id": f"c{step}_{k}", "type": "function", "function": {"name": "bash"}}
            for k in range(rng.choice([1, 1, 2, 3]))
        ]
        for call in calls:
            call["function"]["arguments"] = json.dumps({"command": f"run {call['id']}"})
        messages.append({"role": "assistant", "content": f"step {step}", "tool_calls": calls})
        for call in calls:
            size = 3000 if step == 0 else rng.choice([50, 400, 3000, 20000])
            body = (f"MARK-{call['id']} " + "output line\n" * (size // 12))[:size]
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": body})
        if rng.random() < 0.1:
            messages.append({"role": "user", "content": "[stagecrew loop check] reminder"})
    index = MemoryIndex(paths.index_db)
    tools = default_tools()
    schemas = [tools[n].schema() for n in ("read", "bash", "memory", "tasks")]
    window = rng.choice([8_000, 16_000, 32_000])
    manager = ContextManager(
        session="s1",
        actor_id="s1-primary",
        base_system_prompt="You are a test agent.",
        goal=goal,
        tool_schemas=schemas,
        paths=paths,
        index=lambda: index,
        window=ContextWindow(window, reserved_output_tokens=window // 4),
    )
    try:
        rebuilt, report = manager.rebuild(messages, "test")
        assert manager.tokens(rebuilt) <= manager.window.rebuild_budget
        assert report.after <= report.budget < report.before
        assert rebuilt[0] == messages[0]
        assert goal in json.dumps(rebuilt)
        assert pair_tool_calls(rebuilt) == rebuilt
        first = messages[3]  # the first tool output: masked or dropped, and archived
        assert first["content"] not in json.dumps(rebuilt)
        hits = index.search(f"MARK-{first['tool_call_id']}", kinds=["archive"])
        assert any(f"MARK-{first['tool_call_id']}" in h.text for h in hits)
    finally:
        index.close()


def test_long_session_benchmark_holds_its_goals_at_small_scale() -> None:
    """``benchmarks/bench_long_session.py`` at 40 steps in a 12k window (13 rebuilds): the
    managed input is under 40 % of the naive transcript, no request is over the window, and
    every planted fact is in the final request or found by a memory search."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_long_session.py"
    spec = importlib.util.spec_from_file_location("bench_long_session", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.main(["--steps", "40", "--window", "12000"])
    assert r["stop_reason"] == "done" and r["rebuilds"] >= 3
    assert r["managed_tokens"] <= 0.4 * r["naive_tokens"]
    assert r["largest_request"] <= r["usable_window"]
    assert "LOST" not in r["facts"].values(), r["facts"]


@pytest.mark.ray
def test_a_cancelled_run_keeps_the_checkpoint_being_written(
    ray_head: object, git_repo: Path
) -> None:
    """Cancelling while the writer's (slow) model call is in flight: the session ends after
    the checkpoint is written, not by killing the writer in the middle of it."""
    update = "## Active intent\n\nfix the upload test\n\n## Next action\n\nRe-run it on staging.\n"
    runs = [tool("bash", command=f"python3 tools/testlog.py {i}") for i in range(1, 9)]
    script = {
        "main": [*runs, {"text": "never sent", "delay": 60}],
        "cp": [{"text": update, "delay": 4, "repeat": "forever"}],
    }
    with ScriptedLLM(script) as llm:
        setup_workspace(git_repo, llm, {"model": "openai/cp"})
        client, sid = start(git_repo, PROMPT, context_window=WINDOW)
        t0 = time.monotonic()
        while not of_model(llm, "cp") and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        assert of_model(llm, "cp"), "the writer was never asked"
        client.cancel(sid)
        events = follow(client, sid, timeout=60)

    finished = bodies(events, SessionFinished)[0]
    assert finished.stop_reason == "cancelled", finished
    assert bodies(events, CheckpointWritten), [e.body.kind for e in events]
    checkpoint = git_repo / ".stagecrew" / "state" / "sessions" / sid / "checkpoint.md"
    assert "Re-run it on staging." in checkpoint.read_text()
