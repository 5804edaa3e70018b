"""Benchmark a long session: what context management costs and what it keeps.

Plays a scripted N-step session (default 200: reads, edits, test runs with large outputs,
greps, task updates) through the real ``Agent`` in this process, with a real ``ModelGateway``
(litellm) against the scripted model server, real tools on a real workspace, and the real
``CheckpointWriter`` (its own scripted model queue). Then it prints:

* total input tokens sent with context management vs the naive growing transcript (the same
  conversation with nothing ever removed; counted with the server's own formula). Goal: the
  managed total is at most 40 % of the naive one;
* the largest single request vs the usable window (goal: never over), and the rebuild budget;
* whether facts planted early — a port, a path, a decision, the person's goal — are still
  in the final request, or at least retrievable with a memory search (goal: all of them).

Run: ``scripts/offline .venv/bin/python benchmarks/bench_long_session.py`` (``--steps``,
``--window``, ``--seed``). ``main(argv)`` returns the numbers so a test can run it small.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from stagecrew.actors.agent import Agent
from stagecrew.actors.checkpoint_writer import CheckpointWriter
from stagecrew.actors.inprocess import CollectingSink, InProcessModelPort
from stagecrew.actors.spec import AgentSpec
from stagecrew.memory.context import CONTEXT_MARKER
from stagecrew.memory.index import MemoryIndex
from stagecrew.messages import (
    AssistantMessage,
    CheckpointRequest,
    CheckpointWritten,
    ModelSpecWire,
    ToolFinished,
)
from stagecrew.testing.scripted_llm import ScriptedLLM

GOAL = (
    "Migrate the billing exporter to the v2 ledger API without breaking the nightly CSV job; "
    "keep the existing tests green."
)
PORT = "127.0.0.1:48213"
PATH = "src/billing/ledger_v2_adapter.py"
DECISION = "keep the CSV column order frozen for the nightly job; new v2 fields go at the end"
# Each fact: what must be found, and what a model would search for if it is not in view.
FACTS = {
    "goal": (GOAL, "billing exporter v2 ledger nightly CSV job"),
    "port": (PORT, "ledger mock port"),
    "path": (PATH, "ledger_v2_adapter.py"),
    "decision": (DECISION, "decision CSV column order nightly"),
}

RUN_TESTS = """\
import sys

step = int(sys.argv[1])
for i in range(160):
    status = "FAILED" if (i + step) % 37 == 0 else "PASSED"
    print(f"tests/billing/test_export.py::test_case_{i:03d}[step{step}] {status} "
          f"({(i * 7 + step) % 997} ms) ledger=v2 rows={i * step % 311}")
print(f"== {160 - 160 // 37} passed, {160 // 37} failed in {step % 9}.{step % 100:02d}s ==")
"""


def make_workspace(root: Path, rng: random.Random) -> list[str]:
    """A small billing project: modules of 3-6 kB each, and a test runner with big output."""
    files = []
    for name in (
        "exporter",
        "ledger_v1",
        "ledger_v2_adapter",
        "schema",
        "nightly",
        "currency",
        "invoices",
        "accounts",
    ):
        lines = [f'"""billing.{name}: part of the nightly CSV export."""', ""]
        for f in range(rng.randint(10, 18)):
            lines.append(f"def {name}_step_{f}(rows, ledger):")
            lines.append(f'    """Step {f} of {name}: map ledger entries to export rows."""')
            for k in range(rng.randint(3, 6)):
                lines.append(
                    f"    rows = [r | {{'c{k}': ledger.get('{name}_{f}_{k}')}} for r in rows]"
                )
            lines.append("    return rows")
            lines.append("")
        path = root / "src" / "billing" / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines))
        files.append(f"src/billing/{name}.py")
    (root / "src" / "billing" / "progress.py").write_text("DONE_STEPS = 0\nREVIEWED = 0\n")
    (root / "tools").mkdir()
    (root / "tools" / "run_tests.py").write_text(RUN_TESTS)
    return files


def _tool(name: str, text: str | None = None, **arguments: Any) -> dict[str, Any]:
    turn: dict[str, Any] = {"tool_calls": [{"name": name, "arguments": arguments}]}
    if text:
        turn["text"] = text
    return turn


def build_script(steps: int, files: list[str], rng: random.Random) -> list[dict[str, Any]]:
    """The session: facts planted in the first steps, then varied work, then a final answer.

    No call repeats with the same result (the loop detector would rightly step in): test runs
    carry the step number, edits move a counter, reads rotate files and offsets.
    """
    turns = [
        _tool("tasks", action="create", title="Migrate the exporter to the v2 ledger"),
        _tool(
            "read",
            f"The v2 ledger mock listens on {PORT}; I will point the adapter at it.",
            file_path="src/billing/exporter.py",
        ),
        _tool("read", file_path=PATH),
        _tool("tasks", action="start", id="T1"),
        _tool(
            "edit",
            f"Decision: {DECISION}.",
            file_path="src/billing/progress.py",
            old_string="REVIEWED = 0",
            new_string="REVIEWED = 1",
        ),
    ]
    done = 0
    # The planted path must not come back on its own: later reads leave that file alone.
    files = [f for f in files if f != PATH]
    kinds = ["read", "tests", "tests", "grep", "edit", "read", "tests", "ls"]
    last = ""
    while len(turns) < steps - 1:
        step = len(turns) + 1
        kind = rng.choice([k for k in kinds if k != last])
        last = kind
        if kind == "read":
            turns.append(_tool("read", file_path=rng.choice(files), offset=1 + step % 5, limit=400))
        elif kind == "tests":
            turns.append(_tool("bash", command=f"python3 tools/run_tests.py {step}"))
        elif kind == "grep":
            word = rng.choice(["ledger.get", "return rows", "def ", "c3", "nightly"])
            target = rng.choice(files)
            turns.append(_tool("grep", pattern=word, path=target, head_limit=40 + step % 20))
        elif kind == "edit":
            turns.append(
                _tool(
                    "edit",
                    file_path="src/billing/progress.py",
                    old_string=f"DONE_STEPS = {done}",
                    new_string=f"DONE_STEPS = {done + 1}",
                )
            )
            done += 1
        else:
            turns.append(_tool("ls", path=rng.choice(["src", "tools", "."])))
    turns.append({"text": "The exporter now talks to the v2 ledger; the nightly job is intact."})
    return turns


CHECKPOINT_ANSWER = """\
## Active intent

