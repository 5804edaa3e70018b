"""Benchmark memory-search recall on the queries a model really writes.

Run: ``.venv/bin/python benchmarks/bench_recall.py`` (``--quick`` skips the 100k-chunk
latency run). ``main(argv)`` returns the numbers so a test can run it at a tiny size.

Once a fact has left the live context, ``MemoryIndex.search`` is the only way back to it, and
the model does not search with the words that were written: it asks "what port does the ledger
mock listen on" for ``The ledger mock listens on 127.0.0.1:48213``. So this benchmark plants
facts the way sessions write them and asks for them the way models ask:

* 20 generated sessions (fixed seed), each writing ``checkpoint.md``, ``notes.md`` and
  archived conversation, plus one shared project ``MEMORY.md``, all indexed through the real
  ``MemoryIndex`` on a real SQLite file (``sync_files`` and ``archive``, as sessions do);
* 200 planted facts of the kinds that matter (goals, ports, DSNs, paths, flags, decisions,
  error fixes, people, services), each with two queries worded differently from the fact:
  synonyms, partial identifiers, questions in prose;
* distractors: the same services, ports, paths and people appear in other sentences of the
  same sessions, and background chunks from ``bench_memory_search`` pad the index.

It reports recall@8 and MRR per kind and overall (a query counts as found when a hit's text
contains the fact's unique literal), and search latency p50/p95 for these queries at 10k and
100k background chunks, as markdown tables.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_memory_search import build_index
from stagecrew.memory.index import MemoryIndex
from stagecrew.memory.layers import IndexSource

SEED = 20261202
SESSIONS = 20
FACTS_PER_SESSION = 10
KINDS = (
    "goal",
    "port",
    "dsn",
    "path",
    "flag",
    "decision",
    "error_fix",
    "person",
    "service",
)
SERVICES = [
    "ledger",
    "billing",
    "invoices",
    "notifications",
    "search",
    "auth",
    "payments",
    "inventory",
    "shipping",
    "reporting",
    "catalog",
    "pricing",
    "accounts",
    "audit",
    "webhooks",
    "scheduler",
    "exporter",
    "importer",
    "metrics",
    "refunds",
]
ROLES = {"mock": "fake", "stub server": "stub", "dev server": "local server", "sidecar": "proxy"}
DATABASES = ["orders", "customers", "analytics", "events", "sessions", "payouts"]
ENVS = {"staging": "staging", "development": "dev", "test": "test", "replica": "read replica"}
CONCEPTS = [
    "retry policy",
    "rate limiter",
    "csv writer",
    "currency rounding",
    "token bucket",
    "schema validator",
    "webhook signer",
    "batch scheduler",
    "report renderer",
    "cache warmer",
    "tax calculator",
    "pdf exporter",
    "audit trail",
    "id generator",
    "backoff timer",
]
# Test modules the distractor tool output runs: named unlike the facts' modules, since a
# project has one ``retry_policy`` module, not one per package (with the same stem everywhere,
# "where is the retry policy code" would have dozens of right answers the benchmark calls wrong).
TEST_WORDS = ["smoke", "roundtrip", "regression", "contract", "happy_path", "edge_cases"]
PACKAGES = ["billing", "core", "api", "ledger", "export", "sync", "jobs"]
FLAG_PURPOSES = (
    ("skip-ledger-sync", "skip the ledger sync", "avoid syncing the ledger"),
    ("no-network-isolation", "turn off network isolation", "disable the network sandbox"),
    ("dry-run-export", "run the export without writing files", "test the export without output"),
    ("reuse-db", "reuse the test database", "keep the test db between runs"),
    ("max-batch-rows", "cap the rows per batch", "limit the batch size"),
    ("freeze-clock", "freeze the clock in tests", "pin the time during tests"),
    ("legacy-columns", "keep the legacy column layout", "use the old columns"),
    ("fail-fast-hooks", "stop at the first failing hook", "abort on the first hook error"),
)
TOOLS = ("pytest", "the exporter CLI", "alembic", "the sync job", "make e2e")
DECISIONS = (
    ("keep the CSV column order frozen for the nightly job", "csv column order", "nightly csv"),
    ("store money as integer cents, never floats", "how to store money", "amount precision"),
    ("version the public API in the URL path", "api versioning", "versioned endpoints"),
    ("use UTC timestamps everywhere and convert only in the UI", "timezones", "utc timestamps"),
    ("paginate with opaque cursors instead of offsets", "pagination", "cursor paging"),
    (
        "retry webhooks with exponential backoff capped at ten minutes",
        "webhook retries",
        "retry backoff cap",
    ),
    ("log in JSON lines with a request id on every line", "log format", "structured logging"),
    (
        "run schema migrations before deploying the new code",
        "migration order",
        "deploy and migrations",
    ),
    ("cache exchange rates for one hour", "exchange rate caching", "fx rate cache ttl"),
    (
        "generate invoice numbers per tenant with a yearly prefix",
        "invoice numbering",
        "invoice number format",
    ),
)
ERRORS = (
    (
        "ImportError",
        "cannot import name 'LedgerClient'",
        "LedgerClient import",
        "pinning ledger-sdk==2.3.1",
    ),
    ("KeyError", "'currency_code'", "currency_code key", "defaulting missing codes to EUR"),
    (
        "TimeoutError",
        "read timed out after 30s",
        "read timeout",
        "raising the client timeout to 90s",
    ),
    (
        "UnicodeDecodeError",
        "invalid start byte 0xff",
        "decode error",
        "opening the file with encoding='latin-1'",
    ),
    (
        "IntegrityError",
        "duplicate key value violates unique constraint",
        "duplicate key",
        "upserting on the natural key",
    ),
    (
        "PermissionError",
        "[Errno 13] Permission denied: '/var/run/exporter.sock'",
        "permission denied socket",
        "running the exporter as the billing user",
    ),
    (
        "ConnectionRefusedError",
        "[Errno 111] Connection refused",
        "connection refused",
        "starting the mock before the tests",
    ),
    (
        "AssertionError",
        "expected 160 rows got 159",
        "row count assertion",
        "including the trailing summary row",
    ),
)
FIRST = [
    "Maria",
    "Jonas",
    "Aiko",
    "Priya",
    "Tomasz",
    "Leila",
    "Omar",
    "Greta",
    "Kwame",
    "Sofia",
    "Diego",
    "Hana",
]
LAST = [
    "Okafor",
    "Lindqvist",
    "Tanaka",
    "Raman",
    "Nowak",
    "Haddad",
    "Farouk",
    "Berg",
    "Mensah",
    "Costa",
    "Rivera",
    "Sato",
]
TOPICS = ("the schema", "the export format", "the retry settings", "the deploy")
GOAL_VERBS = (
    ("migrate", "migration"),
    ("split", "split"),
    ("speed up", "speedup"),
    ("rewrite", "rewrite"),
)
GOAL_TARGETS = (
    "the v2 ledger API",
    "async workers",
    "a streaming writer",
    "the new tax tables",
    "a separate repository",
)
CONSTRAINTS = (
    "breaking the nightly CSV job",
    "downtime",
    "changing the public API",
    "losing audit history",
)


@dataclass
class Fact:
    """One planted fact: its sentence, the literal that proves a hit, and two queries."""

    kind: str
    text: str
    needle: str
    queries: tuple[str, str]
    session: str = ""
    place: str = ""


@dataclass
class Session:
    """What one generated session wrote: checkpoint sections, notes, archive, memory lines."""

    sid: str
    checkpoint: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)
    archive: list[dict[str, Any]] = field(default_factory=list)


class FactMaker:
    """Generates unique facts with queries; every literal a needle uses is unique."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()
        self.n = 0

    def unique(self, make: Callable[[], str]) -> str:
        for _ in range(1000):
            value = make()
            if value not in self.used:
                self.used.add(value)
                return value
        raise RuntimeError("generator space exhausted")

    def port(self) -> int:
        return int(self.unique(lambda: str(self.rng.randint(20000, 60999))))

    def make(self, kind: str) -> Fact:
        return getattr(self, f"_{kind}")()

    def _goal(self) -> Fact:
        r = self.rng
        verb, noun = r.choice(GOAL_VERBS)
        s = r.choice(SERVICES)
        target = r.choice(GOAL_TARGETS)
        constraint = r.choice(CONSTRAINTS)
        text = self.unique(
            lambda: (
                f"Goal: {verb} the {s} {r.choice(['exporter', 'service', 'worker'])} to "
                f"{target} without {constraint}; ticket OPS-{r.randint(1000, 9999)}."
            )
        )
        thing = text.split(" to ")[0].split()[-1]
        q1 = f"what is the goal of this work on the {s} {thing}"
        q2 = f"{s} {noun} objective {target.split()[-1]}"
        return Fact("goal", text, text.split(";")[0], (q1, q2))

    def _port(self) -> Fact:
        r = self.rng
        s = r.choice(SERVICES)
        role = r.choice(list(ROLES))
        host = r.choice(["127.0.0.1", "localhost", "0.0.0.0"])
        p = self.port()
        text = r.choice(
            [
                f"The {s} {role} listens on {host}:{p}.",
                f"Started the {s} {role} on {host}:{p} (pid {r.randint(2000, 90000)}).",
                f"{s} {role} is up at http://{host}:{p}/health",
            ]
        )
        q1 = f"what port does the {s} {role} listen on"
        q2 = f"{s} {ROLES[role]} port number"
        return Fact("port", text, f":{p}", (q1, q2))

    def _dsn(self) -> Fact:
        r = self.rng
        db = r.choice(DATABASES)
        env = r.choice(list(ENVS))
        p = self.port()
        host = f"db-{env}-{r.randint(1, 9)}.internal"
        dsn = f"postgresql://app_{db}:s3cret@{host}:{p}/{db}_{env}"
        text = r.choice(
            [
                f"The {env} {db} database DSN is {dsn}",
                f"DATABASE_URL for {env} ({db}): {dsn}",
                f"Connect to the {db} db on {env} with {dsn}",
            ]
        )
        q1 = f"connection string for the {ENVS[env]} {db} database"
        q2 = f"postgres url {db} {ENVS[env]}"
        return Fact("dsn", text, dsn, (q1, q2))

    def _path(self) -> Fact:
        r = self.rng
        concept = r.choice(CONCEPTS)
        pkg = r.choice(PACKAGES)
        stem = concept.replace(" ", "_")
        path = self.unique(lambda: f"src/{pkg}/{stem}_v{r.randint(2, 99)}.py")
        text = r.choice(
            [
                f"The {concept} logic lives in {path}.",
                f"Moved the {concept} into `{path}`; the old module is gone.",
                f"{path} holds the {concept} now (see its tests).",
            ]
        )
        words = concept.split()
        q1 = f"where is the {concept} code"
        q2 = f"{pkg} {words[-1]} module file"
        return Fact("path", text, path, (q1, q2))

    def _flag(self) -> Fact:
        r = self.rng
        name, purpose, alt = r.choice(FLAG_PURPOSES)
        tool = r.choice(TOOLS)
        flag = self.unique(lambda: f"--{name}-{r.randint(2, 999)}")
        text = r.choice(
            [
                f"Run {tool} with {flag} to {purpose}.",
                f"To {purpose}, pass {flag} to {tool}.",
            ]
        )
        q1 = f"which flag to {alt}"
        q2 = f"{' '.join(name.split('-')[:2])} option for {tool.split()[-1]}"
        return Fact("flag", text, flag, (q1, q2))

    def _decision(self) -> Fact:
        r = self.rng
        choice, topic, alt = r.choice(DECISIONS)
        ref = self.unique(lambda: f"ADR-{r.randint(100, 999)}")
        text = r.choice(
            [
                f"Decision ({ref}): {choice}.",
                f"We decided to {choice} ({ref}).",
                f"Agreed with the team: {choice}; recorded as {ref}.",
            ]
        )
        q1 = f"what did we decide about {topic}"
        q2 = f"decision {alt}"
        return Fact("decision", text, ref, (q1, q2))

    def _error_fix(self) -> Fact:
        r = self.rng
        err, msg, short, fix = r.choice(ERRORS)
        s = r.choice(SERVICES)
        ref = self.unique(lambda: f"{s}-{r.randint(100, 999)}")
        text = f"Fixed `{err}: {msg}` in the {s} job ({ref}) by {fix}."
        q1 = f"how did we fix the {short} error in {s}"
        q2 = f"{err} {s} workaround"
        return Fact("error_fix", text, ref, (q1, q2))

    def _person(self) -> Fact:
        r = self.rng
        name = self.unique(lambda: f"{r.choice(FIRST)} {r.choice(LAST)}")
        s = r.choice(SERVICES)
        topic = r.choice(TOPICS)
        handle = "@" + name.split()[0].lower() + name.split()[1][:2].lower()
        text = r.choice(
            [
                f"{name} ({handle}) owns the {s} service; ask before changing {topic}.",
                f"Contact for {s}: {name}, {handle}, who reviews {topic}.",
            ]
        )
        q1 = f"who owns {s}"
        q2 = f"person to ask about {topic} in {s}"
        return Fact("person", text, name, (q1, q2))

    def _service(self) -> Fact:
        r = self.rng
        s = r.choice(SERVICES)
        env = r.choice(list(ENVS))
        p = self.port()
        url = f"https://{s}.{env}.internal:{p}/v{r.randint(1, 3)}"
        text = r.choice(
            [
                f"The {s} service runs at {url} in {env}.",
                f"{env} endpoint of {s}: {url}",
            ]
        )
        q1 = f"{s} service url on {ENVS[env]}"
        q2 = f"where is the {s} endpoint hosted"
        return Fact("service", text, url, (q1, q2))


