"""A decision stated as such ("Decision: …") reaches the checkpoint's Decisions section
whether or not the writer's model kept it, once, and only from the agent's or the person's
words (a tool's output saying "Decision:" is not one)."""

from __future__ import annotations

from stagecrew.memory.checkpoint import extract_decisions, update_checkpoint
from stagecrew.memory.layers import Checkpoint

MESSAGES = [
    {"role": "user", "content": "- **Decided**: ship on Friday"},
    {
        "role": "assistant",
        "content": "Reading.\nDecision: keep the CSV column order frozen for the nightly job.",
    },
    {"role": "tool", "tool_call_id": "c1", "content": "Decision: a log line, not a decision"},
    {"role": "assistant", "content": "The decision: was hard to make."},
]


def test_stated_decisions_are_found_in_order_and_only_there() -> None:
    assert extract_decisions(MESSAGES) == [
        "ship on Friday",
        "keep the CSV column order frozen for the nightly job",
    ]


def test_the_writer_keeps_them_when_its_model_left_them_out() -> None:
    output = "## Active intent\n\nx\n\n## Next action\n\nRun the job.\n"
    merged, problem = update_checkpoint(Checkpoint.parse(""), MESSAGES, "Fix the job.", output)
    assert problem is None
    decisions = merged.get("Decisions")
    assert "- keep the CSV column order frozen for the nightly job" in decisions
    assert "- ship on Friday" in decisions
    again, _ = update_checkpoint(merged, MESSAGES, "Fix the job.", None)  # the fallback path
    assert again.get("Decisions").count("ship on Friday") == 1
