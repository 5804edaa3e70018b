"""The FTS5 index on real SQLite files: sync, re-index on change, archive, search, planner."""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

import pytest

from stagecrew.memory.index import (
    MAX_CHUNK_CHARS,
    MemoryIndex,
    build_fts_query,
    chunk_markdown,
    infer_source,
    query_phrases,
)
from stagecrew.memory.layers import Checkpoint, IndexSource, MemoryPaths, ProjectMemoryWriter

MEMORY = """# Project memory

## Rules

- Run `pytest -q` before every commit.
- Never edit generated files under build/.

## Durable knowledge

The config parser lives in src/app/config.py:42 and `parse_config` reads --max-retries.
The dev server listens on localhost:8080; the database URL is in DATABASE_URL.
"""


@pytest.fixture
def index(tmp_path: Path) -> MemoryIndex:
    ix = MemoryIndex(tmp_path / "state" / "memory.db")
    yield ix
    ix.close()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def age(path: Path, seconds: float = 10.0) -> None:
    """Push a file's mtime into the past so the racy-mtime rule does not force a re-hash."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def test_wal_mode_and_schema(index: MemoryIndex) -> None:
    conn = sqlite3.connect(index.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"chunks", "chunks_fts", "files", "meta"} <= names


def test_chunking_by_heading_and_size() -> None:
    para = "word " * 120  # ~600 chars
    text = "# T\n\n## Small\n\none line\n\n## Big\n\n" + "\n\n".join([para] * 8)
    text += "\n\n```python\n" + "x = 1\n\n" * 100 + "```\n\n## Empty\n"
    chunks = chunk_markdown(text)
    heads = [h for h, _ in chunks]
    assert heads[0] == "T / Small"
    assert all(h in ("T / Small", "T / Big") for h in heads)  # empty section skipped
    assert all(len(c) <= MAX_CHUNK_CHARS for _, c in chunks)
    big = [c for h, c in chunks if h == "T / Big"]
    assert len(big) >= 4 and all(len(c) >= 500 for c in big[:-1])
    # a fenced block is never split at its blank lines unless it exceeds the max on its own
    assert any(c.startswith("```python") for c in big)


def test_sync_indexes_and_skips_unchanged(tmp_path: Path, index: MemoryIndex) -> None:
    mem = write(tmp_path / "MEMORY.md", MEMORY)
    first = index.sync_files([IndexSource("memory", mem)])
    assert first.indexed == 1 and first.chunks >= 2
    age(mem)
    index.sync_files([IndexSource("memory", mem)])  # records the aged stat
    again = index.sync_files([IndexSource("memory", mem)])
    assert (again.indexed, again.unchanged) == (0, 1)
    hits = index.search("parse_config")
    assert hits and hits[0].kind == "memory" and "Durable knowledge" in hits[0].heading


def test_touch_without_change_rehashes_but_keeps_chunks(tmp_path: Path, index: MemoryIndex) -> None:
    mem = write(tmp_path / "MEMORY.md", MEMORY)
    index.sync_files([mem])
    ids = [h.chunk_id for h in index.search("pytest")]
    os.utime(mem)  # same bytes, new mtime
    stats = index.sync_files([mem])
    assert (stats.indexed, stats.rehashed) == (0, 1)
    assert [h.chunk_id for h in index.search("pytest")] == ids


def test_index_rebuilt_after_file_change(tmp_path: Path, index: MemoryIndex) -> None:
    mem = write(tmp_path / "MEMORY.md", MEMORY)
    index.sync_files([mem])
    assert index.search("localhost:8080")[0].kind == "global"  # inferred: not under .stagecrew
    # same size, rewritten within the same second: must still be noticed (racy mtime)
    changed = MEMORY.replace("localhost:8080", "localhost:9090")
    assert len(changed) == len(MEMORY)
    mem.write_text(changed)
    stats = index.sync_files([mem])
    assert stats.indexed == 1
    assert not index.search("localhost:8080", min_score_fraction=0)
    assert index.search("localhost:9090")


def test_deleted_file_is_removed(tmp_path: Path, index: MemoryIndex) -> None:
    notes = write(tmp_path / "sessions" / "s1" / "notes.md", "## 2024\n\nremember zebra-crossing\n")
    index.sync_files([notes])
    assert index.search("zebra")
    notes.unlink()
    assert index.sync_files([notes]).removed == 1
    assert index.search("zebra") == []
    write(tmp_path / "a.md", "giraffe facts\n")
    index.sync_files([tmp_path / "a.md"])
    (tmp_path / "a.md").unlink()
    assert index.forget_missing() == 1


def test_persisted_across_reopen(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    with MemoryIndex(db) as ix:
        ix.archive("s1", [{"role": "user", "content": "the flamingo migration failed"}])
    with MemoryIndex(db) as ix:
        assert ix.search("flamingo")[0].kind == "archive"


def test_archive_is_findable_and_idempotent(index: MemoryIndex) -> None:
    messages = [
        {"role": "user", "content": "why does the importer crash on empty CSV files?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "read", "arguments": '{"path": "src/importer.py"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "def load(rows):\n    return rows[0]"},
        {"role": "assistant", "content": "IndexError on rows[0] when the file is empty."},
        {"role": "tool", "tool_call_id": "nope", "content": "orphan output kept as text"},
    ]
    added = index.archive("sess-1", messages)
    assert added >= 1
    assert index.archive("sess-1", messages) == 0  # same content stored once
    hits = index.search("src/importer.py")
    assert hits[0].kind == "archive" and hits[0].session == "sess-1"
    assert "read(src/importer.py)" in hits[0].text
    assert "IndexError" in index.search("IndexError rows")[0].text
    # a huge message is split into several chunks, all findable
    big = [{"role": "tool", "content": ("lorem ipsum " * 200 + "\n") * 5 + "needle_xyz"}]
    assert index.archive("sess-1", big) > 1
    assert index.search("needle_xyz")


def test_kinds_and_sessions_filters(tmp_path: Path, index: MemoryIndex) -> None:
    mem = write(tmp_path / "MEMORY.md", "## Rules\n\nthe walrus rule\n")
    index.sync_files([IndexSource("memory", mem)])
    index.archive("a", [{"role": "user", "content": "walrus in session a"}])
    index.archive("b", [{"role": "user", "content": "walrus in session b"}])
    assert {h.kind for h in index.search("walrus")} == {"memory", "archive"}
    assert {h.kind for h in index.search("walrus", kinds=["archive"])} == {"archive"}
    assert [h.session for h in index.search("walrus", sessions=["b"])] == ["b"]
    assert index.search("walrus", kinds=["notes"]) == []


def test_min_score_cut(index: MemoryIndex) -> None:
    strong = "quokka " * 5 + "habitat report"
    index.add_chunks("notes", "n1", [("quokka habitat", strong)])
    for i in range(30):
        index.add_chunks("notes", f"w{i}", [("misc", f"entry {i} about habitat and weather")])
    everything = index.search("quokka habitat", limit=20, min_score_fraction=0)
    cut = index.search("quokka habitat", limit=20, min_score_fraction=0.3)
    assert everything[0].source == "n1" and cut[0].source == "n1"
    assert len(cut) < len(everything)
    assert all(h.score >= 0.3 * cut[0].score for h in cut)
    assert any(h.score < 0.3 * everything[0].score for h in everything)


@pytest.mark.parametrize(
    ("query", "needle", "first"),
    [
        ("src/app/config.py:42", "src/app/config.py:42", True),
        ("config.py", "config.py", True),
        ("--max-retries", "--max-retries", True),
        ("8080", "localhost:8080", True),
        ("localhost:8080", "localhost:8080", True),
        ("DATABASE_URL", "DATABASE_URL", True),
        ("parse_config", "parse_config", True),
        ("what port does the dev server use?", "localhost:8080", True),
        # a part of an identifier still finds it (short distractors may rank above)
        ("config", "parse_config", False),
    ],
)
def test_literal_queries(
    tmp_path: Path, index: MemoryIndex, query: str, needle: str, first: bool
) -> None:
    index.sync_files([IndexSource("memory", write(tmp_path / "MEMORY.md", MEMORY))])
    for i in range(20):  # distractors
        index.add_chunks("archive", f"d{i}", [("x", f"src/app/other{i}.py:{i} config notes")])
    hits = index.search(query, limit=8 if first else 30, min_score_fraction=0.3 if first else 0)
    assert hits, query
    if first:
        assert needle in hits[0].text
        assert needle.split(":")[0].split("/")[-1] in hits[0].snippet
    else:
        assert any(needle in h.text for h in hits)


def test_exact_line_beats_other_lines(index: MemoryIndex) -> None:
    index.add_chunks("archive", "a", [("x", "the crash is at src/app.py:42 in load()")])
    index.add_chunks("archive", "b", [("x", "see src/app.py:7 for the import")])
    index.add_chunks("archive", "c", [("x", "app.py is the entry point")])
    hits = index.search("src/app.py:42", min_score_fraction=0)
    assert hits[0].source == "a"
    assert {h.source for h in hits} >= {"a"}


def test_queries_never_raise(index: MemoryIndex) -> None:
    index.add_chunks("notes", "n", [("x", "ordinary text about NEAR and AND operators")])
    rng = random.Random(7)
    alphabet = "abc AND OR NOT NEAR ( ) \" * ^ : - + { } [ ] / \\ . , ; ' ` ~ ! @ # $ % & = | ? < >"
    weird = [
        "",
        "   ",
        '"',
        '"unbalanced',
        "NEAR(",
        "a AND",
        "* OR *",
        "col:value",
        "-x",
        "^start",
        "\x00",
        "日本語 テキスト",
        "🚀",
        "a" * 5000,
        " ".join(["term"] * 500),
    ]
    weird += [
        "".join(rng.choice([*alphabet.split(" "), " "]) for _ in range(40)) for _ in range(300)
    ]
    for q in weird:
        assert isinstance(index.search(q), list)
        assert isinstance(index.search(q, kinds=["notes"], sessions=["x"]), list)
    assert index.search("NEAR AND")  # operators are just words


def test_query_builder() -> None:
    assert build_fts_query("") is None
    assert build_fts_query("the a of") == '"the" OR "a" OR "of"'  # stopwords only: kept
    q = build_fts_query("why does src/app.py:42 fail?")
    # plain words of four letters or more match by prefix (``fail`` finds ``failed``)
    assert q == '"src/app.py:42" OR "src/app.py" OR "app.py" OR "fail"*'
    assert build_fts_query('say "hi"') == '"say" OR "hi"'
    assert build_fts_query('a"b') == '"a""b"'
    many = " ".join(f"word{i}" for i in range(100))
    assert len(query_phrases(many)) == 24


def test_infer_source(tmp_path: Path) -> None:
    paths = MemoryPaths(tmp_path / "p", "s1", tmp_path / "cfg")
    assert infer_source(paths.checkpoint) == IndexSource("checkpoint", paths.checkpoint, "s1")
    assert infer_source(paths.notes).kind == "notes"
    assert infer_source(paths.progress("T1")).session == "s1"
    assert infer_source(paths.project_memory).kind == "memory"
    assert infer_source(paths.global_memory).kind == "global"


def test_memory_paths_sources_sync_end_to_end(tmp_path: Path) -> None:
    paths = MemoryPaths(tmp_path / "p", "s2", tmp_path / "cfg")
    old = MemoryPaths(tmp_path / "p", "s1", tmp_path / "cfg")
    cp = Checkpoint()
    cp.set("Discovered knowledge", "- the billing job runs at 03:00 via cron")
    cp.save(old.checkpoint)
    ProjectMemoryWriter(paths.project_memory).save("rules", "no force pushes")
    with MemoryIndex(paths.index_db) as ix:
        ix.sync_files(paths.sources())
        hit = ix.search("billing cron")[0]
        assert (hit.kind, hit.session) == ("checkpoint", "s1")
        assert ix.search("force pushes")[0].kind == "memory"


def test_planner_keeps_common_words_out_of_bm25(tmp_path: Path) -> None:
    """Above RANK_BUDGET rows, very common words are not ranked; rare terms still win."""
    with MemoryIndex(tmp_path / "m.db") as ix:
        ix.RANK_BUDGET = 50
        rows = [("x", f"common words everywhere item {i} src module py") for i in range(400)]
        ix.add_chunks("archive", "bulk", rows)
        ix.add_chunks("notes", "needle", [("x", "common words near the rare_marmot here")])
        rounds, rest, _ = ix._plan(query_phrases("common rare_marmot"))
        assert [p.raw for p in rounds[0]] == ["rare_marmot"]
        assert [p.raw for p in rest] == ["common"]
        assert ix.search("common rare_marmot")[0].source == "needle"
        # only common words: the newest matching chunks are scored instead
        hits = ix.search("common words", limit=3)
        assert len(hits) == 3 and all(h.score > 0 for h in hits)
        assert hits[0].chunk_id > 300
        assert "common words" in hits[0].snippet
