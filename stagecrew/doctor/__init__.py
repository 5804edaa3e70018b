"""``crew doctor``: is this machine and this project ready for a session, and if not, how to
make it so. One ``Check`` per finding, each failure with its fix.

* ``environment``   Python, packages, git, bubblewrap, ripgrep, node/npx
* ``head``          the Ray head: up, control port, stale records
* ``model_access``  the configuration, each model role's key (names only), providers reachable

The state directories are checked by the CLI (``cli/doctor.py``), with the same code that
guards every command (``cli/preflight.py``). No ray, no litellm: checks read metadata, run
``--version`` and make one short HTTP request per provider.
"""

from __future__ import annotations

from stagecrew.doctor.environment import environment_checks
from stagecrew.doctor.head import head_check
from stagecrew.doctor.model_access import model_checks
from stagecrew.doctor.report import Check, Status, worst

__all__ = ["Check", "Status", "environment_checks", "head_check", "model_checks", "worst"]
