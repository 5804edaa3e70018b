"""Configuration: layered JSON, validated whole before anything starts.

Layers, lowest first: shipped defaults < user config dir < project ``.stagecrew/config.json`` <
environment (``STAGECREW_*``) < CLI flags. Layers are deep-merged as plain dicts and validated
once; when validation fails the error names the layer (file, variable or flag) that set the bad
value, the key path, and what was expected, so a person can fix it in one go. Nothing starts
half-configured: a ``ConfigError`` is raised before any actor exists.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from stagecrew.layout import PROJECT_DIR, config_file
from stagecrew.messages import ModelRole, ModelSpecWire
from stagecrew.tools.providers import ProviderSpec


class ConfigError(Exception):
    """A configuration problem a person must fix; the message says where and how."""


# -- OS errors as sentences -------------------------------------------------------------------
#
# Reading a config file, an agent profile or a state directory can fail for reasons that are
# not in the file at all: a directory on the way the user cannot enter (``chmod 000
# .stagecrew``), a read-only file system. The sentence must name the path that is actually in
# the way and the command that fixes it, not the path that was asked for.

_ACCESS_BITS = {"r": os.R_OK, "w": os.W_OK, "x": os.X_OK}

_ERRNO_FIXES = {
    errno.EROFS: "use a writable location",
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space",
    errno.ENOTDIR: "a part of the path is a file where a directory should be; move it away",
    errno.EISDIR: "a directory is where a file should be; move it away",
    errno.ELOOP: "fix the symbolic link",
}


def _missing_access(path: Path, want: str) -> str:
    return "".join(c for c in want if not os.access(path, _ACCESS_BITS[c]))


def _owner_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def find_blocker(target: Path, want: str, *, own: Path | None = None) -> tuple[Path, str] | None:
    """The first path, from the root down to ``target``, that this user cannot use as needed.

    Directories on the way need search permission (``x``); ``target`` needs ``want`` (e.g.
    ``"r"`` for a file to read, ``"rwx"`` for a directory to write in). A missing ``target``
    needs its nearest existing directory to be writable (``wx``), since it will be created.
    Directories at or under ``own`` are stagecrew's own (``.stagecrew``, the state home) and
    are asked for ``rwx``, because stagecrew reads, lists and writes there.
    Returns ``(path, permissions it needs)`` or ``None`` when permissions are not the problem.
    """
    target = Path(os.path.abspath(target))
    own = Path(os.path.abspath(own)) if own is not None else None
    chain = [*reversed(target.parents), target]
    for i, path in enumerate(chain):
        try:
            os.stat(path)
        except FileNotFoundError:
            parent = chain[i - 1] if i else path
            return (parent, "rwx") if _missing_access(parent, "wx") else None
        except OSError:
            return None
        needed = want if path == target else "x"
        if own is not None and path != target and (path == own or own in path.parents):
            needed = "rwx"
        if _missing_access(path, needed):
            return path, needed
    return None


def describe_os_error(
    path: Path | str, exc: OSError, *, want: str = "r", own: Path | None = None
) -> str:
    """What is wrong and how to fix it, for an ``OSError`` met while using ``path``: e.g.
    ``permission denied on /w/.stagecrew; fix it with chmod u+rwx /w/.stagecrew``."""
    path = Path(path)
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        blocker = find_blocker(path, want, own=own)
        if blocker is not None:
            where, needed = blocker
            on = "" if where == Path(os.path.abspath(path)) else f" on {where}"
            try:
                owner = os.stat(where).st_uid
            except OSError:
                owner = os.geteuid()
            if owner == os.geteuid():
                return f"permission denied{on}; fix it with chmod u+{needed} {where}"
            return (
                f"permission denied{on}, which belongs to {_owner_name(owner)}; "
                f"ask its owner for access or use another location"
            )
        return f"permission denied; check the permissions and ACLs of {path} (ls -ld {path})"
    reason = (exc.strerror or str(exc)).lower()
    fix = _ERRNO_FIXES.get(exc.errno or 0)
    return f"{reason}; {fix}" if fix else reason


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """One model as litellm names it, e.g. ``openai/gpt-4.1`` or ``ollama/qwen2.5-coder``."""

    model: str = Field(min_length=1)
    api_base: str | None = None
    # The *name* of the environment variable that holds the key, never the key itself.
    api_key_env: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    context_window: int | None = Field(default=None, gt=0)
    timeout_s: float = Field(default=120.0, gt=0)
    num_retries: int = Field(default=3, ge=0, le=10)
    # Another model string to switch to after repeated malformed output from this one.
    fallback: str | None = None

    def wire(self, **overrides: Any) -> ModelSpecWire:
        data = {
            "model": self.model,
            "api_base": self.api_base,
            "api_key_env": self.api_key_env,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "timeout_s": self.timeout_s,
            "num_retries": self.num_retries,
        }
        data.update(overrides)
        return ModelSpecWire(**data)


class ModelsConfig(_Strict):
    """Models per role; a role left unset uses the primary model."""

    primary: ModelSpec
    subagent: ModelSpec | None = None
    judge: ModelSpec | None = None
    checkpoint: ModelSpec | None = None
    candidate: ModelSpec | None = None
    # Max Mode: models cycled over the N candidates (best-of-N across models or
    # temperatures); empty means every candidate uses the `candidate` role's model.
    candidates: list[ModelSpec] = []

    def for_role(self, role: ModelRole | str) -> ModelSpec:
        role = ModelRole(role)
        return getattr(self, role.value) or self.primary


class StuckConfig(_Strict):
    """When the loop detector escalates (remind, re-plan, stop as stuck)."""

    # The same tool call with the same result this many times in a row.
    identical_repeats: int = Field(default=3, ge=2)
    # A cycle of period 2..max_period repeated this many times (A-B-A-B-A-B = 3 for period 2).
    cycle_repeats: int = Field(default=3, ge=2)
    max_period: int = Field(default=3, ge=2)
    # The same error from a tool this many times (not necessarily in a row) within the window.
    error_repeats: int = Field(default=4, ge=2)
    # The same assistant text, with no tool call, this many times.
    text_repeats: int = Field(default=3, ge=2)
    window: int = Field(default=24, ge=6)


class LimitsConfig(_Strict):
    max_steps: int = Field(default=100, gt=0)
    wall_time_s: float = Field(default=3600.0, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)
    heartbeat_timeout_s: float = Field(default=30.0, gt=0)
    # Consecutive malformed tool calls before the fallback model (or a stop).
    max_format_failures: int = Field(default=3, gt=0)
    # Per agent (each subagent gets its own) and how deep subagents may nest.
    agent_wall_time_s: float | None = Field(default=None, gt=0)
    max_subagent_depth: int = Field(default=2, ge=0, le=5)
    stuck: StuckConfig = StuckConfig()

    def session_limits(self) -> dict[str, Any]:
        return {
            "wall_time_s": self.wall_time_s,
            "max_tokens": self.max_tokens,
            "max_cost_usd": self.max_cost_usd,
            "heartbeat_timeout_s": self.heartbeat_timeout_s,
        }


class RuntimeConfig(_Strict):
    """Where the actors run. ``address`` empty means a local head started on first use."""

    address: str | None = None
    # The Ray namespace of the person's supervisor; empty: "stagecrew" on the local head,
    # "stagecrew-<user>" on a cluster (orchestrator.runtime.resolve_namespace).
    namespace: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    pool_size: int = Field(default=2, ge=0, le=64)
    # How many times a headless session whose agent process died is resumed without the
    # person asking (0: it stops with `error` and `crew resume` continues it).
    auto_resume: int = Field(default=0, ge=0, le=10)


class MemoryConfig(_Strict):
    """Memory beyond stagecrew's own files."""

    # Index Claude Code's memory of this project (~/.claude/projects/<project>/memory/*.md)
    # into the search index under the scope `claude`, so the memory tool finds it.
    cc_index: bool = False