def _distractor(rng: random.Random, fm: FactMaker) -> str:
    """A sentence that shares the facts' vocabulary but none of their literals.

    Generic work sentences (test runs, reads, logs) name the same services, modules and
    databases as the facts; near-misses on a fact's topic ("discussed X but did not decide")
    are rarer, as in a real project, where a topic comes up a few times, not in every note.
    """
    s = rng.choice(SERVICES)
    concept = rng.choice(CONCEPTS)
    test = f"tests/{rng.choice(PACKAGES)}/test_{rng.choice(TEST_WORDS)}.py"
    if rng.random() < 0.15:
        return rng.choice(
            [
                f"Discussed {rng.choice(DECISIONS)[1]} but did not decide anything yet.",
                f"{rng.choice(ERRORS)[0]} showed up once in the {s} logs; could not reproduce.",
                f"Owner of the {s} dashboard is still unclear; see the wiki.",
                f"Port conflicts again on the CI runner; restarted the {s} job.",
            ]
        )
    return rng.choice(
        [
            f"Re-ran the {s} tests: {rng.randint(100, 200)} passed, {rng.randint(0, 4)} failed.",
            f"Looked at the {concept} in the {s} code again; nothing to change yet.",
            f"The {s} service logs are noisy; the {concept} warns on every batch.",
            f"Read {test} to follow the flow.",
            f"Asked about the {s} schema in the channel; no answer so far.",
            f"The {rng.choice(DATABASES)} database migration is slow on large tables.",
        ]
    )


