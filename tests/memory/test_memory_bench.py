"""The search benchmark stays runnable and importable (tiny sizes; the real run is manual)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_memory_search.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_memory_search", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def test_benchmark_main_runs_small(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    rows = bench.main(["--sizes", "1500", "--queries", "60"])
    assert len(rows) == 1
    row = rows[0]
    assert row["chunks"] == 1500
    assert 0 < row["p50"] <= row["p95"] <= row["p99"]
    assert row["hit_rate"] > 0.5
    out = capsys.readouterr().out
    assert "p95 ms" in out and "1500" in out


def test_generated_corpus_is_deterministic() -> None:
    bench = load_bench()
    assert list(bench.generate_chunks(5)) == list(bench.generate_chunks(5))
    assert bench.generate_queries(10) == bench.generate_queries(10)
