"""Claude Code's project memory in the FTS5 index (``memory.cc_index``), on real files.

Claude Code keeps what it learns about a project in ``~/.claude/projects/<slug>/memory/*.md``.
With the switch on, those files are mirrored into the project's search index under the scope
``claude`` at the start of a run, and the memory tool finds them with the scope in each hit;
with it off (the default) nothing of them is read, and what an earlier run indexed goes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from stagecrew.actors.builder import prepare_session
from stagecrew.actors.context import ContextManager
from stagecrew.actors.inprocess import run_agent_inprocess
from stagecrew.actors.spec import AgentSpec
from stagecrew.config import ConfigError, load_config
from stagecrew.memory.index import (
    CLAUDE_KIND,
    MemoryIndex,
    claude_memory_sources,
    claude_project_slug,
)
from stagecrew.memory.layers import MemoryPaths
from stagecrew.memory.tokens import ContextWindow
from stagecrew.messages import ModelSpecWire, StopReason

pytestmark = pytest.mark.filterwarnings("ignore:Accessing the 'model_:DeprecationWarning")

LEARNED = "# Project memory\n\n## Build\n\nThe integration suite needs PGPORT=55432 exported.\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "work" / "my_app.v2"
    (root / ".git").mkdir(parents=True)
    return root


def memory_dir(home: Path, project: Path) -> Path:
    return home / ".claude" / "projects" / claude_project_slug(project) / "memory"


def test_the_slug_is_claude_codes() -> None:
    assert claude_project_slug("/home/me/my_app.v2") == "-home-me-my-app-v2"
    assert claude_project_slug("/srv/Über proj") == "-srv--ber-proj"


def test_sources_are_the_memory_files_of_the_repository_and_the_project(
    repo: Path, home: Path
) -> None:
    pkg = repo / "pkg"
    pkg.mkdir()
    by_repo = write(memory_dir(home, repo) / "MEMORY.md", LEARNED)
    topic = write(memory_dir(home, repo) / "topics" / "db.md", "## DB\n\nUse pg 16.")
    by_pkg = write(memory_dir(home, pkg) / "MEMORY.md", "## Pkg\n\nOld per-directory memory.")
    write(memory_dir(home, repo).parent / "session.jsonl", "{}")  # transcripts are not memory
    write(home / ".claude" / "projects" / "-elsewhere" / "memory" / "MEMORY.md", "other project")

    sources = claude_memory_sources(pkg, home=home)

    assert [(s.kind, s.path) for s in sources] == [
        (CLAUDE_KIND, by_repo),
        (CLAUDE_KIND, topic),
        (CLAUDE_KIND, by_pkg),
    ]
    assert claude_memory_sources(repo.parent, home=home) == []


def test_a_long_path_is_found_by_its_prefix(tmp_path: Path, home: Path) -> None:
    deep = tmp_path / ("d" * 120) / ("e" * 120)
    deep.mkdir(parents=True)
    slug = claude_project_slug(deep)
    assert len(slug) > 200
    learned = write(home / ".claude" / "projects" / f"{slug[:200]}-1x2y3z" / "memory" / "M.md", "x")
    assert [s.path for s in claude_memory_sources(deep, home=home)] == [learned]


def test_sync_kind_mirrors_exactly_the_listed_files(tmp_path: Path, repo: Path, home: Path) -> None:
    learned = write(memory_dir(home, repo) / "MEMORY.md", LEARNED)
    extra = write(memory_dir(home, repo) / "extra.md", "## Extra\n\nflaky: test_upload_retry")
    with MemoryIndex(tmp_path / "memory.db") as index:
        stats = index.sync_kind(CLAUDE_KIND, claude_memory_sources(repo, home=home))
        assert stats.indexed == 2
        (hit,) = index.search("PGPORT=55432")
        assert (hit.kind, hit.source, hit.heading) == (
            CLAUDE_KIND,
            str(learned),
            "Project memory / Build",
        )
        extra.unlink()
        assert index.sync_kind(CLAUDE_KIND, claude_memory_sources(repo, home=home)).removed == 1
        assert index.search("test_upload_retry") == []
        assert index.sync_kind(CLAUDE_KIND, []).removed == 1
        assert index.count(CLAUDE_KIND) == 0


def manager(repo: Path, home: Path, index: MemoryIndex, cc_index: bool) -> ContextManager:
    return ContextManager(
        session="s",
        actor_id="s-primary",
        base_system_prompt="You are a test agent.",
        goal="go",
        tool_schemas=[],
        paths=MemoryPaths(repo, None, home / "cfg"),
        index=lambda: index,
        window=ContextWindow(100_000, 8_000),
        home=home,
        cc_index=cc_index,
    )


def test_the_run_start_indexes_when_on_and_forgets_when_off(repo: Path, home: Path) -> None:
    write(memory_dir(home, repo) / "MEMORY.md", LEARNED)
    paths = MemoryPaths(repo, None, home / "cfg")
    with MemoryIndex(paths.index_db) as index:
        manager(repo, home, index, cc_index=True).system_prompt()
        assert [h.kind for h in index.search("PGPORT")] == [CLAUDE_KIND]
        manager(repo, home, index, cc_index=False).system_prompt()
        assert index.search("PGPORT") == []


def test_off_by_default_and_on_from_the_project_config(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGECREW_CONFIG_DIR", str(tmp_path / "cfg"))

    def wanted() -> bool:
        flags = {
            "models.primary.model": "openai/m",
            "models.primary.api_base": "http://127.0.0.1:9",
        }
        config = load_config(repo, flags=flags)
        return prepare_session(config, "hi", repo).spec.cc_index

    assert wanted() is False
    write(repo / ".stagecrew" / "config.json", json.dumps({"memory": {"cc_index": True}}))
    assert wanted() is True
    write(repo / ".stagecrew" / "config.json", json.dumps({"memory": {"cc_index": "maybe"}}))
    with pytest.raises(ConfigError, match="cc_index"):  # an invalid config is an error
        wanted()


def make_spec(url: str, workspace: Path) -> AgentSpec:
    return AgentSpec(
        session="cc-test",
        actor_id="cc-test-primary",
        workspace=str(workspace),
        prompt="How do I run the integration suite?",
        model=ModelSpecWire(model="openai/main", api_base=url, num_retries=0, timeout_s=20),
        max_steps=5,
    )


async def test_the_memory_tool_finds_claude_memory_with_its_scope(
    repo: Path,
    home: Path,
    tmp_path: Path,
    scripted_llm: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("STAGECREW_CONFIG_DIR", str(tmp_path / "cfg"))
    learned = write(memory_dir(home, repo) / "MEMORY.md", LEARNED)
    write(repo / ".stagecrew" / "config.json", json.dumps({"memory": {"cc_index": True}}))
    search = {"name": "memory", "arguments": {"action": "search", "query": "PGPORT"}}
    llm = scripted_llm({"main": [{"tool_calls": [search]}, {"text": "export PGPORT=55432"}]})

    spec = make_spec(llm.base_url, repo).model_copy(update={"cc_index": True})
    result, _ = await run_agent_inprocess(spec)

    assert result.stop_reason == StopReason.DONE, result.error
    tool = llm.requests[1].body["messages"][-1]
    assert tool["role"] == "tool"
    assert f"[claude · {learned} · Project memory / Build]" in tool["content"]
    assert "PGPORT=55432" in tool["content"]
