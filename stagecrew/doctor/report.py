"""What one check found: a status, the finding in a few words, and the fix when it failed.

``fail`` is something a session needs (it would not start, or would stop early); ``warn`` is
something it can do without, at a cost the detail names (no sandbox, slower search, no MCP
servers); ``skip`` is a check that did not apply here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail", "skip"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


SEVERITY: tuple[Status, ...] = ("fail", "warn", "ok", "skip")


def worst(statuses: list[Status]) -> Status:
    """The most serious of several findings (``fail`` > ``warn`` > ``ok`` > ``skip``)."""
    return next((s for s in SEVERITY if s in statuses), "skip")
