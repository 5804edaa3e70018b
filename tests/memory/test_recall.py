"""Recall on the queries a model writes: tokenisation, query expansion and the hard cases.

The hard cases are the ones ``benchmarks/bench_long_session.py`` and
``benchmarks/bench_recall.py`` found: the fact is worded one way, the question another, and
distractors share the question's common words.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from stagecrew.memory.index import (
    MemoryIndex,
    query_phrases,
    split_identifier,
    stem,
)

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_recall.py"


@pytest.fixture
def index(tmp_path: Path) -> MemoryIndex:
    ix = MemoryIndex(tmp_path / "state" / "memory.db")
    yield ix
    ix.close()


# ----------------------------------------------------------------------------- tokenisation


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("listens", "listen"),
        ("listening", "listen"),
        ("decisions", "decis"),
        ("caching", "cach"),
        ("owns", "owns"),  # "own*" would match every "own" in prose
        ("server", "server"),  # "serv*" would match "service"
        ("number", "number"),
        ("Fixed", "fixed"),  # "fix" is too short a stem
    ],
)
def test_stem(word: str, expected: str) -> None:
    assert stem(word) == expected


@pytest.mark.parametrize(
    ("token", "words"),
    [
        ("LedgerClient", ["ledger", "client"]),
        ("HTTPServer", ["http", "server"]),
        ("parse_config.py:42", ["parse", "config", "py", "42"]),
        ("127.0.0.1:48213", ["127", "0", "0", "1", "48213"]),
        ("--max-retries", ["max", "retries"]),
        ("getV2Ledger", ["get", "v", "2", "ledger"]),
    ],
)
def test_split_identifier(token: str, words: list[str]) -> None:
    assert split_identifier(token) == words


def test_query_words_bring_stems_and_synonyms_in_their_own_group() -> None:
    phrases = query_phrases("what port does the ledger mock listen on")
    by_pos: dict[int, list[str]] = {}
    for p in phrases:
        by_pos.setdefault(p.position, []).append(p.fts())
    assert sorted(by_pos) == [1, 4, 5, 6]  # what/does/the/on are stopwords
    # "listen" was typed, so it keeps its own group rather than being port's synonym
    assert by_pos[1] == ['"port"*', '"live resources"'] and by_pos[6] == ['"listen"*']
    assert '"ledger"*' in by_pos[4]
    assert '"fake"*' in by_pos[5] and '"stub"*' in by_pos[5]
    assert all(p.variant for p in phrases if p.fts() in ('"live resources"', '"fake"*'))
    # untyped, it comes in as port's synonym
    assert '"listen"*' in [p.fts() for p in query_phrases("mock port") if p.position == 1]


def test_camel_case_query_also_matches_its_words() -> None:
    raws = [p.raw for p in query_phrases("LedgerClient import")]
    assert "ledger client" in raws


def test_literals_are_not_stemmed_or_prefixed() -> None:
    (port,) = query_phrases("127.0.0.1:48213")
    assert port.fts() == '"127.0.0.1:48213"' and not port.prefix
    flag = query_phrases("--skip-ledger-sync")[0]
    assert flag.fts() == '"--skip-ledger-sync"'


# ----------------------------------------------------------------------------- hard cases


def _distract(index: MemoryIndex, n: int = 40) -> None:
    services = ["ledger", "billing", "auth", "search", "exporter"]
    rows = []
    for i in range(n):
        s = services[i % len(services)]
        rows.append(
            (
                "Notes",
                f"Port conflicts again on the CI runner; restarted the {s} job. Re-ran the {s}"
                f" tests: {100 + i} passed. The nightly CSV export read {i} ledger rows and the"
                f" CSV columns looked fine. Jonas{i} owns the {s}-dashboard-{i} service.",
            )
        )
    index.add_chunks("notes", "distractors", rows, session="old")


@pytest.mark.parametrize(
    ("fact", "query"),
    [
        # bench_long_session's two misses
        (
            "The v2 ledger mock listens on 127.0.0.1:48213; pointing the adapter at it.",
            "ledger mock port",
        ),
        (
            "Decision: keep the CSV column order frozen for the nightly job; new v2 fields go "
            "at the end.",
            "decision CSV column order nightly",
        ),
        # a port question answered by a URL that never says "port" or "listens"
        (
            "auth mock is up at http://0.0.0.0:22530/health",
            "what port does the auth mock listen on",
        ),
        # owner questions answered by "contact"
        (
            "Contact for billing: Maria Okafor, @mariaok, who reviews the schema.",
            "who owns billing",
        ),
        (
            "The staging orders database DSN is postgresql://app:s3cret@db-staging.internal:5432/o",
            "connection string for the staging orders db",
        ),
        (
            "Fixed `ImportError: cannot import name 'LedgerClient'` by pinning ledger-sdk==2.3.1.",
            "how did we fix the LedgerClient import error",
        ),
    ],
)
def test_natural_query_finds_the_fact(index: MemoryIndex, fact: str, query: str) -> None:
    _distract(index)
    index.add_chunks("archive", "fact", [("archive: assistant", fact)], session="s1")
    hits = index.search(query, limit=8)
    assert any(h.source == "fact" for h in hits), [h.text[:60] for h in hits]
    assert hits[0].source == "fact", [h.text[:60] for h in hits]


def test_port_question_snippet_shows_the_literal(index: MemoryIndex) -> None:
    _distract(index)
    text = ("lots of unrelated words here " * 20) + "The v2 ledger mock listens on 127.0.0.1:48213."
    index.add_chunks("archive", "fact", [("archive", text)])
    hit = index.search("what port does the ledger mock listen on")[0]
    assert hit.source == "fact"
    assert "127.0.0.1:48213" in hit.snippet


def test_common_word_still_pulls_in_its_chunk(tmp_path: Path) -> None:
    """A query word too common to rank ("search") still brings in the chunk that has it."""
    with MemoryIndex(tmp_path / "m.db") as ix:
        ix.RANK_BUDGET = 50
        rows = [
            ("x", f"search results page {i} shows search hits for the search box")
            for i in range(300)
        ]
        ix.add_chunks("archive", "bulk", rows)
        owners = [
            ("x", f"Person{i} owns the service-{i}; ask before changing it.") for i in range(60)
        ]
        ix.add_chunks("notes", "owners", owners)
        ix.add_chunks("notes", "fact", [("x", "Contact for search: Hana Haddad, @hanaha.")])
        hits = ix.search("who owns search", limit=8)
        assert hits and hits[0].source == "fact"


def test_hits_keep_their_fields(index: MemoryIndex) -> None:
    index.add_chunks("notes", "n", [("Live resources", "mock listens on localhost:8080")], "s1")
    (hit,) = index.search("mock port")
    assert (hit.kind, hit.source, hit.session, hit.heading) == (
        "notes",
        "n",
        "s1",
        "Live resources",
    )
    assert hit.score > 0 and hit.text.endswith("8080") and "localhost:8080" in hit.snippet


# ----------------------------------------------------------------------------- the benchmark


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_recall", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def test_recall_benchmark_runs_small(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    (result,) = bench.main(["--sizes", "300", "--sessions", "3"])
    assert result["facts"] == 30
    table = result["table"]
    assert table["all"]["queries"] == 60
    assert table["all"]["recall"] >= 0.8  # natural queries find most facts even when tiny
    assert 0 < table["all"]["mrr"] <= 1
    out = capsys.readouterr().out
    assert "| kind | queries | recall@8 | MRR |" in out and "| all |" in out


def test_recall_corpus_is_deterministic() -> None:
    bench = load_bench()
    _, _, a = bench.generate(sessions=2)
    _, _, b = bench.generate(sessions=2)
    assert [(f.text, f.queries) for f in a] == [(f.text, f.queries) for f in b]
    assert len({f.needle for f in a}) == len(a)  # every planted literal is unique


def test_port_question_finds_a_bare_literal_in_live_resources(
    tmp_path: Path, index: MemoryIndex
) -> None:
    """bench_long_session's port: the checkpoint keeps ``127.0.0.1:48213`` with no words."""
    _distract(index)
    ledger = [
        ("archive: tool", f"def ledger_step_{i}(rows, ledger): ledger.get({i})") for i in range(30)
    ]
    index.add_chunks("archive", "reads", ledger, session="s1")
    checkpoint = tmp_path / "sessions" / "s1" / "checkpoint.md"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_text(
        "# Session checkpoint\n\n## Active intent\n\n> migrate billing to v2\n\n"
        "## Live resources\n\n- `127.0.0.1:48213`\n"
    )
    index.sync_files([checkpoint])
    hits = index.search("ledger mock port")
    assert hits and "127.0.0.1:48213" in hits[0].text
    assert hits[0].heading.endswith("Live resources")
