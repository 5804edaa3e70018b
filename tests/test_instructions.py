"""Instruction files (AGENTS.md, CLAUDE.md, rules, imports) on real files, and in the real agent.

The library tests build real trees in a temporary directory (a fake home and config dir, a
repository with a package inside it) and check what ``load_instructions`` reads, in which
order, and which one-line notices it gives for what it cannot use. The agent test runs the
real ``Agent`` in-process against the scripted model server and asserts on what the server
recorded: what the model was actually sent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from stagecrew.actors.checkpoint_writer import CheckpointWriter
from stagecrew.actors.gateway import ModelGateway
from stagecrew.actors.inprocess import InProcessModelPort, run_agent_inprocess
from stagecrew.actors.spec import AgentSpec
from stagecrew.memory.instructions import (
    MAX_IMPORT_DEPTH,
    Instructions,
    InstructionTracker,
    load_instructions,
    repository_root,
)
from stagecrew.messages import ModelSpecWire, Notice, StopReason

pytestmark = pytest.mark.filterwarnings("ignore:Accessing the 'model_:DeprecationWarning")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    (tmp_path / "cfg").mkdir()
    return tmp_path / "cfg"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository (a real ``.git`` directory) with nothing else in it yet."""
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    return root


def load(root: Path, home: Path, cfg: Path) -> Instructions:
    return load_instructions(root, home=home, config_dir=cfg)


def labels(instructions: Instructions) -> list[tuple[str, str]]:
    return [(s.label, s.kind) for s in instructions.sources]


def assert_one_line_notices(instructions: Instructions | InstructionTracker) -> None:
    for notice in instructions.notices:
        assert "\n" not in notice, notice


# ----------------------------------------------------------------------------- discovery


def test_order_user_files_then_repository_root_down_to_the_project(
    repo: Path, home: Path, cfg: Path
) -> None:
    pkg = repo / "packages" / "api"
    write(home / ".claude" / "CLAUDE.md", "user claude")
    write(home / ".claude" / "rules" / "tone.md", "user rule")
    write(cfg / "AGENTS.md", "stagecrew user agents")
    write(repo / "CLAUDE.local.md", "root local")
    write(repo / "AGENTS.md", "root agents")
    write(repo / "packages" / "CLAUDE.md", "middle claude")
    write(pkg / "CLAUDE.md", "pkg claude")
    write(pkg / "AGENTS.md", "pkg agents")
    write(pkg / ".claude" / "CLAUDE.md", "pkg dot-claude")
    write(pkg / ".claude" / "rules" / "b.md", "rule b")
    write(pkg / ".claude" / "rules" / "a.md", "rule a")
    write(pkg / ".claude" / "rules" / "sub" / "c.md", "rule sub/c")
    write(pkg / "CLAUDE.local.md", "pkg local")
    write(pkg / "sub" / "CLAUDE.md", "nested: not at start")
    write(repo.parent / "CLAUDE.md", "above the repository: never read")

    got = load(pkg, home, cfg)

    assert labels(got) == [
        ("~/.claude/CLAUDE.md", "user"),
        ("~/.claude/rules/tone.md", "user"),
        (str(cfg / "AGENTS.md"), "user"),
        ("../../AGENTS.md", "project"),
        ("../../CLAUDE.local.md", "local"),
        ("../CLAUDE.md", "project"),
        ("AGENTS.md", "project"),
        ("CLAUDE.md", "project"),
        (".claude/CLAUDE.md", "project"),
        (".claude/rules/a.md", "rules"),
        (".claude/rules/b.md", "rules"),
        (".claude/rules/sub/c.md", "rules"),
        ("CLAUDE.local.md", "local"),
    ]
    assert "never read" not in got.text and "nested" not in got.text
    assert got.notices == []
    # Stable: the same files give the same bytes (the prompt cache depends on it).
    assert load(pkg, home, cfg).text == got.text
    assert got.text.startswith(
        "Contents of ~/.claude/CLAUDE.md (the person's instructions for every project):"
        "\n\nuser claude\n\n"
    )
    assert "Contents of CLAUDE.local.md (the person's private instructions" in got.text


