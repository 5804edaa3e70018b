"""Max Mode with real Ray: candidate actors in real git worktrees, real verification commands,
the scripted model playing every candidate (one queue per candidate model) and the judge."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import crew, follow, git, marked_pids, wait_for

from stagecrew.messages import ActorFinished, CandidateFinished, SessionFinished
from stagecrew.testing.scripted_llm import ScriptedLLM
from stagecrew.tools.snapshots import diff_since, encode_patch

pytestmark = pytest.mark.ray

BUGGY = "def mean(values):\n    return sum(values) / (len(values) + 1)\n"
TEST = (
    "import unittest\nfrom stats import mean\n\n"
    "class T(unittest.TestCase):\n"
    "    def test_mean(self):\n        self.assertEqual(mean([2, 4, 6]), 4)\n"
)
UNITTEST = f"{sys.executable} -m unittest -q"
PROMPT = "Fix the failing test."
RIGHT = "len(values)"  # mean([2, 4, 6]) == 4: passes
RIGHT_TOO = "max(len(values), 1)"  # also passes, a different patch
WRONG = "(len(values) - 1)"  # 6: fails
WRONG_TOO = "(len(values) + 2)"  # 2.4: fails


@pytest.fixture
def buggy_repo(git_repo: Path) -> Path:
    (git_repo / "stats.py").write_text(BUGGY)
    (git_repo / "test_stats.py").write_text(TEST)
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-q", "-m", "buggy")
    return git_repo


def fix(replacement: str, **extra: object) -> list[dict[str, object]]:
    """A candidate's script: one edit, then a final message."""
    edit = {
        "name": "edit",
        "arguments": {
            "file_path": "stats.py",
            "old_string": "(len(values) + 1)",
            "new_string": replacement,
        },
    }
    return [{"tool_calls": [edit], **extra}, {"text": f"Used {replacement}."}]


def model(llm: ScriptedLLM, name: str) -> dict[str, object]:
    return {"model": f"openai/{name}", "api_base": llm.base_url, "num_retries": 0}


def start_max(
    repo: Path, llm: ScriptedLLM, candidates: list[str], policy: str = "best"
) -> tuple[Any, str]:
    """Start a Max Mode session through the control channel, as ``crew run --max`` does, but
    with one model (so one scripted queue) per candidate."""
    from stagecrew.actors.builder import prepare_session
    from stagecrew.config import load_config
    from stagecrew.orchestrator import runtime

    cfg = {
        "models": {"primary": model(llm, "primary"), "judge": model(llm, "judge")},
        "verify_commands": [UNITTEST],
    }
    (repo / ".stagecrew").mkdir(exist_ok=True)
    (repo / ".stagecrew" / "config.json").write_text(json.dumps(cfg))
    config = load_config(repo)
    prepared = prepare_session(config, PROMPT, repo)
    client = runtime.connect()
    reply = client.call(
        "start_max_session",
        spec=prepared.spec.model_dump(mode="json"),
        credentials=prepared.credentials,
        config=config.public_dict(),
        limits=config.limits.session_limits(),
        max={
            "n": len(candidates),
            "policy": policy,
            "candidate_models": [model(llm, name) for name in candidates],
            "verify_commands": config.verify_commands,
        },
    )
    return client, reply["session"]


def report(repo: Path, sid: str) -> dict[str, Any]:
    return json.loads(
        (repo / ".stagecrew" / "state" / "sessions" / sid / "maxmode.json").read_text()
    )


def bodies(events: list[Any], cls: type) -> list[Any]:
    return [e.body for e in events if isinstance(e.body, cls)]


def assert_worktrees_cleaned(repo: Path) -> None:
    listed = git(repo, "worktree", "list", "--porcelain")
    assert [line for line in listed.splitlines() if line.startswith("worktree ")] == [
        f"worktree {repo.resolve()}"
    ]
    assert git(repo, "for-each-ref", "refs/stagecrew/worktrees/") == ""
    assert not any((repo / ".stagecrew" / "state" / "worktrees").glob("*/*"))


def assert_applied_exactly(repo: Path, result: dict[str, Any]) -> bytes:
    """The change to the person's tree since the rewind snapshot is the winner's patch, byte
    for byte (the patch as the coordinator took it from the winner's worktree)."""
    winner = next(c for c in result["candidates"] if c["actor_id"] == result["winner"])
    patch = Path(winner["patch_file"]).read_bytes()
    assert patch and encode_patch(diff_since(repo, result["snapshot_id"])) == patch
    assert result["applied"] and result["exact"]
    return patch


