"""What ships with stagecrew besides code: agent profiles (``agents/``) and skills
(``skills/``), data directories inside the package so an install and a checkout find them
the same way."""

from __future__ import annotations

from pathlib import Path


def shipped_dir(kind: str) -> Path | None:
    """``agents`` or ``skills`` as shipped; None if an install left it out."""
    path = Path(__file__).resolve().parent / kind
    return path if path.is_dir() else None
