"""Claude Code hooks, end to end through ``crew run``: the hook scripts people already have
in ``.claude/settings.json`` guard, rewrite and continue the agent as they do in Claude Code."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import psutil
import pytest
from conftest import crew

from stagecrew.orchestrator.eventlog import read_events, session_dir
from stagecrew.testing.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.ray

GUARD = textwrap.dedent(
    """\
    import json, sys
    data = json.load(sys.stdin)
    event = data["hook_event_name"]
    command = (data.get("tool_input") or {}).get("command", "")
    if event == "PreToolUse" and data["tool_name"] == "Bash":
        if command.startswith("rm "):
            print("rm is not allowed here; move files to trash/ instead", file=sys.stderr)
            sys.exit(2)
        if "curl" in command:
            print(json.dumps({"hookSpecificOutput": {
                "hookEventName": "PreToolUse", "permissionDecision": "deny",
                "permissionDecisionReason": "no network calls from this project"}}))
            sys.exit(0)
        if command == "echo original":
            print(json.dumps({"hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "updatedInput": {"command": "echo rewritten > rewritten.txt"}}}))
            sys.exit(0)
    if event == "Stop" and not data["stop_hook_active"]:
        print("run the tests before you stop", file=sys.stderr)
        sys.exit(2)
    """
)


def bash(command: str) -> dict[str, object]:
    return {"tool_calls": [{"name": "bash", "arguments": {"command": command}}]}


def test_claude_code_hooks_guard_rewrite_and_continue(ray_head: object, git_repo: Path) -> None:
    claude = git_repo / ".claude"
    claude.mkdir()
    (claude / "guard.py").write_text(GUARD)
    guard = {"type": "command", "command": 'python3 "$CLAUDE_PROJECT_DIR/.claude/guard.py"'}
    settings = {
        "hooks": {
            "PreToolUse": [
                {"matcher": "Bash", "hooks": [guard]},
                {
                    "matcher": "LS",
                    "hooks": [{"type": "command", "command": "sleep 31", "timeout": 1}],
                },
            ],
            "Stop": [{"hooks": [guard]}],
        }
    }
    (claude / "settings.json").write_text(json.dumps(settings))
    (git_repo / "victim.txt").write_text("keep me")
    script = [
        bash("rm victim.txt"),
        bash("curl http://127.0.0.1:9/"),
        bash("echo original"),
        {"tool_calls": [{"name": "ls", "arguments": {}}]},
        {"text": "All done."},
        {"text": "Tests pass, done."},
    ]
    with ScriptedLLM(script) as llm:
        (git_repo / ".stagecrew").mkdir()
        (git_repo / ".stagecrew" / "config.json").write_text(
            json.dumps({"models": {"primary": {"model": "openai/m", "api_base": llm.base_url}}})
        )
        proc = crew("run", "Tidy up.", cwd=git_repo)
        requests = list(llm.requests)
    assert proc.returncode == 0, proc.stderr
    assert (git_repo / "victim.txt").read_text() == "keep me"
    said = [r.messages[-1]["content"] for r in requests]
    assert "rm is not allowed here" in said[1]
    assert "no network calls from this project" in said[2]
    assert (git_repo / "rewritten.txt").read_text() == "rewritten\n"
    assert "[Stop hook] run the tests before you stop" in said[5]
    assert "Tests pass, done." in proc.stdout
    sid = next((git_repo / ".stagecrew" / "state" / "sessions").iterdir()).name
    events = [e.body for e in read_events(session_dir(git_repo, sid) / "events.jsonl")]
    ran = [e for e in events if e.kind == "hook_ran"]
    hung = [r for r in ran if r.command == "sleep 31"]
    assert hung and hung[0].timed_out and hung[0].duration_ms < 5000
    assert {r.event for r in ran} >= {"PreToolUse", "Stop"}
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "31"]]
