"""Skills: real ``SKILL.md`` folders in temporary projects, discovered, listed for the model and
loaded through the ``skill`` tool; the end-to-end test runs ``crew run`` against the scripted
model server and checks that a body reaches the model only after it asked for it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from stagecrew.actors.builder import child_spec, prepare_session
from stagecrew.config import load_config
from stagecrew.skills import discover_skills, shipped_skills_dir
from stagecrew.skills.provider import SkillTools, create, provider_spec, skills_section
from stagecrew.tools.base import ToolContext, ToolResult
from stagecrew.tools.providers import PROVIDERS, ProviderEnv, ToolSet, build_providers


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def skill_md(description: str, body: str, **fields: object) -> str:
    extra = "".join(f"{k}: {json.dumps(v)}\n" for k, v in fields.items())
    return f"---\ndescription: {description}\n{extra}---\n{body}\n"


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    project, home, config = tmp_path / "proj", tmp_path / "home", tmp_path / "config"
    for d in (project, home, config):
        d.mkdir()
    (project / ".git").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("STAGECREW_CONFIG_DIR", str(config))
    return {"project": project, "home": home, "config": config}


def discover(places: dict[str, Path]):  # type: ignore[no-untyped-def]
    return discover_skills(places["project"], user_config_dir=places["config"], home=places["home"])


def call(tools: SkillTools, arguments: dict[str, object]) -> ToolResult:
    ctx = ToolContext(workspace=Path("/"))
    return asyncio.run(tools.call("skill", arguments, ctx))


# -- discovery --------------------------------------------------------------------------------


def test_skills_from_every_place_with_precedence(places: dict[str, Path]) -> None:
    p, h, c = places["project"], places["home"], places["config"]
    write(h / ".claude/skills/user-only/SKILL.md", skill_md("From home", "U"))
    write(c / "skills/crew-user/SKILL.md", skill_md("From config", "C"))
    write(h / ".claude/skills/both/SKILL.md", skill_md("User both", "user body"))
    write(p / ".claude/skills/both/SKILL.md", skill_md("Project both", "project body"))
    write(p / ".claude/skills/twice/SKILL.md", skill_md("Claude twice", "claude"))
    write(p / ".stagecrew/skills/twice/SKILL.md", skill_md("Stagecrew twice", "stagecrew"))
    write(p / ".claude/skills/no-skill-file/README.md", "not a skill")
    found = discover(places)
    assert {"user-only", "crew-user", "both", "twice", "review-diff"} <= set(found.skills)
    assert "no-skill-file" not in found.skills
    assert found.skills["both"].body == "project body\n"
    assert found.skills["twice"].body == "stagecrew\n"
    assert (found.skills["user-only"].scope, found.skills["user-only"].origin) == ("user", "claude")
    assert [(lost.description, won.description) for lost, won in found.shadowed] == [
        ("User both", "Project both"),
        ("Claude twice", "Stagecrew twice"),
    ]


def test_front_matter_flags_and_allowed_tools(places: dict[str, Path]) -> None:
    p = places["project"]
    write(
        p / ".claude/skills/folder-name/SKILL.md",
        skill_md(
            "Named",
            "Body",
            name="given-name",
            **{"allowed-tools": "Bash(git diff *), Read", "user-invocable": False},
        ),
    )
    write(
        p / ".claude/skills/manual/SKILL.md",
        skill_md("Only for people", "Body", **{"disable-model-invocation": True}),
    )
    write(p / ".claude/skills/no-front/SKILL.md", "# Does things\n\nBody text.")
    found = discover(places)
    named = found.skills["given-name"]
    assert named.allow_rules == ("allow bash(git diff *)", "allow read")
    assert not named.user_invocable and not named.disable_model_invocation
    assert found.skills["no-front"].description == "Does things"
    model = [s.name for s in found.for_model()]
    person = [s.name for s in found.for_person()]
    assert "manual" not in model and "manual" in person
    assert "given-name" in model and "given-name" not in person
    assert model == sorted(model)


def test_a_broken_skill_is_one_line_and_the_others_load(places: dict[str, Path]) -> None:
    p = places["project"]
    bad = write(p / ".claude/skills/bad/SKILL.md", "---\ndescription: a: b\n---\nBody")
    flag = write(
        p / ".claude/skills/flag/SKILL.md", "---\ndisable-model-invocation: maybe\n---\nBody"
    )
    write(p / ".claude/skills/empty/SKILL.md", "---\ndescription: nothing\n---\n")
    write(p / ".claude/skills/good/SKILL.md", skill_md("Good", "Body"))
    found = discover(places)
    assert "good" in found.skills and not {"bad", "flag", "empty"} & set(found.skills)
    lines = [str(problem) for problem in found.problems]
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    assert any(line.startswith(f"{bad}: invalid YAML frontmatter") for line in lines)
    assert f"{flag}: field 'disable-model-invocation': must be true or false" in "".join(lines)


def test_the_shipped_skill_is_found_and_packaged() -> None:
    shipped = shipped_skills_dir()
    assert shipped is not None and (shipped / "review-diff" / "SKILL.md").is_file()
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert (
        '"stagecrew.configs.skills" = ["**/*"]' in pyproject and '"stagecrew.skills"' in pyproject
    )


# -- what the model sees ----------------------------------------------------------------------


def test_only_names_and_descriptions_reach_the_system_prompt(places: dict[str, Path]) -> None:
    p = places["project"]
    write(p / ".claude/skills/zeta/SKILL.md", skill_md("Last one", "ZETA BODY"))
    write(p / ".claude/skills/alpha/SKILL.md", skill_md("First one", "ALPHA BODY"))
    write(
        p / ".claude/skills/hidden/SKILL.md",
        skill_md("Not for the model", "HIDDEN", **{"disable-model-invocation": True}),
    )
    spec = provider_spec(discover(places).for_model())
    assert spec is not None and spec.kind == "skills" and spec.kind in PROVIDERS
    section = skills_section([spec])
    assert "- alpha: First one" in section and "- zeta: Last one" in section
    assert section.index("- alpha") < section.index("- review-diff") < section.index("- zeta")
    assert "BODY" not in section and "hidden" not in section
    assert skills_section([]) == ""


def test_the_skill_tool_loads_a_body_and_files_inside_its_folder_only(
    places: dict[str, Path], tmp_path: Path
) -> None:
    folder = places["project"] / ".claude/skills/deploy"
    write(
        folder / "SKILL.md",
        skill_md(
            "Deploys", "Read reference.md, then deploy.", **{"allowed-tools": "Bash(make deploy *)"}
        ),
    )
    write(folder / "reference.md", "THE REFERENCE")
    write(folder / "scripts/check.sh", "echo ok")
    write(tmp_path / "outside.txt", "OUTSIDE")
    (folder / "escape").symlink_to(tmp_path)
    (folder / "inner-link.md").symlink_to(folder / "reference.md")
    spec = provider_spec(discover(places).for_model())
    assert spec is not None
    env = ProviderEnv(session="s", actor_id="a", workspace=str(places["project"]))
    tools = asyncio.run(create(spec, env))
    [tool] = tools.specs()
    assert tool.name == "skill" and tool.read_only
    assert "deploy" in tool.parameters["properties"]["name"]["enum"]

    body = call(tools, {"name": "deploy"})
    assert not body.is_error
    assert "Read reference.md, then deploy." in body.content
    assert "reference.md" in body.content and "scripts/check.sh" in body.content
    assert body.metadata["allow_rules"] == ["allow bash(make deploy *)"]

    assert call(tools, {"name": "deploy", "file": "reference.md"}).content == "THE REFERENCE"
    assert call(tools, {"name": "deploy", "file": "inner-link.md"}).content == "THE REFERENCE"
    for escape in ("../../../outside.txt", str(tmp_path / "outside.txt"), "escape/outside.txt"):
        refused = call(tools, {"name": "deploy", "file": escape})
        assert refused.is_error and "outside the folder of skill 'deploy'" in refused.content
        assert "OUTSIDE" not in refused.content
    missing = call(tools, {"name": "deploy", "file": "nope.md"})
    assert missing.is_error and "reference.md" in missing.content
    unknown = call(tools, {"name": "nope"})
    assert unknown.is_error and "deploy" in unknown.content
    assert call(tools, {"name": 3}).invalid_arguments


def test_the_builder_wires_the_tool_and_the_section(places: dict[str, Path]) -> None:
    p = places["project"]
    write(p / ".claude/skills/deploy/SKILL.md", skill_md("Deploys the app", "DEPLOY BODY"))
    write(
        p / ".stagecrew/config.json",
        json.dumps({"models": {"primary": {"model": "openai/m", "api_base": "http://x:1"}}}),
    )
    config = load_config(p)
    spec = prepare_session(config, "Ship it.", p).spec
    assert "- deploy: Deploys the app" in spec.system_prompt
    assert "DEPLOY BODY" not in spec.system_prompt
    assert [s.kind for s in spec.providers] == ["skills"]
    assert "skill" in ToolSet([asyncio.run(create(spec.providers[0], None))], spec.tools)  # type: ignore[arg-type]
    # plan mode loads skills too (the skill tool only reads)...
    plan = prepare_session(config, "Plan it.", p, agent="plan").spec
    assert "- deploy: Deploys the app" in plan.system_prompt
    # ...but a profile whose tools leave the skill tool out is not told about skills.
    write(
        p / ".stagecrew/agents/narrow.md",
        "---\ndescription: Narrow.\ntools: [read]\n---\nRead only.\n",
    )
    narrow = prepare_session(config, "Look.", p, agent="narrow").spec
    assert "# Skills" not in narrow.system_prompt
    # A subagent with every tool hears about the skills too.
    child = child_spec(spec, "Look.", "build")
    assert "- deploy: Deploys the app" in child.system_prompt
    # /deploy is the skill as a command: its body is the prompt.
    invoked = prepare_session(config, "/deploy now", p).spec
    assert invoked.prompt == "DEPLOY BODY\n\nARGUMENTS: now"


# -- end to end: progressive disclosure through crew run ----------------------------------------


@pytest.mark.ray
def test_a_skill_body_reaches_the_model_only_after_it_asks(
    ray_head: object, git_repo: Path, tmp_path: Path
) -> None:
    from conftest import crew

    from stagecrew.testing.scripted_llm import ScriptedLLM, message_text

    folder = git_repo / ".claude/skills/release-notes"
    write(
        folder / "SKILL.md",
        skill_md("Write release notes from the git log", "RELEASE-NOTES-BODY: see format.md"),
    )
    write(folder / "format.md", "FORMAT-FILE-CONTENT")
    script = [
        {"tool_calls": [{"name": "skill", "arguments": {"name": "release-notes"}}]},
        {
            "tool_calls": [
                {"name": "skill", "arguments": {"name": "release-notes", "file": "format.md"}}
            ]
        },
        {"text": "Notes written."},
    ]
    with ScriptedLLM(script) as llm:
        write(
            git_repo / ".stagecrew/config.json",
            json.dumps({"models": {"primary": {"model": "openai/m", "api_base": llm.base_url}}}),
        )
        proc = crew("run", "Write the release notes.", cwd=git_repo, env={"HOME": str(tmp_path)})
        requests = list(llm.requests)
    assert proc.returncode == 0, proc.stderr
    first = requests[0]
    system = message_text(first.messages[0])
    assert "- release-notes: Write release notes from the git log" in system
    assert not any("RELEASE-NOTES-BODY" in message_text(m) for m in first.messages)
    assert "skill" in [t["function"]["name"] for t in first.body["tools"]]
    assert "RELEASE-NOTES-BODY" in message_text(requests[1].messages[-1])
    assert "FORMAT-FILE-CONTENT" in message_text(requests[2].messages[-1])
    assert "Notes written." in proc.stdout


async def test_a_loaded_skill_pre_approves_its_allowed_tools(places: dict[str, Path]) -> None:
    """Headless with ``ask`` turned into ``deny``: ``touch`` is refused until the model loads
    a skill whose ``allowed-tools`` name it; a deny rule still wins afterwards."""
    from stagecrew.actors.inprocess import run_agent_inprocess
    from stagecrew.testing.scripted_llm import ScriptedLLM

    p = places["project"]
    write(
        p / ".claude/skills/scaffold/SKILL.md",
        skill_md("Makes files", "Use touch.", **{"allowed-tools": "Bash(touch *)"}),
    )

    def touch(name: str) -> dict[str, object]:
        return {"tool_calls": [{"name": "bash", "arguments": {"command": f"touch {name}"}}]}

    script = [
        touch("before.txt"),
        {"tool_calls": [{"name": "skill", "arguments": {"name": "scaffold"}}]},
        touch("after.txt"),
        touch("blocked.txt"),
        {"text": "done"},
    ]
    with ScriptedLLM(script) as llm:
        write(
            p / ".stagecrew/config.json",
            json.dumps(
                {
                    "models": {"primary": {"model": "openai/m", "api_base": llm.base_url}},
                    "ask_policy": "deny",
                    "permissions": ["ask bash(touch *)", "deny bash(touch blocked.txt)"],
                }
            ),
        )
        spec = prepare_session(load_config(p), "Scaffold.", p).spec
        env = ProviderEnv(session=spec.session, actor_id=spec.actor_id, workspace=str(p))
        providers, _ = await build_providers(spec.providers, env)
        result, _ = await run_agent_inprocess(spec, providers=providers)
    assert result.stop_reason.value == "done", result.error
    assert not (p / "before.txt").exists()
    assert (p / "after.txt").exists()
    assert not (p / "blocked.txt").exists()
