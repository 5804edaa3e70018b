"""Every package of the source tree is installed: ``pyproject.toml`` lists packages by hand
(data directories too, to keep the build quiet), and a package missing from the list works in
a checkout but is absent from a real install."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_directory_is_listed() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "stagecrew").rglob("__init__.py")
    }
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {found - listed}"
