"""Full-text search over every memory layer and the archived conversation (SQLite FTS5).

The index is a cache: markdown files stay the truth and ``sync_files`` mirrors them, re-reading
a file only when its size/mtime changed (and re-chunking only when its hash changed). The one
thing stored nowhere else is the *archive*: conversation that left the live context. It has to
be findable later, which is the whole point of masking old tool output instead of losing it.

Design choices (measured with ``benchmarks/bench_memory_search.py``):

* **Tokenizer**: ``unicode61 remove_diacritics 2`` with the default separators, and every
  query token matched as a quoted *phrase*, which FTS5 tokenizes with the index's own
  tokenizer. ``src/app.py:42`` is indexed as the tokens ``src app py 42`` and searched as the
  phrase ``"src/app.py:42"``, which only matches those tokens adjacent and in order - an
  exact-literal match - while ``app.py`` or ``config`` (of ``parse_config``) still find it.
  Planting 200 unique literals (paths with lines, ``--flags``, ENV_VARS, ``host:port``,
  identifiers) in 10k chunks and querying each exactly / by a part, recall@8 was:

  ==========================================  =====  =======  =====
  tokenizer                                   exact  partial  size
  ==========================================  =====  =======  =====
  unicode61 (chosen)                          100%   100%     1.0x
  unicode61 ``tokenchars '_-./:'``            57%    0%       1.0x
  unicode61 ``tokenchars '_'``                100%   60%      1.0x
  trigram (substring) table                   99.5%  99.5%    2.2x
  ==========================================  =====  =======  =====

  Path-ish tokenchars glue sentence punctuation onto tokens (``app.py.``), and a trigram
  table cannot beat 100% on exact literals, so neither earns its cost.
* **Chunks** of roughly 500-1500 characters, split at headings first, then paragraphs
  (never inside a code fence). A short section stays its own chunk: a two-line
  ``Live resources`` section is exactly what a search should return, not diluted by neighbours.
* **Natural queries** (measured with ``benchmarks/bench_recall.py``: 200 planted facts, two
  questions each worded unlike the fact; recall@8 went from 78% to 94% at 10k chunks). Models
  ask "what port does the ledger mock listen on" for "the ledger mock listens on
  127.0.0.1:48213", so each query word becomes a *group*: the word (a plain word as the
  prefix of a crude stem, ``listens`` → ``listen*``), a camelCase split (``LedgerClient`` →
  ``ledger client``), a few developer synonyms (``port`` → ``listens``, ``owner`` →
  ``contact``) and, for words naming a kind of fact, the checkpoint section that holds such
  facts (``port`` → ``Live resources``, where ports are bare literals). No embedding model.
* **Ranking**: FTS5 bm25 (heading column weighted 2x) picks a candidate pool; the pool is
  re-scored by *coverage* - the idf mass of the query's groups a chunk contains, where a
  question about a kind of literal ("port", "url", "flag", "path") is also covered by a
  literal of that kind - with bm25 as a tie-breaker. bm25 alone lets a short chunk repeating
  one common query word beat the long archive chunk holding the answer. Hits scoring under
  ``min_score_fraction`` of the best hit are dropped, so a query with one strong match does
  not come back padded with seven weak ones that cost the model tokens.
* **Query planning** keeps p95 under 5 ms at 100k chunks: FTS5's bm25 costs ~1 us for every
  row any query phrase matches, so phrases are ranked cheapest-first under a per-query budget
  and words too common to matter are left out of the ranking (see ``MemoryIndex._plan``);
  up to two of them still bring in candidates as ``(rare terms) AND common``, which FTS5
  answers by seeking, cheaply (``_search_with_common``: "who owns search").
* **Queries** from models are free text: every whitespace-separated token becomes a quoted
  phrase (so FTS5 syntax characters are inert), stopwords go, terms are OR-ed. ``search``
  never raises on user text.
* **WAL** so actors in other processes can search while one of them syncs.

Claude Code's own project memory (``~/.claude/projects/<slug>/memory/*.md``, its auto memory
with ``MEMORY.md`` as the index) can be mirrored too, under the kind ``claude``
(``claude_memory_sources`` finds the files, ``MemoryIndex.sync_kind`` mirrors exactly them), so
a person switching over keeps what Claude Code learned about the project searchable. The
``memory.cc_index`` setting turns it on; nothing of Claude Code's is read otherwise.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from stagecrew.memory.layers import SOURCE_KINDS, IndexSource, fenced_lines, read_text
from stagecrew.memory.messages import (
    Message,
    group_messages,
    message_to_text,
    tool_calls_of,
    tool_labels_by_id,
)

DEFAULT_TOKENIZER = "unicode61 remove_diacritics 2"
# The kind (scope) of chunks mirrored from Claude Code's project memory.
CLAUDE_KIND = "claude"
# Claude Code cuts a project's directory name at this length and adds a hash of the path.
CLAUDE_SLUG_MAX = 200
SCHEMA_VERSION = "1"
# A file whose mtime is this close to our last look may have changed again within the same
# mtime tick without changing size (the "racy git" problem), so it is hashed, not trusted.
RACY_WINDOW_NS = 2_000_000_000
MAX_QUERY_TERMS = 24
MIN_CHUNK_CHARS = 500
MAX_CHUNK_CHARS = 1500

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
# Letters and digits only: ``_`` and punctuation are separators for unicode61 as well.
_WORD = re.compile(r"[^\W_]+")
# camelCase / PascalCase words and digit runs inside one identifier part.
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^\W_0-9a-zA-Z]+")
_LINE_SUFFIX = re.compile(r"(:\d+)+$")
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}$")

_STOPWORD_TEXT = """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is
    it its itself just me more most my myself no nor not now of off on once only or other our
    ours out over own same she should so some such than that the their theirs them then there
    these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours please find show tell me search look"""
# Dropped from queries unless nothing else is left: they match everything and cost time.
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class Hit:
    """One search result. ``score`` is positive, higher is better (negated bm25)."""

    chunk_id: int
    kind: str
    source: str
    session: str | None
    heading: str
    snippet: str
    text: str
    score: float
    ts: float


@dataclass
class SyncStats:
    """What a ``sync_files`` call did, so callers and tests can see that skipping works."""

    indexed: int = 0
    unchanged: int = 0
    rehashed: int = 0
    removed: int = 0
    chunks: int = 0


# ----------------------------------------------------------------------------- chunking


def _split_long(block: str, max_chars: int) -> list[str]:
    """Cut a block longer than ``max_chars`` at line ends, or mid-line when a line is huge."""
    out: list[str] = []
    cur = ""
    for line in block.split("\n"):
        while len(line) > max_chars:
            if cur:
                out.append(cur)
                cur = ""
            out.append(line[:max_chars])
            line = line[max_chars:]
        if cur and len(cur) + 1 + len(line) > max_chars:
            out.append(cur)
            cur = line
        else:
            cur = f"{cur}\n{line}" if cur else line
    if cur.strip():
        out.append(cur)
    return out


def _blocks(lines: list[str], fenced: list[bool]) -> list[str]:
    """Paragraphs: runs of lines split at blank lines outside code fences."""
    blocks: list[str] = []
    cur: list[str] = []
    for line, in_fence in zip(lines, fenced, strict=True):
        if not line.strip() and not in_fence:
            if cur:
                blocks.append("\n".join(cur))
                cur = []
        else:
            cur.append(line)
    if cur:
        blocks.append("\n".join(cur))
    return blocks


def pack_blocks(
    blocks: list[str], max_chars: int = MAX_CHUNK_CHARS, min_chars: int = MIN_CHUNK_CHARS
) -> list[str]:
    """Pack paragraphs into chunks of even size between ``min_chars`` and ``max_chars``.

    Aiming at ``total / ceil(total / max)`` rather than filling to ``max`` avoids a 1,450-char
    chunk followed by a 60-char leftover that would rank oddly in bm25.
    """
    pieces: list[str] = []
    for block in blocks:
        pieces.extend(_split_long(block, max_chars) if len(block) > max_chars else [block])
    total = sum(len(p) + 2 for p in pieces)
    if not pieces:
        return []
    target = max(min_chars, min(max_chars, math.ceil(total / math.ceil(total / max_chars))))
    chunks: list[str] = []
    cur = ""
    for piece in pieces:
        if cur and (len(cur) + 2 + len(piece) > max_chars or len(cur) >= target):
            chunks.append(cur)
            cur = piece
        else:
            cur = f"{cur}\n\n{piece}" if cur else piece
    if cur:
        chunks.append(cur)
    return chunks


def chunk_markdown(
    text: str, max_chars: int = MAX_CHUNK_CHARS, min_chars: int = MIN_CHUNK_CHARS
) -> list[tuple[str, str]]:
    """Split markdown into ``(heading path, text)`` chunks for the index.

    The heading path (``Rules`` or ``Architecture / Storage``) goes into a separate, heavier
    weighted column: a hit on a section name is a strong signal. Sections with no body are
    skipped - an empty ``## Decisions`` says nothing worth finding.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    fenced = fenced_lines(lines)
    stack: list[tuple[int, str]] = []
    sections: list[tuple[str, list[str], list[bool]]] = [("", [], [])]
    for line, in_fence in zip(lines, fenced, strict=True):
        m = None if in_fence else _HEADING.match(line)
        if m:
            level = len(m.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, m.group(2).strip()))
            sections.append((" / ".join(h for _, h in stack), [], []))
        else:
            sections[-1][1].append(line)
            sections[-1][2].append(in_fence)
    out: list[tuple[str, str]] = []
    for heading, body, body_fenced in sections:
        for chunk in pack_blocks(_blocks(body, body_fenced), max_chars, min_chars):
            if chunk.strip():
                out.append((heading, chunk))
    return out