def test_winner_is_always_a_passing_candidate(ray_head: object, buggy_repo: Path) -> None:
    script = {
        "cand-a": fix(WRONG),
        "cand-b": fix(RIGHT),
        "cand-c": fix(RIGHT_TOO),
        # Two candidates pass with different patches: the judge compares them, shuffled and
        # unnamed, and picks whatever it was shown second.
        "judge": [{"text": json.dumps({"winner": "B", "ranking": ["B", "A"], "reason": "B."})}],
    }
    with ScriptedLLM(script) as llm:
        client, sid = start_max(buggy_repo, llm, ["cand-a", "cand-b", "cand-c"])
        events = follow(client, sid)
        judge_requests = [r.body for r in llm.chat_requests if r.model == "judge"]

    result = report(buggy_repo, sid)
    ids = {c["model"]: c["actor_id"] for c in result["candidates"]}
    passing = {ids["openai/cand-b"], ids["openai/cand-c"]}
    finished = {c.actor_id: c for c in bodies(events, CandidateFinished)}
    assert {i for i, c in finished.items() if c.passed} == passing
    assert all(c.usage.total_tokens > 0 for c in finished.values())
    assert result["any_passed"] and result["judged"]
    assert set(result["shown_order"]) == passing  # the failing one was never in contention
    assert result["winner"] == result["shown_order"][1]
    assert bodies(events, SessionFinished)[0].stop_reason == "done"

    # The judge saw the passing patches under neutral labels, never ids or model names.
    (request,) = judge_requests
    prompt = request["messages"][-1]["content"]
    assert request["temperature"] == 0
    assert '<candidate label="A">' in prompt and '<candidate label="B">' in prompt
    assert WRONG not in prompt and "cand-" not in prompt and sid not in prompt

    patch = assert_applied_exactly(buggy_repo, result)
    replacement = RIGHT if result["winner"] == ids["openai/cand-b"] else RIGHT_TOO
    assert f"+    return sum(values) / {replacement}".encode() in patch
    check = subprocess.run(UNITTEST.split(), cwd=buggy_repo, capture_output=True)
    assert check.returncode == 0
    for cand in result["candidates"]:
        assert cand["total_tokens"] > 0 and cand["cost_usd"] >= 0 and cand["steps"] == 2
    assert_worktrees_cleaned(buggy_repo)


def test_all_failing_applies_the_judges_choice_and_says_so(
    ray_head: object, buggy_repo: Path
) -> None:
    script = {
        "cand-a": fix(WRONG),
        "cand-b": fix(WRONG_TOO),
        "judge": [{"text": json.dumps({"winner": "A", "reason": "A is closer."})}],
    }
    with ScriptedLLM(script) as llm:
        client, sid = start_max(buggy_repo, llm, ["cand-a", "cand-b"])
        events = follow(client, sid)

    result = report(buggy_repo, sid)
    assert not result["any_passed"] and result["judged"]
    assert result["winner"] == result["shown_order"][0]
    assert not any(c.passed for c in bodies(events, CandidateFinished))
    finished = bodies(events, SessionFinished)[0]
    assert finished.stop_reason == "error"
    assert "No candidate passed verification" in (finished.error or "")
    assert result["winner"] in (finished.error or "") and result["snapshot_id"] in finished.error
    assert "No candidate passed verification" in result["reason"]
    assert_applied_exactly(buggy_repo, result)
    assert_worktrees_cleaned(buggy_repo)


def test_first_pass_cancels_the_others(ray_head: object, buggy_repo: Path) -> None:
    marker = f"sc-slow-sleep-{time.monotonic_ns()}"
    slow = f"(exec -a {marker} sleep 300) & echo started; wait"
    script = {
        # The slow one (started first, so it gets a warm host) starts a long job at once; the
        # fast one needs a moment to think, so the job is surely running when it passes.
        "cand-fast": fix(RIGHT, delay=2.0),
        "cand-slow": [
            {"tool_calls": [{"name": "bash", "arguments": {"command": slow, "timeout": 600000}}]}
        ],
    }
    with ScriptedLLM(script) as llm:
        client, sid = start_max(buggy_repo, llm, ["cand-slow", "cand-fast"], policy="first-pass")
        wait_for(lambda: marked_pids(marker), timeout=60)
        actors = {a["model"]: a for a in client.call("ps", session=sid)["actors"]}
        slow_actor = actors["openai/cand-slow"]
        [sleep_pid] = marked_pids(marker)
        assert psutil.pid_exists(slow_actor["pid"]) and psutil.pid_exists(sleep_pid)
        events = follow(client, sid)

    result = report(buggy_repo, sid)
    fast_id = actors["openai/cand-fast"]["actor_id"]
    assert result["winner"] == fast_id and result["any_passed"] and not result["judged"]
    slow_report = next(c for c in result["candidates"] if c["actor_id"] != fast_id)
    assert slow_report["cancelled_by_policy"] and not slow_report["passed"]
    stops = {f.actor_id: f.stop_reason for f in bodies(events, ActorFinished)}
    assert stops == {fast_id: "done", slow_actor["actor_id"]: "cancelled"}
    assert bodies(events, SessionFinished)[0].stop_reason == "done"
    # The cancelled candidate's process and its tool's process are gone.
    wait_for(
        lambda: not psutil.pid_exists(slow_actor["pid"]) and not psutil.pid_exists(sleep_pid),
        timeout=10,
    )
    assert_applied_exactly(buggy_repo, result)
    assert_worktrees_cleaned(buggy_repo)


