"""Undo the environment stagecrew injects into a local Ray head, inside every actor process.

A local head is started with proxy variables that point at a closed loopback port, so Ray's
own start-up requests (cloud-metadata probes, usage reports) cannot leave the machine. Every
Ray worker inherits them; left in place they would break the agent's real work (model calls,
``webfetch``, ``pip install`` in ``bash``). The originals travel in ``STAGECREW_INJECTED_ENV``
(a JSON object, ``null`` meaning "was unset"), and each actor restores them at start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping

INJECTED_ENV_VAR = "STAGECREW_INJECTED_ENV"

# A closed port on loopback: requests to it fail at once and go nowhere.
BLACKHOLE_URL = "http://127.0.0.1:9"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy")


def blackhole_env(base: MutableMapping[str, str]) -> dict[str, str]:
    """The environment for starting a local head: proxies to nowhere, originals recorded."""
    env = dict(base)
    originals = {var: base.get(var) for var in (*PROXY_VARS, "RAY_USAGE_STATS_REPORT_URL")}
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[var] = BLACKHOLE_URL
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    env["RAY_USAGE_STATS_REPORT_URL"] = BLACKHOLE_URL
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env[INJECTED_ENV_VAR] = json.dumps(originals)
    return env


def restored_env(
    env: Mapping[str, str], *, inherited_from: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A copy of ``env`` with the injected variables back to what the person had.

    ``env``'s own marker says what was injected. An ``env`` built by someone else may lack
    it; then the marker of ``inherited_from`` (this process's environment) still applies, but
    only to variables that still hold the inherited, injected value — a value the caller
    chose on purpose is kept. A malformed marker changes nothing but is dropped.
    """
    out = dict(env)
    raw = out.pop(INJECTED_ENV_VAR, None)
    only_unchanged = False
    if raw is None and inherited_from is not None:
        raw = inherited_from.get(INJECTED_ENV_VAR)
        only_unchanged = True
    if not raw:
        return out
    try:
        originals = json.loads(raw)
    except json.JSONDecodeError:
        return out
    if not isinstance(originals, dict):
        return out
    for var, original in originals.items():
        if not isinstance(var, str):
            continue
        if only_unchanged and (var not in out or out[var] != (inherited_from or {}).get(var)):
            continue
        if original is None:
            out.pop(var, None)
        else:
            out[var] = str(original)
    return out


def restore_process_env() -> None:
    """Restore ``os.environ`` in place (call first thing in every actor process)."""
    if INJECTED_ENV_VAR not in os.environ:
        return
    clean = restored_env(os.environ)
    for var in list(os.environ):
        if var not in clean:
            del os.environ[var]
    os.environ.update(clean)