# ----------------------------------------------------------------------------- queries

# Words a developer's question uses for a fact that the note itself words differently: "what
# port does the mock listen on" for "the mock listens on 127.0.0.1:48213", "who owns billing"
# for "Maria is the contact for billing". Each entry adds its words as alternatives of the
# query word (same group, lower weight); there is no embedding model to do this for us, and a
# small developer thesaurus closes most of the gap measured by ``benchmarks/bench_recall.py``.
_SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("port", "listens", "listening", "listen"),
    ("url", "endpoint", "uri", "address", "hosted", "https", "http"),
    ("dsn", "database_url", "postgresql", "connection", "connect"),
    ("database", "db"),
    ("postgres", "postgresql", "psql"),
    ("owner", "owns", "owned", "maintainer", "maintains", "contact"),
    ("decision", "decided", "decide", "agreed", "adr"),
    ("fix", "fixed", "fixes", "workaround", "resolved", "solved"),
    ("goal", "objective", "intent", "aim"),
    ("flag", "option", "switch"),
    ("dev", "development"),
    ("prod", "production"),
    ("mock", "fake", "stub"),
    ("proxy", "sidecar"),
    ("local", "localhost"),
    ("error", "exception", "failure"),
    ("limit", "cap", "max"),
    ("code", "module", "lives", "located"),
    ("config", "configuration", "settings"),
    ("repo", "repository"),
    ("password", "secret", "credential"),
    ("delete", "remove"),
)
SYNONYMS: dict[str, tuple[str, ...]] = {}
for _group in _SYNONYM_GROUPS:
    for _word in _group:
        SYNONYMS[_word] = tuple(
            dict.fromkeys((*SYNONYMS.get(_word, ()), *(w for w in _group if w != _word)))
        )
_PATH_LITERAL = r"[\w.-]+/[\w./-]*\.[a-z]{1,5}\b"
# Question words whose answer has a recognisable shape (see ``question_kinds``); matched
# against the original text, since a name is told by its capitals.
_QUESTION_KINDS: dict[str, re.Pattern[str]] = {
    "where": re.compile(_PATH_LITERAL),
    "who": re.compile(r"(?<![\w@])@[A-Za-z][\w-]+|\b[A-Z][a-z]+ [A-Z][a-z]+\b"),
}
# A question about a kind of literal ("what port", "which flag", "the staging URL") is
# answered by a chunk holding such a literal even when the word itself is not there: "the
# mock is up at http://0.0.0.0:22530" answers "mock port". Used by the coverage re-rank.
_LITERAL_KINDS: dict[str, re.Pattern[str]] = {}
for _words, _pattern in (
    (("port", "address"), r"[\w\].]:\d{2,5}(?!\d)"),
    (("url", "endpoint", "uri", "hosted", "link"), r"\b[a-z][a-z0-9+.-]*://"),
    (("dsn", "connection"), r"\b[a-z][a-z0-9+]*://[^\s/@]+@"),
    (("flag", "option", "switch"), r"(?<![\w-])--?[a-z][\w-]*"),
    (("path", "file", "module", "code"), _PATH_LITERAL),
):
    for _word in _words:
        _LITERAL_KINDS[_word] = re.compile(_pattern)