def test_crew_run_max_flag(ray_head: object, buggy_repo: Path) -> None:
    """The command line: ``--max 2`` with one model for both candidates; the same patch twice
    needs no judge call, and the json result carries each candidate's tokens and cost."""
    edit = fix(RIGHT)[0]
    script = [{**edit, "when": {"contains": PROMPT}, "repeat": 2}, {"text": "Fixed.", "repeat": 2}]
    (buggy_repo / ".stagecrew").mkdir()
    (buggy_repo / ".stagecrew" / "config.json").write_text(
        json.dumps({"verify_commands": [UNITTEST]})
    )
    with ScriptedLLM(script) as llm:
        proc = crew(
            "run",
            PROMPT,
            "--model",
            "openai/s",
            "--api-base",
            llm.base_url,
            "--max",
            "2",
            "--output-format",
            "json",
            cwd=buggy_repo,
        )
        assert llm.exhausted == 0
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["success"] and result["stop_reason"] == "done"
    max_mode = result["max_mode"]
    assert max_mode["n"] == 2 and max_mode["any_passed"] and not max_mode["judged"]
    assert [c["passed"] for c in max_mode["candidates"]] == [True, True]
    assert all(c["total_tokens"] > 0 and "cost_usd" in c for c in max_mode["candidates"])
    assert result["usage"]["total_tokens"] >= sum(c["total_tokens"] for c in max_mode["candidates"])
    assert "/ len(values)" in (buggy_repo / "stats.py").read_text()
    assert_worktrees_cleaned(buggy_repo)


def test_cancelling_the_session_applies_nothing(ray_head: object, buggy_repo: Path) -> None:
    marker = f"sc-cand-sleep-{time.monotonic_ns()}"
    slow = f"(exec -a {marker} sleep 300) & echo started; wait"
    job = {"tool_calls": [{"name": "bash", "arguments": {"command": slow, "timeout": 600000}}]}
    with ScriptedLLM({"cand-a": [job], "cand-b": [job]}) as llm:
        client, sid = start_max(buggy_repo, llm, ["cand-a", "cand-b"])
        wait_for(lambda: len(marked_pids(marker)) == 2, timeout=60)
        pids = marked_pids(marker)
        client.call("cancel", target=sid)
        events = follow(client, sid)

    result = report(buggy_repo, sid)
    assert bodies(events, SessionFinished)[0].stop_reason == "cancelled"
    assert not result["applied"] and result["winner"] is None and result["snapshot_id"] is None
    assert (buggy_repo / "stats.py").read_text() == BUGGY
    wait_for(lambda: not any(psutil.pid_exists(p) for p in pids))
    assert_worktrees_cleaned(buggy_repo)


def test_crew_run_max_with_a_model_per_candidate(ray_head: object, buggy_repo: Path) -> None:
    """``models.candidates`` in the config: each candidate runs on its own model (here two
    scripted models, one right and one wrong); the passing one is applied."""
    (buggy_repo / ".stagecrew").mkdir()
    with ScriptedLLM({"cand-a": [*fix(RIGHT)], "cand-b": [*fix(WRONG)]}) as llm:
        base = {"api_base": llm.base_url, "num_retries": 0}
        cfg = {
            "models": {
                "primary": {"model": "openai/unused", **base},
                "candidates": [
                    {"model": "openai/cand-a", **base},
                    {"model": "openai/cand-b", **base},
                ],
            },
            "verify_commands": [UNITTEST],
        }
        (buggy_repo / ".stagecrew" / "config.json").write_text(json.dumps(cfg))
        proc = crew("run", PROMPT, "--max", "2", "--output-format", "json", cwd=buggy_repo)
        served = {r.model for r in llm.chat_requests}
    assert proc.returncode == 0, proc.stderr
    assert served == {"cand-a", "cand-b"}
    result = json.loads(proc.stdout)
    assert [c["passed"] for c in result["max_mode"]["candidates"]].count(True) == 1
    assert "/ len(values)" in (buggy_repo / "stats.py").read_text()
    assert_worktrees_cleaned(buggy_repo)
