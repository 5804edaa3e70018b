"""Context rebuild: budget property over random conversations, pairing, masking, sections."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest

from stagecrew.memory.context import (
    CONTEXT_MARKER,
    ContextBudgetError,
    ContextInputs,
    RebuildConfig,
    RebuildResult,
    fit_ledger,
    fit_markdown,
    fit_notes,
    gather_inputs,
    rebuild_context,
    should_checkpoint,
    should_rebuild,
)
from stagecrew.memory.index import MemoryIndex
from stagecrew.memory.instructions import load_instructions
from stagecrew.memory.layers import Checkpoint, MemoryPaths, ProjectMemoryWriter, append_note
from stagecrew.memory.messages import group_messages
from stagecrew.memory.tasks import TaskLedger
from stagecrew.memory.tokens import (
    CalibratedCounter,
    ContextWindow,
    EstimateCounter,
    TokenCounter,
)

SYSTEM = "You are stagecrew, a coding agent. Be precise. " * 5
MASK = re.compile(r"^\[tool output of .+ masked: [\d,]+ chars; archived, search memory for it\]$")
_WORD_TEXT = "the parser fails on src/app.py:42 when --strict is set so we retry with PORT=8080 and"
WORDS = _WORD_TEXT.split()


class JsonLengthCounter:
    """A deliberately non-additive counter: whole-list JSON length / 3, plus a flat 17.

    Real counters (litellm's) are not sums of per-message counts either; the rebuild must
    hold the budget under whatever the counter says about the whole list.
    """

    def count_text(self, text: str) -> int:
        return math.ceil(len(text) / 3)

    def count_messages(self, messages: list[dict[str, Any]]) -> int:
        if not messages:
            return 0
        return 17 + math.ceil(len(json.dumps(messages)) / 3)


def text(rng: random.Random, lo: int, hi: int) -> str:
    n = rng.randint(lo, hi)
    out: list[str] = []
    size = 0
    while size < n:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
        if rng.random() < 0.08:
            out.append("\n")
    return " ".join(out)[:n]


def random_conversation(rng: random.Random, turns: int) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    cid = 0
    for _ in range(turns):
        r = rng.random()
        if r < 0.25:
            body = text(rng, 5, 60_000 if rng.random() < 0.03 else 2_500)
            if rng.random() < 0.1:
                msgs.append({"role": "user", "content": [{"type": "text", "text": body}]})
            else:
                msgs.append({"role": "user", "content": body})
        elif r < 0.6:
            calls = []
            for _ in range(rng.randint(1, 3)):
                cid += 1
                name = rng.choice(["read", "bash", "grep"])
                args = {"path": f"src/m{cid}.py"} if name == "read" else {"command": "pytest -q"}
                calls.append(
                    {
                        "id": f"call_{cid}",
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args)},
                    }
                )
            content = text(rng, 0, 300) or None
            msgs.append({"role": "assistant", "content": content, "tool_calls": calls})
            answered = calls if rng.random() > 0.05 else calls[:-1]  # sometimes interrupted
            for call in answered:
                out = text(rng, 0, 12_000 if rng.random() < 0.2 else 1_500)
                msgs.append({"role": "tool", "tool_call_id": call["id"], "content": out})
        elif r < 0.63:
            msgs.append({"role": "tool", "tool_call_id": "ghost", "content": "orphan"})
        else:
            msgs.append({"role": "assistant", "content": text(rng, 1, 1_200)})
    return msgs


def random_inputs(rng: random.Random, conv: list[dict[str, Any]]) -> ContextInputs:
    cp = Checkpoint()
    cp.set_active_intent("Fix the parser crash on `src/app.py:42` and keep --strict working.")
    cp.set("Next action", "Run `pytest -q tests/test_parser.py` after the fix.")
    cp.set(
        "Discovered knowledge", "\n".join(f"- fact {i}: {text(rng, 20, 120)}" for i in range(60))
    )
    cp.set("Files touched", "\n".join(f"- src/m{i}.py" for i in range(40)))
    notes = "# Notes\n\n" + "\n\n".join(
        f"## 2025-01-0{i % 9 + 1}\n\n{text(rng, 50, 400)}" for i in range(20)
    )
    ledger = "\n".join(f"- [{rng.choice('x~ !-')}] T{i} task {i}" for i in range(1, 40))
    return ContextInputs(
        system_prompt=SYSTEM,
        instructions="# AGENTS.md\n\n## Style\n\n" + text(rng, 100, 3000),
        task_ledger=ledger,
        checkpoint=cp.render(),
        project_memory="# Project memory\n\n## Rules\n\n- always run ruff\n\n"
        + "## Durable knowledge\n\n"
        + text(rng, 0, 4000),
        global_memory="## Rules\n\n- prefer small diffs",
        notes=notes,
        messages=conv,
    )


def check_invariants(
    inputs: ContextInputs,
    result: RebuildResult,
    budget: int,
    counter: TokenCounter,
    config: RebuildConfig,
) -> None:
    out = result.messages
    assert counter.count_messages(out) <= budget
    assert result.tokens == counter.count_messages(out)
    assert out[0] == {"role": "system", "content": SYSTEM}
    conv = [m for m in inputs.messages]
    tail = [m for m in out[1:] if not str(m.get("content") or "").startswith(("[stagecrew:",))]

    # tool calls and all their results stay together, in order, and no tool message is orphaned
    originals = {id(g.messages[0]): g for g in group_messages(conv)}
    i = 0
    while i < len(tail):
        m = tail[i]
        assert m.get("role") != "tool", "a tool result without its call"
        group = originals.get(id(m))
        if m.get("tool_calls"):
            assert group is not None
            n = len(group.messages)
            got = tail[i : i + n]
            assert [x.get("tool_call_id") for x in got[1:]] == [
                x.get("tool_call_id") for x in group.messages[1:]
            ]
            for orig, kept in zip(group.messages[1:], got[1:], strict=True):
                assert kept is orig or MASK.match(kept["content"])
            i += n
        else:
            i += 1

    # the person's last message is always there (verbatim, or shortened with its original archived)
    last_user = next((m for m in reversed(conv) if m.get("role") == "user"), None)
    if last_user is not None:
        if any(m is last_user for m in tail):
            pass
        else:
            assert any(m is last_user for m in result.dropped)
            assert any(
                m.get("role") == "user" and "chars elided to fit the context" in m["content"]
                for m in tail
            )

    # conservation: every conversation message is kept, masked (original dropped), or dropped
    kept_ids = {id(m) for m in tail}
    dropped_ids = {id(m) for m in result.dropped}
    dropped_copies = [m for m in result.dropped if id(m) not in {id(c) for c in conv}]
    for m in conv:
        if id(m) in kept_ids or id(m) in dropped_ids:
            continue
        # masked: an equal-content copy (with a label name) sits in dropped
        assert m.get("role") == "tool"
        assert any(
            c.get("tool_call_id") == m.get("tool_call_id") and c.get("content") == m["content"]
            for c in dropped_copies
        )
    assert len(result.dropped) == len({id(m) for m in result.dropped})


@pytest.mark.parametrize("seed", range(6))
def test_never_over_budget_random_conversations(seed: int) -> None:
    """Property: for many random conversations and budgets the result fits and is well formed."""
    rng = random.Random(1000 + seed)
    counters = [EstimateCounter(), JsonLengthCounter()]
    cal = CalibratedCounter()
    cal.observe(1000, 700)
    counters.append(cal)
    config = RebuildConfig()
    for case in range(30):
        conv = random_conversation(rng, rng.randint(0, 45))
        inputs = random_inputs(rng, conv)
        counter = counters[case % len(counters)]
        floor = counter.count_messages([{"role": "system", "content": SYSTEM}]) + 60
        budget = rng.choice([floor, floor + 100, 800, 2_000, 6_000, 20_000, 60_000])
        result = rebuild_context(inputs, budget, counter, config)
        check_invariants(inputs, result, budget, counter, config)


def test_deterministic_and_stable_prefix() -> None:
    rng = random.Random(5)
    conv = random_conversation(rng, 30)
    inputs = random_inputs(rng, conv)
    counter = EstimateCounter()
    a = rebuild_context(inputs, 8_000, counter)
    b = rebuild_context(inputs, 8_000, counter)
    assert json.dumps(a.messages) == json.dumps(b.messages)
    # more conversation later: the system + instructions prefix is byte-identical
    inputs.messages = conv + random_conversation(rng, 10)
    c = rebuild_context(inputs, 8_000, counter)
    assert json.dumps(c.messages[:2]) == json.dumps(a.messages[:2])
    assert c.messages[1]["role"] == "system" and "## Style" in c.messages[1]["content"]


def test_layout_and_sections_in_order() -> None:
    rng = random.Random(2)
    inputs = random_inputs(rng, random_conversation(rng, 10))
    out = rebuild_context(inputs, 30_000, EstimateCounter())
    ctx = out.messages[2]
    assert ctx["role"] == "user" and ctx["content"].startswith(CONTEXT_MARKER)
    order = [
        ctx["content"].index(f"<{tag}>")
        for tag in ("task_ledger", "checkpoint", "project_memory", "global_memory", "notes")
    ]
    assert order == sorted(order)
    assert set(out.section_tokens) >= {"instructions", "checkpoint", "notes", "task_ledger"}


def test_tool_call_never_separated_from_results_when_tight() -> None:
    big = "y" * 30_000
    conv = [
        {"role": "user", "content": "look at both files"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "a",
                    "type": "function",
                    "function": {"name": "read", "arguments": '{"path": "a.py"}'},
                },
                {
                    "id": "b",
                    "type": "function",
                    "function": {"name": "read", "arguments": '{"path": "b.py"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "small"},
        {"role": "tool", "tool_call_id": "b", "content": big},
        {"role": "assistant", "content": "done reading"},
    ]
    inputs = ContextInputs(system_prompt=SYSTEM, messages=conv)
    counter = EstimateCounter()
    result = rebuild_context(inputs, 600, counter)
    roles = [m["role"] for m in result.messages]
    # the call group did not fit verbatim, so it is kept with its big output masked
    assert roles == ["system", "user", "user", "assistant", "tool", "tool", "assistant"]
    assert result.messages[1]["content"].startswith(CONTEXT_MARKER)  # notes the archived output
    assert result.messages[4]["content"] == "small"
    assert MASK.match(result.messages[5]["content"])
    assert "read(b.py)" in result.messages[5]["content"]
    archived = [m for m in result.dropped if m.get("tool_call_id") == "b"]
    assert archived[0]["content"] == big and archived[0]["name"] == "read(b.py)"


def test_old_tool_outputs_masked_latest_kept() -> None:
    conv: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for i in range(6):
        conv.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"c{i}",
                        "type": "function",
                        "function": {
                            "name": "bash",
                            "arguments": json.dumps({"command": f"cat f{i}"}),
                        },
                    }
                ],
            }
        )
        conv.append({"role": "tool", "tool_call_id": f"c{i}", "content": f"out{i} " * 200})
    inputs = ContextInputs(system_prompt=SYSTEM, messages=conv)
    result = rebuild_context(inputs, 100_000, EstimateCounter(), RebuildConfig(keep_tool_outputs=2))
    tools = [m for m in result.messages if m["role"] == "tool"]
    assert [bool(MASK.match(m["content"])) for m in tools] == [True] * 4 + [False] * 2
    assert tools[0]["content"] == (
        "[tool output of bash(cat f0) masked: 1,000 chars; archived, search memory for it]"
    )
    assert [m["tool_call_id"] for m in result.dropped] == ["c0", "c1", "c2", "c3"]
    # no memory sections, but the model is still told that outputs were archived
    assert result.messages[1]["content"].startswith(CONTEXT_MARKER)
    assert "4 earlier messages or tool outputs were archived" in result.messages[1]["content"]


def test_last_user_message_kept_even_when_old_and_tail_stops_at_gap() -> None:
    conv = [
        {"role": "user", "content": "first request"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "THE LAST REQUEST: keep --dry-run"},
        {"role": "assistant", "content": "x " * 20_000},  # huge, cannot fit
        {"role": "assistant", "content": "latest small reply"},
    ]
    inputs = ContextInputs(system_prompt=SYSTEM, messages=conv)
    result = rebuild_context(inputs, 400, EstimateCounter())
    tail = result.messages[1:]
    assert conv[2] in tail and tail[-1] is conv[4]
    assert conv[3] in result.dropped and conv[0] in result.dropped and conv[1] in result.dropped


def test_huge_last_message_is_shortened_not_lost() -> None:
    paste = "BEGIN " + "log line\n" * 20_000 + " END"
    conv = [{"role": "user", "content": paste}]
    inputs = ContextInputs(
        system_prompt=SYSTEM, checkpoint="## Active intent\n\n> fix it\n", messages=conv
    )
    result = rebuild_context(inputs, 2_000, EstimateCounter())
    user = result.messages[-1]
    assert user["role"] == "user"
    assert user["content"].startswith("BEGIN ") and user["content"].endswith(" END")
    assert "chars elided to fit the context" in user["content"]
    assert result.dropped == [conv[0]]
    assert result.tokens <= 2_000


def test_active_intent_and_next_action_never_dropped() -> None:
    cp = Checkpoint()
    cp.set_active_intent("Ship the `--offline` mode for crew run")
    cp.set("Next action", "wire the flag into src/cli/main.py")
    for name in ("Discovered knowledge", "Decisions", "Open notes", "Current work"):
        cp.set(name, "\n".join(f"- {name} detail {i} " + "z" * 80 for i in range(100)))
    inputs = ContextInputs(system_prompt=SYSTEM, checkpoint=cp.render())
    for budget in (250, 400, 1_000, 5_000):
        result = rebuild_context(inputs, budget, EstimateCounter())
        ctx = "\n".join(str(m["content"]) for m in result.messages)
        assert "> Ship the `--offline` mode for crew run" in ctx
        assert "wire the flag into src/cli/main.py" in ctx
        assert result.tokens <= budget


def test_system_prompt_over_budget_raises() -> None:
    with pytest.raises(ContextBudgetError):
        rebuild_context(ContextInputs(system_prompt="word " * 1000), 100, EstimateCounter())


def test_previous_rebuild_output_is_not_duplicated() -> None:
    rng = random.Random(9)
    inputs = random_inputs(rng, random_conversation(rng, 20))
    first = rebuild_context(inputs, 10_000, EstimateCounter())
    inputs.messages = [*first.messages, {"role": "user", "content": "continue"}]
    second = rebuild_context(inputs, 10_000, EstimateCounter())
    contexts = [m for m in second.messages if str(m.get("content", "")).startswith(CONTEXT_MARKER)]
    assert len(contexts) == 1
    assert not any(str(m.get("content", "")).startswith("[stagecrew:") for m in second.dropped)


def test_fit_helpers() -> None:
    def count(t: str) -> int:
        return len(t) // 4

    doc = "# T\n\n## Rules\n\n" + "- rule\n" * 50 + "\n## Durable knowledge\n\n" + "- fact\n" * 50
    fitted = fit_markdown(doc, 60, count, {"rules": 9, "durable knowledge": 5}, hint="MEMORY.md")
    assert count(fitted) <= 60
    assert "## Rules" in fitted and "## Durable knowledge" in fitted
    assert fitted.count("- rule") > fitted.count("- fact")
    assert "more lines in MEMORY.md" in fitted
    assert fit_markdown(doc, 10_000, count) == doc  # untouched when it fits

    ledger = "\n".join(
        ["- [x] T1 old done", "- [~] T2 running", "  - [ ] T2.1 next", "- [-] T3 dropped"] * 10
    )
    small = fit_ledger(ledger, 30, count)
    assert "[~] T2 running" in small and "[x]" not in small
    assert "more tasks" in small

    notes = "# Notes\n\n" + "\n\n".join(f"## day {i}\n\nnote {i} " + "w" * 40 for i in range(20))
    kept = fit_notes(notes, 60, count)
    assert "note 19" in kept and "note 0 " not in kept and "older notes" in kept


def test_thresholds_reexported() -> None:
    w = ContextWindow(100_000, 10_000)
    assert should_checkpoint(40_000, w) == 0.4
    assert should_rebuild(85_000, w)


def test_gather_inputs_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root).mkdir()
    (root / "AGENTS.md").write_text("# Agents\n\nUse uv.\n")
    (root / "CLAUDE.md").write_text("# Claude\n\nBe terse.\n")
    text = load_instructions(root, home=tmp_path / "home", config_dir=tmp_path / "cfg").text
    assert text == (
        "Contents of AGENTS.md (project instructions):\n\n# Agents\n\nUse uv.\n\n"
        "Contents of CLAUDE.md (project instructions):\n\n# Claude\n\nBe terse."
    )
    paths = MemoryPaths(root, "s1", tmp_path / "cfg")
    cp = Checkpoint()
    cp.set_active_intent("migrate the billing exporter to parquet")
    cp.set("Next action", "rewrite export_rows")
    cp.save(paths.checkpoint)
    append_note(paths.notes, "parquet needs pyarrow")
    ProjectMemoryWriter(paths.project_memory).save("rules", "never drop the invoices table")
    ledger = TaskLedger(paths.tasks_dir, "lead")
    ledger.create("Port exporter to parquet")
    ledger.start("T1")
    with MemoryIndex(paths.index_db) as index:
        index.archive(
            "s1",
            [
                {"role": "user", "content": "the billing exporter writes CSV via export_rows"},
                {"role": "assistant", "content": "export_rows lives in src/billing/export.py"},
            ],
        )
        index.archive("s0", [{"role": "user", "content": "unrelated gardening chat"}])
        inputs = gather_inputs(paths, [{"role": "user", "content": "go on"}], SYSTEM, index)
    assert "Use uv." in inputs.instructions
    assert "[~] T1 Port exporter to parquet" in inputs.task_ledger
    assert "never drop the invoices table" in inputs.project_memory
    assert any("src/billing/export.py" in h.text for h in inputs.archive_hits)
    assert all("gardening" not in h.text for h in inputs.archive_hits)
    assert all(h.source != str(paths.checkpoint.absolute()) for h in inputs.archive_hits)
    result = rebuild_context(inputs, 6_000, EstimateCounter())
    ctx = result.messages[2]["content"]
    for needle in ("<archive_hits>", "src/billing/export.py", "parquet needs pyarrow", "Use uv."):
        assert needle in ctx or needle in result.messages[1]["content"]


def test_keep_more_outputs_than_exist_masks_nothing() -> None:
    conv = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "bash", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "bash", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "A" * 1000},
        {"role": "tool", "tool_call_id": "b", "content": "B" * 1000},
    ]
    result = rebuild_context(
        ContextInputs(system_prompt=SYSTEM, messages=conv),
        50_000,
        EstimateCounter(),
        RebuildConfig(keep_tool_outputs=5),
    )
    assert result.messages[1:] == conv and result.dropped == []
