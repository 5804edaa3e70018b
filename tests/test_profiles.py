"""Agent profiles: the shipped ones, precedence, and errors that name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagecrew.profiles import (
    AgentProfile,
    ProfileError,
    discover_profiles,
    load_profile,
    shipped_agents_dir,
)
from stagecrew.tools.permissions import DEFAULT_RULES, PermissionChecker, Rule, combine_layers


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.md"
    path.write_text(text)
    return path


GOOD = """---
description: Reviews diffs
role: subagent
tools: [read, grep, Bash]
permissions:
  - deny bash(git push *)
max_steps: 30
read_only: true
temperature: 0.2
---
You review code.

Be brief.
"""


# -- shipped profiles ----------------------------------------------------------------------------


def test_shipped_dir_is_found_next_to_the_package() -> None:
    directory = shipped_agents_dir()
    assert directory is not None
    assert directory == Path(__file__).resolve().parent.parent / "stagecrew" / "configs" / "agents"


def test_shipped_build_profile() -> None:
    build = load_profile(shipped_agents_dir() / "build.md")  # type: ignore[operator]
    assert build.name == "build"
    assert build.tools == "*"
    assert build.allows_tool("apply_patch") and build.allows_tool("bash")
    assert not build.read_only
    assert build.permissions == []
    prompt = build.system_prompt.lower()
    for idea in ("read a file before", "run the relevant tests", "minimal", "when you are done"):
        assert idea in prompt, idea
    assert len((shipped_agents_dir() / "build.md").read_text().splitlines()) < 60  # type: ignore[operator]


def test_shipped_plan_profile(tmp_path: Path) -> None:
    plan = load_profile(shipped_agents_dir() / "plan.md")  # type: ignore[operator]
    assert plan.read_only is True
    assert plan.tools == ["read", "ls", "glob", "grep", "webfetch", "todo", "bash", "skill"]
    assert not plan.allows_tool("write") and not plan.allows_tool("edit")
    assert ".stagecrew/plans/" in plan.system_prompt
    assert len((shipped_agents_dir() / "plan.md").read_text().splitlines()) < 60  # type: ignore[operator]
    # Its rules, layered over the defaults, deny every writing tool wherever it points.
    checker = PermissionChecker(
        combine_layers({"defaults": DEFAULT_RULES, "agent": plan.permissions})
    )
    for tool in ("write", "edit", "apply_patch"):
        decision = checker.check(tool, {"file_path": "src/a.py", "patch": ""}, tmp_path)
        assert decision.action == "deny", tool
    assert checker.check("read", {"file_path": "src/a.py"}, tmp_path).action == "allow"


# -- loading -------------------------------------------------------------------------------------


def test_load_profile_fields(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, "reviewer", GOOD))
    assert profile == AgentProfile(
        name="reviewer",
        description="Reviews diffs",
        role="subagent",
        tools=["read", "grep", "bash"],
        permissions=["deny bash(git push *)"],
        max_steps=30,
        read_only=True,
        temperature=0.2,
        system_prompt="You review code.\n\nBe brief.\n",
        source=tmp_path / "reviewer.md",
    )
    assert profile.permission_rules() == [Rule("deny", "bash", "git push *", "agent")]


def test_minimal_profile_defaults(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, "tiny", "---\ndescription: d\n---\nHello\n"))
    assert profile.tools == "*" and profile.permissions == [] and profile.model is None
    assert profile.max_steps is None and profile.read_only is False and profile.role is None


def test_model_string_and_tool_star_list(tmp_path: Path) -> None:
    text = "---\ndescription: d\nmodel: anthropic/claude-sonnet-4-5\ntools: ['*']\n---\nP\n"
    profile = load_profile(write(tmp_path, "m", text))
    assert profile.model == "anthropic/claude-sonnet-4-5" and profile.tools == "*"


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("no frontmatter\n", None, "missing YAML frontmatter"),
        ("---\ndescription: d\nPrompt\n", None, "unterminated YAML frontmatter"),
        ("---\ndescription: [unclosed\n---\nP\n", None, "invalid YAML frontmatter"),
        ("---\n- a\n- b\n---\nP\n", None, "must be a mapping"),
        ("---\nrole: primary\n---\nP\n", "description", "Field required"),
        ("---\ndescription: d\n---\n\n   \n", None, "body (system prompt) is empty"),
        ("---\ndescription: d\nrole: boss\n---\nP\n", "role", "primary"),
        ("---\ndescription: d\nmax_steps: 0\n---\nP\n", "max_steps", "greater than 0"),
        ("---\ndescription: d\nmax_steps: lots\n---\nP\n", "max_steps", "integer"),
        ("---\ndescription: d\ntemperature: 7\n---\nP\n", "temperature", "less than or equal"),
        ("---\ndescription: d\nread_only: perhaps\n---\nP\n", "read_only", "boolean"),
        ("---\ndescription: d\ntools: [read, 3]\n---\nP\n", "tools", "non-empty strings"),
        ("---\ndescription: d\ntools: 5\n---\nP\n", "tools", "list of tool names or '*', got 5"),
        ("---\ndescription: d\npermissions: [permit read]\n---\nP\n", "permissions", "permit"),
        ("---\ndescription: d\npermissions: 5\n---\nP\n", "permissions", "list of rule strings"),
        ("---\ndescription: d\nmodle: x\n---\nP\n", "modle", "unknown field"),
        ("---\ndescription: d\nname: other\n---\nP\n", "name", "set by the loader"),
        ("---\ndescription: d\nmodel: a/b\nrole: judge\n---\nP\n", None, "not both"),
        ("---\ndescription: d\nmodel: ''\n---\nP\n", "model", "litellm model string"),
    ],
)
def test_malformed_profiles_name_file_and_field(
    text: str, field: str | None, fragment: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "broken", text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert fragment in message
    if field is not None:
        assert info.value.field == field
        assert f"field '{field}'" in message


def test_unreadable_profile(tmp_path: Path) -> None:
    path = tmp_path / "bin.md"
    path.write_bytes(b"---\ndescription: \xff\xfe\n---\nx")
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(path)


# -- discovery -----------------------------------------------------------------------------------


def test_discover_precedence(tmp_path: Path) -> None:
    user = tmp_path / "user"
    project = tmp_path / "project"
    write(user / "agents", "build", "---\ndescription: user build\n---\nU\n")
    write(user / "agents", "reviewer", "---\ndescription: user reviewer\n---\nU\n")
    write(
        project / ".stagecrew" / "agents", "reviewer", "---\ndescription: proj reviewer\n---\nP\n"
    )
    write(project / ".stagecrew" / "agents", "docs", "---\ndescription: proj docs\n---\nP\n")
    (project / ".stagecrew" / "agents" / "notes.txt").write_text("not a profile")

    profiles = discover_profiles(project, user)
    assert set(profiles) >= {"build", "plan", "reviewer", "docs"}
    assert profiles["plan"].read_only  # shipped, untouched
    assert profiles["build"].description == "user build"  # user overrides shipped
    assert profiles["reviewer"].description == "proj reviewer"  # project overrides user
    assert profiles["docs"].source == project / ".stagecrew" / "agents" / "docs.md"


def test_discover_without_user_dir_or_project_agents(tmp_path: Path) -> None:
    profiles = discover_profiles(tmp_path, None)
    assert {"build", "plan"} <= set(profiles)
    assert discover_profiles(tmp_path, tmp_path / "missing").keys() == profiles.keys()


def test_a_broken_project_profile_stops_discovery(tmp_path: Path) -> None:
    bad = write(
        tmp_path / ".stagecrew" / "agents", "oops", "---\ndescription: d\ntools: 5\n---\nP\n"
    )
    with pytest.raises(ProfileError) as info:
        discover_profiles(tmp_path, None)
    assert str(bad) in str(info.value)
