"""``crew demo``: the real pipeline on a bundled sample repository, with no key needed.

Real Ray actors, real tools, a real event log; only the model is scripted, played by the
project's scripted OpenAI-compatible server on 127.0.0.1, which litellm talks to as it would to
any provider. The scenario: a failing test, found, read, fixed and verified.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from stagecrew.layout import sessions_dir


def _copy_sample(dest: Path) -> None:
    src = resources.files("stagecrew.demo") / "sample_repo"
    with resources.as_file(src) as path:
        shutil.copytree(path, dest, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "GIT_AUTHOR_NAME": "demo", "GIT_AUTHOR_EMAIL": "demo@example.invalid"}
    env |= {"GIT_COMMITTER_NAME": "demo", "GIT_COMMITTER_EMAIL": "demo@example.invalid"}
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "sample repo"],
    ):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)


def _tests_pass(repo: Path) -> tuple[bool, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "unittest", "-q"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip().splitlines()[-1:]  # type: ignore[return-value]


def run_demo(keep: bool = True) -> int:
    from stagecrew.cli.runner import run_session
    from stagecrew.testing.scripted_llm import ScriptedLLM

    repo = Path(tempfile.mkdtemp(prefix="stagecrew-demo-")) / "sample"
    _copy_sample(repo)
    script = json.loads((resources.files("stagecrew.demo") / "script.json").read_text())
    print(f"demo repository: {repo}")
    before, _ = _tests_pass(repo)
    print(f"sample tests before: {'pass' if before else 'FAIL'}")
    with ScriptedLLM(script) as llm:
        flags = {
            "models.primary.model": "openai/scripted-demo",
            "models.primary.api_base": llm.base_url,
            "models.primary.api_key_env": None,
            "limits.max_steps": 10,
            "agent": "build",
        }
        code = run_session("Fix the failing test in this repository.", flags, "text", cwd=repo)
    after, tail = _tests_pass(repo)
    print(f"sample tests after: {'pass' if after else 'FAIL'} ({' '.join(tail)})")
    sessions = sorted(sessions_dir(repo).glob("*/events.jsonl"))
    if sessions:
        print(f"session log: {sessions[-1]}")
    if not keep:
        shutil.rmtree(repo.parent, ignore_errors=True)
    return 0 if (code == 0 and after) else 1
