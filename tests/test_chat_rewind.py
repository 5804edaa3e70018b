"""``/rewind`` in the chat: the session's points, and the files put back to one of them (with
the point that undoes it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stagecrew.cli.chat import COMMANDS, rewind_lines
from stagecrew.rewind import take_point


def test_rewind_lists_and_restores_this_sessions_points(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    (ws / "a.txt").write_text("first\n")
    assert "/rewind" in COMMANDS
    assert "no rewind points" in rewind_lines(ws, "s1", "")[0]
    point = take_point(ws, session="s1", tool="edit", label="a.txt")
    (ws / "a.txt").write_text("changed\n")
    (ws / "new.txt").write_text("made later\n")
    listed = "\n".join(rewind_lines(ws, "s1", ""))
    assert "POINT" in listed and "edit" in listed
    assert rewind_lines(ws, "other", "") == ["[dim]no rewind points in this session yet[/dim]"]
    done = rewind_lines(ws, "s1", str(point.id))
    assert len(done) == 1 and f"rewound to point {point.id}" in done[0], done
    assert (ws / "a.txt").read_text() == "first\n" and not (ws / "new.txt").exists()
    assert "point number" in rewind_lines(ws, "s1", "latest")[0]
    assert "[red]" in rewind_lines(ws, "s1", "999")[0]
