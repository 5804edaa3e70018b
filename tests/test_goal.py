"""The ``/goal`` gate through the real agent loop and a real judge actor.

What is real: the judge is the session's ``JudgeHost`` actor, created by the supervisor's
``service()``; the agent and the judge reach the scripted model through the gateway actor and
litellm; verification commands run read-only (bwrap or a copy) in a real git repository; every
event goes to the supervisor's log. Most tests run the agent loop in this test's process with
a gate built here, so each case can set its own goal policy; ``test_crew_run_goal_through_the
_host`` drives ``crew run --goal`` through the real AgentHost actor. Attaching this process to
Ray costs about a second, once for the module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import follow, git, start_session

from stagecrew.actors.agent import Agent
from stagecrew.actors.builder import prepare_session
from stagecrew.actors.goal import GoalGate, GoalSpec
from stagecrew.actors.spec import AgentResult
from stagecrew.config import load_config
from stagecrew.messages import JudgeVerdict, ModelUsage, Notice, StopReason
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.ray

BUGGY = "def mean(values):\n    return sum(values) / (len(values) + 1)\n"
TEST = (
    "import unittest\nfrom stats import mean\n\n"
    "class T(unittest.TestCase):\n"
    "    def test_mean(self):\n        self.assertEqual(mean([2, 4, 6]), 4)\n"
)
UNITTEST = f"{sys.executable} -m unittest -q"


@pytest.fixture(scope="module")
def ray_handles(ray_head: object) -> Iterator[tuple[Any, Any]]:
    """This process attached to the test head: the supervisor and the gateway actors."""
    import ray

    from stagecrew.orchestrator import runtime
    from stagecrew.orchestrator.hosts import SUPERVISOR_NAME, gateway_name

    record = runtime.read_record()
    assert record is not None
    ray.init(
        address=record.gcs_address,
        namespace="stagecrew",
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level=logging.ERROR,
        configure_logging=False,
    )
    try:
        node = ray.get_runtime_context().get_node_id()
        yield (
            ray.get_actor(SUPERVISOR_NAME, namespace="stagecrew"),
            ray.get_actor(gateway_name(node), namespace="stagecrew"),
        )
    finally:
        ray.shutdown()


def tool(name: str, **arguments: object) -> dict[str, object]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def verdict(met: bool, reason: str, missing: list[str] | None = None) -> str:
    return json.dumps({"met": met, "impossible": False, "reason": reason, "missing": missing or []})


def config(llm: ScriptedLLM, verify: list[str] | None = None) -> dict[str, object]:
    spec = {"api_base": llm.base_url, "num_retries": 0}
    return {
        "models": {
            "primary": {"model": "openai/agent", **spec},
            "judge": {"model": "openai/judge", **spec},
        },
        "verify_commands": verify or [],
    }


async def run_goal(
    handles: tuple[Any, Any],
    repo: Path,
    llm: ScriptedLLM,
    goal: GoalSpec,
    prompt: str = "Fix mean() in stats.py.",
) -> tuple[AgentResult, list[Any]]:
    """One agent run under ``goal`` in a real session; its result and the session's log."""
    from stagecrew.orchestrator.agent_host import Outbox, RayModelPort
    from stagecrew.orchestrator.eventlog import session_dir
    from stagecrew.orchestrator.judge_host import RayJudgePort

    supervisor, gateway = handles
    # An interactive session with no prompt stays open without a primary agent of its own.
    client, sid = start_session(
        repo, "", {}, config_json=config(llm, goal.verify_commands), interactive=True
    )
    spec = prepare_session(load_config(repo), prompt, repo, session_id=sid).spec
    spec = spec.model_copy(update={"session_dir": str(session_dir(repo, sid))})
    judge = await supervisor.service.remote(sid, "judge", spec.role_models["judge"])
    outbox = Outbox(supervisor, sid, spec.actor_id)
    gate = GoalGate(goal, RayJudgePort(judge), outbox, actor_id=spec.actor_id)
    agent = Agent(spec, RayModelPort(gateway), outbox, goal_gate=gate)
    result = await agent.run()
    await outbox.close()
    client.call("end_session", session=sid)  # type: ignore[attr-defined]
    events = await asyncio.to_thread(follow, client, sid)
    return result, [e.body for e in events]


def verdicts(events: list[Any]) -> list[JudgeVerdict]:
    return [e for e in events if isinstance(e, JudgeVerdict)]


def queue(llm: ScriptedLLM, name: str) -> list[dict[str, Any]]:
    return [r.body for r in llm.chat_requests if r.model == name]