def test_without_a_repository_only_the_project_root_is_read(
    tmp_path: Path, home: Path, cfg: Path
) -> None:
    root = tmp_path / "plain" / "proj"
    write(tmp_path / "plain" / "AGENTS.md", "parent")
    write(root / "AGENTS.md", "project")
    assert repository_root(root) is None
    assert labels(load(root, home, cfg)) == [("AGENTS.md", "project")]


def test_same_file_or_same_text_enters_once(repo: Path, home: Path, cfg: Path) -> None:
    write(repo / "AGENTS.md", "# Rules\n\nUse uv.\n")
    os.symlink("AGENTS.md", repo / "CLAUDE.md")
    write(repo / ".claude" / "CLAUDE.md", "# Rules\n\nUse uv.\n")  # same text, other file
    write(repo / "CLAUDE.local.md", "@AGENTS.md\n\nMine.\n")  # imports a file already in
    got = load(repo, home, cfg)
    assert labels(got) == [("AGENTS.md", "project"), ("CLAUDE.local.md", "local")]
    assert got.text.count("Use uv.") == 1
    assert got.notices == []


def test_sources_carry_sizes_for_memory_listings(repo: Path, home: Path, cfg: Path) -> None:
    write(repo / "AGENTS.md", "Use uv for every Python command.\n@docs/style.md\n")
    write(repo / "docs" / "style.md", "Tabs.")
    agents, style = load(repo, home, cfg).sources
    assert agents.size_bytes == len("Use uv for every Python command.\n@docs/style.md")
    assert agents.tokens > 0 and agents.path == (repo / "AGENTS.md").resolve()
    assert (style.kind, style.imported_by, style.size_bytes) == ("import", "AGENTS.md", 5)


# ----------------------------------------------------------------------------- imports


def test_imports_resolve_against_the_importing_file_and_follow_it(
    repo: Path, home: Path, cfg: Path, tmp_path: Path
) -> None:
    write(repo / "CLAUDE.md", "Root.\n- style: @docs/style.md\n- mine: @~/prefs.md\nEnd of root.")
    write(
        repo / "docs" / "style.md", "Style guide; see @./naming.md and @" + str(tmp_path / "abs.md")
    )
    write(repo / "docs" / "naming.md", "snake_case everywhere")
    write(repo / "naming.md", "WRONG: resolved against the project root")
    write(tmp_path / "abs.md", "absolute import")
    write(home / "prefs.md", "home import")
    write(repo / "AGENTS.md", "After the imports.")

    got = load(repo, home, cfg)

    assert labels(got) == [
        ("AGENTS.md", "project"),
        ("CLAUDE.md", "project"),
        ("docs/style.md", "import"),
        ("docs/naming.md", "import"),
        (str(tmp_path / "abs.md"), "import"),
        ("~/prefs.md", "import"),
    ]
    assert "WRONG" not in got.text
    assert [s.imported_by for s in got.sources[2:]] == [
        "CLAUDE.md",
        "docs/style.md",
        "docs/style.md",
        "CLAUDE.md",
    ]
    assert "Contents of docs/naming.md (imported by docs/style.md):\n\nsnake_case" in got.text
    assert got.notices == []


def chain(repo: Path, length: int) -> None:
    """CLAUDE.md imports level1.md, which imports level2.md, … up to level<length>.md."""
    write(repo / "CLAUDE.md", "top\n@level1.md")
    for i in range(1, length + 1):
        write(repo / f"level{i}.md", f"level {i} text\n@level{i + 1}.md" if i < length else "last")


def test_imports_nest_five_levels(repo: Path, home: Path, cfg: Path) -> None:
    chain(repo, MAX_IMPORT_DEPTH)
    got = load(repo, home, cfg)
    assert [s.label for s in got.sources] == ["CLAUDE.md"] + [f"level{i}.md" for i in range(1, 6)]
    assert got.notices == []


