"""Rewind: points in a shadow repository, restored byte for byte, the person's repository never
written to; the agent takes them before turns and mutating calls; ``crew rewind`` end to end.

The store tests compare whole trees (bytes, symlink targets, executable bits, directories) and
the person's ``.git`` directory file by file, so "untouched" means exactly that.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import crew, git

from stagecrew.messages import (
    ActorRole,
    ActorStarted,
    AssistantMessage,
    ConversationRewound,
    Envelope,
    Notice,
    SessionFinished,
    SessionStarted,
    StopReason,
    ToolCall,
    ToolFinished,
    ToolStarted,
    UserInput,
)
from stagecrew.rewind import (
    PointNotFound,
    RewindStore,
    describe_restore,
    format_points,
    list_points,
    preview_point,
    restore_point,
    scan,
)
from stagecrew.rewind.conversation import (
    ConversationRewindError,
    conversation_events,
    cut_seq,
    rewind_marker,
)
from stagecrew.rewind.points import Point
from stagecrew.rewind.recorder import RewindRecorder, is_mutating
from stagecrew.tools.providers import BuiltinTools, ToolSet, ToolSpec
from stagecrew.tools.registry import default_tools

BINARY = bytes(range(256)) * 4 + b"\xff\xfe\x00 not utf-8 \x80"

Tree = dict[str, tuple[Any, ...]]


def tree(root: Path) -> Tree:
    """Every entry under ``root`` but ``.git`` and ``.stagecrew``: file bytes and executable
    bit, symlink targets, directories (so a leftover empty directory counts as a change)."""
    out: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in (".git", ".stagecrew")]
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", path.read_bytes(), bool(st.st_mode & 0o111))
    return out


def gitdir_files(repo: Path) -> dict[str, bytes]:
    """Every file of the person's ``.git``, by content."""
    gitdir = repo / ".git"
    return {
        str(p.relative_to(gitdir)): p.read_bytes()
        for p in sorted(gitdir.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def person_state(repo: Path) -> dict[str, Any]:
    """What the person sees of their repository, read without letting git write anything."""
    return {
        "status": git(repo, "--no-optional-locks", "status", "--porcelain", "-uall"),
        "index": (repo / ".git" / "index").read_bytes(),
        "stash": git(repo, "stash", "list"),
        "refs": git(repo, "for-each-ref"),
        "objects": git(repo, "count-objects", "-v"),
        "gitdir": gitdir_files(repo),
    }


@pytest.fixture
def person_repo(git_repo: Path) -> Path:
    """A repository with everything a point must hold: tracked (one executable), ignored but
    present, untracked, binary, a symlink, a nested directory, a stash and a staged change."""
    repo = git_repo
    (repo / ".gitignore").write_text("*.log\nbuild/\n")
    (repo / "src").mkdir()
    (repo / "src" / "app.py").write_text("print('v1')\n")
    (repo / "run.sh").write_text("#!/bin/sh\necho run\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "data.bin").write_bytes(BINARY)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "project")
    (repo / "src" / "app.py").write_text("print('stashed')\n")
    git(repo, "stash", "push", "-q", "-m", "person's stash")
    (repo / "README.md").write_text("# staged edit\n")
    git(repo, "add", "README.md")
    (repo / "app.log").write_text("ignored but present\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.o").write_bytes(b"\x7fELF\x00object")
    (repo / "notes.txt").write_text("untracked\n")
    os.symlink("src/app.py", repo / "link-to-app")
    return repo


def mutate(repo: Path) -> None:
    """What an agent might do: edit, delete (tracked, ignored, binary), retarget a symlink,
    turn a file into a symlink and a file into a directory, add files, drop an exec bit."""
    (repo / "src" / "app.py").write_text("print('v2')\n")
    (repo / "app.log").unlink()
    (repo / "data.bin").unlink()
    shutil_rmtree(repo / "build")
    (repo / "link-to-app").unlink()
    os.symlink("README.md", repo / "link-to-app")
    (repo / "notes.txt").unlink()
    os.symlink("src", repo / "notes.txt")
    (repo / "README.md").unlink()
    (repo / "README.md").mkdir()
    (repo / "README.md" / "inside.txt").write_text("file became a directory\n")
    (repo / "new" / "deep").mkdir(parents=True)
    (repo / "new" / "deep" / "file.txt").write_bytes(b"\x00new binary\xff")
    (repo / "run.sh").chmod(0o644)


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


# -- the store ---------------------------------------------------------------------------------


def test_restore_brings_back_every_kind_of_file_byte_for_byte(person_repo: Path) -> None:
    store = RewindStore(person_repo)
    start = tree(person_repo)
    first = store.take(session="s1", label="start")
    assert {c.path for c in first.changed} >= {"app.log", "build/out.o", "data.bin", "notes.txt"}
    assert first.skipped == []

    mutate(person_repo)
    changed = tree(person_repo)
    second = store.take(session="s1", tool="bash", label="mutate", step=3)
    assert second.changed_count == len(second.changed) > 0
    statuses = {c.path: c.status for c in second.changed}
    assert statuses["app.log"] == "D" and statuses["new/deep/file.txt"] == "A"
    assert statuses["src/app.py"] == "M" and statuses["notes.txt"] == "T"

    result = store.restore(first.id)
    assert tree(person_repo) == start
    assert result.target.id == first.id and result.backup.id == second.id + 1
    assert result.backup.tool == "rewind" and result.backup.session == "s1"
    assert "undoes this" in describe_restore(result)

    # The rewind is itself a point away from being undone.
    store.restore(result.backup.id)
    assert tree(person_repo) == changed


def test_the_persons_repository_index_stash_and_refs_are_never_written(
    person_repo: Path,
) -> None:
    before = person_state(person_repo)
    store = RewindStore(person_repo)
    first = store.take(session="s1")
    mutate(person_repo)
    store.take(session="s1", tool="edit")
    assert "app.log" in store.preview(first.id)
    store.restore(first.id)
    after = person_state(person_repo)
    assert after["gitdir"].keys() == before["gitdir"].keys()
    for key in ("status", "index", "stash", "refs", "objects"):
        assert after[key] == before[key], key
    assert after == before
    # The shadow repository ignores itself: nothing new in the person's status.
    assert ".stagecrew" not in after["status"]


def test_preview_shows_the_diff_and_changes_nothing(person_repo: Path) -> None:
    store = RewindStore(person_repo)
    first = store.take(session="s1")
    (person_repo / "src" / "app.py").write_text("print('v2')\n")
    (person_repo / "app.log").unlink()
    (person_repo / "fresh.txt").write_text("made after the point\n")
    now = tree(person_repo)
    mtimes = {
        p: p.lstat().st_mtime_ns
        for p in person_repo.rglob("*")
        if not {".git", ".stagecrew"} & set(p.parts)
    }
    diff = preview_point(person_repo, first.id)
    assert "-print('v2')\n+print('v1')" in diff
    assert "+++ b/app.log" in diff and "deleted file mode" in diff and "a/fresh.txt" in diff
    assert tree(person_repo) == now
    assert {p: p.lstat().st_mtime_ns for p in mtimes} == mtimes
    assert [p.id for p in list_points(person_repo)] == [first.id]  # a preview is no point


def test_unchanged_files_keep_their_mtime_across_a_restore(person_repo: Path) -> None:
    store = RewindStore(person_repo)
    first = store.take(session="s1")
    untouched = person_repo / "run.sh"
    before = untouched.stat().st_mtime_ns
    (person_repo / "src" / "app.py").write_text("print('v2')\n")
    store.restore(first.id)
    assert untouched.stat().st_mtime_ns == before
    assert (person_repo / "src" / "app.py").read_text() == "print('v1')\n"


def test_a_workspace_that_is_not_a_git_repository(tmp_path: Path) -> None:
    ws = tmp_path / "plain"
    (ws / "a").mkdir(parents=True)
    (ws / "a" / "one.txt").write_text("one\n")
    (ws / "blob").write_bytes(BINARY)
    start = tree(ws)
    first = restore_target = RewindStore(ws).take(session="s", label="start")
    (ws / "a" / "one.txt").write_text("changed\n")
    (ws / "blob").unlink()
    (ws / "b.txt").write_text("new\n")
    result = restore_point(ws, restore_target.id)
    assert tree(ws) == start
    assert {c.path: c.status for c in result.changes} == {
        "a/one.txt": "M",
        "b.txt": "D",
        "blob": "A",
    }
    assert first.changed_count == 2
    assert not (ws / ".git").exists()
    # git in the workspace still finds no repository (the shadow one is not discoverable).
    probe = subprocess.run(["git", "rev-parse", "--git-dir"], cwd=ws, capture_output=True)
    assert probe.returncode != 0


def test_names_that_are_not_utf8_or_look_like_patterns(tmp_path: Path) -> None:
    ws = os.fsencode(tmp_path / "odd ws")
    os.mkdir(ws)
    names = [b"caf\xe9.txt", b"star*[q]?.txt", b"new\nline", b" lead and trail "]
    for name in names:
        with open(os.path.join(ws, name), "wb") as fh:
            fh.write(name * 3)
    store = RewindStore(os.fsdecode(ws))
    first = store.take(session="s")
    assert first.changed_count == len(names)
    for name in names:
        os.remove(os.path.join(ws, name))
    store.restore(first.id)
    for name in names:
        with open(os.path.join(ws, name), "rb") as fh:
            assert fh.read() == name * 3
    listed = crew("rewind", "s", "--json", cwd=Path(os.fsdecode(ws)))
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["changed_count"] == len(names)


def test_points_list_by_session_with_what_changed(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    store = RewindStore(ws)
    store.take(session="s1", actor="s1-primary", label="Add a feature")
    (ws / "a.txt").write_text("a\n")
    store.take(session="s2", tool="write", label="a.txt", step=1)
    (ws / "a.txt").write_text("b\n")
    (ws / "c.txt").write_text("c\n")
    third = store.take(session="s1", tool="bash", label="make", step=2, call_id="call_9")
    assert [p.id for p in store.points()] == [1, 2, 3]
    assert [p.id for p in store.points("s1")] == [1, 3]
    got = store.get(3)
    assert got.model_dump(exclude={"duration_ms"}) == third.model_dump(exclude={"duration_ms"})
    assert got.call_id == "call_9" and got.step == 2 and got.tool == "bash"
    assert {(c.status, c.path) for c in got.changed} == {("M", "a.txt"), ("A", "c.txt")}
    lines = format_points(store.points("s1"))
    assert lines[0].split()[:2] == ["POINT", "STEP"]
    assert "turn: Add a feature" in lines[1] and "bash: make" in lines[2] and "+1 ~1" in lines[2]
    with pytest.raises(PointNotFound):
        store.get(42)


def test_caps_skip_big_files_bulk_directories_and_nested_repositories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan, "MAX_FILE_BYTES", 1000)
    monkeypatch.setattr(scan, "BULK_DIR_MAX_FILES", 5)
    ws = tmp_path / "ws"
    (ws / "node_modules" / "pkg").mkdir(parents=True)
    for i in range(10):
        (ws / "node_modules" / "pkg" / f"m{i}.js").write_text("x\n")
    (ws / ".venv").mkdir()
    (ws / ".venv" / "small.txt").write_text("a small bulk directory is captured\n")
    (ws / "big.bin").write_bytes(b"\0" * 5000)
    (ws / "vendored").mkdir()
    subprocess.run(["git", "init", "-q"], cwd=ws / "vendored", check=True)
    (ws / "vendored" / "lib.c").write_text("int x;\n")
    (ws / "ok.txt").write_text("ok\n")
    store = RewindStore(ws)
    first = store.take(session="s")
    paths = {c.path for c in first.changed}
    assert paths == {"ok.txt", ".venv/small.txt"}
    reasons = {s.path: s.reason for s in first.skipped}
    assert "bulk directory" in reasons["node_modules/"]
    assert "MiB" in reasons["big.bin"] and reasons["vendored/"] == "nested git repository"
    assert first.skipped_count == 3

    # Remembered: later points still say so, without walking node_modules again.
    (ws / "node_modules" / "pkg" / "m0.js").write_text("changed\n")
    second = store.take(session="s")
    assert second.changed_count == 0
    assert {s.path for s in second.skipped} == {"node_modules/", "big.bin", "vendored/"}

    # A restore leaves what the points do not hold alone.
    (ws / "ok.txt").unlink()
    store.restore(first.id)
    assert (ws / "ok.txt").read_text() == "ok\n"
    assert (ws / "node_modules" / "pkg" / "m0.js").read_text() == "changed\n"
    assert (ws / "big.bin").stat().st_size == 5000

    # A file that grows over the cap leaves the points (listed), and comes back when small.
    assert [c.path for c in store.take(session="s").changed] == ["ok.txt"]
    (ws / "ok.txt").write_bytes(b"y" * 2000)
    grown = store.take(session="s")
    assert [(c.status, c.path) for c in grown.changed] == [("D", "ok.txt")]
    assert "ok.txt" in {s.path for s in grown.skipped}
    (ws / "ok.txt").write_text("small again\n")
    assert [(c.status, c.path) for c in store.take(session="s").changed] == [("A", "ok.txt")]


def test_a_new_entry_over_the_cap_of_one_point_is_skipped_and_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan, "MAX_NEW_BYTES", 3000)
    ws = tmp_path / "ws"
    ws.mkdir()
    store = RewindStore(ws)
    store.take(session="s")
    (ws / "small").mkdir()
    (ws / "small" / "a.txt").write_bytes(b"a" * 1000)
    (ws / "dump").mkdir()
    for i in range(4):
        (ws / "dump" / f"{i}.bin").write_bytes(b"d" * 1000)
    point = store.take(session="s")
    assert {c.path for c in point.changed} == {"small/a.txt"}
    assert "over the cap of one point" in {s.path: s.reason for s in point.skipped}["dump/"]
    assert b"/dump/" in store.repo.exclude_file.read_bytes()


def test_concurrent_points_from_several_processes_stay_one_chain(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    code = (
        "import sys; from stagecrew.rewind import RewindStore\n"
        "s = RewindStore(sys.argv[1])\n"
        "for i in range(5):\n"
        "    open(f'{sys.argv[1]}/{sys.argv[2]}-{i}', 'w').write('x')\n"
        "    s.take(session=sys.argv[2])\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(ws), f"p{n}"]) for n in range(3)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    points = RewindStore(ws).points()
    assert [p.id for p in points] == list(range(1, 16))
    assert sum(p.changed_count for p in points) == 15


def test_stale_git_locks_of_a_killed_process_do_not_block(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    store = RewindStore(ws)
    store.take(session="s")
    Path(f"{store.repo.index}.lock").write_text("")
    (ws / "f").write_text("f\n")
    assert store.take(session="s").changed_count == 1


# -- the conversation ----------------------------------------------------------------------------


def _log(*bodies: Any) -> list[Envelope]:
    return [Envelope(session="s", sender="x", seq=i + 1, body=b) for i, b in enumerate(bodies)]


def _session_log() -> list[Envelope]:
    calls1 = [ToolCall(id="c1", name="edit"), ToolCall(id="c2", name="bash")]
    return _log(
        SessionStarted(prompt="Fix it.", workspace="/w", profile="build", model="m"),  # 1
        ActorStarted(actor_id="s-primary", role=ActorRole.PRIMARY),  # 2
        AssistantMessage(actor_id="s-primary", step=1, text="Editing.", tool_calls=calls1),  # 3
        ToolStarted(actor_id="s-primary", call_id="c1", tool="edit", arguments="{}"),  # 4
        ToolFinished(actor_id="s-primary", call_id="c1", tool="edit", content="ok 1"),  # 5
        ToolStarted(actor_id="s-primary", call_id="c2", tool="bash", arguments="{}"),  # 6
        ToolFinished(actor_id="s-primary", call_id="c2", tool="bash", content="ok 2"),  # 7
        AssistantMessage(actor_id="s-primary", step=2, text="Done."),  # 8
        SessionFinished(stop_reason=StopReason.DONE),  # 9
    )


def test_a_point_sits_at_its_tool_call_or_turn_in_the_log() -> None:
    log = _session_log()
    at_bash = Point(id=3, session="s", actor="s-primary", tool="bash", call_id="c2")
    at_turn = Point(id=1, session="s", actor="s-primary", tool="turn")
    assert cut_seq(log, at_bash) == 6
    assert cut_seq(log, at_turn) == 2
    assert cut_seq(log, Point(id=9, session="s", tool="maxmode")) is None
    marker = rewind_marker(log, at_bash)
    assert marker == ConversationRewound(point=3, to_seq=6)
    running = log[:-1]
    with pytest.raises(ConversationRewindError, match="still running"):
        rewind_marker(running, at_bash)
    with pytest.raises(ConversationRewindError, match="no place"):
        rewind_marker(log, Point(id=9, session="s", tool="maxmode"))


def test_conversation_events_drop_what_the_rewound_part_said() -> None:
    from stagecrew.actors.context import history_from_events

    log = _session_log()
    log.append(
        Envelope(session="s", sender="person", seq=10, body=ConversationRewound(point=3, to_seq=6))
    )
    log.append(
        Envelope(
            session="s",
            sender="x",
            seq=11,
            body=ActorStarted(actor_id="s-r1", role=ActorRole.PRIMARY),
        )
    )
    log.append(
        Envelope(
            session="s",
            sender="x",
            seq=12,
            body=AssistantMessage(actor_id="s-r1", step=1, text="Again."),
        )
    )
    events = conversation_events(log)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6, 9, 10, 11, 12]
    history = history_from_events(events)
    assert [(m["role"], m.get("content")) for m in history.messages] == [
        ("user", "Fix it."),
        ("assistant", "Editing."),
        ("tool", "ok 1"),
        ("tool", "[interrupted: no result]"),
        ("assistant", "Again."),
    ]
    # Both runs still count: the next resume's actor id stays unique.
    assert history.primaries == ["s-primary", "s-r1"]

    # Back to a part an earlier rewind left: the transcript as it was there.
    log.append(
        Envelope(session="s", sender="person", seq=13, body=ConversationRewound(point=4, to_seq=8))
    )
    again = history_from_events(conversation_events(log))
    assert [m.get("content") for m in again.messages][-2:] == ["ok 2", "Done."]
    # A person's words after the cut are rewound too.
    words = _session_log()[:-1] + _log(
        UserInput(text="x"), SessionFinished(stop_reason=StopReason.DONE)
    )
    words = [e.model_copy(update={"seq": i + 1}) for i, e in enumerate(words)]
    words.append(
        Envelope(session="s", sender="p", seq=12, body=ConversationRewound(point=1, to_seq=2))
    )
    assert [m["content"] for m in history_from_events(conversation_events(words)).messages] == [
        "Fix it."
    ]


# -- the agent's side ----------------------------------------------------------------------------


class _ReadOnlyMcp:
    name = "mcp"

    def specs(self) -> list[ToolSpec]:
        return [
            ToolSpec(name="mcp__fs__read", description="", parameters={}, read_only=True),
            ToolSpec(name="mcp__fs__write", description="", parameters={}),
        ]

    async def call(self, name: str, arguments: dict[str, Any], ctx: Any) -> Any:
        raise NotImplementedError


def test_which_tools_take_a_point() -> None:
    tools = ToolSet([BuiltinTools(default_tools()), _ReadOnlyMcp()])
    mutating = {name for name in tools if is_mutating(tools, name)}
    assert {"write", "edit", "apply_patch", "bash", "git", "task"} <= mutating
    assert not {"read", "grep", "glob", "ls", "todo", "webfetch"} & mutating
    assert "mcp__fs__write" in mutating and "mcp__fs__read" not in mutating
    assert is_mutating(tools, "no_such_tool")


class _Sink:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def emit(self, body: Any) -> None:
        self.messages.append(body)


def _spec(ws: Path, **kw: Any) -> Any:
    from stagecrew.actors.spec import AgentSpec
    from stagecrew.messages import ModelSpecWire

    fields = {
        "session": "s",
        "actor_id": "s-primary",
        "workspace": str(ws),
        "prompt": "Do it.\nDetails.",
        "model": ModelSpecWire(model="openai/x"),
        "session_dir": str(ws / ".stagecrew" / "state" / "sessions" / "s"),
        **kw,
    }
    return AgentSpec(**fields)


async def test_the_recorder_takes_points_and_turns_failures_into_warnings(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    tools = ToolSet([BuiltinTools(default_tools())])
    sink = _Sink()
    recorder = RewindRecorder(_spec(ws), tools, sink)
    recorder.before_turn()
    await recorder.before_tool("read", {"file_path": "a"}, step=1, call_id="c0")
    await recorder.before_tool("write", {"file_path": "a.txt"}, step=1, call_id="c1")
    points = list_points(ws, "s")
    assert [(p.tool, p.label, p.call_id) for p in points] == [
        ("turn", "Do it.", ""),
        ("write", "a.txt", "c1"),
    ]
    assert sink.messages == []

    for quiet in (_spec(ws, read_only=True), _spec(ws, session_dir=None)):
        off = RewindRecorder(quiet, tools, sink)
        off.before_turn()
        await off.before_tool("bash", {"command": "rm -rf x"}, step=1, call_id="c")
    assert len(list_points(ws)) == 2

    # A point that cannot be taken is a warning, once per cause, never an exception.
    (ws / ".stagecrew" / "state" / "rewind" / "git").rename(ws / "moved")
    (ws / ".stagecrew" / "state" / "rewind" / "git").write_text("not a directory")
    for _ in range(2):
        await recorder.before_tool("bash", {"command": "true"}, step=2, call_id="c2")
    warnings = [m for m in sink.messages if isinstance(m, Notice)]
    assert len(warnings) == 1 and warnings[0].level == "warning"
    assert warnings[0].text.startswith("no rewind point before bash:")


async def test_an_agent_takes_points_before_its_turn_and_mutating_calls(
    tmp_path: Path, scripted_llm: Any
) -> None:
    from stagecrew.actors.inprocess import run_agent_inprocess
    from stagecrew.messages import ModelSpecWire

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("one\n")
    llm = scripted_llm(
        [
            {"tool_calls": [{"name": "read", "arguments": {"file_path": "a.txt"}}]},
            {
                "tool_calls": [
                    {"name": "write", "arguments": {"file_path": "a.txt", "content": "two\n"}}
                ]
            },
            {"tool_calls": [{"name": "bash", "arguments": {"command": "rm a.txt"}}]},
            {"text": "Done."},
        ]
    )
    model = ModelSpecWire(model="openai/m", api_base=llm.base_url, num_retries=0)
    result, _ = await run_agent_inprocess(_spec(ws, model=model))
    assert result.stop_reason is StopReason.DONE
    points = list_points(ws, "s")
    assert [(p.tool, p.step) for p in points] == [("turn", 0), ("write", 2), ("bash", 3)]
    assert [c.path for c in points[2].changed] == ["a.txt"]
    restore_point(ws, points[1].id)
    assert (ws / "a.txt").read_text() == "one\n"

    plan = tmp_path / "plan"
    plan.mkdir()
    llm2 = scripted_llm(
        [{"tool_calls": [{"name": "bash", "arguments": {"command": "ls"}}]}, {"text": "ok"}]
    )
    model2 = ModelSpecWire(model="openai/m", api_base=llm2.base_url, num_retries=0)
    await run_agent_inprocess(_spec(plan, model=model2, read_only=True, profile="plan"))
    assert list_points(plan) == []


# -- end to end ----------------------------------------------------------------------------------

ALPHA = "def alpha():\n    return 1\n"
BETA = "def beta():\n    return 'b'\n"


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


SESSION = [
    _call("edit", file_path="alpha.py", old_string="return 1", new_string="return 2"),
    _call("edit", file_path="beta.py", old_string="'b'", new_string="'B'"),
    _call("bash", command="rm gamma.txt && printf 'delta\\n' > delta.txt"),
    {"text": "Edited alpha and beta, replaced gamma with delta."},
]


def _project(repo: Path, base_url: str) -> None:
    (repo / "alpha.py").write_text(ALPHA)
    (repo / "beta.py").write_text(BETA)
    (repo / "gamma.txt").write_bytes(b"gamma\x00\xff\n")
    (repo / ".gitignore").write_text("*.cache\n")
    (repo / "local.cache").write_text("ignored, present\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "project")
    (repo / "alpha.py").write_text(ALPHA + "# uncommitted\n")
    git(repo, "stash", "push", "-q")
    (repo / "beta.py").write_text(BETA + "# staged\n")
    git(repo, "add", "beta.py")
    (repo / ".stagecrew").mkdir()
    (repo / ".stagecrew" / "config.json").write_text(
        json.dumps({"models": {"primary": {"model": "openai/main", "api_base": base_url}}})
    )


def _run_session(repo: Path, llm: Any) -> tuple[str, list[Any]]:
    ran = crew("run", "Tidy the project.", "--output-format", "json", cwd=repo)
    assert ran.returncode == 0, ran.stderr
    sid = json.loads(ran.stdout)["session_id"]
    listed = crew("rewind", "--list", "--json", cwd=repo)
    assert listed.returncode == 0, listed.stderr
    return sid, json.loads(listed.stdout)


@pytest.mark.ray
def test_crew_rewind_restores_the_start_byte_for_byte_and_can_be_undone(
    ray_head: object, git_repo: Path, scripted_llm: Any
) -> None:
    llm = scripted_llm({"main": list(SESSION)})
    _project(git_repo, llm.base_url)
    start, person = tree(git_repo), person_state(git_repo)
    sid, points = _run_session(git_repo, llm)

    # A point before the turn and before each of the three mutating calls.
    assert [(p["tool"], p["step"]) for p in points] == [
        ("turn", 0),
        ("edit", 1),
        ("edit", 2),
        ("bash", 3),
    ]
    assert all(p["session"] == sid for p in points)
    assert [c["path"] for c in points[2]["changed"]] == ["alpha.py"]
    text = crew("rewind", cwd=git_repo)
    assert text.returncode == 0 and "bash: rm gamma.txt" in text.stdout, text.stderr
    end = tree(git_repo)
    assert end != start and "delta.txt" in end and "gamma.txt" not in end

    # --preview: the diff, and nothing changes.
    first = str(points[0]["id"])
    shown = crew("rewind", sid, "--to", first, "--preview", cwd=git_repo)
    assert shown.returncode == 0, shown.stderr
    assert "-    return 2\n+    return 1" in shown.stdout and "a/delta.txt" in shown.stdout
    assert "b/gamma.txt" in shown.stdout
    assert tree(git_repo) == end

    # --to: the start, byte for byte; the person's repository as before.
    done = crew("rewind", "--to", first, "--json", cwd=git_repo)
    assert done.returncode == 0, done.stderr
    assert tree(git_repo) == start
    assert person_state(git_repo) == person
    backup = json.loads(done.stdout)["backup"]

    # ... and undone.
    undo = crew("rewind", "--to", str(backup), cwd=git_repo)
    assert undo.returncode == 0, undo.stderr
    assert f"point {backup}" in undo.stdout
    assert tree(git_repo) == end

    missing = crew("rewind", "--to", "999", cwd=git_repo)
    assert missing.returncode == 2 and "no rewind point 999" in missing.stderr


@pytest.mark.ray
def test_crew_rewind_conversation_then_resume_continues_from_the_point(
    ray_head: object, git_repo: Path, scripted_llm: Any
) -> None:
    llm = scripted_llm({"main": list(SESSION)})
    _project(git_repo, llm.base_url)
    sid, points = _run_session(git_repo, llm)
    before_bash = next(p for p in points if p["tool"] == "bash")
    sent_before = len(llm.chat_requests)

    done = crew("rewind", "--to", str(before_bash["id"]), "--conversation", cwd=git_repo)
    assert done.returncode == 0, done.stderr
    assert f"crew resume {sid}" in done.stdout
    assert (git_repo / "gamma.txt").exists() and not (git_repo / "delta.txt").exists()
    assert "return 2" in (git_repo / "alpha.py").read_text()

    llm.add_turns([{"text": "Resumed."}], queue="main")
    resumed = crew("resume", sid, "--output-format", "json", cwd=git_repo)
    assert resumed.returncode == 0, resumed.stderr
    sent = llm.chat_requests[sent_before].messages
    calls = [c["id"] for m in sent if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    results = {m["tool_call_id"]: m["content"] for m in sent if m["role"] == "tool"}
    assert len(calls) == 3  # the two edits and the bash call the point was taken before
    assert results[calls[2]] == "[interrupted: no result]"
    assert not any("Edited alpha and beta" in str(m.get("content")) for m in sent)


def test_crew_rewind_usage_errors(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".stagecrew").mkdir()
    nothing = crew("rewind", cwd=ws)
    assert nothing.returncode == 2 and "no session" in nothing.stderr
    bad = crew("rewind", "--preview", cwd=ws)
    assert bad.returncode == 2 and "need --to" in bad.stderr
    RewindStore(ws).take(session="s1")
    other = crew("rewind", "s2", "--to", "1", cwd=ws)
    assert other.returncode == 2 and "belongs to session s1" in other.stderr
    no_log = crew("rewind", "--to", "1", "--conversation", cwd=ws)
    assert no_log.returncode == 2 and "log is empty" in no_log.stderr
