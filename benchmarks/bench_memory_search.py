"""Benchmark the memory search index: build time and query latency at 10k / 100k chunks.

Run ``python benchmarks/bench_memory_search.py`` (``--quick`` for 10k only,
``--compare-tokenizers`` to also measure exact-literal recall of alternative tokenizers).
Importable: ``main(argv)`` returns the result rows so a test can run it at a tiny size.

The corpus is generated with a fixed seed to look like what the index really holds: prose
notes with a Zipf-distributed technical vocabulary, code snippets with identifiers, tool output
(pytest logs, tracebacks) with paths and line numbers, ports, versions, ``--flags`` and env
vars. Queries mix what models actually send: a bare identifier, ``path:line``, a flag, a port,
a question in prose, punctuation soup and words that match nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stagecrew.memory.index import DEFAULT_TOKENIZER, MemoryIndex

SEED = 1234
_PROSE_TEXT = """
the a to of and in is for that it on with as this be by we are not from at or an was have
if can will should when which but then so all use used new one also only into more after need
test tests function file files module error errors config value values request response server
client cache memory index query queries parse parser build run runs fix fixed bug failing fails
passes retry retries timeout connection database migration schema table column row session
token tokens context window agent actor task tasks tool tool call result output input path
import export class method argument default option flag environment variable port host url
version release install package dependency lock thread process worker queue event loop async
await handler route endpoint status code header payload json yaml toml markdown checkpoint
note notes summary decision rule knowledge architecture layer search rank score chunk hash
stream buffer socket retry backoff limit budget latency throughput benchmark profile slow fast
"""
_SYLLABLE_TEXT = "par se con fig load user pro file get set run task mem ory in dex tok en cli ent"
_PACKAGE_TEXT = "core api cli memory tools llm storage auth billing search orchestrator utils"
_ENV_TEXT = "DATABASE_URL API_KEY LOG_LEVEL HOME PATH RAY_ADDRESS OPENAI_BASE_URL CACHE_DIR"
PROSE = _PROSE_TEXT.split()
SYLLABLES = _SYLLABLE_TEXT.split()
PACKAGES = _PACKAGE_TEXT.split()
FLAGS = "verbose dry-run max-retries no-cache timeout log-level workers config output force"
ENV = _ENV_TEXT.split()


def _zipf_weights(n: int, s: float = 1.1) -> list[float]:
    acc, out = 0.0, []
    for i in range(1, n + 1):
        acc += 1.0 / i**s
        out.append(acc)
    return out


@dataclass
class Vocabulary:
    """Fixed pools that chunks and queries both draw from, so queries really hit."""

    words: list[str]
    word_cw: list[float]
    idents: list[str]
    ident_cw: list[float]
    paths: list[str]
    path_cw: list[float]
    flags: list[str]

    @classmethod
    def make(cls, rng: random.Random) -> Vocabulary:
        idents: set[str] = set()
        while len(idents) < 5000:
            parts = ["".join(rng.choices(SYLLABLES, k=rng.randint(1, 3))) for _ in range(2)]
            style = rng.random()
            if style < 0.6:
                idents.add("_".join(parts))
            elif style < 0.9:
                idents.add(parts[0] + parts[1].capitalize())
            else:
                idents.add(parts[0].capitalize() + parts[1].capitalize())
        paths: set[str] = set()
        while len(paths) < 2000:
            ext = rng.choice(["py", "py", "py", "ts", "md", "toml", "json"])
            depth = rng.randint(0, 2)
            mid = [rng.choice(PACKAGES) for _ in range(depth)]
            name = "".join(rng.choices(SYLLABLES, k=rng.randint(1, 3)))
            paths.add("/".join(["src", *mid, f"{name}.{ext}"]))
        ident_list, path_list = sorted(idents), sorted(paths)
        rng.shuffle(ident_list)
        rng.shuffle(path_list)
        return cls(
            words=PROSE,
            word_cw=_zipf_weights(len(PROSE)),
            idents=ident_list,
            ident_cw=_zipf_weights(len(ident_list), 1.0),
            paths=path_list,
            path_cw=_zipf_weights(len(path_list), 1.0),
            flags=[f"--{f}" for f in FLAGS.split()],
        )

    def word(self, rng: random.Random, k: int) -> list[str]:
        return rng.choices(self.words, cum_weights=self.word_cw, k=k)

    def ident(self, rng: random.Random) -> str:
        return rng.choices(self.idents, cum_weights=self.ident_cw)[0]

    def path(self, rng: random.Random) -> str:
        return rng.choices(self.paths, cum_weights=self.path_cw)[0]


def _prose(rng: random.Random, v: Vocabulary, n_chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < n_chars:
        words = v.word(rng, rng.randint(6, 18))
        r = rng.random()
        if r < 0.25:
            words.insert(rng.randrange(len(words)), f"`{v.ident(rng)}`")
        elif r < 0.45:
            words.insert(rng.randrange(len(words)), f"{v.path(rng)}:{rng.randint(1, 900)}")
        elif r < 0.55:
            words.insert(rng.randrange(len(words)), rng.choice(v.flags))
        elif r < 0.62:
            words.insert(rng.randrange(len(words)), f"localhost:{rng.randint(1024, 65000)}")
        elif r < 0.68:
            words.insert(rng.randrange(len(words)), rng.choice(ENV))
        sentence = " ".join(words).capitalize() + "."
        out.append(sentence)
        size += len(sentence) + 1
    return " ".join(out)


def _code(rng: random.Random, v: Vocabulary, n_chars: int) -> str:
    lines = [f"# {v.path(rng)}"]
    size = 0
    while size < n_chars:
        a, b, c = v.ident(rng), v.ident(rng), v.ident(rng)
        line = rng.choice(
            [
                f"def {a}({b}, {c}=None):",
                f"    {a} = {b}.{c}({rng.randint(0, 99)})",
                f"    return {a}({b})",
                f"class {a.title().replace('_', '')}({b.title().replace('_', '')}):",
                f'    raise ValueError(f"{b} failed: {{{c}}}")',
                f"from {rng.choice(PACKAGES)}.{b} import {c}",
            ]
        )
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def _tool_output(rng: random.Random, v: Vocabulary, n_chars: int) -> str:
    lines = []
    size = 0
    while size < n_chars:
        p = v.path(rng)
        line = rng.choice(
            [
                f"{p}::test_{v.ident(rng)} PASSED",
                f"{p}::test_{v.ident(rng)} FAILED",
                f'  File "{p}", line {rng.randint(1, 900)}, in {v.ident(rng)}',
                f"E   AssertionError: expected {rng.randint(0, 999)} got {rng.randint(0, 999)}",
                f"INFO {v.ident(rng)} listening on 0.0.0.0:{rng.randint(1024, 65000)}",
                f"installed {v.ident(rng)}-{rng.randint(0, 9)}.{rng.randint(0, 20)}.0",
            ]
        )
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def generate_chunks(n: int, seed: int = SEED) -> Iterator[tuple[str, str, str]]:
    """``(kind, heading, text)`` triples; same seed, same corpus."""
    rng = random.Random(seed)
    v = Vocabulary.make(random.Random(seed))
    kinds = ["archive", "archive", "archive", "notes", "checkpoint", "progress", "memory"]
    headings = ["Discovered knowledge", "Errors and fixes", "Current work", "Decisions", "Rules"]
    for _ in range(n):
        kind = rng.choice(kinds)
        size = int(rng.triangular(200, 1500, 700))
        r = rng.random()
        if r < 0.5:
            text = _prose(rng, v, size)
        elif r < 0.75:
            text = _code(rng, v, size)
        else:
            text = _tool_output(rng, v, size)
        heading = rng.choice(headings) if kind != "archive" else f"archive: {v.ident(rng)}"
        yield kind, heading, text


def generate_queries(n: int, seed: int = SEED + 1) -> list[str]:
    """Varied free-text queries as a model would send them."""
    rng = random.Random(seed)
    v = Vocabulary.make(random.Random(SEED))
    out: list[str] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.22:
            out.append(v.ident(rng))
        elif r < 0.40:
            out.append(f"{v.path(rng)}:{rng.randint(1, 900)}")
        elif r < 0.48:
            out.append(f"{rng.choice(v.flags)} {v.word(rng, 1)[0]}")
        elif r < 0.54:
            out.append(f"port {rng.randint(1024, 65000)}")
        elif r < 0.80:
            words = v.word(rng, rng.randint(3, 9))
            out.append("why does the " + " ".join(words) + "?")
        elif r < 0.88:
            out.append(f"{v.ident(rng)} in {v.path(rng)} {rng.choice(ENV)}")
        elif r < 0.94:
            out.append("qzxv-unknownterm " + "".join(rng.choices("bcdfgklmnpqrstvwxz", k=9)))
        else:
            out.append(rng.choice(['"unbalanced (', "NEAR(a b) AND -x*", "src/:: -- ..", "*)"]))
    return out


def build_index(db: Path, n: int, tokenizer: str = DEFAULT_TOKENIZER) -> tuple[MemoryIndex, float]:
    """Load ``n`` generated chunks in batches; returns the index and build seconds."""
    t0 = time.perf_counter()
    index = MemoryIndex(db, tokenizer=tokenizer)
    batch: dict[str, list[tuple[str, str]]] = {}
    for i, (kind, heading, text) in enumerate(generate_chunks(n)):
        batch.setdefault(kind, []).append((heading, text))
        if (i + 1) % 5000 == 0:
            for k, rows in batch.items():
                index.add_chunks(k, f"bench:{k}", rows, session="bench")
            batch = {}
    for k, rows in batch.items():
        index.add_chunks(k, f"bench:{k}", rows, session="bench")
    index.optimize()
    return index, time.perf_counter() - t0


def _pct(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, round(p / 100 * (len(sorted_ms) - 1)))]


def time_queries(index: MemoryIndex, queries: list[str]) -> dict[str, float]:
    for q in queries[:20]:  # warm the page cache like a running session would be
        index.search(q)
    ms = []
    hits = 0
    for q in queries:
        t0 = time.perf_counter()
        res = index.search(q)
        ms.append((time.perf_counter() - t0) * 1000)
        hits += bool(res)
    ms.sort()
    return {
        "p50": _pct(ms, 50),
        "p95": _pct(ms, 95),
        "p99": _pct(ms, 99),
        "mean": statistics.fmean(ms),
        "hit_rate": hits / len(queries),
    }


# ----------------------------------------------------------------------------- literal recall

LITERAL_TEMPLATES = [
    "The failure was in {lit}.",
    "see ({lit}) for details",
    "Run `{lit}` again after the fix",
    "{lit}, then restart",
    "Note: {lit}: still flaky",
]


def _planted_literals(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """(literal, a partial form a model might search instead) pairs, all unique."""
    v = Vocabulary.make(random.Random(SEED))
    out: list[tuple[str, str]] = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            name = f"planted_{i}_mod.py"
            out.append((f"src/{rng.choice(PACKAGES)}/{name}:{rng.randint(1, 999)}", name))
        elif kind == 1:
            out.append((f"--planted-flag-{i}", f"planted-flag-{i}"))
        elif kind == 2:
            out.append((f"PLANTED_ENV_{i}", f"ENV_{i}"))
        elif kind == 3:
            out.append((f"127.0.0.1:{20000 + i}", str(20000 + i)))
        else:
            out.append((f"{v.ident(rng)}_planted{i}", f"planted{i}"))
    return out


def literal_recall(tokenizer: str, n_chunks: int, n_literals: int = 200) -> dict[str, float]:
    """Plant unique literals in random contexts; recall@8 querying each exactly and partially.

    Returns ``exact`` and ``partial`` recall and the database size in MB.
    """
    rng = random.Random(SEED + 7)
    literals = _planted_literals(rng, n_literals)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "m.db"
        index, _ = build_index(db, n_chunks, tokenizer)
        v = Vocabulary.make(random.Random(SEED))
        for i, (lit, _) in enumerate(literals):
            context = rng.choice(LITERAL_TEMPLATES).format(lit=lit)
            text = _prose(rng, v, 300) + " " + context + " " + _prose(rng, v, 300)
            index.add_chunks("notes", f"planted:{i}", [("notes", text)], session="bench")
        index.optimize()
        exact = partial = 0
        for i, (lit, part) in enumerate(literals):
            exact += any(h.source == f"planted:{i}" for h in index.search(lit, limit=8))
            partial += any(h.source == f"planted:{i}" for h in index.search(part, limit=8))
        index.close()
        size_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 1e6
    return {"exact": exact / len(literals), "partial": partial / len(literals), "mb": size_mb}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    """Run the benchmark and print the table; returns one dict per index size."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k chunks only")
    ap.add_argument("--sizes", type=int, nargs="*", help="chunk counts (overrides --quick)")
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--compare-tokenizers", action="store_true")
    args = ap.parse_args(argv)
    sizes = args.sizes or ([10_000] if args.quick else [10_000, 100_000])
    queries = generate_queries(args.queries)
    rows: list[dict[str, float]] = []
    print(f"{'chunks':>8} {'build s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'hits':>5}")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            index, build_s = build_index(Path(tmp) / "memory.db", n)
            t = time_queries(index, queries)
            index.close()
        row = {"chunks": float(n), "build_s": build_s, **t}
        rows.append(row)
        print(
            f"{n:>8} {build_s:>8.2f} {t['p50']:>7.2f} {t['p95']:>7.2f} {t['p99']:>7.2f}"
            f" {t['hit_rate']:>5.0%}",
            flush=True,
        )
    if args.compare_tokenizers:
        n = min(sizes)
        print(f"\nliteral recall@8 ({n} background chunks, 200 planted literals)")
        print(f"  {'exact':>6} {'partial':>7} {'db MB':>6}  tokenizer")
        for tok in (
            DEFAULT_TOKENIZER,
            "unicode61 remove_diacritics 2 tokenchars '_-./:'",
            "unicode61 remove_diacritics 2 tokenchars '_'",
            "trigram",
        ):
            r = literal_recall(tok, n)
            print(f"  {r['exact']:>6.1%} {r['partial']:>7.1%} {r['mb']:>6.1f}  {tok}", flush=True)
    return rows


if __name__ == "__main__":
    main()
