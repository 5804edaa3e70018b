"""``crew memory show|search|edit`` and the person's own lines in ``MEMORY.md``.

The hand-written-lines test goes through the real writer (``CheckpointWriter.save_memory``, the
one path every agent's ``memory save`` takes); the search test plants a literal in a scripted
session of the project under a real Ray head and finds it afterwards with the real command.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import crew

from stagecrew.actors.checkpoint_writer import CheckpointWriter
from stagecrew.actors.spec import ModelPort
from stagecrew.memory.layers import ProjectMemory, ProjectMemoryWriter
from stagecrew.messages import ModelSpecWire
from stagecrew.testing.scripted_llm import ScriptedLLM

TRAILING = "   "  # kept out of the literal so no editor strips it
PERSON = f"""# Project memory

Written by hand at the top:   keep me exactly, trailing spaces too{TRAILING}

## Project context

- The billing service is owned by Dana (person's line)

## Rules

* never force-push to `main`  (mine, with a star)
A loose paragraph line the person typed under Rules.

## My own section

- person-only section, DSN postgres://ci@db:5433/ledger
"""


def _person_lines() -> list[str]:
    return [line for line in PERSON.splitlines() if line.strip() and not line.startswith("#")]


def _writer(repo: Path) -> CheckpointWriter:
    sdir = repo / ".stagecrew" / "state" / "sessions" / "s1"
    sdir.mkdir(parents=True)
    model = ModelSpecWire(model="openai/unused", api_base="http://127.0.0.1:9", num_retries=0)
    # save_memory never calls the model; a port that would fail loudly proves it.
    return CheckpointWriter("s1", repo, sdir, cast(ModelPort, object()), model)


def test_the_writer_never_removes_the_persons_lines(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    memory = repo / ".stagecrew" / "memory" / "MEMORY.md"
    memory.parent.mkdir(parents=True)
    memory.write_text(PERSON)
    writer = _writer(repo)
    writer.memory_writer.max_entries = 4  # small, so the writer has to drop entries

    async def saves() -> list[str]:
        out = []
        for i in range(12):
            section = ("rules", "context", "knowledge")[i % 3]
            out.append(await writer.save_memory(section, f"agent fact {i} on port {4000 + i}"))
        return out

    replies = asyncio.run(saves())
    text = memory.read_text()
    for line in _person_lines():  # byte for byte, every one
        assert line in text.splitlines(), line
    assert any("dropped" in r for r in replies)
    # The writer kept its newest entries and dropped its oldest, within each section's cap.
    doc = ProjectMemory.parse(text)
    assert "agent fact 9 on port 4009" in doc.get("Rules")
    assert "agent fact 0 on port 4000" not in text
    census = ProjectMemoryWriter(memory).census()
    # The person's item and the paragraph under it are one entry of theirs.
    assert census["Rules"] == (3, 1)
    assert census["Project context"] == (3, 1)
    assert census["Durable knowledge"] == (4, 0)
    assert census["My own section"] == (0, 1)

    # A person who edits one of the writer's entries makes it theirs: it survives from now on.
    edited = text.replace("agent fact 11 on port 4011", "agent fact 11 on port 4011 (checked)")
    memory.write_text(edited)

    async def more() -> None:
        for i in range(12, 20):
            await writer.save_memory("knowledge", f"agent fact {i}")

    asyncio.run(more())
    final = memory.read_text()
    assert "- agent fact 11 on port 4011 (checked)" in final
    for line in _person_lines():
        assert line in final.splitlines(), line
    assert ProjectMemoryWriter(memory).census()["Durable knowledge"] == (3, 1)


def test_a_writer_killed_between_file_and_sidecar_keeps_the_entry(tmp_path: Path) -> None:
    """The file is written first: an entry missing from the sidecar counts as the person's."""
    memory = tmp_path / "MEMORY.md"
    writer = ProjectMemoryWriter(memory, max_entries=1)
    writer.save("rules", "first rule")
    writer.owned_path.write_text('{"version": 1, "entries": []}\n')  # as if killed before it
    writer.save("rules", "second rule")
    writer.save("rules", "third rule")
    body = ProjectMemory.load(memory).get("Rules")
    assert "- first rule" in body and "- third rule" in body and "second rule" not in body


def test_show_lists_layers_and_edit_creates_the_skeleton(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "AGENTS.md").write_text("Run the tests with make test.\n")
    cfg = tmp_path / "cfg"
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nprintf -- "- added in the editor\\n" >> "$1"\n')
    editor.chmod(0o755)
    env = {"STAGECREW_CONFIG_DIR": str(cfg), "VISUAL": str(editor), "HOME": str(tmp_path)}

    edited = crew("memory", "edit", cwd=repo, env=env, timeout=60)
    assert edited.returncode == 0, edited.stderr
    memory = repo / ".stagecrew" / "memory" / "MEMORY.md"
    text = memory.read_text()
    assert "## Rules" in text and text.endswith("- added in the editor\n")

    shown = crew("memory", "show", "--json", cwd=repo, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    report: dict[str, Any] = json.loads(shown.stdout)
    assert report["project_memory"]["path"] == str(memory)
    assert report["global_memory"]["path"] == str(cfg / "MEMORY.md")
    assert [i["label"] for i in report["instructions"]] == ["AGENTS.md"]
    last = report["project_memory"]["sections"][-1]
    assert last["entries"] == 1 and last["yours"] == 1 and last["writer"] == 0
    plain = crew("memory", "show", cwd=repo, env=env, timeout=60)
    assert f"project memory  {memory}" in plain.stdout
    assert "AGENTS.md" in plain.stdout


def tool(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


@pytest.mark.ray
def test_memory_search_finds_a_literal_from_an_earlier_session(
    ray_head: object, git_repo: Path
) -> None:
    script = [
        tool(
            "memory",
            action="save",
            section="knowledge",
            text="The ledger mock listens on 127.0.0.1:48213 (start it with make mock).",
        ),
        tool("memory", action="note", text="checked the nightly job: CSV column order frozen"),
        {"text": "Remembered."},
    ]
    with ScriptedLLM({"main": script}) as llm:
        (git_repo / ".stagecrew").mkdir()
        (git_repo / ".stagecrew" / "config.json").write_text(
            json.dumps({"models": {"primary": {"model": "openai/main", "api_base": llm.base_url}}})
        )
        run = crew("run", "Remember where the ledger mock listens.", cwd=git_repo)
        assert run.returncode == 0, run.stderr

    found = crew("memory", "search", "127.0.0.1:48213", "--json", cwd=git_repo, timeout=60)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    top = hits[0]
    assert "48213" in top["snippet"]
    assert top["kind"] == "memory" and top["source"] == ".stagecrew/memory/MEMORY.md"
    assert top["heading"].endswith("Durable knowledge")
    notes = crew("memory", "search", "nightly", "--kind", "notes", cwd=git_repo, timeout=60)
    assert notes.returncode == 0, notes.stderr
    assert "notes.md" in notes.stdout and "CSV column order frozen" in notes.stdout
    shown = json.loads(crew("memory", "show", "--json", cwd=git_repo, timeout=60).stdout)
    knowledge = next(
        s for s in shown["project_memory"]["sections"] if s["name"] == "Durable knowledge"
    )
    assert knowledge == {"name": "Durable knowledge", "entries": 1, "writer": 1, "yours": 0}
    assert shown["latest_session"]["notes"]["exists"]
    assert os.path.isfile(shown["latest_session"]["notes"]["path"])
    assert sys.executable  # the scripted session ran under this interpreter