class ToolsConfig(_Strict):
    """What the tools' processes get."""

    # Model key variables tool processes may see; by default none of them do (one `env`
    # call would hand the keys to the model's provider and into the transcript).
    env_passthrough: list[str] = []


class SandboxConfig(_Strict):
    """How bash runs in build mode (``stagecrew/tools/sandbox.py`` says what is confined)."""

    # auto: under bubblewrap where it works, plainly (with one notice) elsewhere; required:
    # bash refuses to run without it; off: never confined.
    mode: Literal["auto", "off", "required"] = "auto"
    # allow: the host's network; deny / loopback: a network namespace of the command's own
    # (bwrap brings its lo up: nothing outside, not even the host's 127.0.0.1, is reachable).
    network: Literal["allow", "deny", "loopback"] = "allow"
    # Paths commands may write besides the workspace and their private /tmp ("~/.cargo").
    writable: list[str] = []


class Config(_Strict):
    models: ModelsConfig
    limits: LimitsConfig = LimitsConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    memory: MemoryConfig = MemoryConfig()
    tools: ToolsConfig = ToolsConfig()
    sandbox: SandboxConfig = SandboxConfig()
    agent: str = "build"
    permissions: list[str] = []
    # What a permission rule of `ask` becomes when no person is at the terminal.
    ask_policy: Literal["ask", "allow", "deny"] = "ask"
    verify_commands: list[str] = []
    # Tool providers besides the built-in tools: [{"kind": ..., "name": ..., "options": {}}].
    providers: list[ProviderSpec] = []
    # MCP servers ({"servers": {NAME: ...}, "enabled": [...], "disabled": [...]}) and hooks
    # (Claude Code's shape); each is validated by its own module when a session is prepared.
    mcp: dict[str, Any] = {}
    hooks: dict[str, Any] = {}

    # The layers it was built from: keys whose sources all count (hooks) read them one by one.
    _layers: list[Layer] = PrivateAttr(default_factory=list)

    def layer_values(self, key: str) -> list[tuple[str, Any]]:
        """``(source, value)`` of ``key`` in every file layer that sets it, lowest first."""
        return [(layer.source, layer.data[key]) for layer in self._layers if key in layer.data]

    def public_dict(self) -> dict[str, Any]:
        """The configuration as it may appear in logs: it never holds keys, only their names."""
        return self.model_dump(mode="json", exclude_none=True)


