"""``/memory`` in the chat: the instruction files the next run reads, in prompt order, with
what each is, problems with them in one line each, and where memory lives."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagecrew.cli.chat import COMMANDS, memory_lines, parse_command


def test_memory_lists_sources_in_prompt_order_with_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, project = tmp_path / "home", tmp_path / "proj"
    (home / ".claude").mkdir(parents=True)
    (project / ".git").mkdir(parents=True)
    monkeypatch.setenv("STAGECREW_CONFIG_DIR", str(tmp_path / "cfg"))
    (home / ".claude" / "CLAUDE.md").write_text("Answer briefly.\n")
    (project / "AGENTS.md").write_text("Use make.\nSee @docs/style.md and @gone.md\n")
    (project / "docs").mkdir()
    (project / "docs" / "style.md").write_text("Tabs.\n")
    lines = memory_lines(project, home=home)
    text = "\n".join(lines)
    assert parse_command("/memory") is not None and "/memory" in COMMANDS
    order = [text.index(s) for s in ("~/.claude/CLAUDE.md", "AGENTS.md", "docs/style.md")]
    assert order == sorted(order)
    assert "imported by AGENTS.md" in text
    assert sum("gone.md" in line for line in lines) == 1  # the missing import, one line
    assert "project: " in text and "MEMORY.md" in text and "not written yet" in text