@pytest.fixture
def buggy_repo(git_repo: Path) -> Path:
    (git_repo / "stats.py").write_text(BUGGY)
    (git_repo / "test_stats.py").write_text(TEST)
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "buggy")
    return git_repo


async def test_premature_stop_is_caught_by_a_failing_check_whatever_the_model_says(
    ray_handles: tuple[Any, Any], buggy_repo: Path
) -> None:
    script = {
        "agent": [
            {"text": "Done: mean() is fixed."},  # claims success without touching the file
            {
                "when": {"contains": "Verification failed"},
                **tool(
                    "edit",
                    file_path="stats.py",
                    old_string="(len(values) + 1)",
                    new_string="len(values)",
                ),
            },
            {"text": "Fixed mean(); the tests pass now."},
        ],
        # A judge model that rubber-stamps everything: only execution evidence stops it.
        "judge": [{"text": verdict(True, "Looks done to me."), "repeat": "forever"}],
    }
    goal = GoalSpec(condition="test_stats passes", verify_commands=[UNITTEST])
    with ScriptedLLM(script) as llm:
        result, events = await run_goal(ray_handles, buggy_repo, llm, goal)
        agent_requests, judge_requests = queue(llm, "agent"), queue(llm, "judge")

    assert result.stop_reason == StopReason.GOAL_MET, result
    rounds = verdicts(events)
    assert [(v.round, v.met, v.source) for v in rounds] == [
        (1, False, "execution"),
        (2, True, "model"),
    ]
    assert "FAILED (exit 1)" in rounds[0].reason and UNITTEST in rounds[0].reason
    # The model was not asked while the check failed: its "met" never got a say.
    assert len(judge_requests) == 1
    judge_prompt = judge_requests[0]["messages"][-1]["content"]
    assert "passed (exit 0)" in judge_prompt and "+    return sum(values) / len(values)" in (
        judge_prompt
    )
    assert judge_requests[0]["temperature"] == 0
    # The agent was sent back with the failing command and its output.
    feedback = agent_requests[1]["messages"][-1]
    assert feedback["role"] == "user" and "The goal is not met yet" in feedback["content"]
    assert "AssertionError" in feedback["content"] or "FAILED" in feedback["content"]
    assert "/ len(values)" in (buggy_repo / "stats.py").read_text()
    # The judge's model usage is accounted under the judge actor.
    assert any(isinstance(e, ModelUsage) and e.actor_id.endswith("-judge") for e in events)


async def test_not_met_sends_the_agent_back_then_met(
    ray_handles: tuple[Any, Any], git_repo: Path
) -> None:
    missing = "a CHANGELOG.md entry describing the change"
    script = {
        "agent": [
            {"text": "All done."},
            {
                "when": {"contains": "The goal is not met yet"},
                **tool("write", file_path="CHANGELOG.md", content="- Documented the repo.\n"),
            },
            {"text": "Added the changelog entry."},
        ],
        "judge": [
            {"text": verdict(False, "The diff has no changelog entry.", [missing])},
            {
                "when": {"contains": "CHANGELOG.md"},
                "text": "```json\n" + verdict(True, "CHANGELOG.md now has the entry.") + "\n```",
            },
        ],
    }
    goal = GoalSpec(condition="CHANGELOG.md records the change")
    with ScriptedLLM(script) as llm:
        result, events = await run_goal(ray_handles, git_repo, llm, goal, "Document it.")
        agent_requests, judge_requests = queue(llm, "agent"), queue(llm, "judge")

    assert result.stop_reason == StopReason.GOAL_MET, result
    assert [(v.met, v.source) for v in verdicts(events)] == [(False, "model"), (True, "model")]
    feedback = agent_requests[1]["messages"][-1]["content"]
    assert "The diff has no changelog entry." in feedback and f"- {missing}" in feedback
    assert "11 judge round(s) left" in feedback
    # Each round the judge saw the real diff: no changelog the first time, the new file the
    # second; never the session's own log (the state directory is ignored).
    first, second = (r["messages"][-1]["content"] for r in judge_requests)
    assert "CHANGELOG" not in first.split("<diff>")[1].split("</diff>")[0]
    assert "+- Documented the repo." in second
    assert ".stagecrew/state" not in first + second
    assert result.summary == "Added the changelog entry."


async def test_rounds_exhausted(ray_handles: tuple[Any, Any], git_repo: Path) -> None:
    script = {
        "agent": [{"text": "Done."}, {"text": "Really done now."}, {"text": "unreachable"}],
        "judge": [{"text": verdict(False, "Nothing was changed."), "repeat": "forever"}],
    }
    goal = GoalSpec(condition="README.md mentions the license", max_rounds=2)
    with ScriptedLLM(script) as llm:
        result, events = await run_goal(ray_handles, git_repo, llm, goal, "Mention it.")
        assert len(queue(llm, "judge")) == 2 and len(queue(llm, "agent")) == 2

    assert result.stop_reason == StopReason.JUDGE_ROUNDS_EXHAUSTED, result
    assert result.error and "after 2 judge round(s)" in result.error
    assert "Nothing was changed." in result.error
    assert [v.round for v in verdicts(events)] == [1, 2]


