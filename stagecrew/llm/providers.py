"""Which environment variable holds a provider's key — decided without importing litellm.

The CLI checks keys before any actor starts, so a missing key is a one-line error at once
rather than a stack trace from a remote process six seconds later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stagecrew.messages import ModelSpecWire

# litellm provider prefix -> the variable litellm itself reads for that provider.
PROVIDER_KEY_ENV: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "groq": "GROQ_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "xai": "XAI_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "fireworks_ai": "FIREWORKS_AI_API_KEY",
    "cohere": "COHERE_API_KEY",
    "perplexity": "PERPLEXITYAI_API_KEY",
    "dashscope": "DASHSCOPE_API_KEY",
    "moonshot": "MOONSHOT_API_KEY",
    "azure": "AZURE_API_KEY",
}

# Key variables litellm reads for providers not in the table above.
OTHER_KEY_ENV = frozenset(
    {
        "ANTHROPIC_AUTH_TOKEN",
        "AZURE_OPENAI_API_KEY",
        "CEREBRAS_API_KEY",
        "HUGGINGFACE_API_KEY",
        "NVIDIA_NIM_API_KEY",
        "REPLICATE_API_KEY",
        "SAMBANOVA_API_KEY",
        "VOYAGE_API_KEY",
    }
)

# litellm provider prefix -> the variables litellm reads for that provider's endpoint (first
# set wins). They belong to the command that starts a session: a head started last week with
# another OPENAI_BASE_URL must not decide where today's session sends its requests, so the
# CLI carries them with the session's keys and the gateway applies them per request.
PROVIDER_ENDPOINT_ENV: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_BASE_URL", "OPENAI_API_BASE"),
    "anthropic": ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE"),
    "azure": ("AZURE_API_BASE", "AZURE_OPENAI_ENDPOINT"),
    "gemini": ("GEMINI_API_BASE",),
    "groq": ("GROQ_API_BASE",),
    "mistral": ("MISTRAL_API_BASE",),
    "deepseek": ("DEEPSEEK_API_BASE",),
    "openrouter": ("OPENROUTER_API_BASE",),
    "xai": ("XAI_API_BASE",),
    "ollama": ("OLLAMA_API_BASE",),
    "ollama_chat": ("OLLAMA_API_BASE",),
    "hosted_vllm": ("HOSTED_VLLM_API_BASE",),
}
# Other per-provider settings litellm reads from the environment, as request arguments.
PROVIDER_SETTING_ENV: dict[str, dict[str, str]] = {
    "azure": {"AZURE_API_VERSION": "api_version"},
}

# Providers that run locally and need no key at all.
KEYLESS_PROVIDERS = {"ollama", "ollama_chat", "hosted_vllm", "llamafile", "lm_studio"}

# Bare model names (no prefix) litellm routes to these providers.
_BARE_PREFIXES = {
    "gpt-": "openai",
    "o1": "openai",
    "o3": "openai",
    "o4": "openai",
    "claude": "anthropic",
}


def provider_of(model: str) -> str:
    if "/" in model:
        return model.split("/", 1)[0]
    for prefix, provider in _BARE_PREFIXES.items():
        if model.startswith(prefix):
            return provider
    return "openai"


def required_key_env(spec: ModelSpecWire) -> str | None:
    """The variable that must be set for this model, or None when no key is needed.

    An explicit ``api_key_env`` is always required. A model served from a custom ``api_base``
    (Ollama, llama.cpp, vLLM behind the OpenAI protocol) needs no key unless one is named.
    """
    if spec.api_key_env:
        return spec.api_key_env
    provider = provider_of(spec.model)
    if provider in KEYLESS_PROVIDERS or spec.api_base:
        return None
    return PROVIDER_KEY_ENV.get(provider)


def endpoint_variables() -> set[str]:
    """Every endpoint and setting variable stagecrew carries per session (and removes from
    the gateway process's own environment, so litellm never falls back to the head's)."""
    names = {v for group in PROVIDER_ENDPOINT_ENV.values() for v in group}
    return names | {v for group in PROVIDER_SETTING_ENV.values() for v in group}


def endpoint_settings(spec: ModelSpecWire, environ: Mapping[str, str]) -> dict[str, str]:
    """The endpoint variables that apply to ``spec`` and are set in ``environ``, by name."""
    provider = provider_of(spec.model)
    names = (*PROVIDER_ENDPOINT_ENV.get(provider, ()), *PROVIDER_SETTING_ENV.get(provider, {}))
    return {name: environ[name] for name in names if environ.get(name)}


def apply_endpoint(spec: ModelSpecWire, settings: Mapping[str, str]) -> ModelSpecWire:
    """``spec`` with the session's endpoint settings applied: an explicit ``api_base`` in the
    config wins; otherwise the first endpoint variable the session's command had set."""
    provider = provider_of(spec.model)
    update: dict[str, Any] = {}
    if not spec.api_base:
        base = next(
            (settings[n] for n in PROVIDER_ENDPOINT_ENV.get(provider, ()) if settings.get(n)), None
        )
        if base:
            update["api_base"] = base
    extra = {
        arg: settings[name]
        for name, arg in PROVIDER_SETTING_ENV.get(provider, {}).items()
        if settings.get(name) and arg not in spec.extra
    }
    if extra:
        update["extra"] = {**spec.extra, **extra}
    return spec.model_copy(update=update) if update else spec


def model_key_variables(specs: Iterable[ModelSpecWire], keep: Iterable[str] = ()) -> set[str]:
    """The variables holding model keys: every provider's standard one and each model's
    ``api_key_env``, minus ``keep``. Tool processes never see them: one ``env`` call would
    send the keys to the model's provider, into the transcript and into memory."""
    names = set(PROVIDER_KEY_ENV.values()) | OTHER_KEY_ENV
    names |= {spec.api_key_env for spec in specs if spec.api_key_env}
    return names - set(keep)