# Section-aware search: the checkpoint's fixed sections say what kind of fact they hold, so a
# question about a port is also a question about ``Live resources``, where the checkpoint
# writer keeps ports, URLs and DSNs as bare literals (``- `127.0.0.1:48213```) with none of
# the words the question uses. The heading column weighs double in bm25.
_SECTION_HINTS: dict[str, str] = {}
for _words, _heading in (
    (("port", "url", "endpoint", "dsn", "address", "pid", "hosted"), "live resources"),
    (("decision", "decide", "decided", "agreed"), "decisions"),
    (("fix", "fixed", "workaround"), "errors and fixes"),
    (("goal", "objective", "intent"), "active intent"),
):
    for _word in _words:
        _SECTION_HINTS[_word] = _heading
# Query-side suffix stripping (longest first), so ``listens`` also finds ``listening`` and
# ``renderer`` finds ``render``: the stem is matched as an FTS5 prefix. Stems shorter than
# ``MIN_STEM`` are not cut (``owns`` stays, or ``own*`` would match ``owner`` and ``ownership``
# but also every ``own`` in prose).
_SUFFIXES = ("ations", "ation", "ings", "ing", "ions", "ion", "ies", "es", "ed", "s")
MIN_STEM = 4
# The re-rank score is the idf mass of the query words a chunk covers, plus this share of the
# whole query's idf mass scaled by the chunk's bm25 relative to the best (a tie-breaker that
# keeps term frequency and chunk length in play without letting them dominate).
BM25_SHARE = 0.25
# Matches a snippet looks at before choosing its window (bounded work per hit).
SNIPPET_MATCHES = 64
# How many query words too common to rank alone still pull in candidates (see
# ``MemoryIndex._search_with_common``).
COMMON_GROUPS = 2
# How many ranked candidates are re-scored for query coverage, per hit asked for.
RERANK_FACTOR = 5


def stem(word: str) -> str:
    """A crude English stem for prefix matching: the word minus one common suffix."""
    low = word.lower()
    for suffix in _SUFFIXES:
        if low.endswith(suffix) and len(low) - len(suffix) >= MIN_STEM:
            return low[: -len(suffix)]
    return low


def split_identifier(token: str) -> list[str]:
    """The words of a literal: ``LedgerClient`` → ledger client, ``parse_config.py:42`` →
    parse config py 42. ``unicode61`` already splits on ``_ . / :``; camelCase it does not."""
    words: list[str] = []
    for part in _WORD.findall(token):
        words.extend(w.lower() for w in _CAMEL.findall(part) or [part])
    return words


class Phrase(NamedTuple):
    """One query term: the literal text to match as an FTS5 phrase, and its word parts.

    ``raw`` goes into the query (quoted, so FTS5 tokenizes it with the index's own tokenizer
    and any tokenizer configuration keeps working); ``parts`` drive stopwords, dedupe and the
    document-frequency lookups of the planner. ``position`` is the query word it came from:
    synonyms and derived forms share it, which is how coverage counts each word once.
    """

    raw: str
    parts: tuple[str, ...]
    priority: int
    position: int
    variant: bool = False  # derived: path without :line, file name, synonym, camelCase part
    prefix: bool = False  # match ``raw*`` (a stem)

    def fts(self) -> str:
        quoted = '"' + self.raw.replace('"', '""') + '"'
        return quoted + "*" if self.prefix else quoted


def _trim(raw: str) -> str:
    return raw.strip("([{<'\"`*").rstrip(".,;:!?)]}>'\"`*")


def _word_phrase(word: str, priority: int, pos: int, variant: bool) -> Phrase:
    """A single word as a phrase: a prefix of its stem when long enough, else exact."""
    low = word.lower()
    if low.isalpha() and len(low) >= MIN_STEM:
        root = stem(low)
        return Phrase(root, (root,), priority, pos, variant, True)
    return Phrase(word, tuple(_WORD.findall(low)), priority, pos, variant)


def query_phrases(text: str, max_terms: int = MAX_QUERY_TERMS) -> list[Phrase]:
    """Free text → the phrases to search for, in query order, at most ``max_terms``.

    Each whitespace-separated token is one phrase, so punctuation and FTS5 operators
    (``-``, ``:``, ``*``, ``NEAR``, quotes) are inert and ``src/app.py:42`` is matched as the
    adjacent tokens ``src app py 42``. A path with a ``:line`` suffix also matches without it,
    and a path also matches on its file name, because people cite files both ways; a camelCase
    identifier also matches its words. A plain word matches by its stem as a prefix
    (``listens`` → ``listen*``) and brings its synonyms (``port`` → ``listens``). Stopwords are
    dropped unless nothing else is left. When there are too many terms, literals (paths,
    identifiers, numbers) and long words are kept first, derived forms last.
    """
    if not isinstance(text, str):
        return []
    found: list[Phrase] = []
    stop_only: list[Phrase] = []

    def add(raw: str, priority: int, pos: int, variant: bool = False) -> None:
        parts = tuple(p.lower() for p in _WORD.findall(raw))
        if parts:
            found.append(Phrase(raw, parts, priority, pos, variant))

    for pos, token in enumerate(text.split()):
        raw = _trim(token)
        parts = tuple(p.lower() for p in _WORD.findall(raw))
        if not parts:
            continue
        if len(parts) == 1 and parts[0] in STOPWORDS:
            stop_only.append(Phrase(raw, parts, 0, pos))
            continue
        literal = len(parts) > 1 or any(ch.isdigit() for ch in parts[0])
        if literal:
            add(raw, 3, pos)
        else:
            found.append(_word_phrase(raw, 1 if len(parts[0]) >= 6 else 0, pos, False))
            found.extend(_word_phrase(s, -1, pos, True) for s in SYNONYMS.get(parts[0], ()))
            if parts[0] in _SECTION_HINTS:
                add(_SECTION_HINTS[parts[0]], -1, pos, True)
        camel = split_identifier(raw)
        if len(camel) > len(parts):  # LedgerClient: also "ledger client"
            add(" ".join(camel), 2, pos, True)
        if len(parts) > 1:
            bare = _LINE_SUFFIX.sub("", raw)
            if bare != raw and ("/" in bare or _EXTENSION.search(bare)):  # path:line, not host:port
                add(bare, 2, pos, True)
            if "/" in bare.rstrip("/"):
                base = bare.rstrip("/").rsplit("/", 1)[-1]
                if len(base) >= 3:
                    add(base, 2, pos, True)
    if not found:
        found = stop_only
    unique: dict[tuple[tuple[str, ...], bool], Phrase] = {}
    # a word the person typed keeps its own group even when another word's synonym is the same
    for phrase in sorted(found, key=lambda p: p.variant):
        key = (tuple(phrase.raw.lower().split()), phrase.prefix)
        if key not in unique:
            unique[key] = phrase
    chosen = sorted(unique.values(), key=lambda p: (-p.priority, p.position))[:max_terms]
    chosen.sort(key=lambda p: (p.position, p.variant))
    return chosen


