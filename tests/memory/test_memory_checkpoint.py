"""Checkpoint writer logic: literals byte for byte, verbatim intent, merge and fallback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stagecrew.memory.checkpoint import (
    CheckpointFormatError,
    build_checkpoint_prompt,
    checkpoint_without_model,
    ensure_literals,
    extract_literals,
    merge_checkpoint,
    messages_digest,
    render_transcript,
    update_checkpoint,
)
from stagecrew.memory.layers import CHECKPOINT_SECTIONS, Checkpoint, parse_sections

GOAL = "Make `crew run --offline` work behind the proxy at http://10.0.0.5:3128 — don't touch CI!"


def call(cid: str, name: str, **args: Any) -> dict[str, Any]:
    return {
        "id": cid,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }


MESSAGES: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": "The crash is in src/app/config.py:42. Run `pytest -q tests/test_config.py -x`; "
        "the dev server is on localhost:8080 and docs at https://docs.example.com/a?b=1. "
        "Set DATABASE_URL=postgres://u@db/app and keep $HOME alone. We pin pydantic==2.6.1 "
        "on Python 3.11 and ship v1.4.0-rc.2. Read and/or skim README.md. Use port 5432.",
    },
    {
        "role": "assistant",
        "content": "Reading it. I'll pass --max-retries=3 and run:\n"
        "```bash\n$ make test ARGS=-k\n```"
        "\n```python\nx = 'src/not/a/literal.py'\n```",
        "tool_calls": [
            call("c1", "read", path="src/app/config.py"),
            call("c2", "bash", command="uvicorn app.main:api --port 8001 --reload"),
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "/usr/lib/python3.11/noise.py\n..."},
    {"role": "tool", "tool_call_id": "c2", "content": "Error: address already in use"},
]

EXPECTED = [
    "src/app/config.py:42",
    "pytest -q tests/test_config.py -x",
    "localhost:8080",
    "https://docs.example.com/a?b=1",
    "DATABASE_URL=postgres://u@db/app",
    "$HOME",
    "pydantic==2.6.1",
    "Python 3.11",
    "v1.4.0-rc.2",
    "README.md",
    "port 5432",
    "--max-retries=3",
    "make test ARGS=-k",
    "src/app/config.py",
    "uvicorn app.main:api --port 8001 --reload",
]


def test_extract_literals() -> None:
    got = extract_literals(MESSAGES)
    for lit in EXPECTED:
        assert lit in got, lit
    assert "and/or" not in got
    assert "src/not/a/literal.py" not in got  # code in a python fence is not a literal
    assert "/usr/lib/python3.11/noise.py" not in got  # tool outputs are skipped
    assert len(got) == len(set(got))
    assert got.index("src/app/config.py:42") < got.index(
        "uvicorn app.main:api --port 8001 --reload"
    )


def test_extract_literals_limit_keeps_newest() -> None:
    msgs = [{"role": "user", "content": f"see --flag-{i}"} for i in range(300)]
    got = extract_literals(msgs, limit=50)
    assert got[0] == "--flag-250" and got[-1] == "--flag-299"


def test_prompt_mentions_every_section_and_literal() -> None:
    prompt = build_checkpoint_prompt("## Next action\n\nold", MESSAGES, GOAL)
    assert [m["role"] for m in prompt] == ["system", "user"]
    for name in CHECKPOINT_SECTIONS:
        assert f"## {name}" in prompt[0]["content"]
    user = prompt[1]["content"]
    assert GOAL in user
    assert "old" in user
    for lit in EXPECTED:
        assert lit in user
    assert "tool result read(src/app/config.py)" in user


def test_transcript_keeps_newest_when_too_long() -> None:
    msgs = [{"role": "user", "content": f"message {i} " + "x" * 1000} for i in range(100)]
    out = render_transcript(msgs, max_chars=5_000)
    assert "message 99" in out and "message 0 " not in out
    assert "earlier messages omitted" in out


def model_answer(**sections: str) -> str:
    return "\n\n".join(f"## {name}\n\n{body}" for name, body in sections.items())


def test_merge_overrides_intent_and_restores_literals() -> None:
    current = Checkpoint()
    current.set("Decisions", "- use httpx")
    current.extras.append(("Person's scratch", "do not lose me", "Decisions"))
    literals = extract_literals(MESSAGES)
    # a sloppy model: paraphrases the goal, rewrites paths, wraps the answer in a fence
    output = (
        "Sure! Here it is:\n```markdown\n"
        + model_answer(
            **{
                "Active intent": "Get offline mode working.",
                "Next action": "Fix config.py around line 42",
                "Current work": "Looking at the server on port 8080",
                "Invented section": "model chatter",
                "Person's scratch": "the model rewrote this",
            }
        )
        + "\n```"
    )
    merged = merge_checkpoint(output, current, literals, GOAL)
    assert merged.active_intent == GOAL
    assert merged.get("Next action") == "Fix config.py around line 42"
    assert merged.get("Decisions") == "- use httpx"  # omitted by the model: kept
    assert merged.get("Person's scratch") == "do not lose me"
    assert "### Invented section" in merged.get("Open notes")
    text = merged.render()
    for lit in literals:
        assert lit in text, lit
    assert "`localhost:8080`" in merged.get("Live resources")
    assert "`src/app/config.py:42`" in merged.get("Discovered knowledge")
    # the guarantee survives the round trip through the file
    assert all(lit in Checkpoint.parse(text).render() for lit in literals)
    assert [h for h, _ in parse_sections(text)[1] if h != "Person's scratch"] == list(
        CHECKPOINT_SECTIONS
    )


def test_literals_copied_byte_for_byte(tmp_path: Path) -> None:
    odd = [
        "C:\\Users\\me\\app.py",
        "`echo ${HOME}`",
        "--opt='a b'",
        "naïve-ünïcode/path.py",
        "tab\there",
        "x" * 150,
    ]
    cp = Checkpoint()
    appended = ensure_literals(cp, odd)
    assert appended == odd
    path = tmp_path / "checkpoint.md"
    cp.save(path)
    raw = path.read_bytes().decode("utf-8")
    for lit in odd:
        assert lit in raw
    # a literal already present (even inside a longer one) is not appended again
    again = Checkpoint.parse(raw)
    assert ensure_literals(again, [*odd, "x" * 10]) == []


def test_merge_rejects_garbage() -> None:
    with pytest.raises(CheckpointFormatError):
        merge_checkpoint("I could not do that.", Checkpoint(), [], GOAL)
    with pytest.raises(CheckpointFormatError):
        merge_checkpoint("", Checkpoint(), [], GOAL)


def test_fallback_without_model() -> None:
    current = Checkpoint()
    current.set("Next action", "keep going")
    current.set("Files touched", "- `src/app/config.py` (read)")
    cp = checkpoint_without_model(current, MESSAGES, GOAL, task_tree="- [~] T1 offline mode")
    assert cp.active_intent == GOAL
    assert cp.get("Next action") == "keep going"
    assert cp.get("Task tree") == "- [~] T1 offline mode"
    assert "Reading it." in cp.get("Current work")
    assert "`bash(uvicorn app.main:api --port 8001 --reload)`" in cp.get("Current work")
    assert cp.get("Files touched").count("src/app/config.py`") == 1  # not duplicated
    assert "bash(uvicorn" in cp.get("Errors and fixes")
    assert "address already in use" in cp.get("Errors and fixes")
    text = cp.render()
    for lit in EXPECTED:
        assert lit in text, lit
    # deterministic
    again = checkpoint_without_model(current, MESSAGES, GOAL, task_tree="- [~] T1 offline mode")
    assert again.render() == text


def test_update_checkpoint_never_raises() -> None:
    current = Checkpoint()
    good = model_answer(**{"Next action": "restart the server", "Task tree": ""})
    cp, problem = update_checkpoint(current, MESSAGES, GOAL, good, task_tree="- [ ] T1 x")
    assert problem is None and cp.get("Next action") == "restart the server"
    assert cp.get("Task tree") == "- [ ] T1 x"
    for bad in (None, "nonsense", "\x00\x00"):
        cp, problem = update_checkpoint(current, MESSAGES, GOAL, bad)
        assert problem is not None
        assert cp.active_intent == GOAL
        assert all(lit in cp.render() for lit in EXPECTED)


def test_hand_edit_between_checkpoint_updates(tmp_path: Path) -> None:
    """The writer always starts from the file, so a person's edit survives the next update."""
    path = tmp_path / "checkpoint.md"
    cp, _ = update_checkpoint(Checkpoint(), MESSAGES[:1], GOAL, model_answer(**{"Decisions": "a"}))
    cp.save(path)
    path.write_text(path.read_text().replace("## Decisions\n\na", "## Decisions\n\nPERSON: use b"))
    current = Checkpoint.load(path)
    cp2, _ = update_checkpoint(current, MESSAGES[1:], GOAL, model_answer(**{"Next action": "n"}))
    assert cp2.get("Decisions") == "PERSON: use b"
    assert cp2.get("Next action") == "n"


def test_messages_digest_is_stable() -> None:
    assert messages_digest(MESSAGES) == messages_digest(json.loads(json.dumps(MESSAGES)))
    assert messages_digest(MESSAGES) != messages_digest(MESSAGES[:1])