def test_a_sixth_level_is_refused_with_one_line(repo: Path, home: Path, cfg: Path) -> None:
    chain(repo, MAX_IMPORT_DEPTH + 1)
    got = load(repo, home, cfg)
    assert [s.label for s in got.sources][-1] == "level5.md"
    assert "level 6" not in got.text and "last" not in got.text
    assert got.notices == [
        "level5.md:2: import @level6.md refused: imports nest deeper than 5 levels"
    ]


def test_a_cycle_is_refused_and_the_rest_loads(repo: Path, home: Path, cfg: Path) -> None:
    write(repo / "CLAUDE.md", "@a.md\nafter the cycle")
    write(repo / "a.md", "in a\n@b.md")
    write(repo / "b.md", "in b\n@a.md\n@c.md")
    write(repo / "c.md", "in c")
    write(repo / "CLAUDE.local.md", "local still loads")
    got = load(repo, home, cfg)
    assert [s.label for s in got.sources] == [
        "CLAUDE.md",
        "a.md",
        "b.md",
        "c.md",
        "CLAUDE.local.md",
    ]
    assert got.notices == [
        "b.md:2: import @a.md refused: import cycle (CLAUDE.md → a.md → b.md → a.md)"
    ]
    assert_one_line_notices(got)


def test_a_missing_import_is_a_notice_and_a_mention_is_not(
    repo: Path, home: Path, cfg: Path
) -> None:
    write(repo / "CLAUDE.md", "Ask @alice first.\nRead @docs/gone.md then go on.\nStill here.")
    got = load(repo, home, cfg)
    assert labels(got) == [("CLAUDE.md", "project")]
    assert got.notices == [
        "CLAUDE.md:2: import @docs/gone.md: no such file docs/gone.md "
        "(write it in backticks if it is not an import)"
    ]


def test_code_spans_fenced_blocks_and_email_addresses_are_text(
    repo: Path, home: Path, cfg: Path
) -> None:
    for name in ("span.md", "double.md", "fenced.md", "tilde.md", "example.com"):
        write(repo / name, f"{name} was imported")
    write(
        repo / "CLAUDE.md",
        "Write `@span.md` literally, or ``a @double.md b``.\n"
        "```md\n@fenced.md\n```\n"
        "~~~\n@tilde.md\n~~~\n"
        "Mail ops@example.com about it.\n"
        "But @real.md is an import.\n",
    )
    write(repo / "real.md", "real import")
    got = load(repo, home, cfg)
    assert labels(got) == [("CLAUDE.md", "project"), ("real.md", "import")]
    assert "was imported" not in got.text
    assert got.notices == []


def test_escaped_spaces_and_trailing_punctuation(repo: Path, home: Path, cfg: Path) -> None:
    write(repo / "my notes.md", "spaced name")
    write(repo / "style.md", "style")
    write(repo / "CLAUDE.md", "See @my\\ notes.md, and @style.md.")
    got = load(repo, home, cfg)
    assert [s.label for s in got.sources] == ["CLAUDE.md", "my notes.md", "style.md"]


# ----------------------------------------------------------------------------- bad files


def test_unreadable_and_non_utf8_files_are_one_line_each_and_the_rest_loads(
    repo: Path, home: Path, cfg: Path
) -> None:
    (repo / "AGENTS.md").write_bytes(b"caf\xe9 latin-1\n")
    os.symlink("CLAUDE.md", repo / "CLAUDE.md")  # a link to itself: ELOOP, even for root
    write(repo / "CLAUDE.local.md", "local\n@bad.md\n")
    (repo / "bad.md").write_bytes(b"\xff\xfe binary")
    write(repo / ".claude" / "rules" / "ok.md", "a rule that loads")
    os.mkfifo(repo / ".claude" / "CLAUDE.md")  # reading it would block the run forever
    got = load(repo, home, cfg)
    assert labels(got) == [(".claude/rules/ok.md", "rules"), ("CLAUDE.local.md", "local")]
    assert got.notices == [
        "AGENTS.md: not UTF-8 (byte 3); skipped; save the file as UTF-8",
        "CLAUDE.md: cannot read (too many levels of symbolic links); skipped",
        ".claude/CLAUDE.md: is a special file, not a regular file; skipped",
        "CLAUDE.local.md:2: import @bad.md: not UTF-8 (byte 0); skipped; save the file as UTF-8",
    ]
    assert_one_line_notices(got)