def build_fts_query(text: str, max_terms: int = MAX_QUERY_TERMS) -> str | None:
    """Turn free text into a safe FTS5 query (quoted phrases OR-ed), or ``None`` if empty."""
    phrases = query_phrases(text, max_terms)
    return " OR ".join(p.fts() for p in phrases) if phrases else None


@functools.lru_cache(maxsize=4096)
def _phrase_regex(phrase: Phrase) -> re.Pattern[str]:
    """A regex finding ``phrase`` in lowercased text the way FTS5 matches it: its words in
    order, separated by anything that is not a letter or digit, the last one open-ended if
    the phrase is a prefix."""
    body = r"[\W_]+".join(re.escape(w) for w in phrase.parts)
    tail = "" if phrase.prefix else r"(?![^\W_])"
    return re.compile(rf"(?<![^\W_]){body}{tail}")


def _find(phrase: Phrase, low: str) -> re.Match[str] | None:
    """``phrase`` in lowercased text; a substring test first, since most chunks lack it."""
    if phrase.parts[0] not in low:
        return None
    return _phrase_regex(phrase).search(low)


def question_kinds(text: str) -> list[re.Pattern[str]]:
    """What a question word asks for, as patterns over a chunk's text: "where" wants a path,
    "who" a person's name or handle. The words themselves are stopwords (they match every
    chunk), but the answer's *shape* tells the note that answers from the one that chats
    about the same thing ("Looked at the token bucket code again")."""
    words = {w.lower() for w in _WORD.findall(text) if w.lower() in _QUESTION_KINDS}
    return [_QUESTION_KINDS[w] for w in sorted(words)]


def _rerank(
    hits: list[Hit],
    phrases: Sequence[Phrase],
    limit: int,
    idf: dict[int, float] | None = None,
    asks: Sequence[re.Pattern[str]] = (),
) -> list[Hit]:
    """Re-score bm25 hits by how much of the question each one covers.

    bm25 over OR-ed terms lets a short chunk that repeats one query word beat the note that
    holds every word once; for natural-language questions the note that covers the question
    is the answer. The score is the idf mass of the covered query words (a word counts as
    covered by any of its forms, or, for words like "port", by a literal of that kind), plus
    each of ``asks`` (see ``question_kinds``) at the mean word weight, plus ``BM25_SHARE`` of
    the total mass scaled by bm25 relative to the best hit, as a tie-breaker.
    """
    groups: dict[int, list[Phrase]] = {}
    for p in phrases:
        groups.setdefault(p.position, []).append(p)
    only_stopwords = all(part in STOPWORDS for p in phrases for part in p.parts)
    if len(groups) + len(asks) < 2 or only_stopwords:  # nothing to cover: keep bm25's order
        return hits[:limit]
    kinds = {pos: _LITERAL_KINDS.get(alts[0].parts[0]) for pos, alts in groups.items()}
    weight = {pos: (idf or {}).get(pos, 1.0) for pos in groups}
    ask_weight = sum(weight.values()) / max(len(weight), 1)
    total = (sum(weight.values()) + ask_weight * len(asks)) or 1.0
    top = max((h.score for h in hits), default=1.0) or 1.0
    rescored = []
    seen: set[int] = set()
    for h in hits:
        if h.chunk_id in seen:
            continue
        seen.add(h.chunk_id)
        low = f"{h.heading}\n{h.text}".lower()
        covered = sum(ask_weight for ask in asks if ask.search(h.text))
        for pos, alts in groups.items():
            kind = kinds.get(pos)
            if any(_find(p, low) for p in alts) or (kind is not None and kind.search(low)):
                covered += weight[pos]
        rescored.append((covered + BM25_SHARE * total * h.score / top, h))
    rescored.sort(key=lambda x: (-x[0], -x[1].ts))
    return [replace(h, score=s) for s, h in rescored[:limit]]


# ----------------------------------------------------------------------------- the index


