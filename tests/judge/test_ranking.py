"""Max Mode selection: verification first, a shuffled side-by-side judge, smallest-patch ties."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stagecrew.judge.ranking import Candidate, label_for, select_winner
from stagecrew.judge.verify import CheckResult, run_verification
from stagecrew.tools.snapshots import diff_since, encode_patch
from stagecrew.tools.worktrees import WorktreeManager, apply_patch_to

LABELLED = re.compile(r'<candidate label="([A-Z]+)">(.*?)</candidate>', re.DOTALL)


def check(passed: bool) -> CheckResult:
    return CheckResult(
        command="pytest -q",
        exit_code=0 if passed else 1,
        passed=passed,
        output="",
        duration_s=0.1,
        mode="copy",
    )


def make_patch(path: str, added: list[str]) -> str:
    body = "".join(f"+{line}\n" for line in added)
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..1111111\n"
        f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(added)} @@\n{body}"
    )


def cand(cid: str, lines: list[str], passed: bool = True, **kw: Any) -> Candidate:
    return Candidate(id=cid, patch=make_patch(f"{cid}.py", lines), checks=[check(passed)], **kw)


class Judge:
    """Scripted comparison judge: picks a label by a rule applied to what it is shown."""

    def __init__(self, rule: Any) -> None:
        self.rule = rule
        self.prompts: list[list[dict[str, Any]]] = []

    async def __call__(self, messages: list[dict[str, Any]]) -> str:
        self.prompts.append(messages)
        shown = LABELLED.findall(messages[-1]["content"])
        return self.rule(shown)


def first_shown(shown: list[tuple[str, str]]) -> str:
    return json.dumps({"winner": shown[0][0], "reason": "A looks best"})


def by_content(shown: list[tuple[str, str]]) -> str:
    label = next(label for label, body in shown if "BEST" in body)
    others = [lab for lab, _ in shown if lab != label]
    return json.dumps({"winner": label, "ranking": [label, *others], "reason": "handles BEST"})


async def test_single_passing_candidate_wins_without_the_judge() -> None:
    judge = Judge(first_shown)
    sel = await select_winner(
        [cand("a", ["x"], passed=False), cand("b", ["y", "z"]), Candidate(id="c", error="boom")],
        judge,
        seed=1,
    )
    assert sel.winner == "b" and sel.any_passed and not sel.judged
    assert sel.ranked == ["b", "a", "c"]
    assert judge.prompts == []


async def test_position_bias_is_cancelled_by_shuffling() -> None:
    pool = [cand("a", ["one"]), cand("b", ["two"]), cand("c", ["three", "BEST"])]
    biased: set[str] = set()
    fair: set[str] = set()
    for seed in range(24):
        sel = await select_winner(pool, Judge(first_shown), seed=seed)
        assert sel.judged and sel.winner == sel.shown_order[0]
        biased.add(sel.winner or "")
        fair.add((await select_winner(pool, Judge(by_content), seed=seed)).winner or "")
    assert biased == {"a", "b", "c"}, "a first-position judge wins with whoever is shown first"
    assert fair == {"c"}, "a judge that reads the content picks the same patch for every seed"


async def test_shuffle_depends_on_seed_not_input_order() -> None:
    pool = [cand("a", ["1"]), cand("b", ["2"]), cand("c", ["3"])]
    one = await select_winner(pool, Judge(first_shown), seed=7)
    two = await select_winner(list(reversed(pool)), Judge(first_shown), seed=7)
    assert one.shown_order == two.shown_order and one.winner == two.winner


async def test_judge_sees_labels_not_ids_or_models() -> None:
    judge = Judge(by_content)
    pool = [
        cand("cand-alpha", ["q"], model="big-model"),
        cand("cand-beta", ["BEST"], model="small-model"),
    ]
    sel = await select_winner(pool, judge, seed=3, task="implement the feature")
    prompt = judge.prompts[0][-1]["content"]
    assert "big-model" not in prompt and "small-model" not in prompt
    assert "cand-alpha" not in prompt.replace("cand-alpha.py", "")
    assert "implement the feature" in prompt
    assert sel.winner == "cand-beta" and "handles BEST" in sel.reason
    assert sel.ranked == ["cand-beta", "cand-alpha"]


async def test_invalid_pick_and_judge_failure_fall_back_to_smallest_patch() -> None:
    pool = [cand("big", ["1", "2", "3"]), cand("small", ["1"]), cand("mid", ["1", "2"])]
    sel = await select_winner(pool, Judge(lambda shown: '{"winner": "Q", "reason": "?"}'), seed=0)
    assert sel.winner == "small" and not sel.judged
    assert "not one of the candidates" in sel.reason
    assert sel.ranked == ["small", "mid", "big"]

    calls = 0

    async def broken(_: list[dict[str, Any]]) -> str:
        nonlocal calls
        calls += 1
        raise ConnectionError("gateway down")

    sel = await select_winner(pool, broken, seed=0, retries=1)
    assert sel.winner == "small" and not sel.judged and "gateway down" in sel.reason
    assert calls == 2


async def test_tie_goes_to_smaller_patch_by_lines_then_bytes() -> None:
    tie = Judge(lambda shown: '```json\n{"winner": "tie", "reason": "both fine"}\n```')
    pool = [cand("wordy", ["a much longer line here"]), cand("terse", ["short"])]
    sel = await select_winner(pool, tie, seed=5)
    assert sel.winner == "terse" and sel.judged and "tie" in sel.reason
    pool = [cand("two", ["a", "b"]), cand("one", ["a much longer line than both of those"])]
    assert (await select_winner(pool, tie, seed=5)).winner == "one"


async def test_no_candidate_passed_judge_picks_among_non_empty_patches() -> None:
    judge = Judge(by_content)
    pool = [
        cand("a", ["x"], passed=False),
        cand("b", ["BEST"], passed=False),
        Candidate(id="empty", patch="", checks=[check(True)]),
        Candidate(id="crashed", error="model refused"),
    ]
    sel = await select_winner(pool, judge, seed=2)
    assert sel.winner == "b" and not sel.any_passed and sel.judged
    assert "No candidate passed verification" in sel.reason
    assert sel.ranked[:2] == ["b", "a"] and set(sel.ranked[2:]) == {"empty", "crashed"}
    shown = LABELLED.findall(judge.prompts[0][-1]["content"])
    assert len(shown) == 2 and all("FAILED (exit 1)" in body for _, body in shown)


async def test_nothing_to_choose() -> None:
    sel = await select_winner(
        [Candidate(id="a"), Candidate(id="b", error="x")], Judge(first_shown), seed=0
    )
    assert sel.winner is None and not sel.any_passed and sel.ranked == ["a", "b"]


async def test_identical_patches_are_shown_once() -> None:
    judge = Judge(first_shown)
    same = make_patch("f.py", ["same"])
    pool = [
        Candidate(id="x", patch=same, checks=[check(True)], cost_usd=0.5),
        Candidate(id="y", patch=same, checks=[check(True)], cost_usd=0.1),
        cand("z", ["other"]),
    ]
    await select_winner(pool, judge, seed=0)
    assert len(LABELLED.findall(judge.prompts[0][-1]["content"])) == 2
    only_same = await select_winner(pool[:2], judge, seed=0)
    assert only_same.winner == "y", "same patch: the cheaper run represents it"
    assert len(judge.prompts) == 1


async def test_helpers_and_validation() -> None:
    assert [label_for(i) for i in (0, 1, 25, 26, 27)] == ["A", "B", "Z", "AA", "AB"]
    with pytest.raises(ValueError, match="unique"):
        await select_winner([Candidate(id="a"), Candidate(id="a")], Judge(first_shown), seed=0)


def run_git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


async def test_max_mode_end_to_end(tmp_path: Path) -> None:
    """Three candidates in real worktrees, real verification, selection, byte-exact apply."""
    repo = tmp_path / "person"
    repo.mkdir()
    run_git(repo, "init", "-q")
    run_git(repo, "config", "user.name", "P")
    run_git(repo, "config", "user.email", "p@example.com")
    (repo / "calc.py").write_text("def add(a, b):\n    raise NotImplementedError\n")
    (repo / "test_calc.py").write_text(
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-qm", "init")
    (repo / "NOTES.md").write_text("person's untracked notes\n")

    solutions = {
        "wrong": "def add(a, b):\n    return a - b\n",
        "verbose": "def add(a, b):\n    result = a\n    result += b\n    return result\n",
        "neat": "def add(a, b):\n    return a + b  # BEST\n",
    }
    mgr = WorktreeManager(repo, tmp_path / "wt")
    test_cmd = f"{sys.executable} -m pytest -q -p no:cacheprovider"
    candidates = []
    try:
        for cid, source in solutions.items():
            wt = mgr.create(cid)
            (wt / "calc.py").write_text(source)
            checks = run_verification([test_cmd], wt, timeout_s=60)
            candidates.append(Candidate(id=cid, patch=mgr.patch(wt), checks=checks))
        assert [c.passed for c in candidates] == [False, True, True]
        sel = await select_winner(candidates, Judge(by_content), seed=11, task="implement add")
        assert sel.winner == "neat" and sel.any_passed and sel.ranked[-1] == "wrong"
        winner = next(c for c in candidates if c.id == sel.winner)
        result = apply_patch_to(repo, winner.patch)
        assert result.exact
        assert encode_patch(diff_since(repo, result.snapshot_id or "")) == encode_patch(
            winner.patch
        )
        assert (repo / "calc.py").read_text() == solutions["neat"]
        assert (repo / "NOTES.md").exists()
    finally:
        mgr.cleanup()
    assert run_git(repo, "worktree", "list").count("\n") == 1


async def test_binary_hunks_are_not_shown_to_the_judge(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    run_git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    run_git(repo, "add", "-A")
    run_git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "i")
    mgr = WorktreeManager(repo, tmp_path / "wt")
    try:
        patches = []
        for name in ("one", "two"):
            wt = mgr.create(name)
            (wt / f"{name}.bin").write_bytes(bytes(range(256)) * 20)
            (wt / "a.txt").write_text(f"a\n{name}\n")
            patches.append(Candidate(id=name, patch=mgr.patch(wt), checks=[check(True)]))
    finally:
        mgr.cleanup()
    judge = Judge(first_shown)
    await select_winner(patches, judge, seed=0)
    prompt = judge.prompts[0][-1]["content"]
    assert all("GIT binary patch" in c.patch for c in patches)
    assert "GIT binary patch" not in prompt and prompt.count("(binary content omitted)") == 2
    assert "+one" in prompt and "+two" in prompt
