"""The task ledger on real files: ids, transitions, owners, progress files, rendering."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from stagecrew.memory.tasks import (
    TaskError,
    TaskLedger,
    TaskOwnershipError,
    TaskStatus,
)


@pytest.fixture
def ledger(tmp_path: Path) -> TaskLedger:
    return TaskLedger(tmp_path / "sess" / "tasks", "lead")


def test_tree_ids(ledger: TaskLedger) -> None:
    assert ledger.create("Build parser").id == "T1"
    assert ledger.create("Write docs").id == "T2"
    assert ledger.create("Tokenizer", parent="T1").id == "T1.1"
    assert ledger.create("AST", parent="T1").id == "T1.2"
    assert ledger.create("Numbers", parent="T1.1").id == "T1.1.1"
    assert ledger.create("Strings", parent="T1.1").id == "T1.1.2"
    assert [t.id for t in ledger.tasks()] == ["T1", "T1.1", "T1.1.1", "T1.1.2", "T1.2", "T2"]
    # ids are never reused, even after abandoning the last one
    ledger.abandon("T2", "not needed")
    assert ledger.create("Release").id == "T3"


def test_many_children_sort_numerically(ledger: TaskLedger) -> None:
    ledger.create("root")
    for i in range(11):
        ledger.create(f"child {i}", parent="T1")
    assert [t.id for t in ledger.tasks()][-3:] == ["T1.9", "T1.10", "T1.11"]


def test_lifecycle_and_persistence(ledger: TaskLedger, tmp_path: Path) -> None:
    ledger.create("Build parser")
    ledger.start("T1")
    ledger.progress("T1", "lexer handles numbers")
    ledger.block("T1", "waiting for grammar from the person")
    assert ledger.get("T1").status is TaskStatus.BLOCKED
    ledger.start("T1")  # resume
    ledger.start("T1")  # no-op
    ledger.done("T1", "parser merged")
    data = json.loads(ledger.ledger_path.read_text())
    assert data["version"] == 1
    assert data["tasks"][0]["status"] == "done"
    assert data["tasks"][0]["summary"] == "parser merged"
    # a fresh instance (another process) sees the same state
    again = TaskLedger(ledger.tasks_dir, "lead")
    assert again.get("T1").status is TaskStatus.DONE
    progress = ledger.progress_path("T1").read_text()
    assert progress.startswith("# T1 Build parser\n\nowner: lead\n")
    for word in ("created", "start", "lexer handles numbers", "blocked: waiting", "done: parser"):
        assert word in progress
    assert progress.count("] start") == 2  # the no-op start wrote nothing
    assert not list(ledger.tasks_dir.glob("*.tmp")) and not list(ledger.tasks_dir.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("setup", "action", "match"),
    [
        (["done"], "start", "already done"),
        (["done"], "done", "already done"),
        (["abandon"], "start", "final"),
        (["done"], "progress", "takes no more progress"),
        (["abandon"], "block", "already abandoned"),
    ],
)
def test_invalid_transitions(ledger: TaskLedger, setup: list[str], action: str, match: str) -> None:
    ledger.create("x")
    for step in setup:
        if step == "done":
            ledger.done("T1", "ok")
        else:
            ledger.abandon("T1", "no")
    calls = {
        "start": lambda: ledger.start("T1"),
        "done": lambda: ledger.done("T1"),
        "progress": lambda: ledger.progress("T1", "more"),
        "block": lambda: ledger.block("T1", "why"),
    }
    with pytest.raises(TaskError, match=match):
        calls[action]()


def test_unknown_and_malformed_ids(ledger: TaskLedger) -> None:
    ledger.create("x")
    with pytest.raises(TaskError, match=r"No task T9\. Known tasks: T1"):
        ledger.start("T9")
    for bad in ("1", "t1", "T0", "T1..2", "T1/..", ""):
        with pytest.raises(TaskError, match="not a task id"):
            ledger.start(bad)
    with pytest.raises(TaskError, match="No task T4"):
        ledger.create("child", parent="T4")
    with pytest.raises(TaskError, match="title"):
        ledger.create("   ")
    with pytest.raises(TaskError, match="why"):
        ledger.block("T1", " ")


def test_parent_cannot_finish_with_open_children(ledger: TaskLedger) -> None:
    ledger.create("parent")
    ledger.create("kid a", parent="T1")
    ledger.create("kid b", parent="T1")
    ledger.done("T1.1", "ok")
    with pytest.raises(TaskError, match=r"subtasks still open \(T1.2\)"):
        ledger.done("T1", "all")
    ledger.abandon("T1.2", "dup")
    assert ledger.done("T1", "all").status is TaskStatus.DONE
    with pytest.raises(TaskError, match="add the task elsewhere"):
        ledger.create("late kid", parent="T1")


def test_owner_rule(ledger: TaskLedger) -> None:
    ledger.create("lead's task")
    other = TaskLedger(ledger.tasks_dir, "worker-7")
    before = ledger.progress_path("T1").read_text()
    for attempt in (
        lambda: other.progress("T1", "sneaky"),
        lambda: other.start("T1"),
        lambda: other.done("T1", "x"),
        lambda: other.create("sub", parent="T1"),
        lambda: other.assign("T1", "worker-7"),
    ):
        with pytest.raises(TaskOwnershipError, match="belongs to lead"):
            attempt()
    assert ledger.progress_path("T1").read_text() == before
    # the owner can hand it over; then the roles flip
    ledger.assign("T1", "worker-7")
    other.progress("T1", "picked up")
    with pytest.raises(TaskOwnershipError, match="belongs to worker-7"):
        ledger.progress("T1", "mine?")
    text = ledger.progress_path("T1").read_text()
    assert "[worker-7] picked up" in text and "assigned to worker-7 by lead" in text


def test_concurrent_updates_do_not_lose_changes(tmp_path: Path) -> None:
    tasks_dir = tmp_path / "tasks"
    agents = [TaskLedger(tasks_dir, f"a{i}") for i in range(4)]
    errors: list[BaseException] = []

    def work(ledger: TaskLedger) -> None:
        try:
            for _ in range(10):
                t = ledger.create(f"task of {ledger.agent_id}")
                ledger.start(t.id)
                ledger.done(t.id, "ok")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    all_tasks = agents[0].tasks()
    assert len(all_tasks) == 40
    assert len({t.id for t in all_tasks}) == 40
    assert all(t.status is TaskStatus.DONE for t in all_tasks)


def test_render_ledger(ledger: TaskLedger) -> None:
    assert ledger.render_ledger() == "(no tasks yet)"
    ledger.create("Build parser")
    ledger.create("Tokenizer", parent="T1")
    ledger.create("AST", parent="T1")
    ledger.create("Docs")
    ledger.create("Release")
    ledger.start("T1")
    ledger.start("T1.1")
    ledger.progress("T1.1", "numbers done, strings next")
    ledger.block("T1.2", "needs grammar")
    ledger.abandon("T2", "out of scope")
    out = ledger.render_ledger()
    assert out.split("\n") == [
        "- [~] T1 Build parser",
        "  - [~] T1.1 Tokenizer — numbers done, strings next",
        "  - [!] T1.2 AST — blocked: needs grammar",
        "- [-] T2 Docs — out of scope",
        "- [ ] T3 Release",
    ]
    assert ledger.current().id == "T1.1"
    ledger.done("T1.1", "tokenizer works")
    ledger.abandon("T1.2", "later")
    ledger.done("T1", "parser done")
    collapsed = ledger.render_ledger(collapse_done=True)
    assert collapsed.split("\n")[0] == "- [x] T1 Build parser (2 subtasks closed) — parser done"
    assert "T1.1" not in collapsed
    assert "  - [x] T1.1 Tokenizer — tokenizer works" in ledger.render_ledger()


def test_corrupt_ledger_gives_a_clear_error(ledger: TaskLedger) -> None:
    ledger.create("x")
    ledger.ledger_path.write_text("{not json")
    with pytest.raises(TaskError, match="not valid JSON"):
        ledger.tasks()