@pytest.mark.parametrize(
    ("policy", "reason"),
    [("retry_then_stop", StopReason.ERROR), ("retry_then_allow", StopReason.DONE)],
)
async def test_judge_model_error_follows_the_policy(
    ray_handles: tuple[Any, Any],
    git_repo: Path,
    policy: str,
    reason: StopReason,
) -> None:
    script = {
        "agent": [{"text": "Done."}],
        "judge": [{"status": 500, "error_message": "judge backend exploded", "repeat": "forever"}],
    }
    goal = GoalSpec(condition="anything", error_policy=policy, retries=1)  # type: ignore[arg-type]
    with ScriptedLLM(script) as llm:
        result, events = await run_goal(ray_handles, git_repo, llm, goal, "Do it.")
        assert len(queue(llm, "judge")) == 2  # one call and one retry, then the policy

    assert result.stop_reason == reason, result
    (ruling,) = verdicts(events)
    assert ruling.source == "policy" and "failed 2 time(s)" in ruling.reason
    assert "500" in ruling.reason or "exploded" in ruling.reason
    warnings = [e.text for e in events if isinstance(e, Notice) and e.level == "warning"]
    if policy == "retry_then_stop":
        assert not ruling.met and result.error and "failed 2 time(s)" in result.error
        assert not any("goal NOT verified" in w for w in warnings)
    else:
        # Allowed to stop, but never reported as a met goal, and never silently.
        assert ruling.met and result.error is None
        assert any("goal NOT verified" in w and "retry_then_allow" in w for w in warnings)


def test_goal_travels_in_the_spec_once_agentspec_carries_it(git_repo: Path) -> None:
    """The ``--goal`` plumbing against the field the lead adds (``AgentSpec.goal_spec``)."""
    from stagecrew.actors.goal import with_goal
    from stagecrew.actors.spec import AgentSpec
    from stagecrew.cli.runner import _with_goal

    class SpecWithGoal(AgentSpec):
        goal_spec: GoalSpec | None = None

    (git_repo / ".stagecrew").mkdir()
    (git_repo / ".stagecrew" / "config.json").write_text(
        json.dumps(
            {
                "models": {"primary": {"model": "openai/x", "api_base": "http://127.0.0.1:9/v1"}},
                "verify_commands": ["make test"],
            }
        )
    )
    cfg = load_config(git_repo)
    base = prepare_session(cfg, "Work.", git_repo).spec
    spec = _with_goal(SpecWithGoal.model_validate(base.model_dump()), "  all tests pass ", cfg)
    assert spec.goal_spec == GoalSpec(condition="all tests pass", verify_commands=["make test"])
    wire = SpecWithGoal.model_validate_json(spec.model_dump_json())
    assert wire.goal_spec == spec.goal_spec
    if "goal_spec" not in AgentSpec.model_fields:  # not integrated yet: refused, not dropped
        with pytest.raises(RuntimeError, match="goal_spec"):
            with_goal(base, spec.goal_spec)


def test_crew_run_goal_through_the_host(ray_head: object, buggy_repo: Path) -> None:
    """``crew run --goal``: the AgentHost builds the gate, the judge actor verifies with the
    configured test command; a stop before the fix is sent back, the stop after it is met."""
    from conftest import crew

    edit = {"file_path": "stats.py", "old_string": "(len(values) + 1)", "new_string": "len(values)"}
    script = {
        "agent": [
            {"text": "Looks done to me."},  # premature: the test command still fails
            {"tool_calls": [{"name": "edit", "arguments": edit}]},
            {"text": "Fixed mean()."},
        ],
        "judge": [{"text": json.dumps({"met": True, "reason": "tests pass", "missing": []})}],
    }
    with ScriptedLLM(script) as llm:
        (buggy_repo / ".stagecrew").mkdir(exist_ok=True)
        cfg = config(llm, [UNITTEST])
        (buggy_repo / ".stagecrew" / "config.json").write_text(json.dumps(cfg))
        proc = crew(
            "run",
            "Fix mean().",
            "--goal",
            "the unit tests pass",
            "--output-format",
            "json",
            cwd=buggy_repo,
        )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["stop_reason"] == "goal_met"
    assert result["turns"] == 3