# ----------------------------------------------------------------------------- rules by path


def test_a_rule_with_paths_waits_for_a_matching_file(repo: Path, home: Path, cfg: Path) -> None:
    write(repo / ".claude" / "rules" / "ts.md", '---\npaths: ["src/**/*.{ts,tsx}"]\n---\nTS rule.')
    write(repo / ".claude" / "rules" / "py.md", "---\npaths: tests/*.py, tools/*.py\n---\nPy rule.")
    write(repo / ".claude" / "rules" / "all.md", "---\ndescription: x\n---\nAlways.")
    got = load(repo, home, cfg)
    assert labels(got) == [(".claude/rules/all.md", "rules")]
    assert got.text.endswith("Always.")
    assert [(f.source.label, f.source.paths) for f in got.conditional] == [
        (".claude/rules/py.md", ("tests/*.py", "tools/*.py")),
        (".claude/rules/ts.md", ("src/**/*.{ts,tsx}",)),
    ]
    tracker = InstructionTracker(got, repo, home=home)
    assert tracker.for_path("src/main.py") == []
    (ts,) = tracker.for_path("src/app/view.tsx")
    assert ts.text == "TS rule." and "for src/**/*.{ts,tsx}" in ts.render()
    assert tracker.for_path("src/other.ts") == []  # once per run
    assert [f.text for f in tracker.for_path(repo / "tests" / "test_x.py")] == ["Py rule."]


# ----------------------------------------------------------------------------- nested files


def test_nested_files_come_once_when_a_file_below_them_is_read(
    repo: Path, home: Path, cfg: Path
) -> None:
    write(repo / "CLAUDE.md", "root")
    write(repo / "sub" / "CLAUDE.md", "sub claude\n@notes.md")
    write(repo / "sub" / "notes.md", "sub notes")
    write(repo / "sub" / "AGENTS.md", "sub agents")
    write(repo / "sub" / "deep" / "CLAUDE.local.md", "deep local")
    write(repo / "sub" / "deep" / "y.py", "")
    write(repo / "sub" / "x.py", "")
    write(repo / "other" / "CLAUDE.md", "root")  # same text as a file already in
    tracker = InstructionTracker(load(repo, home, cfg), repo, home=home)

    assert tracker.for_path("README.md") == []
    got = tracker.for_path("sub/deep/y.py")
    assert [(f.source.label, f.source.kind) for f in got] == [
        ("sub/AGENTS.md", "project"),
        ("sub/CLAUDE.md", "project"),
        ("sub/notes.md", "import"),
        ("sub/deep/CLAUDE.local.md", "local"),
    ]
    assert tracker.for_path("sub/x.py") == []
    assert tracker.for_path(repo / "sub" / "deep" / "y.py") == []
    assert tracker.for_path("other/z.py") == []
    assert tracker.for_path("../outside.py") == []
    assert tracker.for_path("/etc/passwd") == []


def test_for_tool_call_labels_what_it_adds(repo: Path, home: Path, cfg: Path) -> None:
    write(repo / "sub" / "CLAUDE.md", "Use the sub tooling.\n@missing.md")
    tracker = InstructionTracker(load(repo, home, cfg), repo, home=home)
    assert tracker.for_tool_call("grep", {"path": "sub"}) == ""
    assert tracker.for_tool_call("read", {"file_path": 3}) == ""
    extra = tracker.for_tool_call("read", {"file_path": "sub/x.py"})
    assert (
        extra
        == "\n\n[stagecrew: instructions from sub/CLAUDE.md]\nUse the sub tooling.\n@missing.md"
    )
    assert tracker.notices == [
        "sub/CLAUDE.md:2: import @missing.md: no such file sub/missing.md "
        "(write it in backticks if it is not an import)"
    ]
    assert tracker.for_tool_call("edit", {"file_path": "sub/x.py"}) == ""