PLACES = {
    "goal": ("checkpoint:Active intent", "archive", "notes"),
    "port": ("checkpoint:Live resources", "archive", "notes"),
    "dsn": ("checkpoint:Live resources", "memory", "notes"),
    "path": ("checkpoint:Files touched", "archive", "notes"),
    "flag": ("memory", "notes", "archive"),
    "decision": ("checkpoint:Decisions", "memory", "notes"),
    "error_fix": ("checkpoint:Errors and fixes", "archive", "notes"),
    "person": ("memory", "notes", "archive"),
    "service": ("checkpoint:Live resources", "memory", "archive"),
}


def generate(
    seed: int = SEED, sessions: int = SESSIONS
) -> tuple[list[Session], list[str], list[Fact]]:
    """Sessions, project-memory lines and facts; same seed, same corpus."""
    rng = random.Random(seed)
    fm = FactMaker(rng)
    out: list[Session] = []
    memory: list[str] = []
    facts: list[Fact] = []
    k = 0
    for i in range(sessions):
        sess = Session(f"s{i:02d}-{rng.randint(1000, 9999)}")
        for _ in range(FACTS_PER_SESSION):
            fact = fm.make(KINDS[k % len(KINDS)])
            k += 1
            fact.session = sess.sid
            fact.place = rng.choice(PLACES[fact.kind])
            facts.append(fact)
            if fact.place.startswith("checkpoint:"):
                sess.checkpoint[fact.place.split(":", 1)[1]].append(f"- {fact.text}")
            elif fact.place == "notes":
                sess.notes.append(fact.text + " " + _distractor(rng, fm))
            elif fact.place == "memory":
                memory.append(f"- {fact.text}")
            else:
                sess.archive += _turn(rng, fm, fact.text)
        for section in ("Current work", "Discovered knowledge", "Open notes", "Decisions"):
            for _ in range(rng.randint(2, 5)):
                sess.checkpoint[section].append(f"- {_distractor(rng, fm)}")
        for _ in range(rng.randint(8, 14)):
            sess.notes.append(" ".join(_distractor(rng, fm) for _ in range(rng.randint(1, 4))))
        for _ in range(rng.randint(20, 40)):
            sess.archive += _turn(rng, fm, _distractor(rng, fm))
        rng.shuffle(sess.notes)
        out.append(sess)
    for _ in range(40):
        memory.append(f"- {_distractor(rng, fm)}")
    rng.shuffle(memory)
    return out, memory, facts