class MemoryIndex:
    """The FTS5 index at ``<project>/.stagecrew/state/memory.db`` (any path works).

    One connection per instance, guarded by a lock so tools running in worker threads can
    share it; other processes open their own instance and WAL lets them read concurrently.
    """

    # Estimated rows bm25 may touch per query (~1 us each); see ``_plan``.
    RANK_BUDGET = 2500
    # How many of the newest matches a generic query scores when bm25 would be too slow.
    RECENT_CANDIDATES = 80

    def __init__(self, db_path: Path | str, tokenizer: str = DEFAULT_TOKENIZER) -> None:
        self.db_path = Path(db_path)
        self._df_cache: dict[str, int] = {}
        self._df_top = 0
        self._n_docs = 0
        self._vocab_ready = False
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(self.db_path), timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.execute("PRAGMA cache_size=-32000")
        self._conn.execute("PRAGMA mmap_size=268435456")
        self._init_schema(tokenizer)

    # -- lifecycle

    def _init_schema(self, tokenizer: str) -> None:
        c = self._conn
        with self._lock:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT)")
                c.execute(
                    "CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, kind TEXT NOT NULL,"
                    " session TEXT, mtime_ns INTEGER, size INTEGER, sha256 TEXT,"
                    " synced_ns INTEGER)"
                )
                c.execute(
                    "CREATE TABLE IF NOT EXISTS chunks(id INTEGER PRIMARY KEY,"
                    " kind TEXT NOT NULL, source TEXT NOT NULL, session TEXT,"
                    " heading TEXT NOT NULL, text TEXT NOT NULL, ts REAL NOT NULL, digest TEXT)"
                )
                c.execute("CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source)")
                c.execute(
                    "CREATE UNIQUE INDEX IF NOT EXISTS chunks_digest ON chunks(digest)"
                    " WHERE digest IS NOT NULL"
                )
                row = c.execute("SELECT value FROM meta WHERE key='tokenizer'").fetchone()
                exists = c.execute("SELECT 1 FROM sqlite_master WHERE name='chunks_fts'").fetchone()
                if exists and row and row[0] != tokenizer:
                    # Tokenizer changed: rebuild the FTS table from the stored chunk text.
                    c.execute("DROP TABLE chunks_fts")
                    exists = None
                if not exists:
                    tok = tokenizer.replace("'", "''")
                    c.execute(
                        "CREATE VIRTUAL TABLE chunks_fts USING fts5(heading, text,"
                        f" content='chunks', content_rowid='id', tokenize='{tok}')"
                    )
                    c.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('rebuild')")
                c.execute(
                    "CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN"
                    " INSERT INTO chunks_fts(rowid, heading, text)"
                    " VALUES (new.id, new.heading, new.text); END"
                )
                c.execute(
                    "CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN"
                    " INSERT INTO chunks_fts(chunks_fts, rowid, heading, text)"
                    " VALUES ('delete', old.id, old.heading, old.text); END"
                )
                c.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('tokenizer', ?), ('schema', ?)",
                    (tokenizer, SCHEMA_VERSION),
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        self.tokenizer = tokenizer

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> MemoryIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self) -> _Txn:
        return _Txn(self._conn, self._lock)

    # -- writing

    def _insert(
        self,
        kind: str,
        source: str,
        session: str | None,
        chunks: Iterable[tuple[str, str]],
        ts: float,
        digests: bool,
    ) -> int:
        rows = []
        for heading, text in chunks:
            digest = None
            if digests:
                digest = hashlib.sha256(f"{kind}\0{session}\0{text}".encode()).hexdigest()
            rows.append((kind, source, session, heading, text, ts, digest))
        if not rows:
            return 0
        cur = self._conn.executemany(
            "INSERT OR IGNORE INTO chunks(kind, source, session, heading, text, ts, digest)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return max(cur.rowcount, 0)  # sqlite3_changes(): excludes the trigger's FTS rows

    def add_chunks(
        self,
        kind: str,
        source: str,
        chunks: Iterable[tuple[str, str]],
        session: str | None = None,
        ts: float | None = None,
    ) -> int:
        """Insert ready-made ``(heading, text)`` chunks (used by bulk loaders and benchmarks).

        Identical chunks (same kind, session and text) are stored once.
        """
        if kind not in SOURCE_KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {SOURCE_KINDS}")
        with self._write():
            return self._insert(kind, source, session, chunks, ts or time.time(), True)

    def sync_files(self, sources: Iterable[IndexSource | Path | str]) -> SyncStats:
        """Mirror markdown files into the index, doing as little work as possible.

        Unchanged size+mtime → skipped without reading (unless racily recent); changed stat but
        same sha256 → only the stat is updated; otherwise the file's chunks are replaced. A
        listed file that no longer exists has its chunks removed.
        """
        stats = SyncStats()
        for src in sources:
            source = src if isinstance(src, IndexSource) else infer_source(Path(src))
            self._sync_one(source, stats)
        return stats

    def _sync_one(self, source: IndexSource, stats: SyncStats) -> None:
        key = str(Path(source.path).absolute())
        try:
            st = Path(source.path).stat()
        except (FileNotFoundError, NotADirectoryError):
            with self._write():
                if self._conn.execute("SELECT 1 FROM files WHERE path=?", (key,)).fetchone():
                    self._conn.execute("DELETE FROM chunks WHERE source=?", (key,))
                    self._conn.execute("DELETE FROM files WHERE path=?", (key,))
                    stats.removed += 1
            return
        with self._lock:
            row = self._conn.execute(
                "SELECT mtime_ns, size, sha256, synced_ns, kind FROM files WHERE path=?", (key,)
            ).fetchone()
        if (
            row
            and row[0] == st.st_mtime_ns
            and row[1] == st.st_size
            and row[4] == source.kind
            and st.st_mtime_ns < (row[3] or 0) - RACY_WINDOW_NS
        ):
            stats.unchanged += 1
            return
        text = read_text(source.path)
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        now = time.time_ns()
        with self._write():
            if row and row[2] == sha and row[4] == source.kind:
                self._conn.execute(
                    "UPDATE files SET mtime_ns=?, size=?, synced_ns=? WHERE path=?",
                    (st.st_mtime_ns, st.st_size, now, key),
                )
                stats.rehashed += 1
                return
            self._conn.execute("DELETE FROM chunks WHERE source=?", (key,))
            n = self._insert(
                source.kind,
                key,
                source.session,
                chunk_markdown(text),
                st.st_mtime_ns / 1e9,
                False,
            )
            self._conn.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, source.kind, source.session, st.st_mtime_ns, st.st_size, sha, now),
            )
            stats.indexed += 1
            stats.chunks += n

    def sync_kind(self, kind: str, sources: Iterable[IndexSource | Path | str]) -> SyncStats:
        """Mirror exactly ``sources`` as ``kind``: each is synced, and every indexed file of
        that kind not among them is dropped (a source that is off, or a file moved away)."""
        listed = [s if isinstance(s, IndexSource) else IndexSource(kind, Path(s)) for s in sources]
        stats = self.sync_files(s._replace(kind=kind) for s in listed)
        keep = {str(Path(s.path).absolute()) for s in listed}
        with self._lock:
            indexed = [
                r[0] for r in self._conn.execute("SELECT path FROM files WHERE kind=?", (kind,))
            ]
        gone = [p for p in indexed if p not in keep]
        if gone:
            with self._write():
                for p in gone:
                    self._conn.execute("DELETE FROM chunks WHERE source=?", (p,))
                    self._conn.execute("DELETE FROM files WHERE path=?", (p,))
            stats.removed += len(gone)
        return stats

    def forget_missing(self) -> int:
        """Drop every indexed file that no longer exists (e.g. a deleted session)."""
        with self._lock:
            paths = [r[0] for r in self._conn.execute("SELECT path FROM files")]
        gone = [p for p in paths if not Path(p).exists()]
        with self._write():
            for p in gone:
                self._conn.execute("DELETE FROM chunks WHERE source=?", (p,))
                self._conn.execute("DELETE FROM files WHERE path=?", (p,))
        return len(gone)

    def archive(
        self,
        session_id: str,
        messages: list[Message],
        ts: float | None = None,
        max_chars: int = MAX_CHUNK_CHARS,
    ) -> int:
        """Store conversation that leaves the live context; returns the number of new chunks.

        Consecutive messages are packed into chunks of up to ``max_chars`` (a question and its
        answer usually land together, which is what a later search wants), a tool call is
        labelled with what it touched (``read(src/a.py)``), and archiving the same messages
        twice stores them once.
        """
        labels = tool_labels_by_id(messages)
        when = time.time() if ts is None else ts
        chunks: list[tuple[str, str]] = []
        cur_text = ""
        cur_heads: list[str] = []

        def flush() -> None:
            nonlocal cur_text, cur_heads
            if cur_text.strip():
                chunks.append((_archive_heading(cur_heads), cur_text))
            cur_text, cur_heads = "", []

        for group in group_messages(messages):
            text = "\n\n".join(message_to_text(m, labels) for m in group.messages)
            head = _group_heading(group.messages)
            if len(text) > max_chars:
                flush()
                for piece in _split_long(text, max_chars):
                    chunks.append((_archive_heading([head]), piece))
                continue
            if cur_text and len(cur_text) + 2 + len(text) > max_chars:
                flush()
            cur_text = f"{cur_text}\n\n{text}" if cur_text else text
            cur_heads.append(head)
        flush()
        with self._write():
            return self._insert("archive", f"session:{session_id}", session_id, chunks, when, True)

    def optimize(self) -> None:
        """Merge FTS5 segments after a bulk load; searches get faster, nothing else changes."""
        with self._write():
            self._conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('optimize')")

    # -- reading

    def count(self, kind: str | None = None) -> int:
        with self._lock:
            if kind is None:
                return int(self._conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
            return int(
                self._conn.execute("SELECT count(*) FROM chunks WHERE kind=?", (kind,)).fetchone()[
                    0
                ]
            )

    # -- query planning

    def _refresh_stats(self) -> int:
        """Clear the document-frequency cache when the index grew or shrank by over 10%."""
        top = self._conn.execute("SELECT max(id) FROM chunks").fetchone()[0] or 0
        if not self._df_top or abs(top - self._df_top) > 0.1 * self._df_top:
            self._df_cache.clear()
            self._df_top = top
            self._n_docs = int(self._conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
        return self._n_docs

    def _token_df(self, token: str, prefix: bool = False) -> int:
        """Chunks holding ``token`` (or, for a prefix, the sum over every term it starts)."""
        key = _fold(token)
        cache_key = key + "*" if prefix else key
        df = self._df_cache.get(cache_key)
        if df is None:
            if not self._vocab_ready:
                self._conn.execute(
                    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.chunks_vocab"
                    " USING fts5vocab(main, chunks_fts, 'row')"
                )
                self._vocab_ready = True
            if prefix:
                row = self._conn.execute(
                    "SELECT sum(doc) FROM temp.chunks_vocab WHERE term >= ? AND term < ?",
                    (key, key + "\U0010ffff"),
                ).fetchone()
            else:
                row = self._conn.execute(
                    "SELECT doc FROM temp.chunks_vocab WHERE term = ?", (key,)
                ).fetchone()
            df = self._df_cache[cache_key] = int(row[0]) if row and row[0] else 0
        return df

    def _phrase_cost(self, phrase: Phrase) -> int:
        """Estimated work for a phrase, in (roughly) microseconds of bm25 time.

        A phrase is evaluated by seeking every one of its words to each row of its rarest
        word, so ``"src/app/task.py"`` costs (rows with ``task``) x 4 words even when the
        phrase itself is rare. Measured at 100k chunks: one unit is 0.5-1.4 us. A prefix
        costs the rows of every term it expands to.
        """
        if phrase.prefix:  # merging the doclists of every term it covers costs about double
            return 2 * self._token_df(phrase.raw, True)
        return min(self._token_df(t) for t in phrase.parts) * len(phrase.parts)

    def _group_idf(self, phrases: Sequence[Phrase]) -> dict[int, float]:
        """How much each query word says, as the idf of the word as typed (its first phrase).

        Coverage weighted by idf lets the chunk holding the rare words of a question ("auth"
        in "what port does the auth mock listen on") beat one holding its common words.
        """
        n = max(self._refresh_stats(), 1)
        out: dict[int, float] = {}
        for p in phrases:
            if p.position not in out:
                out[p.position] = self._idf(p, n)
        return out

    def _idf(self, phrase: Phrase, n: int) -> float:
        """bm25's idf of a phrase among ``n`` chunks (its rarest word's, or its prefix's).

        A prefix's document count is a sum over the terms it covers and can exceed ``n``;
        clamped, so a very common word weighs little rather than negatively.
        """
        if phrase.prefix:
            df = self._token_df(phrase.raw, True)
        else:
            df = min(self._token_df(t) for t in phrase.parts)
        df = min(df, n)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def _plan(
        self, phrases: list[Phrase]
    ) -> tuple[list[list[Phrase]], list[Phrase], dict[Phrase, int]]:
        """Split phrases into ranked rounds under a per-query cost budget, plus leftovers.

        FTS5's bm25 first walks every row of every phrase (for the IDF) and then scores every
        matching row at about 1 us a row: a word found in 60,000 chunks costs ~70 ms. So each
        round ranks the cheapest phrases while their combined cost stays under
        ``RANK_BUDGET``, the phrases the model typed before derived variants. Common words
        carry little bm25 weight anyway (IDF near zero). Round two only runs when round one
        found nothing (``src/app.py:42`` did not match, so try ``app.py``); leftovers go to
        ``_search_recent``. Small indexes skip all this: everything fits one round.
        """
        n_docs = self._refresh_stats()
        if n_docs <= self.RANK_BUDGET:
            return [phrases], [], {}
        cost = {p: self._phrase_cost(p) for p in phrases}
        remaining = sorted(phrases, key=lambda p: (p.variant, cost[p], p.position))
        rounds: list[list[Phrase]] = []
        for _ in range(2):
            chosen: list[Phrase] = []
            rest: list[Phrase] = []
            total = 0
            for p in remaining:
                if total + cost[p] > self.RANK_BUDGET:
                    rest.append(p)
                else:
                    chosen.append(p)
                    total += cost[p]
            if chosen:
                rounds.append(sorted(chosen, key=lambda p: p.position))
            remaining = rest
            if not remaining:
                break
        return rounds, sorted(remaining, key=lambda p: cost[p]), cost

    # -- searching

    def search(
        self,
        query: str,
        limit: int = 8,
        kinds: Sequence[str] | None = None,
        min_score_fraction: float = 0.3,
        sessions: Sequence[str] | None = None,
    ) -> list[Hit]:
        """Best chunks for free text, best first; never raises on what the model typed.

        Hits scoring below ``min_score_fraction`` x the top score are dropped. ``kinds`` and
        ``sessions`` restrict where to look (e.g. only ``archive`` of the current session).
        """
        phrases = query_phrases(query)
        if not phrases or limit <= 0:
            return []
        filters: list[str] = []
        params: list[Any] = []
        if kinds:
            filters.append(f"c.kind IN ({','.join('?' * len(kinds))})")
            params.extend(kinds)
        if sessions:
            filters.append(f"c.session IN ({','.join('?' * len(sessions))})")
            params.extend(sessions)
        pool = max(int(limit) * RERANK_FACTOR, 40)
        try:
            with self._lock:
                rounds, rest, cost = self._plan(phrases)
                hits: list[Hit] = []
                for ranked in rounds:
                    match = " OR ".join(p.fts() for p in ranked)
                    hits = self._search_ranked(match, filters, params, pool)
                    if hits:
                        # only a narrow round is worth it: seeking a common word's doclist at
                        # a few hundred rows is cheap, at a few thousand it is not
                        if sum(cost.get(p, 0) for p in ranked) <= self.RANK_BUDGET // 5:
                            hits += self._search_with_common(ranked, phrases, filters, params, pool)
                        break
                if not hits and rest:
                    hits = self._search_recent(rest[:4], cost, filters, params, pool)
                idf = self._group_idf(phrases) if hits else {}
        except sqlite3.Error:
            return []
        hits = _rerank(hits, phrases, int(limit), idf, question_kinds(query))
        if hits and min_score_fraction > 0:
            floor = hits[0].score * min_score_fraction
            hits = [h for h in hits if h.score >= floor]
        return [replace(h, snippet=_py_snippet(h.text, phrases)) for h in hits]

    def _search_ranked(
        self, match: str, filters: list[str], params: list[Any], limit: int
    ) -> list[Hit]:
        """The ``limit`` best chunks by bm25 (snippets are made later, for the survivors)."""
        where = " AND ".join(["chunks_fts MATCH ?", *filters])
        rows = self._conn.execute(
            "SELECT c.id, c.kind, c.source, c.session, c.heading, c.text, c.ts,"
            f" bm25(chunks_fts, {_WEIGHTS}) AS score"
            " FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid"
            f" WHERE {where} ORDER BY score, c.ts DESC LIMIT ?",
            [match, *params, limit],
        ).fetchall()
        return [_hit(r[:7], -float(r[7]), None) for r in rows]

    def _search_with_common(
        self,
        ranked: list[Phrase],
        phrases: list[Phrase],
        filters: list[str],
        params: list[Any],
        pool: int,
    ) -> list[Hit]:
        """Candidates that also hold a query word too common to rank on its own.

        "who owns search": ``search`` is in thousands of chunks, so the planner ranks only
        ``owns`` and its synonyms, and the note about the search service may not make the
        candidate pool. ``(owns OR …) AND search`` lets FTS5 seek the common word's doclist
        only at the rows the rare terms match, which is cheap, and brings those notes in.
        At most ``COMMON_GROUPS`` such words, each bringing up to half a pool.
        """
        in_round = {p.position for p in ranked}
        common: dict[int, Phrase] = {}
        for p in phrases:
            if p.position in in_round or p.position in common or p.variant:
                continue
            if not all(part in STOPWORDS for part in p.parts):  # "the" narrows nothing
                common[p.position] = p
        out: list[Hit] = []
        rare = " OR ".join(p.fts() for p in ranked)
        for p in list(common.values())[:COMMON_GROUPS]:
            # the exact word, not its prefix: a prefix query merges the doclists of every term
            # it covers before FTS5 can seek in them, which for a common stem costs ~10 ms
            exact = p._replace(prefix=False)
            out += self._search_ranked(f"({rare}) AND {exact.fts()}", filters, params, pool // 2)
        seen: set[int] = set()
        return [h for h in out if not (h.chunk_id in seen or seen.add(h.chunk_id))]

    def _search_recent(
        self,
        phrases: list[Phrase],
        dfs: dict[Phrase, int],
        filters: list[str],
        params: list[Any],
        limit: int,
    ) -> list[Hit]:
        """Score the newest ``RECENT_CANDIDATES`` matches with a bm25-like formula in Python.

        Used when every phrase is too common for FTS5's bm25 within budget: such a query is
        generic ("tests failing"), and among the chunks it matches the recent ones are the ones
        the agent most likely means. Scanning newest-first stops after a fixed number of rows.
        """
        # Candidates come from the cheapest phrase alone: OR-ing in a phrase of common words
        # (``src/app.py``) makes the newest-first scan several times slower.
        where = " AND ".join(["chunks_fts MATCH ?", *filters])
        rows = self._conn.execute(
            "SELECT c.id, c.kind, c.source, c.session, c.heading, c.text, c.ts"
            " FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid"
            f" WHERE {where} ORDER BY chunks_fts.rowid DESC LIMIT ?",
            [phrases[0].fts(), *params, self.RECENT_CANDIDATES],
        ).fetchall()
        if not rows:
            return []
        n = max(self._n_docs, 1)
        avg = sum(len(r[5]) + len(r[4]) for r in rows) / len(rows) or 1.0
        idf = {p: self._idf(p, n) for p in phrases}
        scored = []
        for r in rows:
            body = (r[4] + "\n" + r[5]).lower()
            norm = 1.2 * (0.25 + 0.75 * len(body) / avg)
            score = 0.0
            for p in phrases:
                tf = body.count(p.raw.lower())
                score += idf[p] * tf * 2.2 / (tf + norm)
            scored.append((score, r[6], r))
        scored.sort(key=lambda x: (-x[0], -x[1]))
        return [_hit(r, score, None) for score, _, r in scored[:limit]]  # snippets come later


def _py_snippet(text: str, phrases: Sequence[Phrase], width: int = 160) -> str:
    """A window of ``text`` around the densest cluster of query words (FTS5's snippet idea,
    done in Python because stems, synonyms and camelCase parts are matched here anyway).

    No highlight markers: ``**db**.**staging**:5432`` is not a literal a model can copy, and
    byte-exact literals matter more than emphasis.
    """
    low = text.lower()
    found: list[tuple[int, int, int]] = []  # (start, end, query word)
    for p in phrases:
        if p.parts[0] not in low:
            continue
        for m in _phrase_regex(p).finditer(low):
            found.append((m.start(), m.end(), p.position))
            if len(found) >= SNIPPET_MATCHES:
                break
        if len(found) >= SNIPPET_MATCHES:  # stopword-only queries match everywhere
            break
    if not found:
        return text[:width] + ("…" if len(text) > width else "")
    found.sort()
    # sliding window: the anchor whose window [start - width/3, start + 2 width/3) holds the
    # most distinct query words
    best, best_n = found[0], 0
    counts: dict[int, int] = {}
    lo = hi = 0
    for anchor in found:
        while hi < len(found) and found[hi][0] < anchor[0] + (2 * width) // 3:
            counts[found[hi][2]] = counts.get(found[hi][2], 0) + 1
            hi += 1
        while found[lo][0] < anchor[0] - width // 3:
            counts[found[lo][2]] -= 1
            if not counts[found[lo][2]]:
                del counts[found[lo][2]]
            lo += 1
        if len(counts) > best_n:
            best, best_n = anchor, len(counts)
    at, end_at = best[0], best[1]
    start = max(0, at - width // 3)
    end = min(len(text), max(end_at, at + (2 * width) // 3))
    # widen to whitespace so no literal at the edge is cut in half (within reason)
    while start > 0 and not text[start - 1].isspace() and at - start < width // 2:
        start -= 1
    while end < len(text) and not text[end].isspace() and end - at < width:
        end += 1
    piece = text[start:end]
    return ("…" if start > 0 else "") + piece + ("…" if end < len(text) else "")


# Column weights for bm25 (heading, text): a match in a section name counts double. Calling
# bm25() directly measured ~30% faster than the configured ``rank`` column.
_WEIGHTS = "2.0, 1.0"


def _hit(row: Sequence[Any], score: float, snippet: str | None) -> Hit:
    return Hit(
        chunk_id=row[0],
        kind=row[1],
        source=row[2],
        session=row[3],
        heading=row[4],
        text=row[5],
        ts=row[6],
        score=score,
        snippet=snippet or "",
    )


def _fold(token: str) -> str:
    """Lowercase and strip diacritics the way ``remove_diacritics 2`` indexes a token."""
    token = token.lower()
    if token.isascii():
        return token
    decomposed = unicodedata.normalize("NFKD", token)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


class _Txn:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` under the instance lock (rollback on error)."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock) -> None:
        self.conn = conn
        self.lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()


def _group_heading(messages: list[Message]) -> str:
    first = messages[0]
    role = str(first.get("role", "?"))
    calls = tool_calls_of(first)
    if calls:
        labels = tool_labels_by_id([first])
        return "assistant → " + ", ".join(labels.get(str(c.get("id")), "tool") for c in calls)
    return role


def _archive_heading(heads: list[str]) -> str:
    text = "; ".join(dict.fromkeys(heads))
    return "archive: " + (text if len(text) <= 200 else text[:199] + "…")


def infer_source(path: Path) -> IndexSource:
    """Guess a bare path's layer from its name and place (``.../sessions/<sid>/notes.md``)."""
    parts = path.absolute().parts
    name = path.name
    session = None
    if "sessions" in parts:
        i = len(parts) - 1 - parts[::-1].index("sessions")
        if i + 1 < len(parts) - 1:
            session = parts[i + 1]
    if name == "checkpoint.md":
        return IndexSource("checkpoint", path, session)
    if name == "notes.md":
        return IndexSource("notes", path, session)
    if name == "progress.md":
        return IndexSource("progress", path, session)
    if name == "MEMORY.md" and ".stagecrew" not in parts:
        return IndexSource("global", path)
    return IndexSource("memory", path)


# ----------------------------------------------------------------------------- Claude Code


def claude_project_slug(path: Path | str) -> str:
    """The directory name Claude Code gives a project under ``~/.claude/projects``: the
    absolute path with every character but ASCII letters and digits turned into ``-``
    (``/home/me/my_app`` → ``-home-me-my-app``). Past ``CLAUDE_SLUG_MAX`` characters Claude
    Code adds a hash of the path, which ``claude_memory_sources`` matches by prefix."""
    return re.sub(r"[^A-Za-z0-9]", "-", str(path))


def claude_config_dir(home: Path | None = None) -> Path:
    """Claude Code's own directory: ``$CLAUDE_CONFIG_DIR`` when set, else ``~/.claude``."""
    override = os.environ.get("CLAUDE_CONFIG_DIR")
    if override and home is None:
        return Path(override).expanduser()
    return (home if home is not None else Path.home()) / ".claude"


def _repository_root(path: Path) -> Path | None:
    """The nearest directory at or above ``path`` holding ``.git``. The same rule as
    ``memory.instructions.repository_root``, repeated so the index does not import the
    instruction loader (which reaches the config, whose tool providers import the index)."""
    for d in (path, *path.parents):
        if os.path.lexists(d / ".git"):
            return d
    return None


def _claude_project_dirs(projects: Path, root: Path) -> list[Path]:
    slug = claude_project_slug(root)
    if len(slug) <= CLAUDE_SLUG_MAX:
        return [projects / slug]
    try:
        return sorted(projects.glob(f"{slug[:CLAUDE_SLUG_MAX]}-*"))
    except OSError:
        return []


def claude_memory_sources(
    project_root: Path | str, home: Path | None = None, claude_dir: Path | None = None
) -> list[IndexSource]:
    """Claude Code's memory files for this project, as index sources of kind ``claude``.

    Claude Code keys its auto memory by the repository root (every worktree and subdirectory
    shares it) and, in older versions and outside a repository, by the directory it started
    in; both are looked at. ``memory/**/*.md`` of each, sorted; none when there is nothing.
    """
    root = Path(os.path.realpath(project_root))
    base = (claude_dir or claude_config_dir(home)) / "projects"
    keys = dict.fromkeys(p for p in (_repository_root(root), root) if p is not None)
    out: list[IndexSource] = []
    for key in keys:
        for project_dir in _claude_project_dirs(base, key):
            memory = project_dir / "memory"
            try:
                files = sorted(p for p in memory.rglob("*.md") if p.is_file())
            except OSError:
                continue
            out += [IndexSource(CLAUDE_KIND, p) for p in files if p not in {s.path for s in out}]
    return out
