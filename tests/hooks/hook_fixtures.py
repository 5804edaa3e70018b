"""Fixtures for the hook tests: a temporary project, a runner over a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hookutil import MakeRunner

from stagecrew.hooks import HookRunner, parse_hooks


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    return root


@pytest.fixture
def make_runner(project: Path) -> MakeRunner:
    def make(hooks: dict[str, Any], **kw: Any) -> HookRunner:
        kw.setdefault("session_id", "sess-1")
        kw.setdefault("transcript_path", str(project / "transcript.jsonl"))
        kw.setdefault("permission_mode", "default")
        root = kw.pop("project_root", project)
        return HookRunner(parse_hooks(hooks, "test config"), root, **kw)

    return make
