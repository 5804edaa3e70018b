"""The chat (``crew`` with no arguments), driven for real.

The tmux tests type into the real ``crew`` running in a real terminal (tmux on a private socket),
connected to the session's real Ray head, with the scripted OpenAI-compatible server answering
over HTTP. They read what a person would see (``capture-pane``), what the model was sent (the
server's request record) and what the session logged (``events.jsonl``). Waits poll the pane
and never sleep for a fixed time.

The first tests need no terminal: they drive the chat's pure state directly.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stagecrew.cli.chat import (
    ChatState,
    Command,
    CommandError,
    _TailWriter,
    complete_command,
    message_text,
    next_profile,
    parse_command,
    parse_permission_answer,
)
from stagecrew.cli.render import diff_counts, diff_lines
from stagecrew.messages import Envelope, ModelUsage, PermissionRequest, StopReason, Usage
from stagecrew.testing.scripted_llm import ScriptedLLM

# ---------------------------------------------------------------------------------------------
# Pure state: no terminal, no supervisor
# ---------------------------------------------------------------------------------------------


def test_tab_cycles_build_and_plan() -> None:
    profiles = ["build", "plan", "reviewer"]
    assert next_profile("build", profiles) == "plan"
    assert next_profile("plan", profiles) == "build"
    # From a profile picked with /agent, Tab lands on the first of the cycle.
    assert next_profile("reviewer", profiles) == "build"
    assert next_profile("build", ["build"]) == "build"
    state = ChatState(profiles=profiles, agent="build")
    assert [state.cycle_agent() for _ in range(3)] == ["plan", "build", "plan"]
    assert state.prompt_label() == "plan › "
    state.set_agent("reviewer")
    with pytest.raises(ValueError, match="known profiles are build, plan, reviewer"):
        state.set_agent("nope")


def test_commands_parse_and_complete() -> None:
    assert parse_command("/agent plan") == Command("/agent", "plan")
    assert parse_command("  /PS ") == Command("/ps")
    assert parse_command("fix the bug") is None
    assert parse_command("//etc/hosts is odd") is None
    assert message_text("//etc/hosts is odd") == "/etc/hosts is odd"
    with pytest.raises(CommandError, match=r"unknown command /he.*did you mean /help"):
        parse_command("/he")
    assert [c for c, _ in complete_command("/c")] == ["/cancel", "/clear"]
    assert complete_command("/agent p", ["build", "plan"]) == [("plan", "")]
    assert complete_command("/model ", models=["openai/a", "openai/a"]) == [("openai/a", "")]
    assert complete_command("hello /") == []


def test_ctrl_c_rules() -> None:
    state = ChatState(profiles=["build"], agent="build")
    assert state.interrupt(has_text=True) == "clear"
    assert state.interrupt(has_text=False) == "arm"
    state.disarm()  # typing in between starts over
    assert state.interrupt(has_text=False) == "arm"
    assert state.interrupt(has_text=False) == "quit"
    state.disarm()
    state.turn_started("s-p1")
    assert state.interrupt(has_text=False) == "cancel"
    assert state.interrupt(has_text=False) == "cancel"  # never quits while a turn runs


def test_turns_usage_and_permission_asks() -> None:
    state = ChatState(profiles=["build"], agent="build", model="openai/x")
    state.new_session("s")
    state.turn_finished("s-p1", StopReason.DONE)  # the follower can see the end first
    state.turn_started("s-p1")
    assert not state.busy
    state.turn_started("s-p2")
    assert state.busy
    for tokens in (100, 50):
        state.add_usage(
            ModelUsage(
                actor_id="s-p2",
                model="x",
                usage=Usage(prompt_tokens=tokens, completion_tokens=10, cost_usd=0.01),
            )
        )
    ask = PermissionRequest(request_id="r1", actor_id="s-p2", tool="bash", summary="bash(ls)")
    state.ask(ask)
    assert state.prompt_label().startswith("allow bash(ls)? [y]es once")
    assert "170 tokens · $0.0200 · waiting for your answer" in state.status()
    state.turn_finished("s-p2", StopReason.CANCELLED)  # a cancelled run's ask is moot
    assert state.pending_permission is None and not state.busy
    assert state.last_stop is StopReason.CANCELLED
    assert [parse_permission_answer(a) for a in ("y", "A", "no", "maybe")] == [
        "once",
        "always",
        "deny",
        None,
    ]


def test_tail_writer_holds_back_the_unfinished_line() -> None:
    class Sink:
        def __init__(self) -> None:
            self.text = ""

        def write(self, data: str) -> None:
            self.text += data

        def flush(self) -> None:
            pass

    sink, changes = Sink(), []
    out = _TailWriter(sink, lambda: changes.append(1))
    out.write("Hello, wor")
    out.flush()
    assert (sink.text, out.tail) == ("", "Hello, wor")
    out.write("ld.\nNext li")
    assert (sink.text, out.tail) == ("Hello, world.\n", "Next li")
    assert out.break_line() and sink.text.endswith("Next li\n") and out.tail == ""
    assert not out.break_line() and changes


def test_diff_lines_from_edit_and_patch_arguments() -> None:
    edit = json.dumps(
        {"file_path": "a.py", "old_string": "x = 1\ny = 2\n", "new_string": "x = 1\n"}
    )
    assert diff_lines("edit", edit) == [" x = 1", "-y = 2"]
    patch = "*** Begin Patch\n*** Update File: a.py\n@@\n-old\n+new\n+more\n*** End Patch"
    lines = diff_lines("apply_patch", json.dumps({"patch": patch}))
    assert lines == ["*** Update File: a.py", "@@", "-old", "+new", "+more"]
    assert diff_counts(lines) == (2, 1)
    assert diff_lines("read", "{}") is None and diff_lines("edit", "not json") is None


# ---------------------------------------------------------------------------------------------
# The real chat in tmux
# ---------------------------------------------------------------------------------------------

CREW = Path(sys.executable).with_name("crew")
PLAN_PROMPT = "You are stagecrew in plan mode"
BUILD_PROMPT = "You are stagecrew, a coding agent"


class Tmux:
    """One crew in one tmux pane, on a private server (``-L``) so it never meets a person's
    tmux and can be killed whole; ``-f /dev/null`` so no tmux.conf changes the keys."""

    def __init__(self, scratch: Path) -> None:
        self.socket = f"crew-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.status_file = scratch / "crew-exit-status"

    def tmux(self, *args: str) -> str:
        # The server copies this environment into the pane. COLUMNS/LINES (pytest's process
        # can have them) would make rich wrap at their width instead of the pane's.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        proc = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def start(self, cwd: Path, command: list[str]) -> None:
        """Run ``command`` in a new pane; a wrapper shell writes its exit status to a file."""
        passed = ("STAGECREW_HOME", "STAGECREW_CONFIG_DIR", "LITELLM_LOCAL_MODEL_COST_MAP")
        env = [arg for k in passed if k in os.environ for arg in ("-e", f"{k}={os.environ[k]}")]
        wrapped = f"{shlex.join(command)}; echo $? > {shlex.quote(str(self.status_file))}"
        # remain-on-exit keeps the dead pane's last screen for the assertions.
        self.tmux(
            "new-session", "-d", "-s", "chat", "-x", "120", "-y", "45", "-c", str(cwd), *env,
            "sh", "-c", wrapped, ";", "set-option", "-g", "remain-on-exit", "on",
        )  # fmt: skip

    def screen(self, colours: bool = False, scrollback: bool = True) -> str:
        """The pane (with its scrollback unless told otherwise), wrapped lines joined."""
        flags = (["-e"] if colours else []) + (["-S", "-300"] if scrollback else [])
        return self.tmux("capture-pane", "-p", "-J", *flags, "-t", "chat")

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "chat", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "chat", "-l", text)

    def dead(self) -> bool:
        """Whether the pane's terminal has closed (every process holding it has exited)."""
        return self.tmux("list-panes", "-t", "chat", "-F", "#{pane_dead}").strip() == "1"

    def wait(self, check: Callable[[str], object], timeout: float = 20, what: str = "") -> object:
        """Poll the screen until ``check(screen)`` is truthy; fail with the screen if not."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            found = check(screen)
            if found:
                return found
            if time.monotonic() > deadline or self.dead():
                raise AssertionError(f"waited {timeout} s for {what or check}:\n{screen}")
            time.sleep(0.1)

    def wait_text(self, text: str, timeout: float = 20, count: int = 1) -> str:
        self.wait(lambda s: s.count(text) >= count, timeout, repr(text))
        return self.screen()

    def wait_turns(self, n: int, timeout: float = 20) -> str:
        """Wait until ``n`` turns have ended: each ends with a line of the session's totals."""
        return self.wait_text("this session", timeout, count=n)

    def wait_exit(self, timeout: float = 20) -> None:
        """Wait for crew to exit, and check it exited with status 0.

        The status comes from the wrapper shell (see :meth:`start`), not from tmux: tmux 3.3
        sometimes leaves an exited pane process unreaped for a long time, and
        ``pane_dead_status`` stays empty until it reaps it.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.dead() and self.status_file.exists():
                status = self.status_file.read_text().strip()
                assert status == "0", f"crew exited with status {status}:\n{self.screen()}"
                return
            time.sleep(0.1)
        raise AssertionError(f"crew still running after {timeout} s:\n{self.screen()}")

    def kill(self) -> None:
        """Stop the server (and so crew, if it still runs) and remove its socket file, which
        tmux 3.3 leaves behind after kill-server."""
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
        tmpdir = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
        (tmpdir / self.socket).unlink(missing_ok=True)


@pytest.fixture
def term(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(tmp_path)
    yield t
    t.kill()


def open_chat(
    term: Tmux, repo: Path, llm: ScriptedLLM, extra: dict[str, object] | None = None
) -> str:
    """Point the repository at the scripted server, start ``crew`` and wait for its prompt."""
    config = {"models": {"primary": {"model": "openai/scripted", "api_base": llm.base_url}}}
    (repo / ".stagecrew").mkdir(exist_ok=True)
    (repo / ".stagecrew" / "config.json").write_text(json.dumps({**config, **(extra or {})}))
    term.start(repo, [str(CREW)])
    term.wait_text("build ›")
    screen = term.wait_text("Ctrl-D quits")
    match = re.search(r"session ([0-9a-f]{12})", screen)
    assert match, screen
    return match.group(1)


def events(repo: Path, sid: str) -> list[Envelope]:
    path = repo / ".stagecrew" / "state" / "sessions" / sid / "events.jsonl"
    return [Envelope.from_json(line) for line in path.read_text().splitlines()]


def last_prompt_line(screen: str) -> str:
    lines = [line for line in screen.splitlines() if "›" in line]
    return lines[-1] if lines else ""


ANSWER = (
    "The repository holds one README and nothing else, so there is very little to say about it."
)


@pytest.mark.ray
def test_prompt_streams_the_answer_and_folds_tool_calls(
    ray_head: object, git_repo: Path, term: Tmux
) -> None:
    script = [
        {"tool_calls": [{"name": "ls", "arguments": {"path": "."}}]},
        {
            "tool_calls": [
                {
                    "name": "edit",
                    "arguments": {
                        "file_path": "README.md",
                        "old_string": "# test repo\n",
                        "new_string": "# test repo\n\nAn added line.\n",
                    },
                }
            ]
        },
        {"text": ANSWER, "chunk_size": 8, "chunk_delay": 0.2},
    ]
    with ScriptedLLM(script) as llm:
        open_chat(term, git_repo, llm)
        term.type("What is in this repository?")
        term.send("Enter")
        # Streaming: part of the answer is on screen before the rest has been sent.
        partial = term.wait(
            lambda s: "The repository holds" in s and "very little to say" not in s,
            what="a partly streamed answer",
        )
        assert partial
        term.wait_text(ANSWER)
        screen = term.wait_turns(1)
        assert len(llm.requests) == 3

    # Each tool call is one line with the size of its result, not the result itself.
    assert re.search(r"⏺ ls\(\.\) → \d+ lines, \d+ B\n", screen), screen
    assert "entries)" not in screen  # ls's own output header stays folded away
    assert re.search(r"⏺ edit\(README\.md\) → \d+ lines, \d+ B, \+2 -0\n", screen), screen
    # The edit's diff is shown under it, the added line in green.
    assert "    +An added line." in screen
    coloured = term.screen(colours=True)
    added = next(line for line in coloured.splitlines() if "An added line." in line)
    assert "\x1b[32m" in added, repr(added)
    assert (git_repo / "README.md").read_text() == "# test repo\n\nAn added line.\n"
    # The status line counts the session's tokens.
    assert re.search(r"build · openai/scripted · [1-9][\d,]* tokens · \$0\.0000", screen), screen

    term.send("C-d")
    term.wait_exit()


@pytest.mark.ray
def test_tab_switches_to_plan_for_the_next_request(
    ray_head: object, git_repo: Path, term: Tmux
) -> None:
    script = [{"text": "Plan: 1. read 2. change."}, {"text": "Building now."}]
    with ScriptedLLM(script) as llm:
        open_chat(term, git_repo, llm)
        term.send("Tab")
        term.wait(lambda s: last_prompt_line(s).startswith("plan ›"), what="plan prompt")
        assert "plan · openai/scripted" in term.screen()  # the status line too
        term.type("Make a plan.")
        term.send("Enter")
        term.wait_text("Plan: 1. read 2. change.")
        term.wait_turns(1)
        plan_request = llm.requests[-1].body

        term.send("Tab")
        term.wait(lambda s: last_prompt_line(s).startswith("build ›"), what="build prompt")
        term.type("Do it.")
        term.send("Enter")
        term.wait_text("Building now.")
        term.wait_turns(2)
        build_request = llm.requests[-1].body

    system = plan_request["messages"][0]
    assert system["role"] == "system" and PLAN_PROMPT in system["content"]
    plan_tools = {t["function"]["name"] for t in plan_request["tools"]}
    assert "read" in plan_tools and not plan_tools & {"write", "edit", "apply_patch"}

    # Back in build: its prompt and tools, on the same transcript.
    assert BUILD_PROMPT in build_request["messages"][0]["content"]
    assert {"write", "edit"} <= {t["function"]["name"] for t in build_request["tools"]}
    texts = [m.get("content") for m in build_request["messages"]]
    assert "Make a plan." in texts and "Plan: 1. read 2. change." in texts

    term.type("/exit")
    term.send("Enter")
    term.wait_exit()


@pytest.mark.ray
def test_slash_commands(ray_head: object, git_repo: Path, term: Tmux) -> None:
    with ScriptedLLM([{"text": "Hello there."}]) as llm:
        sid = open_chat(term, git_repo, llm)
        # /help, reached by completion: "/he" + Tab completes to "/help".
        term.type("/he")
        term.wait_text("/help  list the commands")  # the menu, as completion is asynchronous
        term.send("Tab")
        term.wait(lambda s: last_prompt_line(s).endswith("/help"), what="completed /help")
        term.send("Enter")
        screen = term.wait_text("Esc Enter")
        for name in ("/help", "/agent", "/model", "/ps", "/cancel", "/clear", "/exit"):
            assert re.search(rf"^\s+{name}\s+\S", screen, re.MULTILINE), name

        term.type("Say hello.")
        term.send("Enter")
        term.wait_text("Hello there.")
        term.wait_turns(1)
        term.type("/ps")
        term.send("Enter")
        term.wait_text("stagecrew actors")
        screen = term.wait_text(f"{sid}-p1")
        assert re.search(r"actor\s+┃ role\s+┃ parent\s+┃ state", screen), screen
        assert re.search(rf"{sid}-p1\s+│ primary\s+│\s+│ finished", screen), screen

        term.type("/model openai/other")
        term.send("Enter")
        term.wait_text("model: openai/other (for the next message)")
        assert "· openai/other ·" in term.screen()  # the status line

        # /clear: a new session; the old one is ended properly.
        term.type("/clear")
        term.send("Enter")
        term.wait(
            lambda s: re.search(rf"session (?!{sid})[0-9a-f]{{12}} · openai/other", s),
            what="a new session",
        )
        assert "Hello there." not in term.screen(scrollback=False)  # the screen was cleared
    deadline = time.monotonic() + 10
    while events(git_repo, sid)[-1].body.kind != "session_finished":
        assert time.monotonic() < deadline, "the cleared session was not ended"
        time.sleep(0.1)

    # Ctrl-C on an empty line arms, a second one quits.
    term.send("C-c")
    term.wait_text("Ctrl-C again to quit")
    term.send("C-c")
    term.wait_exit()


@pytest.mark.ray
def test_ctrl_c_cancels_a_long_turn_and_the_chat_goes_on(
    ray_head: object, git_repo: Path, term: Tmux
) -> None:
    script = [
        {"when": {"contains": "slow"}, "text": "far too late", "delay": 30},
        {"text": "Back again."},
    ]
    with ScriptedLLM(script) as llm:
        sid = open_chat(term, git_repo, llm)
        term.type("Take it slow.")
        term.send("Enter")
        llm.wait_for_requests(1, timeout=20)
        term.wait_text("working · Ctrl-C cancels")
        started = time.monotonic()
        term.send("C-c")
        screen = term.wait_text("✗ cancelled", timeout=10)
        took = time.monotonic() - started
        assert took < 5, f"cancelling took {took:.1f} s"
        assert last_prompt_line(screen).startswith("build ›")

        term.type("Are you there?")
        term.send("Enter")
        term.wait_text("Back again.")
        term.wait_turns(2)
        assert "far too late" not in term.screen()
        assert llm.requests[-1].messages[-1]["content"] == "Are you there?"

    finished = [e.body for e in events(git_repo, sid) if e.body.kind == "turn_finished"]
    assert [f.stop_reason for f in finished] == [StopReason.CANCELLED, StopReason.DONE]

    term.type("/exit")
    term.send("Enter")
    term.wait_exit()


@pytest.mark.ray
def test_permission_is_asked_inline(ray_head: object, git_repo: Path, term: Tmux) -> None:
    script = [
        {"tool_calls": [{"name": "bash", "arguments": {"command": "echo hello-from-bash"}}]},
        {"text": "It said hello."},
    ]
    with ScriptedLLM(script) as llm:
        open_chat(term, git_repo, llm, {"permissions": ["ask bash(echo *)"]})
        term.type("Greet me.")
        term.send("Enter")
        term.wait(
            lambda s: last_prompt_line(s).startswith(
                "allow bash(echo hello-from-bash)? [y]es once / [a]lways this session / [n]o"
            ),
            what="the permission question",
        )
        term.send("y")
        term.wait_text("It said hello.")
        screen = term.wait_turns(1)
        tool_result = next(m for m in llm.requests[-1].messages if m["role"] == "tool")
    assert "allowed once: bash(echo hello-from-bash)" in screen
    assert re.search(r"⏺ bash\(echo hello-from-bash\) → \d+ lines", screen), screen
    assert "hello-from-bash" in tool_result["content"]
    term.send("C-d")
    term.wait_exit()


@pytest.mark.ray
def test_exit_ends_the_session_and_the_process(
    ray_head: object, git_repo: Path, term: Tmux
) -> None:
    with ScriptedLLM([]) as llm:
        sid = open_chat(term, git_repo, llm)
        term.type("/exit")
        term.send("Enter")
        term.wait_exit()
    log = events(git_repo, sid)
    assert log[0].body.kind == "session_started" and log[-1].body.kind == "session_finished"
    assert llm.requests == []  # opening and leaving a chat costs no model call


@pytest.mark.ray
def test_the_chat_takes_run_options(ray_head: object, git_repo: Path, term: Tmux) -> None:
    """``crew --model M --api-base URL --agent plan`` (as ``claude --model``): the chat's
    requests go to that endpoint with that model and that agent, over the config's."""
    with (
        ScriptedLLM([{"text": "configured"}]) as configured,
        ScriptedLLM([{"text": "from the options"}]) as chosen,
    ):
        config = {
            "models": {"primary": {"model": "openai/config", "api_base": configured.base_url}}
        }
        (git_repo / ".stagecrew").mkdir(exist_ok=True)
        (git_repo / ".stagecrew" / "config.json").write_text(json.dumps(config))
        term.start(
            git_repo,
            [str(CREW), "--model", "openai/flag", "--api-base", chosen.base_url, "--agent", "plan"],
        )
        term.wait_text("plan ›")
        term.wait_text("Ctrl-D quits")
        term.type("Which model?")
        term.send("Enter")
        term.wait_text("from the options")
        assert not configured.requests
        assert chosen.requests[0].body["model"] == "flag"
    term.send("C-d")
    term.wait_exit()
