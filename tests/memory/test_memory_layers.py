"""Memory layers on real files: parsing, rendering, hand edits, atomic writes, paths."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stagecrew.memory import layers
from stagecrew.memory.layers import (
    CHECKPOINT_SECTIONS,
    MEMORY_SECTIONS,
    Checkpoint,
    IndexSource,
    MemoryPaths,
    ProjectMemory,
    ProjectMemoryWriter,
    append_note,
    atomic_write_text,
    parse_sections,
    quote_verbatim,
    read_global_memory,
    read_text,
    unquote,
    write_checkpoint,
)


def headings(text: str) -> list[str]:
    return [h for h, _ in parse_sections(text)[1]]


def test_new_checkpoint_renders_all_fixed_sections_in_order(tmp_path: Path) -> None:
    cp = Checkpoint()
    cp.set("Next action", "run the tests")
    path = tmp_path / "checkpoint.md"
    cp.save(path)
    text = path.read_text()
    assert headings(text) == list(CHECKPOINT_SECTIONS)
    assert Checkpoint.load(path).get("Next action") == "run the tests"
    assert Checkpoint.load(path).get("Decisions") == ""


def test_roundtrip_is_stable(tmp_path: Path) -> None:
    cp = Checkpoint()
    for i, name in enumerate(CHECKPOINT_SECTIONS):
        cp.set(name, f"- item {i}\n- `src/x{i}.py:{i}`")
    once = cp.render()
    assert Checkpoint.parse(once).render() == once
    assert Checkpoint.parse(Checkpoint.parse(once).render()).render() == once


@pytest.mark.parametrize(
    "words",
    [
        "Fix the login bug.",
        "  indented first line\nsecond line with trailing spaces   \n\n> a quote\n## not a heading",
        "Use `pytest -q` then\n```bash\nmake test\n```\n",
        "ünïcödé — 日本語 and emoji 🚀",
        ">",
    ],
)
def test_active_intent_keeps_the_persons_words_byte_for_byte(tmp_path: Path, words: str) -> None:
    cp = Checkpoint()
    cp.set_active_intent(words)
    path = tmp_path / "checkpoint.md"
    cp.save(path)
    loaded = Checkpoint.load(path)
    assert loaded.active_intent == words.strip("\n") or loaded.active_intent == words
    # and the quote cannot leak structure: still exactly the fixed sections
    assert headings(path.read_text()) == list(CHECKPOINT_SECTIONS)


def test_quote_unquote_inverse() -> None:
    for text in ["a", "a\n\nb", "> x", "", " lead", "tail "]:
        assert unquote(quote_verbatim(text)) == text


def test_person_edits_are_parsed_forgivingly(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.md"
    path.write_text(
        "# My checkpoint\n\n"
        "intro text a person wrote\n\n"
        "## next ACTION:\n\nship it\n\n"
        "## My own section\n\nkeep me\n\n"
        "## Decisions\n\n```md\n## inside a fence is not a heading\n```\n\n"
        "## Decisions\n\nsecond copy\n"
    )
    cp = Checkpoint.load(path)
    assert cp.get("Next action") == "ship it"
    assert "## inside a fence is not a heading" in cp.get("Decisions")
    assert "second copy" in cp.get("Decisions")
    assert cp.get("Active intent") == ""  # missing -> empty
    assert cp.get("My own section") == "keep me"
    rendered = cp.render()
    assert rendered.startswith("# My checkpoint\n\nintro text a person wrote")
    # the person's section stays right after the known section it followed
    hs = headings(rendered)
    assert hs.index("My own section") == hs.index("Next action") + 1
    assert [h for h in hs if h != "My own section"] == list(CHECKPOINT_SECTIONS)


def test_unclosed_fence_does_not_swallow_headings() -> None:
    _, items = parse_sections("## A\n\n```\nno close\n\n## B\n\nbody\n")
    assert [h for h, _ in items] == ["A", "B"]


def test_hand_edit_between_writes_survives(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.md"
    cp = Checkpoint()
    cp.set_active_intent("build the parser")
    cp.set("Next action", "write tokenizer")
    write_checkpoint(path, cp)

    # the person edits: changes a section, adds their own, deletes another heading
    text = path.read_text()
    text = text.replace("write tokenizer", "write tokenizer FIRST, then the AST")
    text = text.replace(
        "## Open notes", "## Person's reminders\n\nask me before pushing\n\n## Open notes"
    )
    text = text.replace("## Decisions\n\n", "")
    path.write_text(text)

    # the writer's next update starts from the file, so the edits are kept
    current = Checkpoint.load(path)
    current.set("Current work", "tokenizer half done")
    write_checkpoint(path, current)
    final = Checkpoint.load(path)
    assert final.get("Next action") == "write tokenizer FIRST, then the AST"
    assert final.get("Person's reminders") == "ask me before pushing"
    assert final.get("Current work") == "tokenizer half done"
    assert "## Decisions" in path.read_text()  # the fixed shape comes back


def test_edit_during_a_slow_update_wins_per_section(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.md"
    base = Checkpoint()
    base.set("Next action", "old next")
    base.set("Current work", "old work")
    write_checkpoint(path, base)
    base_text = path.read_text()

    # writer computes an update from base_text (imagine a 10 s model call) ...
    ours = Checkpoint.parse(base_text)
    ours.set("Current work", "new work from the writer")
    ours.set("Next action", "writer's next")
    # ... meanwhile the person edits Next action and adds a section
    edited = Checkpoint.parse(base_text)
    edited.set("Next action", "PERSON: stop and ask me")
    edited.extras.append(("Scratch", "mine", "Open notes"))
    edited.save(path)

    written = write_checkpoint(path, ours, base_text=base_text)
    final = Checkpoint.load(path)
    assert final.get("Next action") == "PERSON: stop and ask me"
    assert final.get("Current work") == "new work from the writer"
    assert final.get("Scratch") == "mine"
    assert written.render() == path.read_text()


def test_atomic_write_leaves_no_temp_files_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "file.md"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two\r\nwith crlf kept")
    assert path.read_bytes() == b"two\r\nwith crlf kept"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.md"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "f.md"
    atomic_write_text(path, "old")
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate fails mid-write, for real
        atomic_write_text(path, "new \ud800 text")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.md"]


def test_notes_are_append_only_entries(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    append_note(path, "first idea")
    append_note(path, "second idea\nwith two lines")
    text = path.read_text()
    assert text.startswith("# Notes\n")
    assert text.index("first idea") < text.index("second idea")
    assert len([h for h in headings(text)]) == 2
    with pytest.raises(ValueError):
        append_note(path, "   ")


def test_project_memory_writer_sections_dedupe_and_person_edits(tmp_path: Path) -> None:
    path = tmp_path / ".stagecrew" / "memory" / "MEMORY.md"
    writer = ProjectMemoryWriter(path)
    assert "Rules" in writer.save("rules", "Always run `ruff check` before committing")
    assert "Already" in writer.save("Rules", "always run `ruff check`   before committing")
    assert "Saved" in writer.save("Rules", "ruff")  # a substring of an entry is a new entry
    writer.save(None, "The API lives in src/api/")
    writer.save("decisions", "SQLite FTS5 for search\n## not a section")
    text = path.read_text()
    assert headings(text) == list(MEMORY_SECTIONS)
    mem = ProjectMemory.parse(text)
    assert mem.get("Rules") == "- Always run `ruff check` before committing\n- ruff"
    assert mem.get("Durable knowledge") == "- The API lives in src/api/"
    assert "  ## not a section" in mem.get("Architecture decisions")

    # a person adds a rule by hand; the next save keeps it
    path.write_text(text.replace("## Rules\n\n", "## Rules\n\n- Never push to main\n"))
    asyncio.run(writer("context", "Python 3.11 monorepo"))
    mem = ProjectMemory.load(path)
    assert "- Never push to main" in mem.get("Rules")
    assert mem.get("Project context") == "- Python 3.11 monorepo"

    with pytest.raises(ValueError, match="Unknown project memory section"):
        writer.save("gossip", "x")
    with pytest.raises(ValueError):
        writer.save("rules", "  ")


def test_global_memory_is_read_only(tmp_path: Path) -> None:
    paths = MemoryPaths(tmp_path / "proj", "s1", tmp_path / "config")
    assert read_global_memory(paths) == ""
    paths.global_memory.parent.mkdir(parents=True)
    paths.global_memory.write_text("## Rules\n\nprefer tabs\n")
    assert "prefer tabs" in read_global_memory(paths)
    public = [n for n in dir(layers) if "global" in n.lower()]
    assert public == ["read_global_memory"]  # no writer for agents


def test_memory_paths(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    paths = MemoryPaths(root, "2024-01-01-abc", tmp_path / "cfg")
    assert paths.project_memory == root / ".stagecrew/memory/MEMORY.md"
    assert paths.index_db == root / ".stagecrew/state/memory.db"
    assert paths.checkpoint == root / ".stagecrew/state/sessions/2024-01-01-abc/checkpoint.md"
    assert paths.notes.name == "notes.md"
    assert paths.ledger == paths.session_dir / "tasks" / "ledger.json"
    assert paths.progress("T1.2") == paths.session_dir / "tasks" / "T1.2" / "progress.md"
    assert paths.global_memory == tmp_path / "cfg" / "MEMORY.md"
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(ValueError):
            MemoryPaths(root, bad, tmp_path)
    with pytest.raises(ValueError):
        paths.progress("../../etc")
    with pytest.raises(ValueError):
        _ = MemoryPaths(root, None, tmp_path).checkpoint

    other = MemoryPaths.for_session_dir(root, tmp_path / "elsewhere" / "s9", tmp_path / "cfg")
    assert other.session_id == "s9"
    assert other.checkpoint == tmp_path / "elsewhere" / "s9" / "checkpoint.md"


def test_sources_lists_existing_layers_across_sessions(tmp_path: Path) -> None:
    paths = MemoryPaths(tmp_path / "p", "now", tmp_path / "cfg")
    old = MemoryPaths(tmp_path / "p", "old", tmp_path / "cfg")
    assert paths.sources() == []
    ProjectMemoryWriter(paths.project_memory).save("rules", "x")
    append_note(paths.notes, "n")
    Checkpoint().save(old.checkpoint)
    old.progress("T1").parent.mkdir(parents=True)
    old.progress("T1").write_text("# T1\n")
    got = paths.sources()
    assert got[0] == IndexSource("memory", paths.project_memory)
    assert IndexSource("notes", paths.notes, "now") in got
    assert IndexSource("checkpoint", old.checkpoint, "old") in got
    assert IndexSource("progress", old.progress("T1"), "old") in got
    assert [s for s in paths.sources(all_sessions=False) if s.session == "old"] == []


def test_read_text_missing_is_empty(tmp_path: Path) -> None:
    assert read_text(tmp_path / "nope.md") == ""
