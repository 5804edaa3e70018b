"""Claude Code subagents (``.claude/agents/*.md``) as stagecrew agent profiles: translation,
notices, precedence next to stagecrew's own profiles, the ``task`` tool's listing, and one
started through ``task`` for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagecrew.claude import load_claude_agents, parse_claude_agent
from stagecrew.messages import ModelSpecWire
from stagecrew.profiles import (
    ProfileError,
    discover_profile_catalog,
    discover_profiles,
    profile_descriptions,
    profile_dirs,
)
from stagecrew.tools.task import Task

REVIEWER = """---
name: code-reviewer
description: Reviews a diff for bugs. Use after every change.
tools: Read, Grep, Glob, Bash, Edit, MultiEdit, mcp__github__create_review
model: sonnet
color: purple
---
You are a meticulous code reviewer. Report problems, never fix them.
"""


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.md"
    path.write_text(text, encoding="utf-8")
    return path


def agent_text(name: str, description: str, body: str = "Prompt.\n", **fields: str) -> str:
    lines = [f"name: {name}", f"description: {description}"]
    lines += [f"{key}: {value}" for key, value in fields.items()]
    return "---\n" + "\n".join(lines) + "\n---\n" + body


# -- one file --------------------------------------------------------------------------------


def test_a_claude_agent_translates_to_profile_fields(tmp_path: Path) -> None:
    path = tmp_path / "reviewer.md"
    agent, notices = parse_claude_agent(REVIEWER, path)
    assert notices == []  # color is Claude Code's display, read without a word
    assert agent is not None
    assert agent.name == "code-reviewer"  # the name field names it, not the file
    assert agent.description == "Reviews a diff for bugs. Use after every change."
    assert agent.system_prompt == (
        "You are a meticulous code reviewer. Report problems, never fix them.\n"
    )
    assert agent.tools == [
        "read",
        "grep",
        "glob",
        "bash",
        "edit",
        "apply_patch",
        "mcp__github__create_review",
    ]
    assert (agent.role, agent.model, agent.source_model) == ("subagent", None, "sonnet")


@pytest.mark.parametrize(
    ("model", "role", "litellm", "recorded"),
    [
        ("opus", "primary", None, "opus"),
        ("sonnet", "subagent", None, "sonnet"),
        ("haiku", "checkpoint", None, "haiku"),
        ("inherit", None, None, "inherit"),
        ("claude-opus-4-1-20250805", "primary", None, "claude-opus-4-1-20250805"),
        ("claude-3-5-haiku-latest", "checkpoint", None, "claude-3-5-haiku-latest"),
        ("openai/gpt-4.1", None, "openai/gpt-4.1", "openai/gpt-4.1"),
        (None, None, None, None),  # Claude Code's default: the parent's model
    ],
)
def test_model_aliases_map_to_roles(
    tmp_path: Path, model: str | None, role: str | None, litellm: str | None, recorded: str | None
) -> None:
    fields = {} if model is None else {"model": model}
    agent, notices = parse_claude_agent(agent_text("a", "d", **fields), tmp_path / "a.md")
    assert agent is not None and notices == []
    assert (agent.role, agent.model, agent.source_model) == (role, litellm, recorded)


def test_an_unknown_model_alias_is_one_line_and_the_agent_loads(tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    agent, notices = parse_claude_agent(agent_text("a", "d", model="gpt-9-ultra"), path)
    assert agent is not None and agent.role is None and agent.model is None
    assert agent.source_model == "gpt-9-ultra"
    assert len(notices) == 1 and "\n" not in notices[0]
    assert str(path) in notices[0] and "'gpt-9-ultra'" in notices[0]


def test_unknown_and_missing_tools_are_left_out_with_a_notice(tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    text = agent_text("a", "d", tools="Read, Reed, WebSearch, Bash(git diff:*)")
    agent, notices = parse_claude_agent(text, path)
    assert agent is not None and agent.tools == ["read", "bash"]
    assert len(notices) == 3 and all(str(path) in n for n in notices)
    assert any("'Reed': unknown tool" in n for n in notices)
    assert any("'WebSearch': stagecrew has no such tool" in n for n in notices)
    assert any("specifier is ignored" in n for n in notices)


def test_no_tools_field_means_every_tool_and_a_list_works_too(tmp_path: Path) -> None:
    agent, _ = parse_claude_agent(agent_text("a", "d"), tmp_path / "a.md")
    assert agent is not None and agent.tools == "*"
    agent, _ = parse_claude_agent(agent_text("b", "d", tools="[Read, LS]"), tmp_path / "b.md")
    assert agent is not None and agent.tools == ["read", "ls"]


def test_other_fields(tmp_path: Path) -> None:
    text = agent_text(
        "planner",
        "Plans.",
        disallowedTools="Write, Edit",
        maxTurns="12",
        permissionMode="plan",
        memory="project",
    )
    agent, notices = parse_claude_agent(text, tmp_path / "planner.md")
    assert agent is not None
    assert agent.permissions == ["deny write", "deny edit", "deny apply_patch"]
    assert agent.max_steps == 12 and agent.read_only
    assert notices == [f"{tmp_path / 'planner.md'}: not used by stagecrew: memory"]
    assert parse_claude_agent(agent_text("off", "d", disabled="true"), tmp_path / "o.md") == (
        None,
        [],
    )


def test_unusable_files_are_skipped_with_one_line_each(tmp_path: Path) -> None:
    agents = tmp_path / ".claude" / "agents"
    write(agents, "good", agent_text("good", "Works."))
    broken = write(agents, "broken", "---\nname: [unclosed\n---\nBody\n")
    nodesc = write(agents, "nodesc", "---\nname: nodesc\n---\nBody\n")
    empty = write(agents, "empty", "---\nname: empty\ndescription: d\n---\n")
    (agents / "notes.txt").write_text("not an agent")
    found = load_claude_agents(agents)
    assert [a.name for a in found.agents] == ["good"]
    assert len(found.notices) == 3 and all("\n" not in n for n in found.notices)
    for path, words in [
        (broken, "invalid YAML frontmatter"),
        (nodesc, "'description' is required"),
        (empty, "body"),
    ]:
        assert any(str(path) in n and words in n for n in found.notices), path
    assert load_claude_agents(tmp_path / "missing").agents == ()


def test_two_files_naming_the_same_agent(tmp_path: Path) -> None:
    agents = tmp_path / ".claude" / "agents"
    first = write(agents, "a-old", agent_text("dup", "old"))
    second = write(agents, "b-new", agent_text("dup", "new"))
    catalog = discover_profile_catalog(tmp_path, None, home=tmp_path / "home")
    assert catalog.profiles["dup"].description == "new"
    assert catalog.notices == [
        f"{second}: agent 'dup' is also defined in {first}; this file is used"
    ]


# -- next to stagecrew's profiles ------------------------------------------------------------


def test_precedence(tmp_path: Path) -> None:
    project, home, user = tmp_path / "project", tmp_path / "home", tmp_path / "config"
    claude_user, claude_project = home / ".claude" / "agents", project / ".claude" / "agents"
    own_user, own_project = user / "agents", project / ".stagecrew" / "agents"
    # "a": in all four places; the project's stagecrew profile wins.
    write(claude_user, "a", agent_text("a", "claude user"))
    write(own_user, "a", "---\ndescription: stagecrew user\n---\nP\n")
    write(claude_project, "a", agent_text("a", "claude project"))
    write(own_project, "a", "---\ndescription: stagecrew project\n---\nP\n")
    # "b": Claude Code's project agent beats the person's stagecrew profile.
    write(own_user, "b", "---\ndescription: stagecrew user\n---\nP\n")
    write(claude_project, "b", agent_text("b", "claude project"))
    # "c": the person's stagecrew profile beats their Claude Code agent.
    write(claude_user, "c", agent_text("c", "claude user"))
    write(own_user, "c", "---\ndescription: stagecrew user\n---\nP\n")
    # "build": a Claude Code user agent replaces the shipped profile of that name.
    write(claude_user, "builder", agent_text("build", "claude build"))
    catalog = discover_profile_catalog(project, user, home=home)
    described = {name: p.description for name, p in catalog.profiles.items()}
    assert described["a"] == "stagecrew project"
    assert described["b"] == "claude project"
    assert described["c"] == "stagecrew user"
    assert described["build"] == "claude build"
    assert catalog.profiles["plan"].source_format == "stagecrew"  # shipped, untouched
    assert catalog.profiles["b"].source_format == "claude"
    assert catalog.profiles["b"].source == claude_project / "b.md"
    a_chain = [(winner, loser) for name, winner, loser in catalog.overridden if name == "a"]
    assert a_chain[-1] == (own_project / "a.md", claude_project / "a.md")
    assert profile_dirs(project, user, home=home)[1:] == [
        claude_user,
        own_user,
        claude_project,
        own_project,
    ]


def test_a_broken_claude_agent_never_stops_discovery(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bad = write(tmp_path / ".claude" / "agents", "bad", "---\nname: bad\n---\n")
    write(home / ".claude" / "agents", "helper", agent_text("helper", "Helps.", model="gpt-9"))
    catalog = discover_profile_catalog(tmp_path, None, home=home)
    assert "helper" in catalog.profiles and "bad" not in catalog.profiles
    assert catalog.profiles["helper"].source_model == "gpt-9"
    assert len(catalog.notices) == 2 and any(str(bad) in n for n in catalog.notices)
    # A broken stagecrew profile still does stop it (a typo must not widen permissions).
    write(tmp_path / ".stagecrew" / "agents", "oops", "---\ndescription: d\ntools: 5\n---\nP\n")
    with pytest.raises(ProfileError):
        discover_profiles(tmp_path, None, home=home)
    # ...and the task tool still lists the shipped profiles meanwhile.
    assert {"build", "plan"} <= set(profile_descriptions(tmp_path, None, home=home))


def test_child_models(tmp_path: Path) -> None:
    roles = {
        r: ModelSpecWire(model=f"openai/{r}")
        for r in ("primary", "subagent", "judge", "checkpoint", "candidate")
    }
    parent = ModelSpecWire(model="openai/the-parent")
    home = tmp_path / "home"
    claude = home / ".claude" / "agents"
    for alias in ("opus", "sonnet", "haiku", "inherit"):
        write(claude, alias, agent_text(alias, "d", model=alias))
    write(claude, "unset", agent_text("unset", "d"))
    write(
        tmp_path / ".stagecrew" / "agents", "lead", "---\ndescription: d\nrole: primary\n---\nP\n"
    )
    profiles = discover_profiles(tmp_path, None, home=home)

    def child(name: str) -> str:
        return profiles[name].child_model(parent, roles).model

    assert child("opus") == "openai/primary"
    assert child("sonnet") == "openai/subagent"
    assert child("haiku") == "openai/checkpoint"
    assert child("inherit") == "openai/the-parent"
    assert child("unset") == "openai/the-parent"
    # stagecrew's own profiles keep their meaning: role primary is a subagent as a child.
    assert child("lead") == "openai/subagent"
    assert child("build") == "openai/subagent"


def test_the_task_tool_lists_claude_agents_with_their_descriptions(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write(tmp_path / ".claude" / "agents", "reviewer", REVIEWER)
    agents = profile_descriptions(tmp_path, None, home=home)
    assert agents["code-reviewer"] == "Reviews a diff for bugs. Use after every change."
    description = Task(agents).schema()["function"]["description"]
    assert "- code-reviewer: Reviews a diff for bugs. Use after every change." in description
    assert "- build: " in description and "- plan: " in description
    assert "code-reviewer" not in Task().schema()["function"]["description"]


# -- started through task, for real ----------------------------------------------------------


@pytest.mark.ray
def test_a_claude_agent_started_through_task(ray_head: object, git_repo: Path) -> None:
    from conftest import follow, start_session

    from stagecrew.messages import ActorStarted, SessionFinished, ToolFinished
    from stagecrew.testing.scripted_llm import ScriptedLLM

    write(git_repo / ".claude" / "agents", "reviewer", REVIEWER)
    delegate = {
        "name": "task",
        "arguments": {"prompt": "Review the last commit.", "subagent_type": "code-reviewer"},
    }
    script = {
        "root": [{"tool_calls": [delegate]}, {"text": "Reviewed."}],
        "mid": [{"text": "No problems found."}],
    }
    with ScriptedLLM(script) as llm:
        cfg = {
            "models": {
                "primary": {"model": "openai/root", "api_base": llm.base_url},
                "subagent": {"model": "openai/mid", "api_base": llm.base_url},
            }
        }
        client, sid = start_session(git_repo, "Get the commit reviewed.", {}, config_json=cfg)
        events = follow(client, sid)
        child_requests = [r.body for r in llm.requests if r.model == "mid"]
    child = next(
        e.body for e in events if isinstance(e.body, ActorStarted) and e.body.role == "subagent"
    )
    assert child.parent == f"{sid}-primary"
    # `model: sonnet` ran on the subagent model; its first request carries the agent's body as
    # the system prompt and exactly its tools (mapped to stagecrew's names).
    first = child_requests[0]
    system = "\n".join(m["content"] for m in first["messages"] if m["role"] == "system")
    assert "You are a meticulous code reviewer. Report problems, never fix them." in system
    tools = {t["function"]["name"] for t in first.get("tools", [])}
    assert tools == {"read", "grep", "glob", "bash", "edit", "apply_patch"}
    result = next(
        e.body for e in events if isinstance(e.body, ToolFinished) and e.body.tool == "task"
    )
    assert "No problems found." in result.content
    assert next(e.body for e in events if isinstance(e.body, SessionFinished)).stop_reason == "done"