migrate billing to v2

## Next action

Keep going through the failing export tests and re-run tools/run_tests.py.

## Current work

Running the billing export tests after each change.
"""


def _where(needle: str, messages: list[dict[str, Any]]) -> str | None:
    """Which part of a request holds ``needle``: the system prompt, a section of the rebuilt
    context message (checkpoint, archive hits …), or the verbatim tail."""
    for i, m in enumerate(messages):
        text = str(m.get("content") or "") + json.dumps(m.get("tool_calls") or "")
        if needle not in text:
            continue
        if i == 0:
            return "system prompt"
        if text.startswith(CONTEXT_MARKER):
            tags = re.findall(r"<(\w+)>\n(.*?)\n</\1>", text, re.DOTALL)
            return next((tag for tag, body in tags if needle in body), "context message")
        return "recent messages"
    return None


def _json_len(messages: list[dict[str, Any]]) -> int:
    return len(json.dumps(messages))


async def run(steps: int, window: int, seed: int) -> dict[str, Any]:
    from stagecrew.actors.gateway import ModelGateway

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="stagecrew-bench-") as tmp:
        root = Path(tmp) / "billing"
        root.mkdir()
        files = make_workspace(root, rng)
        session = "bench-long"
        sdir = root / ".stagecrew" / "state" / "sessions" / session
        sdir.mkdir(parents=True)
        script = {
            "main": build_script(steps, files, rng),
            "cp": [{"text": CHECKPOINT_ANSWER, "repeat": "forever"}],
        }
        with ScriptedLLM(script) as llm:
            gateway = ModelGateway(preload=False)
            port = InProcessModelPort(gateway)
            sink = CollectingSink()
            writer = CheckpointWriter(
                session,
                root,
                sdir,
                port,
                ModelSpecWire(model="openai/cp", api_base=llm.base_url, num_retries=0),
                events=sink,
            )
            spec = AgentSpec(
                session=session,
                actor_id=f"{session}-primary",
                workspace=str(root),
                prompt=GOAL,
                model=ModelSpecWire(model="openai/main", api_base=llm.base_url, num_retries=0),
                session_dir=str(sdir),
                context_window=window,
                max_steps=steps + 5,
                user_config_dir=str(Path(tmp) / "config"),
                tools=["read", "edit", "write", "ls", "grep", "bash", "memory", "tasks"],
            )
            agent = Agent(spec, port, sink, checkpoint=writer)
            started = time.perf_counter()
            result = await agent.run()
            elapsed = time.perf_counter() - started
            await writer.wait_idle(60)
            main = [r for r in llm.chat_requests if r.model == "main"]
            cp_calls = len([r for r in llm.chat_requests if r.model == "cp"])

        tools_len = _json_len(agent.tool_schemas)
        sent = [math.ceil((_json_len(r.messages) + tools_len) / 4) for r in main]
        naive = _naive_sizes(sink.messages, main[0].messages, tools_len)[: len(main)]
        final = main[-1].messages
        index = MemoryIndex(root / ".stagecrew" / "state" / "memory.db")
        try:
            index.sync_files(agent.context.paths.sources())
            facts = {}
            searchable = {}
            for name, (needle, query) in FACTS.items():
                where = _where(needle, final)
                found = any(needle in h.text for h in index.search(query, limit=8))
                searchable[name] = found
                if where:
                    facts[name] = f"in context ({where})"
                elif found:
                    facts[name] = "retrievable"
                else:
                    facts[name] = "LOST"
        finally:
            index.close()
        window_obj = agent.context.window
        return {
            "steps": result.steps,
            "stop_reason": result.stop_reason.value,
            "seconds": elapsed,
            "managed_tokens": sum(sent),
            "naive_tokens": sum(naive),
            "largest_request": max(sent),
            "naive_largest": max(naive),
            "usable_window": window_obj.usable_tokens,
            "rebuild_budget": window_obj.rebuild_budget,
            "rebuilds": len(agent.context.rebuilds),
            "checkpoint_requests": len(
                [m for m in sink.messages if isinstance(m, CheckpointRequest)]
            ),
            "checkpoints_written": len(
                [m for m in sink.messages if isinstance(m, CheckpointWritten)]
            ),
            "checkpoint_model_calls": cp_calls,
            "facts": facts,
            "searchable": searchable,
        }


def _naive_sizes(events: list[Any], first: list[dict[str, Any]], tools_len: int) -> list[int]:
    """Request sizes had nothing ever left the context: the first request's messages plus
    every assistant turn and tool result since, counted as the server counts them; a request
    goes out once a turn's last tool result is in."""
    length = _json_len(first)
    sizes = [math.ceil((length + tools_len) / 4)]
    pending = 0
    for body in events:
        if isinstance(body, AssistantMessage):
            message: dict[str, Any] = {"role": "assistant", "content": body.text or None}
            if body.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in body.tool_calls
                ]
            length += len(json.dumps(message)) + 2
            pending = len(body.tool_calls)
            if pending == 0:
                sizes.append(math.ceil((length + tools_len) / 4))
        elif isinstance(body, ToolFinished):
            result = {"role": "tool", "tool_call_id": body.call_id, "content": body.content}
            length += len(json.dumps(result)) + 2
            pending -= 1
            if pending == 0:
                sizes.append(math.ceil((length + tools_len) / 4))
    return sizes


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="scripted model turns")
    ap.add_argument("--window", type=int, default=64_000, help="the model's context window")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    r = asyncio.run(run(args.steps, args.window, args.seed))
    ratio = r["managed_tokens"] / r["naive_tokens"]
    ok = "ok" if ratio <= 0.40 else "MISSED"
    over = "ok" if r["largest_request"] <= r["usable_window"] else "OVER"
    print(
        f"long session: {r['steps']} steps ({r['stop_reason']}) in {r['seconds']:.1f} s, "
        f"{args.window:,}-token window"
    )
    rows = [
        ("input tokens, managed", f"{r['managed_tokens']:,}", ""),
        ("input tokens, naive transcript", f"{r['naive_tokens']:,}", ""),
        ("managed / naive", f"{ratio:.1%}", f"goal <= 40%: {ok}"),
        ("largest request, managed", f"{r['largest_request']:,}", f"usable window: {over}"),
        ("largest request, naive", f"{r['naive_largest']:,}", ""),
        ("usable window", f"{r['usable_window']:,}", "window - reply reserve"),
        ("rebuild budget", f"{r['rebuild_budget']:,}", "target after a rebuild"),
        ("rebuilds", str(r["rebuilds"]), ""),
        (
            "checkpoints asked / written",
            f"{r['checkpoint_requests']} / {r['checkpoints_written']}",
            f"{r['checkpoint_model_calls']} checkpoint-model calls",
        ),
    ]
    rows += [
        (
            f"fact: {name}",
            state,
            ("memory search finds it; " if r["searchable"][name] else "not in search; ")
            + FACTS[name][0][:32],
        )
        for name, state in r["facts"].items()
    ]
    width = max(len(a) for a, _, _ in rows)
    for a, b, c in rows:
        print(f"  {a:<{width}}  {b:>26}  {c}")
    lost = [n for n, s in r["facts"].items() if s == "LOST"]
    print(
        f"  facts kept: {len(r['facts']) - len(lost)}/{len(r['facts'])}"
        + (f" (lost: {', '.join(lost)})" if lost else "")
    )
    return r


if __name__ == "__main__":
    main()
