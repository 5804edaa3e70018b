"""The goal judge end to end: real checks in a real repo, a scripted judge model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from stagecrew.judge.judge import GoalLoop, Judge
from stagecrew.judge.verdict import Verdict

PYTEST = f"{sys.executable} -m pytest -q -p no:cacheprovider"
MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "make add() correct"},
    {"role": "assistant", "content": "Done: add() is fixed."},
]


class Scripted:
    """A judge model that replies from a script and records what it was asked."""

    def __init__(self, *replies: str | Exception) -> None:
        self.replies = list(replies)
        self.calls: list[list[dict[str, Any]]] = []

    async def __call__(self, messages: list[dict[str, Any]]) -> str:
        self.calls.append(messages)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def met_json(met: bool, **extra: Any) -> str:
    return json.dumps({"met": met, "reason": "because of the diff", **extra})


@pytest.fixture
def project(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (ws / "test_calc.py").write_text(
        "from calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run(["git", "add", "-A"], cwd=ws, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "init"],
        cwd=ws,
        check=True,
    )
    return ws


def fix(project: Path) -> None:
    (project / "calc.py").write_text("def add(a, b):\n    return a + b\n")


async def test_failing_check_overrules_the_model_without_asking_it(project: Path) -> None:
    model = Scripted(met_json(True))
    judge = Judge(model, verify_commands=[PYTEST], timeout_s=60)
    verdict = await judge.evaluate("tests pass", MESSAGES, project, "all tests pass now")
    assert verdict.source == "execution" and not verdict.met and not verdict.impossible
    assert PYTEST in verdict.reason and "exit 1" in verdict.reason
    assert "assert -1 == 5" in verdict.reason, "the output tail is part of the feedback"
    assert verdict.missing == [f"`{PYTEST}` must pass"]
    assert model.calls == [], "execution failure needs no model round-trip"


async def test_passing_checks_then_the_model_rules(project: Path) -> None:
    fix(project)
    model = Scripted("```json\n" + met_json(True, evidence=["calc.py diff"]) + "\n```")
    judge = Judge(model, verify_commands=[PYTEST], timeout_s=60)
    verdict = await judge.evaluate("tests pass", MESSAGES, project, "fixed")
    assert verdict.met and verdict.source == "model"
    assert verdict.evidence[0] == "calc.py diff"
    assert any("passed (exit 0)" in e for e in verdict.evidence)
    [prompt] = model.calls
    user = prompt[1]["content"]
    assert "+    return a + b" in user, "the model sees the real diff"
    assert "1 passed" in user, "and the judge's own check output"


async def test_model_may_still_say_not_met_after_checks_pass(project: Path) -> None:
    fix(project)
    model = Scripted(met_json(False, missing=["a docstring for add()"]))
    judge = Judge(model, verify_commands=[PYTEST], timeout_s=60)
    verdict = await judge.evaluate("tests pass and add() is documented", MESSAGES, project, None)
    assert not verdict.met and verdict.missing == ["a docstring for add()"]


async def test_extra_commands_from_the_goal_run_too(project: Path) -> None:
    fix(project)
    judge = Judge(Scripted(met_json(True)), verify_commands=[PYTEST], timeout_s=60)
    verdict = await judge.evaluate(
        "tests pass", MESSAGES, project, None, extra_commands=["grep -q docstring calc.py", PYTEST]
    )
    assert verdict.source == "execution" and "grep -q docstring calc.py" in verdict.reason
    assert f"`{PYTEST}` passed" in " ".join(verdict.evidence)


async def test_bad_reply_is_retried_with_the_parse_error(project: Path) -> None:
    fix(project)
    model = Scripted("I think it's fine!", met_json(True))
    verdict = await Judge(model, timeout_s=10).evaluate("x", MESSAGES, project, None)
    assert verdict.met and len(model.calls) == 2
    retry = model.calls[1]
    assert retry[-2] == {"role": "assistant", "content": "I think it's fine!"}
    assert "no JSON object found" in retry[-1]["content"]


@pytest.mark.parametrize(
    ("policy", "met", "impossible"),
    [("retry_then_stop", False, True), ("retry_then_allow", True, False)],
)
async def test_error_policy_is_never_silent(
    project: Path, policy: str, met: bool, impossible: bool
) -> None:
    model = Scripted(TimeoutError("gateway timed out"), '{"met": "maybe", "reason": "?"}', "")
    judge = Judge(model, timeout_s=10, error_policy=policy, retries=2)  # type: ignore[arg-type]
    verdict = await judge.evaluate("x", MESSAGES, project, None)
    assert len(model.calls) == 3
    assert verdict.source == "policy"
    assert (verdict.met, verdict.impossible) == (met, impossible)
    assert "gateway timed out" in verdict.reason
    assert "field 'met'" in verdict.reason and "empty reply" in verdict.reason
    assert policy in verdict.reason


def test_judge_validates_its_configuration() -> None:
    async def complete(_: list[dict[str, Any]]) -> str:
        return ""

    fn: Callable[[list[dict[str, Any]]], Awaitable[str]] = complete
    with pytest.raises(ValueError):
        Judge(fn, error_policy="shrug")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Judge(fn, retries=-1)


def test_goal_loop_actions_and_feedback() -> None:
    loop = GoalLoop("tests pass", max_rounds=3)
    not_met = Verdict(
        met=False,
        reason="`pytest` FAILED (exit 1)",
        missing=["`pytest` must pass"],
        source="execution",
    )
    assert loop.next_action(not_met) == "continue"
    feedback = loop.feedback_message(not_met)
    assert "Goal: tests pass" in feedback and "`pytest` FAILED" in feedback
    assert "- `pytest` must pass" in feedback and "2 judge round(s) left" in feedback
    assert "a verification command failed" in feedback
    assert loop.next_action(not_met) == "continue"
    assert loop.next_action(not_met) == "stop_rounds_exhausted"

    loop = GoalLoop("x", max_rounds=3)
    impossible = Verdict(met=False, impossible=True, reason="needs a network", source="model")
    assert loop.next_action(impossible) == "stop_impossible"
    loop = GoalLoop("x", max_rounds=1)
    assert loop.next_action(Verdict(met=True, reason="ok")) == "stop_goal_met", (
        "a met goal on the last round is met, not exhausted"
    )
    assert GoalLoop("x").max_rounds == 12