SHIPPED_DEFAULTS: dict[str, Any] = {
    "models": {"primary": {"model": "openai/gpt-4.1"}},
    "limits": {},
    "runtime": {},
}

# Environment variables, each mapped to the key path it sets. Values are JSON when they parse
# as JSON (numbers, booleans), else strings.
ENV_KEYS: dict[str, tuple[str, ...]] = {
    "STAGECREW_MODEL": ("models", "primary", "model"),
    "STAGECREW_API_BASE": ("models", "primary", "api_base"),
    "STAGECREW_API_KEY_ENV": ("models", "primary", "api_key_env"),
    "STAGECREW_SUBAGENT_MODEL": ("models", "subagent", "model"),
    "STAGECREW_JUDGE_MODEL": ("models", "judge", "model"),
    "STAGECREW_CHECKPOINT_MODEL": ("models", "checkpoint", "model"),
    "STAGECREW_CANDIDATE_MODEL": ("models", "candidate", "model"),
    "STAGECREW_MAX_STEPS": ("limits", "max_steps"),
    "STAGECREW_AGENT": ("agent",),
    "STAGECREW_POOL_SIZE": ("runtime", "pool_size"),
    "STAGECREW_NAMESPACE": ("runtime", "namespace"),
    "RAY_ADDRESS": ("runtime", "address"),
}


@dataclass(frozen=True)
class Layer:
    """One source of settings: its name (a path, ``environment`` or ``command line``)."""

    source: str
    data: dict[str, Any]


def user_config_dir() -> Path:
    """The platform's config dir for stagecrew (``~/.config/stagecrew`` on Linux)."""
    override = os.environ.get("STAGECREW_CONFIG_DIR")
    if override:
        return Path(override)
    from platformdirs import user_config_dir as _ucd

    return Path(_ucd("stagecrew"))


def _stat(path: Path) -> os.stat_result | None:
    """``os.stat``, with every error meaning "not there" (a marker we cannot see is absent)."""
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def find_project_root(start: Path) -> Path:
    """The nearest directory holding ``.stagecrew/`` or ``.git``; else ``start`` itself."""
    start = start.resolve()
    for d in (start, *start.parents):
        marker = _stat(d / PROJECT_DIR)
        if (marker is not None and stat.S_ISDIR(marker.st_mode)) or _stat(d / ".git"):
            return d
    return start


