"""Hooks run for real: scripts in a temporary project, Claude Code's protocol end to end."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hookutil import (
    PY,
    MakeRunner,
    await_pid,
    gone,
    hooks_for,
    kill_if_alive,
    read_pid,
    write_script,
)

from stagecrew.hooks import HookOutcome

# A Python hook that records what it received, then answers with what it was told to.
RECORDER = """#!{py}
import json, os, sys
data = json.load(sys.stdin)
record = {{"stdin": data, "env": {{k: os.environ.get(k) for k in
    ("CLAUDE_PROJECT_DIR", "STAGECREW_PROJECT_DIR", "HOOK_TEST_MARK")}}, "cwd": os.getcwd()}}
with open(sys.argv[1], "w") as f:
    json.dump(record, f)
"""


def _json_hook(project: Path, name: str, answer: dict[str, Any], delay: float = 0) -> str:
    """A bash hook that prints ``answer`` as JSON (after ``delay`` seconds) and exits 0."""
    body = json.dumps(answer).replace("'", "'\\''")
    script = write_script(
        project / "hooks" / name,
        f"#!/bin/bash\ncat >/dev/null\nsleep {delay}\nprintf '%s' '{body}'\n",
    )
    return str(script)


def _exit_hook(project: Path, name: str, code: int, stderr: str = "", stdout: str = "") -> str:
    script = write_script(
        project / "hooks" / name,
        f"#!/bin/bash\ncat >/dev/null\nprintf '%s' {json.dumps(stdout)}\n"
        f"printf '%s' {json.dumps(stderr)} >&2\nexit {code}\n",
    )
    return str(script)


# -- what a hook receives ----------------------------------------------------------------------


async def test_pre_tool_use_stdin_env_and_cwd_as_claude_code_sends_them(
    project: Path, make_runner: MakeRunner
) -> None:
    recorder = write_script(project / "hooks/record.py", RECORDER.format(py=PY))
    out = project / "record.json"
    runner = make_runner(
        hooks_for("PreToolUse", f"{recorder} {out}", matcher="Bash"),
        permission_mode="acceptEdits",
        env={"HOOK_TEST_MARK": "kept", "PATH": "/usr/bin:/bin"},
    )
    outcome = await runner.pre_tool_use("bash", {"command": "ls -la"}, tool_use_id="call_1")
    assert outcome.runs and outcome.runs[0].exit_code == 0, outcome.runs
    record = json.loads(out.read_text())
    assert record["stdin"] == {
        "session_id": "sess-1",
        "transcript_path": str(project / "transcript.jsonl"),
        "cwd": str(project),
        "permission_mode": "acceptEdits",
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "ls -la"},
        "tool_use_id": "call_1",
    }
    assert record["env"] == {
        "CLAUDE_PROJECT_DIR": str(project),
        "STAGECREW_PROJECT_DIR": str(project),
        "HOOK_TEST_MARK": "kept",
    }
    assert record["cwd"] == str(project)


@pytest.mark.parametrize(
    ("event", "call", "fields"),
    [
        ("SessionStart", lambda r: r.session_start("resume"), {"source": "resume"}),
        ("UserPromptSubmit", lambda r: r.user_prompt_submit("fix it"), {"prompt": "fix it"}),
        (
            "PostToolUse",
            lambda r: r.post_tool_use("write", {"file_path": "a.txt", "content": "x"}, {"ok": 1}),
            {"tool_name": "Write", "tool_response": {"ok": 1}},
        ),
        (
            "Notification",
            lambda r: r.notification("Claude needs your permission to use Bash"),
            {
                "message": "Claude needs your permission to use Bash",
                "notification_type": "permission_prompt",
            },
        ),
        ("Stop", lambda r: r.stop(True), {"stop_hook_active": True}),
        ("SubagentStop", lambda r: r.stop(False, subagent=True), {"stop_hook_active": False}),
        ("PreCompact", lambda r: r.pre_compact("manual"), {"trigger": "manual"}),
        ("SessionEnd", lambda r: r.session_end("logout"), {"reason": "logout"}),
    ],
)
async def test_per_event_fields(
    project: Path, make_runner: MakeRunner, event: str, call: Any, fields: dict[str, Any]
) -> None:
    recorder = write_script(project / "hooks/record.py", RECORDER.format(py=PY))
    out = project / "record.json"
    runner = make_runner(hooks_for(event, f"{recorder} {out}"))
    outcome: HookOutcome = await call(runner)
    assert [r.outcome for r in outcome.runs] == ["ok"]
    stdin = json.loads(out.read_text())["stdin"]
    assert stdin["hook_event_name"] == event
    assert stdin["session_id"] == "sess-1"
    for key, value in fields.items():
        assert stdin[key] == value
    if event == "PostToolUse":
        assert stdin["tool_input"] == {"file_path": str(project / "a.txt"), "content": "x"}


# -- matchers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matcher", "tool", "runs"),
    [
        ("Bash", "bash", True),
        ("bash", "bash", True),
        ("Write|Edit", "edit", True),
        ("Edit", "apply_patch", True),
        ("MultiEdit", "edit", True),
        ("Write|Edit", "read", False),
        ("Bash", "bash_output", False),
        ("Bash.*", "bash_output", True),
        ("mcp__.*", "mcp__github__create_issue", True),
        ("mcp__.*", "git", False),
        ("*", "git", True),
    ],
)
async def test_matchers_with_either_name(
    project: Path, make_runner: MakeRunner, matcher: str, tool: str, runs: bool
) -> None:
    marker = project / "ran"
    runner = make_runner(hooks_for("PostToolUse", f"touch {marker}", matcher=matcher))
    assert runner.has_hooks("PostToolUse", tool) is runs
    outcome = await runner.post_tool_use(tool, {}, {})
    assert marker.exists() is runs
    assert len(outcome.runs) == int(runs)
    if runs:
        assert outcome.runs[0].matcher == matcher


async def test_session_start_matcher_is_the_source(project: Path, make_runner: MakeRunner) -> None:
    runner = make_runner(hooks_for("SessionStart", "echo fresh context", matcher="startup|clear"))
    assert (await runner.session_start("startup")).additional_context == "fresh context"
    assert not (await runner.session_start("resume")).runs


async def test_no_matching_hook_costs_nothing(project: Path, make_runner: MakeRunner) -> None:
    runner = make_runner(hooks_for("PreToolUse", "false", matcher="Bash"))
    started = time.perf_counter()
    for _ in range(2000):
        outcome = await runner.pre_tool_use("read", {"file_path": "a"})
        assert outcome == HookOutcome("PreToolUse")
        await runner.run("Stop", {"stop_hook_active": False})
    per_call_ms = (time.perf_counter() - started) * 1000 / 4000
    assert per_call_ms < 1.0


# -- exit codes ----------------------------------------------------------------------------------


async def test_exit_2_blocks_a_tool_call_with_stderr_as_the_reason(
    project: Path, make_runner: MakeRunner
) -> None:
    guard = write_script(
        project / "hooks/guard.sh",
        '#!/bin/bash\ncmd=$(python3 -c "import json,sys; print(json.load(sys.stdin)'
        "['tool_input']['command'])\")\n"
        'if [[ "$cmd" == *"rm -rf"* ]]; then echo "rm -rf is not allowed here" >&2; exit 2; fi\n',
    )
    runner = make_runner(hooks_for("PreToolUse", str(guard), matcher="Bash"))
    denied = await runner.pre_tool_use("bash", {"command": "rm -rf /tmp/x"})
    assert denied.blocked and denied.permission == "deny"
    assert denied.reason == "rm -rf is not allowed here"
    assert denied.runs[0].exit_code == 2 and denied.runs[0].outcome == "block"
    allowed = await runner.pre_tool_use("bash", {"command": "ls"})
    assert not allowed.blocked and allowed.permission is None
    assert allowed.runs[0].outcome == "ok"


async def test_exit_2_elsewhere(project: Path, make_runner: MakeRunner) -> None:
    hook = _exit_hook(project, "no.sh", 2, stderr="no secrets in prompts", stdout='{"x": 1}')
    runner = make_runner({**hooks_for("UserPromptSubmit", hook), **hooks_for("SessionStart", hook)})
    refused = await runner.user_prompt_submit("my password is hunter2")
    assert refused.blocked and refused.reason == "no secrets in prompts"
    assert refused.additional_context == ""  # stdout of an exit 2 is ignored
    # SessionStart cannot block: stderr is only shown to the person.
    started = await runner.session_start()
    assert not started.blocked
    assert len(started.messages_for_person) == 1
    assert "no secrets in prompts" in started.messages_for_person[0]


async def test_stop_hook_exit_2_keeps_the_agent_going(
    project: Path, make_runner: MakeRunner
) -> None:
    script = write_script(
        project / "hooks/stop.py",
        f"#!{PY}\nimport json, sys\n"
        "if json.load(sys.stdin)['stop_hook_active']:\n    sys.exit(0)\n"
        "print('the tests have not been run', file=sys.stderr)\nsys.exit(2)\n",
    )
    runner = make_runner(hooks_for("Stop", str(script)))
    first = await runner.stop(False)
    assert first.blocked and first.reason == "the tests have not been run"
    second = await runner.stop(True)
    assert not second.blocked


async def test_other_exit_codes_are_non_blocking_errors(
    project: Path, make_runner: MakeRunner
) -> None:
    hook = _exit_hook(project, "crash.sh", 1, stderr="Traceback: boom")
    runner = make_runner(hooks_for("PreToolUse", hook))
    outcome = await runner.pre_tool_use("bash", {"command": "ls"})
    assert not outcome.blocked and outcome.permission is None
    assert outcome.runs[0].outcome == "error" and outcome.runs[0].exit_code == 1
    (message,) = outcome.messages_for_person
    assert "exit code 1" in message and "Traceback: boom" in message


# -- JSON output ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "blocked"), [("deny", True), ("ask", False), ("allow", False)]
)
async def test_permission_decision(
    project: Path, make_runner: MakeRunner, decision: str, blocked: bool
) -> None:
    hook = _json_hook(
        project,
        "decide.sh",
        {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": decision,
                "permissionDecisionReason": f"policy says {decision}",
            }
        },
    )
    runner = make_runner(hooks_for("PreToolUse", hook, matcher="Bash"))
    outcome = await runner.pre_tool_use("bash", {"command": "make deploy"})
    assert outcome.permission == decision
    assert outcome.permission_reason == f"policy says {decision}"
    assert outcome.blocked is blocked
    assert outcome.reason == (f"policy says {decision}" if blocked else "")
    assert outcome.runs[0].outcome == decision


@pytest.mark.parametrize(("decision", "permission"), [("approve", "allow"), ("block", "deny")])
async def test_older_decision_form(
    project: Path, make_runner: MakeRunner, decision: str, permission: str
) -> None:
    hook = _json_hook(project, "old.sh", {"decision": decision, "reason": "old style"})
    runner = make_runner(hooks_for("PreToolUse", hook))
    outcome = await runner.pre_tool_use("write", {"file_path": "a", "content": ""})
    assert outcome.permission == permission
    assert outcome.blocked is (permission == "deny")


async def test_updated_input(project: Path, make_runner: MakeRunner) -> None:
    script = write_script(
        project / "hooks/rewrite.py",
        f"#!{PY}\nimport json, sys\nd = json.load(sys.stdin)\n"
        "cmd = d['tool_input']['command'].replace('npm', 'pnpm')\n"
        "print(json.dumps({'hookSpecificOutput': {'hookEventName': 'PreToolUse',"
        " 'permissionDecision': 'allow', 'updatedInput': {**d['tool_input'], 'command': cmd}}}))\n",
    )
    runner = make_runner(hooks_for("PreToolUse", str(script), matcher="Bash"))
    outcome = await runner.pre_tool_use("bash", {"command": "npm test", "timeout": 5000})
    assert outcome.updated_input == {"command": "pnpm test", "timeout": 5000}
    assert outcome.permission == "allow" and not outcome.blocked


async def test_context_for_user_prompt_submit(project: Path, make_runner: MakeRunner) -> None:
    plain = write_script(project / "hooks/plain.sh", "#!/bin/bash\necho 'Branch: main'\n")
    structured = _json_hook(
        project,
        "ctx.sh",
        {
            "hookSpecificOutput": {
                "hookEventName": "UserPromptSubmit",
                "additionalContext": "Sprint goal: ship hooks",
            }
        },
    )
    runner = make_runner(hooks_for("UserPromptSubmit", str(plain), structured))
    outcome = await runner.user_prompt_submit("what next?")
    assert outcome.additional_context == "Branch: main\nSprint goal: ship hooks"
    assert not outcome.blocked


async def test_post_tool_use_block_and_context(project: Path, make_runner: MakeRunner) -> None:
    hook = _json_hook(
        project,
        "lint.sh",
        {
            "decision": "block",
            "reason": "lint failed: E501 line too long",
            "hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": "ruff"},
        },
    )
    runner = make_runner(hooks_for("PostToolUse", hook, matcher="Edit|Write"))
    outcome = await runner.post_tool_use("edit", {"file_path": "a.py"}, {"success": True})
    assert outcome.blocked and outcome.reason == "lint failed: E501 line too long"
    assert outcome.additional_context == "ruff"


async def test_continue_false_and_system_message(project: Path, make_runner: MakeRunner) -> None:
    hook = _json_hook(
        project,
        "halt.sh",
        {
            "continue": False,
            "stopReason": "budget exhausted",
            "decision": "block",
            "systemMessage": "hook says: stopping",
            "suppressOutput": True,
        },
    )
    runner = make_runner(hooks_for("PostToolUse", hook))
    outcome = await runner.post_tool_use("bash", {"command": "x"}, {})
    assert outcome.stop and outcome.stop_reason == "budget exhausted"
    assert outcome.messages_for_person == ("hook says: stopping",)
    assert outcome.runs[0].outcome == "stop" and outcome.runs[0].suppress_output


async def test_stdout_that_is_not_json_is_not_a_decision(
    project: Path, make_runner: MakeRunner
) -> None:
    hook = _exit_hook(project, "chatty.sh", 0, stdout='{"decision": "block"')  # cut short
    runner = make_runner(hooks_for("PreToolUse", hook))
    outcome = await runner.pre_tool_use("bash", {"command": "x"})
    assert not outcome.blocked and outcome.runs[0].outcome == "ok"


# -- failures --------------------------------------------------------------------------------------


async def test_on_failure_block_on_a_crash(project: Path, make_runner: MakeRunner) -> None:
    hook = _exit_hook(project, "crash.sh", 1, stderr="ImportError: no module named guard")
    runner = make_runner(
        hooks_for("PreToolUse", {"type": "command", "command": hook, "on_failure": "block"})
    )
    outcome = await runner.pre_tool_use("bash", {"command": "ls"})
    assert outcome.blocked and outcome.permission == "deny"
    assert "exit code 1" in outcome.reason and "ImportError" in outcome.reason
    assert outcome.runs[0].outcome == "block"
    assert outcome.messages_for_person == ()


async def test_on_failure_block_when_the_hook_cannot_start(
    project: Path, make_runner: MakeRunner
) -> None:
    runner = make_runner(
        hooks_for("PreToolUse", {"type": "command", "command": "true", "on_failure": "block"}),
        project_root=project / "gone",
    )
    outcome = await runner.pre_tool_use("bash", {"command": "ls"})
    assert outcome.blocked
    assert outcome.runs[0].exit_code is None
    assert "could not be started" in outcome.runs[0].error


async def test_a_hanging_hook_and_its_children_are_killed_at_the_timeout(
    project: Path, make_runner: MakeRunner
) -> None:
    script = write_script(
        project / "hooks/hang.sh",
        "#!/bin/bash\n"
        f"echo $$ > {project}/hook.pid\n"
        f"sleep 300 & echo $! > {project}/child.pid\n"
        f"setsid sleep 300 & echo $! > {project}/escaped.pid\n"
        "wait\n",
    )
    runner = make_runner(
        hooks_for("PreToolUse", {"type": "command", "command": str(script), "timeout": 1})
    )
    task = asyncio.create_task(runner.pre_tool_use("bash", {"command": "ls"}))
    pids = [await await_pid(project / f"{n}.pid") for n in ("hook", "child", "escaped")]
    try:
        outcome = await asyncio.wait_for(task, 15)
        run = outcome.runs[0]
        assert run.timed_out and run.exit_code is None
        assert 900 <= run.duration_ms < 8000
        assert not outcome.blocked  # on_failure defaults to continue
        assert "timed out after 1 s" in outcome.messages_for_person[0]
        assert all(gone(pid, timeout=2) for pid in pids), pids
    finally:
        kill_if_alive(*pids)


async def test_on_failure_block_on_a_timeout(project: Path, make_runner: MakeRunner) -> None:
    runner = make_runner(
        hooks_for(
            "Stop",
            {"type": "command", "command": "exec sleep 300", "timeout": 0.5, "on_failure": "block"},
        )
    )
    outcome = await runner.stop(False)
    assert outcome.blocked and "timed out after 0.5 s" in outcome.reason
    assert outcome.runs[0].timed_out


async def test_a_backgrounded_child_holding_the_output_does_not_hold_the_agent(
    project: Path, make_runner: MakeRunner
) -> None:
    command = f"sleep 300 & echo $! > {project}/bg.pid; echo done"
    runner = make_runner(hooks_for("PostToolUse", command))
    started = time.monotonic()
    outcome = await runner.post_tool_use("bash", {"command": "x"}, {})
    pid = read_pid(project / "bg.pid")
    try:
        assert time.monotonic() - started < 6
        assert outcome.runs[0].exit_code == 0
        assert gone(pid, timeout=2)
    finally:
        kill_if_alive(pid)


async def test_a_cancelled_caller_kills_the_hook(project: Path, make_runner: MakeRunner) -> None:
    command = f"echo $$ > {project}/hook.pid; sleep 300"
    runner = make_runner(hooks_for("Stop", command))
    task = asyncio.create_task(runner.stop(False))
    pid = await await_pid(project / "hook.pid")
    try:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gone(pid, timeout=3)
    finally:
        kill_if_alive(pid)


# -- several hooks -----------------------------------------------------------------------------


async def test_hooks_run_in_parallel_and_combine_in_config_order(
    project: Path, make_runner: MakeRunner
) -> None:
    def decision(name: str, permission: str, context: str, command: str, delay: float) -> str:
        return _json_hook(
            project,
            name,
            {
                "hookSpecificOutput": {
                    "hookEventName": "PreToolUse",
                    "permissionDecision": permission,
                    "permissionDecisionReason": name,
                    "additionalContext": context,
                    "updatedInput": {"command": command},
                }
            },
            delay=delay,
        )

    # The first in config order finishes last; the order of the result must not care. One
    # after another they would take 2.5 s at least.
    first = decision("first", "allow", "A", "first", delay=1.5)
    second = decision("second", "ask", "B", "second", delay=0.0)
    third = decision("third", "allow", "C", "third", delay=1.0)
    runner = make_runner(hooks_for("PreToolUse", first, second, third, matcher="Bash"))
    started = time.monotonic()
    outcome = await runner.pre_tool_use("bash", {"command": "x"})
    elapsed = time.monotonic() - started
    assert elapsed < 2.4, f"hooks ran one after another ({elapsed:.2f} s)"
    assert outcome.permission == "ask" and outcome.permission_reason == "second"
    assert outcome.additional_context == "A\nB\nC"
    assert outcome.updated_input == {"command": "third"}
    assert [r.command for r in outcome.runs] == [first, second, third]
    assert not outcome.blocked


async def test_deny_beats_ask_beats_allow_and_any_block_blocks(
    project: Path, make_runner: MakeRunner
) -> None:
    ask = _json_hook(project, "ask.sh", {"hookSpecificOutput": {"permissionDecision": "ask"}})
    allow = _json_hook(project, "allow.sh", {"hookSpecificOutput": {"permissionDecision": "allow"}})
    block = _exit_hook(project, "block.sh", 2, stderr="blocked by policy")
    runner = make_runner(hooks_for("PreToolUse", allow, block, ask))
    outcome = await runner.pre_tool_use("bash", {"command": "x"})
    assert outcome.blocked and outcome.permission == "deny"
    assert outcome.reason == "blocked by policy"
    assert [r.outcome for r in outcome.runs] == ["allow", "block", "ask"]
    runner = make_runner(hooks_for("PreToolUse", allow, ask))
    outcome = await runner.pre_tool_use("bash", {"command": "x"})
    assert outcome.permission == "ask" and not outcome.blocked


def test_records_carry_what_the_caller_logs() -> None:
    from stagecrew.hooks import HookRun

    run = HookRun("PreToolUse", "Bash", "guard.sh", 2, 12, "block", stdout="secret")
    record = run.record()
    assert record == {
        "event": "PreToolUse",
        "matcher": "Bash",
        "command": "guard.sh",
        "exit_code": 2,
        "duration_ms": 12,
        "outcome": "block",
        "timed_out": False,
        "error": "",
        "origin": "",
    }