def _turn(rng: random.Random, fm: FactMaker, said: str) -> list[dict[str, Any]]:
    """An assistant message with a tool call, and its (noisy) result."""
    cid = f"call_{rng.randint(10**8, 10**9)}"
    path = f"tests/{rng.choice(PACKAGES)}/test_{rng.choice(TEST_WORDS)}.py"
    lines = [f"{path}::test_case_{n} PASSED" for n in range(rng.randint(2, 6))]
    return [
        {
            "role": "assistant",
            "content": said,
            "tool_calls": [
                {
                    "id": cid,
                    "type": "function",
                    "function": {"name": "bash", "arguments": f'{{"command": "pytest {path}"}}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": cid, "content": "\n".join(lines)},
    ]


def write_corpus(
    root: Path, index: MemoryIndex, sessions: list[Session], memory: list[str]
) -> None:
    """Write the files the way sessions do and index them through the real API."""
    sources: list[IndexSource] = []
    mem = root / ".stagecrew" / "memory" / "MEMORY.md"
    mem.parent.mkdir(parents=True, exist_ok=True)
    mem.write_text("# Project memory\n\n## Durable knowledge\n\n" + "\n".join(memory) + "\n")
    sources.append(IndexSource("memory", mem))
    for n, sess in enumerate(sessions):
        sdir = root / ".stagecrew" / "state" / "sessions" / sess.sid
        sdir.mkdir(parents=True, exist_ok=True)
        cp = ["# Session checkpoint"]
        for section, lines in sess.checkpoint.items():
            cp.append(f"## {section}\n\n" + "\n".join(lines))
        (sdir / "checkpoint.md").write_text("\n\n".join(cp) + "\n")
        notes = ["# Notes"]
        for j, note in enumerate(sess.notes):
            notes.append(f"## 2026-11-{1 + n:02d} {8 + j // 60:02d}:{j % 60:02d}:00Z\n\n{note}")
        (sdir / "notes.md").write_text("\n\n".join(notes) + "\n")
        sources += [
            IndexSource("checkpoint", sdir / "checkpoint.md", sess.sid),
            IndexSource("notes", sdir / "notes.md", sess.sid),
        ]
        index.archive(sess.sid, sess.archive, ts=1.7e9 + n)
    index.sync_files(sources)


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def measure(
    index: MemoryIndex, facts: list[Fact]
) -> tuple[dict[str, dict[str, float]], list[float], list[tuple[Fact, str]]]:
    """Recall@8 and MRR per kind (plus ``all``), per-query latency, and the misses."""
    per: dict[str, list[float]] = defaultdict(list)
    ms: list[float] = []
    misses: list[tuple[Fact, str]] = []
    # Two sessions may plant the same kind of fact about the same thing ("the token bucket
    # logic lives in ..._v71.py" and "... _v88.py"): the question then has two right answers,
    # and either one found counts for both facts.
    answers: dict[str, set[str]] = defaultdict(set)
    for fact in facts:
        for q in fact.queries:
            answers[q].add(fact.needle)
    for fact in facts:
        for q in fact.queries:
            t0 = time.perf_counter()
            hits = index.search(q, limit=8)
            ms.append((time.perf_counter() - t0) * 1000)
            rank = next(
                (i + 1 for i, h in enumerate(hits) if any(n in h.text for n in answers[q])), 0
            )
            rr = 1.0 / rank if rank else 0.0
            per[fact.kind].append(rr)
            per["all"].append(rr)
            if not rank:
                misses.append((fact, q))
    table = {
        kind: {
            "queries": float(len(v)),
            "recall": sum(1 for x in v if x > 0) / len(v),
            "mrr": statistics.fmean(v),
        }
        for kind, v in per.items()
    }
    return table, ms, misses


def run(background: int, seed: int = SEED, sessions: int = SESSIONS) -> dict[str, Any]:
    """Index ``background`` padding chunks plus the sessions, then ask every query."""
    sess, memory, facts = generate(seed, sessions)
    with tempfile.TemporaryDirectory(prefix="stagecrew-recall-") as tmp:
        root = Path(tmp)
        index, build_s = build_index(root / "memory.db", background)
        try:
            write_corpus(root, index, sess, memory)
            index.optimize()
            for fact in facts[:20]:  # warm the page cache like a running session would be
                index.search(fact.queries[0])
            table, ms, misses = measure(index, facts)
            chunks = index.count()
        finally:
            index.close()
    return {
        "background": background,
        "chunks": chunks,
        "build_s": build_s,
        "table": table,
        "p50": _pct(ms, 50),
        "p95": _pct(ms, 95),
        "misses": misses,
        "facts": len(facts),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run and print the recall table (first size) and the latency table (every size)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k background chunks only")
    ap.add_argument("--sizes", type=int, nargs="*", help="background chunk counts")
    ap.add_argument("--sessions", type=int, default=SESSIONS)
    ap.add_argument("--misses", type=int, default=0, help="print this many missed queries")
    args = ap.parse_args(argv)
    sizes = args.sizes or ([10_000] if args.quick else [10_000, 100_000])
    results = [run(n, sessions=args.sessions) for n in sizes]
    first = results[0]
    print(
        f"recall on natural queries: {first['facts']} facts x 2 queries, "
        f"{args.sessions} sessions, {first['chunks']:,} chunks\n"
    )
    print("| kind | queries | recall@8 | MRR |")
    print("|---|---:|---:|---:|")
    for kind in (*KINDS, "all"):
        row = first["table"].get(kind)
        if row:
            print(f"| {kind} | {row['queries']:.0f} | {row['recall']:.1%} | {row['mrr']:.3f} |")
    print("\n| chunks | p50 ms | p95 ms | recall@8 |")
    print("|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['chunks']:,} | {r['p50']:.2f} | {r['p95']:.2f}"
            f" | {r['table']['all']['recall']:.1%} |"
        )
    for fact, q in first["misses"][: args.misses]:
        print(f"MISS [{fact.kind}/{fact.place}] {q!r} -> {fact.text}")
    return results


if __name__ == "__main__":
    main()