# ----------------------------------------------------------------------------- the real agent


def make_spec(url: str, workspace: Path, cfg: Path) -> AgentSpec:
    return AgentSpec(
        session="instr-test",
        actor_id="instr-test-primary",
        workspace=str(workspace),
        prompt="Look at sub/x.py.",
        model=ModelSpecWire(model="openai/main", api_base=url, num_retries=0, timeout_s=20),
        user_config_dir=str(cfg),
        max_steps=5,
    )


async def test_the_agent_sends_instructions_imports_and_nested_files(
    repo: Path,
    home: Path,
    cfg: Path,
    scripted_llm: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("STAGECREW_CONFIG_DIR", str(cfg))
    write(home / ".claude" / "CLAUDE.md", "Answer in English.")
    write(repo / "CLAUDE.md", "Run tests with `make check`.\nStyle: @docs/style.md\n@gone.md")
    write(repo / "docs" / "style.md", "Four-space indents, no tabs.")
    write(repo / "sub" / "CLAUDE.md", "In sub/, never touch generated files.")
    write(repo / "sub" / "x.py", "print('x')\n")
    llm = scripted_llm(
        {
            "main": [
                {"tool_calls": [{"name": "read", "arguments": {"file_path": "sub/x.py"}}]},
                {"text": "done"},
            ]
        }
    )

    result, events = await run_agent_inprocess(make_spec(llm.base_url, repo, cfg))

    assert result.stop_reason == StopReason.DONE, result.error
    first, second = llm.requests[0].body["messages"], llm.requests[1].body["messages"]
    system = first[0]["content"]
    assert first[0]["role"] == "system"
    for needle in (
        "# Project instructions (AGENTS.md, CLAUDE.md",
        "Contents of ~/.claude/CLAUDE.md",
        "Answer in English.",
        "Contents of CLAUDE.md (project instructions)",
        "Run tests with `make check`.",
        "Contents of docs/style.md (imported by CLAUDE.md)",
        "Four-space indents, no tabs.",
    ):
        assert needle in system, needle
    assert "never touch generated files" not in system
    tool = second[-1]
    assert tool["role"] == "tool"
    assert "print('x')" in tool["content"]
    assert tool["content"].endswith(
        "\n\n[stagecrew: instructions from sub/CLAUDE.md]\nIn sub/, never touch generated files."
    )
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert notices == [
        "instructions: CLAUDE.md:3: import @gone.md: no such file gone.md "
        "(write it in backticks if it is not an import)"
    ]


async def test_the_checkpoint_writer_is_told_the_files_are_standing_directives(
    repo: Path, home: Path, cfg: Path, scripted_llm: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("STAGECREW_CONFIG_DIR", str(cfg))
    write(repo / "CLAUDE.md", "Never push to main.\n@docs/deploy.md")
    write(repo / "docs" / "deploy.md", "Deploys go through `make release`.")
    llm = scripted_llm({"cp": [{"text": "## Active intent\n\n> ship it\n\n## Next action\n\nrun"}]})
    session_dir = repo / ".stagecrew" / "state" / "sessions" / "s1"
    session_dir.mkdir(parents=True)
    model = ModelSpecWire(model="openai/cp", api_base=llm.base_url, num_retries=0, timeout_s=20)
    port = InProcessModelPort(ModelGateway(preload=False))
    writer = CheckpointWriter("s1", repo, session_dir, port, model)

    await writer.request(
        "40% of the context window", [{"role": "user", "content": "go"}], "ship it"
    )
    assert await writer.wait_idle(30)

    system, user = llm.requests[0].body["messages"]
    assert "standing directives already in the agent's system prompt" in system["content"]
    assert "never write anything that contradicts them" in system["content"]
    assert "never those of the instruction files" in system["content"]  # the Directives guide
    block = user["content"].split("</instruction_files>")[0]
    assert block.startswith("<instruction_files>\nContents of CLAUDE.md (project instructions)")
    assert "Never push to main." in block and "Deploys go through `make release`." in block
