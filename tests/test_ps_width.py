"""``crew ps`` in a narrow terminal: every actor id is printed whole (people copy them into
``crew cancel``); columns are dropped, least useful first, before anything is cut."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from stagecrew.cli.render import ACTOR_COLUMNS, actor_table

SID = "eeb59c0ffee1"


def row(actor_id: str, role: str, parent: str | None, **kw: Any) -> dict[str, Any]:
    base = {
        "actor_id": actor_id,
        "role": role,
        "parent": parent,
        "state": "running",
        "elapsed_s": 1234.0,
        "steps": 42,
        "tokens": 1_234_567,
        "cost_usd": 12.3456,
        "rss_bytes": 512 * 1024 * 1024,
    }
    return {**base, **kw}


ROWS = [
    row(f"{SID}-primary", "primary", None),
    row(f"{SID}-sa-1a2b3c", "subagent", f"{SID}-primary", state="finished"),
    row(f"{SID}-candidate-7", "candidate", f"{SID}-primary", rss_bytes=0),
]


def render(width: int) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None)
    console.print(actor_table(ROWS, width=width))
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", [60, 80, 100])
def test_ids_are_whole_and_nothing_is_wider_than_the_terminal(width: int) -> None:
    lines = render(width)
    text = "\n".join(lines)
    assert all(len(line) <= width for line in lines), text
    for r in ROWS:
        assert r["actor_id"] in text, text
    assert "…" not in text
    header = next(line for line in lines if line.startswith("┃"))
    shown = [c.header for c in ACTOR_COLUMNS if f" {c.header} " in header]
    assert shown[0] == "actor" and "state" in shown
    # Every shown header fits on its one line (none wrapped into a second header line).
    assert len([line for line in lines if line.startswith("┃")]) == 1


def test_eighty_columns_keep_the_numbers_people_watch() -> None:
    header = next(line for line in render(80) if line.startswith("┃"))
    for kept in ("role", "state", "elapsed", "tokens"):
        assert f" {kept} " in header
    assert " RSS " not in header and " parent " not in header


def test_a_wide_terminal_shows_every_column() -> None:
    header = next(line for line in render(160) if line.startswith("┃"))
    assert all(f" {c.header} " in header for c in ACTOR_COLUMNS)


def test_crew_ps_uses_the_fitted_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """``crew ps`` in an 80-column terminal (COLUMNS=80), against a stand-in supervisor."""
    from typer.testing import CliRunner

    from stagecrew.cli import main
    from stagecrew.orchestrator import runtime

    class Client:
        def ps(self, session: str | None) -> dict[str, Any]:
            return {"actors": ROWS, "sessions": []}

    monkeypatch.setattr(runtime, "connect", lambda *a, **kw: Client())
    monkeypatch.setattr(main, "_preflight", lambda *a, **kw: None)
    result = CliRunner().invoke(main.app, ["ps"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert all(len(line) <= 80 for line in result.output.splitlines()), result.output
    for r in ROWS:
        assert r["actor_id"] in result.output
