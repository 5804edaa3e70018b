"""``@name`` asks the agent to hand the work to that subagent (Claude Code's ``@agent-name``);
file references and e-mail addresses are left alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagecrew.actors.builder import prepare_session
from stagecrew.actors.mentions import agent_mentions, with_delegation
from stagecrew.config import load_config


def test_mentions_are_agents_not_files_or_addresses(tmp_path: Path) -> None:
    (tmp_path / "reviewer").mkdir()
    agents = ["reviewer", "tester", "docs"]
    text = "@tester and @agent-reviewer, mail bob@docs.org, see @reviewer and @tester again"
    assert agent_mentions(text, agents, tmp_path) == ["tester", "reviewer"]
    assert agent_mentions("see @reviewer/notes.md", agents, tmp_path) == []
    assert agent_mentions("@nobody here", agents, tmp_path) == []
    assert with_delegation("hi", []) == "hi"
    assert "subagent_type 'tester'" in with_delegation("hi", ["tester"])


def test_the_builder_adds_the_hand_over_for_claude_agents_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STAGECREW_CONFIG_DIR", str(tmp_path / "cfg"))
    (tmp_path / ".claude" / "agents").mkdir(parents=True)
    (tmp_path / ".claude" / "agents" / "reviewer.md").write_text(
        "---\nname: reviewer\ndescription: Reviews diffs.\n---\nYou review.\n"
    )
    (tmp_path / ".stagecrew").mkdir()
    (tmp_path / ".stagecrew" / "config.json").write_text(
        json.dumps({"models": {"primary": {"model": "openai/m", "api_base": "http://x:1"}}})
    )
    config = load_config(tmp_path)
    prepared = prepare_session(config, "@reviewer look at the diff, not @plan", tmp_path)
    assert prepared.mentions == ["reviewer"]
    assert prepared.spec.prompt.startswith("@reviewer look at the diff, not @plan\n\n")
    assert "subagent_type 'reviewer'" in prepared.spec.prompt
    plain = prepare_session(config, "look at the diff", tmp_path)
    assert plain.mentions == [] and plain.spec.prompt == "look at the diff"
