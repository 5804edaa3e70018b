"""Which environment variable holds a provider's key — decided without importing litellm.

The CLI checks keys before any actor starts, so a missing key is a one-line error at once
rather than a stack trace from a remote process six seconds later.
"""

from __future__ import annotations

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
