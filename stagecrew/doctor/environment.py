"""The machine: Python, the installed packages against stagecrew's requirements, and the
programs sessions call (git, bubblewrap, ripgrep, node/npx).

Versions come from the installed distributions' metadata (``importlib.metadata``), so nothing
heavy is imported: ``crew doctor`` must answer on a machine where ``import ray`` would fail.
The requirement ranges are stagecrew's own ``Requires-Dist``, not a copy that could drift.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata

from stagecrew.doctor.report import Check

# Shown one per line; the other requirements share one line.
KEY_PACKAGES = ("ray", "litellm", "pydantic", "mcp")
_OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


def _numbers(version: str) -> tuple[int, ...]:
    """``1.106.2`` -> (1, 106, 2); a pre-release or local tail is ignored (``2.0rc1`` -> 2.0)."""
    parts = []
    for piece in version.split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    return tuple(parts)


def _padded(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


def satisfies(version: str, spec: str) -> bool:
    """Whether ``version`` is inside ``spec`` (``>=1.83,<1.106.3``): the comparisons PEP 440
    ranges of plain release numbers need, without the ``packaging`` dependency."""
    have = _numbers(version)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        op = next((o for o in _OPS if clause.startswith(o)), None)
        if op is None:
            continue  # ~=, ===, wildcards: not used by stagecrew's requirements
        a, b = _padded(have, _numbers(clause[len(op) :].strip()))
        if not _OPS[op](a, b):
            return False
    return True


def requirements(dist: str = "stagecrew") -> dict[str, str]:
    """The distribution's unconditional requirements: name -> version range."""
    out: dict[str, str] = {}
    for line in metadata.requires(dist) or []:
        if ";" in line:  # an extra or an environment marker: not needed to run
            continue
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(.*)", line)
        if match:
            out[match.group(1).lower()] = match.group(2).strip().strip("()")
    return out


def python_check() -> Check:
    here = ".".join(str(n) for n in sys.version_info[:3])
    try:
        needed = metadata.metadata("stagecrew")["Requires-Python"] or ""
    except metadata.PackageNotFoundError:
        needed = ""
    if needed and not satisfies(here, needed):
        fix = f"install a Python {needed} and reinstall stagecrew with it"
        return Check("python", "fail", f"{here}, stagecrew needs {needed}", fix)
    return Check("python", "ok", f"{here} ({sys.executable})")


def package_checks() -> list[Check]:
    """``stagecrew``, each key package on its own line, and one line for all the others."""
    try:
        own = metadata.version("stagecrew")
        wanted = requirements()
    except metadata.PackageNotFoundError:
        return [Check("stagecrew", "fail", "not installed as a package", "pip install -e .")]
    checks = [Check("stagecrew", "ok", own)]
    others: list[str] = []
    broken: dict[str, str] = {}  # name -> what is wrong
    for name, spec in wanted.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        fits = have is not None and satisfies(have, spec)
        if name in KEY_PACKAGES:
            if have is None:
                checks.append(Check(name, "fail", "not installed", f"pip install '{name}{spec}'"))
            elif not fits:
                checks.append(
                    Check(name, "fail", f"{have}, outside {spec}", f"pip install '{name}{spec}'")
                )
            else:
                checks.append(Check(name, "ok", f"{have} ({spec})"))
        elif fits:
            others.append(f"{name} {have}")
        else:
            broken[name] = f"{name} {have or 'missing'} (needs {spec or 'any'})"
    if broken:
        specs = " ".join(f"'{name}{wanted[name]}'" for name in broken)
        detail = "; ".join(broken.values())
        checks.append(Check("packages", "fail", detail, f"pip install {specs}"))
    else:
        checks.append(Check("packages", "ok", ", ".join(others)))
    return checks


def _version_of(program: str) -> str:
    """The first line of ``program --version`` (empty when it says nothing useful)."""
    try:
        out = subprocess.run(
            [program, "--version"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else ""


def git_check() -> Check:
    path = shutil.which("git")
    if path is None:
        return Check(
            "git",
            "fail",
            "not found on PATH: Max Mode, the judge's diff, worktrees and rewind need it",
            "install git (apt install git, brew install git)",
        )
    return Check("git", "ok", _version_of(path) or path)


def sandbox_check() -> Check:
    """bubblewrap present *and* working here (the probe the bash tool itself uses)."""
    from stagecrew.tools import sandbox

    costs = (
        "plan-mode bash falls back to an allowlist of read-only commands and build-mode bash "
        "runs without an OS sandbox"
    )
    if os.environ.get(sandbox.ENV_NO_BWRAP, "").strip() not in ("", "0", "false"):
        return Check(
            "bubblewrap",
            "warn",
            f"turned off by {sandbox.ENV_NO_BWRAP}: {costs}",
            f"unset {sandbox.ENV_NO_BWRAP}",
        )
    path = shutil.which("bwrap")
    if path is None:
        return Check(
            "bubblewrap",
            "warn",
            f"not found on PATH: {costs}",
            "install bubblewrap (apt install bubblewrap, dnf install bubblewrap)",
        )
    sandbox.reset_sandbox_probe()
    if not sandbox.sandbox_available():
        return Check(
            "bubblewrap",
            "warn",
            f"{path} cannot create its namespaces here (a container without user "
            f"namespaces?): {costs}",
            "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
            "or run the container with --privileged / a seccomp profile that permits them)",
        )
    return Check("bubblewrap", "ok", f"{_version_of(path) or path}: the sandbox works here")


def ripgrep_check() -> Check:
    path = shutil.which("rg")
    if path is None:
        return Check(
            "ripgrep",
            "warn",
            "not found on PATH: the grep and glob tools fall back to a slower Python search",
            "install ripgrep (apt install ripgrep, brew install ripgrep)",
        )
    return Check("ripgrep", "ok", _version_of(path) or path)


def node_check() -> Check:
    node, npx = shutil.which("node"), shutil.which("npx")
    if node is None or npx is None:
        missing = " and ".join(n for n, p in (("node", node), ("npx", npx)) if p is None)
        return Check(
            "node/npx",
            "warn",
            f"{missing} not found on PATH: MCP servers started with npx will not start",
            "install Node.js 18+ (it brings npx), e.g. apt install nodejs npm",
        )
    return Check("node/npx", "ok", _version_of(node) or node)


def environment_checks() -> list[Check]:
    return [
        python_check(),
        *package_checks(),
        git_check(),
        sandbox_check(),
        ripgrep_check(),
        node_check(),
    ]
