"""Evidence: transcript digests, workspace diffs from real repos, and the judge prompt."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stagecrew.judge.evidence import (
    Evidence,
    build_evidence,
    digest_transcript,
    render_evidence_prompt,
    workspace_diff,
    workspace_diff_with_flag,
)
from stagecrew.judge.verify import CheckResult


def run_git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    run_git(path, "init", "-q", "-b", "main")
    run_git(path, "config", "user.name", "T")
    run_git(path, "config", "user.email", "t@example.com")
    (path / ".gitignore").write_text("*.log\n")
    (path / "main.py").write_text("print('v1')\n")
    (path / "gone.py").write_text("x = 1\n")
    run_git(path, "add", "-A")
    run_git(path, "commit", "-q", "-m", "init")
    return path


def call(call_id: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }


def session() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You are a coding agent. SECRET SYSTEM PROMPT"},
        {"role": "user", "content": "Make the tests pass.\nKeep the public API unchanged."},
        {
            "role": "assistant",
            "content": "Let me look around first.",
            "tool_calls": [
                call("c1", "read", {"path": "main.py"}),
                call("c2", "bash", {"command": "pytest -q"}),
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "print('v1')\n"},
        {"role": "tool", "tool_call_id": "c2", "content": "1 failed\n[exit code: 1]"},
        {"role": "user", "content": [{"type": "text", "text": "Also add a docstring."}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call("c3", "edit", {"path": "main.py", "old": "v1", "new": "v2"})],
        },
        {
            "role": "tool",
            "tool_call_id": "c3",
            "content": "edited",
            "metadata": {"exit_code": 0},
        },
        {"role": "assistant", "content": "All done, tests pass and the docstring is in."},
    ]


def test_digest_keeps_requests_verbatim_and_tool_calls_as_lines() -> None:
    digest = digest_transcript(session())
    assert "SECRET SYSTEM PROMPT" not in digest
    assert "PERSON: Make the tests pass.\nKeep the public API unchanged." in digest
    assert "PERSON: Also add a docstring." in digest
    lines = digest.splitlines()
    bash_line = next(line for line in lines if "tool bash" in line)
    assert '{"command":"pytest -q"}' in bash_line and "exit 1" in bash_line
    assert "tool read" in digest and "12 chars" in digest
    assert next(line for line in lines if "tool edit" in line).endswith("exit 0, 6 chars")
    assert "agent note: Let me look around first." in digest
    assert digest.endswith(
        "AGENT (final message, a claim): All done, tests pass and the docstring is in."
    )
    # Order is preserved: the second request comes after the first tool calls.
    assert digest.index("tool bash") < digest.index("Also add a docstring") < digest.index("edit")


def test_digest_stays_bounded_and_drops_the_middle_first() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "FIRST REQUEST"}]
    for i in range(400):
        messages.append(
            {"role": "assistant", "content": None, "tool_calls": [call(f"t{i}", "bash", {"i": i})]}
        )
        messages.append({"role": "tool", "tool_call_id": f"t{i}", "content": "ok"})
    messages.append({"role": "user", "content": "SECOND REQUEST"})
    messages.append({"role": "assistant", "content": "FINAL WORDS"})
    digest = digest_transcript(messages, max_chars=2_000)
    assert len(digest) <= 2_000
    assert "FIRST REQUEST" in digest and "SECOND REQUEST" in digest and "FINAL WORDS" in digest
    assert "tool calls/notes omitted" in digest
    assert '{"i":0}' in digest and '{"i":399}' in digest, "both ends of the tool log survive"

    huge = [
        {"role": "user", "content": "A" * 50_000 + "END"},
        {"role": "assistant", "content": "B"},
    ]
    small = digest_transcript(huge, max_chars=1_000)
    assert len(small) <= 1_000 and "chars omitted" in small and "END" in small


def test_workspace_diff_includes_untracked_and_leaves_index_alone(repo: Path) -> None:
    (repo / "main.py").write_text("print('v2')\n")
    (repo / "gone.py").unlink()
    (repo / "new_module.py").write_text("def f():\n    return 42\n")
    (repo / "noise.log").write_text("ignored\n")
    (repo / "data.bin").write_bytes(b"\x00\x01" * 64)
    run_git(repo, "add", "main.py")
    index = (repo / ".git" / "index").read_bytes()
    status = run_git(repo, "status", "--porcelain")

    diff = workspace_diff(repo)

    assert "-print('v1')\n+print('v2')" in diff
    assert "diff --git a/new_module.py b/new_module.py\nnew file mode 100644" in diff
    assert "+    return 42" in diff
    assert "deleted file mode" in diff and "gone.py" in diff
    assert "Binary files /dev/null and b/data.bin differ" in diff
    assert "noise.log" not in diff
    assert (repo / ".git" / "index").read_bytes() == index
    assert run_git(repo, "status", "--porcelain") == status


def test_workspace_diff_truncation_and_edge_cases(repo: Path, tmp_path: Path) -> None:
    assert workspace_diff(repo) == "(no changes against HEAD)"
    for i in range(40):
        (repo / f"file_{i:02d}.txt").write_text("line\n" * 50)
    text, truncated = workspace_diff_with_flag(repo, max_chars=3_000)
    assert truncated and len(text) <= 3_000
    assert text.startswith("[diff truncated")
    assert "file_00.txt" in text and "files changed" in text  # the --stat summary
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    assert workspace_diff(not_a_repo).startswith("(no diff available:")


def test_prompt_asks_for_the_exact_fields(repo: Path) -> None:
    (repo / "main.py").write_text("print('v2')\n")
    check = CheckResult(
        command="pytest -q",
        exit_code=0,
        passed=True,
        output="3 passed",
        duration_s=1.2,
        mode="copy",
    )
    evidence = build_evidence(
        "all tests pass", session(), repo, [check], agent_claim="I fixed everything"
    )
    assert isinstance(evidence, Evidence) and not evidence.diff_truncated
    messages = render_evidence_prompt(evidence)
    assert [m["role"] for m in messages] == ["system", "user"]
    system, user = messages[0]["content"], messages[1]["content"]
    for field in ('"met"', '"impossible"', '"reason"', '"missing"', '"evidence"'):
        assert field in system
    assert "not evidence" in system
    assert "<condition>\nall tests pass\n</condition>" in user
    assert "`pytest -q` passed (exit 0)" in user and "3 passed" in user
    assert "+print('v2')" in user
    assert "PERSON: Make the tests pass." in user
    assert "<claim>\nI fixed everything\n</claim>" in user