def read_json_file(path: Path, what: str = "config file") -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` only when there is no such file.

    Anything else in the way (a directory the user cannot enter, an unreadable file, bad
    UTF-8 or JSON, not an object) is a one-line ``ConfigError`` naming the file and the fix:
    skipping it would quietly run with other settings (a project's ``deny`` rules, its hooks,
    its MCP servers). Every settings file stagecrew reads comes through here."""
    own = path.parent
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read {what}: {describe_os_error(path, exc, own=own)}"
        ) from exc
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path}: not a regular file; a {what} must be a JSON file")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read {what}: {describe_os_error(path, exc, own=own)}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8"
        ) from exc
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "fix the file or move it away"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a JSON object at the top level, got {type(data).__name__}"
        )
    return data


def _read_json_layer(path: Path) -> Layer | None:
    data = read_json_file(path)
    return None if data is None else Layer(str(path), data)


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    cur = data
    for key in path[:-1]:
        cur = cur.setdefault(key, {})
    cur[path[-1]] = value


def _env_layer(environ: dict[str, str]) -> Layer:
    data: dict[str, Any] = {}
    for var, path in ENV_KEYS.items():
        raw = environ.get(var)
        if raw is None or raw == "":
            continue
        try:
            value: Any = json.loads(raw)
            if not isinstance(value, int | float | bool):
                value = raw
        except json.JSONDecodeError:
            value = raw
        _set_path(data, path, value)
    return Layer("environment", data)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _layer_setting(layers: list[Layer], loc: tuple[Any, ...]) -> str:
    """The highest layer that set (a prefix of) the failing key path."""
    for layer in reversed(layers):
        cur: Any = layer.data
        found = True
        for key in loc:
            if isinstance(cur, dict) and key in cur:
                cur = cur[key]
            else:
                found = False
                break
        if found:
            return layer.source
    for layer in reversed(layers):  # fall back to the layer holding the parent
        if loc and isinstance(layer.data.get(loc[0]), dict):
            return layer.source
    return layers[-1].source if layers else "configuration"


def _explain(err: dict[str, Any], layers: list[Layer]) -> str:
    loc = tuple(err["loc"])
    key_path = ".".join(str(p) for p in loc)
    source = _layer_setting(layers, loc)
    if err["type"] == "extra_forbidden":
        if len(loc) == 2 and loc[0] == "models":
            roles = ", ".join(r.value for r in ModelRole)
            return (
                f"{source}: unknown model role '{loc[1]}' at '{key_path}': expected one of {roles}"
            )
        return f"{source}: unknown key '{key_path}'"
    if err["type"] == "missing":
        return f"{source}: '{key_path}' is required"
    got = err.get("input")
    shown = (
        json.dumps(got)
        if isinstance(got, str | int | float | bool | type(None))
        else type(got).__name__
    )
    return f"{source}: '{key_path}' {err['msg'].lower()} (got {shown})"


# Keys whose lists add up across layers instead of replacing each other: a project's rules
# refine the user's, they do not erase them ("last matching rule wins" needs them all).
CONCATENATED_KEYS = ("permissions", "verify_commands")


def build_config(layers: list[Layer]) -> Config:
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer.data)
    for key in CONCATENATED_KEYS:
        values = [layer.data[key] for layer in layers if key in layer.data]
        if values and all(isinstance(v, list) for v in values):
            merged[key] = [item for v in values for item in v]
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:
        lines = [_explain(e, layers) for e in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    config._layers = list(layers)
    return config


def load_config(
    project_root: Path | None = None,
    *,
    flags: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Read every layer and validate the result; raises ``ConfigError`` naming what is wrong."""
    environ = dict(os.environ) if environ is None else environ
    layers = [Layer("shipped defaults", SHIPPED_DEFAULTS)]
    user = _read_json_layer(user_config_dir() / "config.json")
    if user:
        layers.append(user)
    if project_root is not None:
        project = _read_json_layer(config_file(project_root))
        if project:
            layers.append(project)
    layers.append(_env_layer(environ))
    if flags:
        flag_data: dict[str, Any] = {}
        for dotted, value in flags.items():
            if value is not None:
                _set_path(flag_data, tuple(dotted.split(".")), value)
        layers.append(Layer("command line", flag_data))
    return build_config(layers)
