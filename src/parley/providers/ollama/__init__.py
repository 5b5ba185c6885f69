"""Ollama: chat through its OpenAI-compatible API, and finding out whether it runs here.

Detection asks `GET {PARLEY_OLLAMA_URL}/api/tags` (Ollama's own API: which models are pulled)
with a short timeout, because it runs on every start-up and a machine without Ollama must not
wait for it. This package does not import the OpenAI provider (see `chat.py`), so probing
costs no imports.
"""

from __future__ import annotations

from typing import Any

import httpx

from parley.config import Settings
from parley.providers.availability import Availability

#: how long detection waits for Ollama: a local server answers in milliseconds
PROBE_TIMEOUT = 0.4
PULL_HINT = "run `ollama pull llama3.2` (or another model)"

__all__ = ["PROBE_TIMEOUT", "check", "model_names", "pulled_models"]


def model_names(tags: Any) -> list[str]:
    """The model names in an `/api/tags` answer (`{"models": [{"name": "llama3.2:latest"}, ...]}`)."""
    models = tags.get("models") if isinstance(tags, dict) else None
    if not isinstance(models, list):
        return []
    names = (m.get("name") or m.get("model") for m in models if isinstance(m, dict))
    return [name for name in names if isinstance(name, str) and name]


def pulled_models(ollama_url: str, *, timeout: float = PROBE_TIMEOUT) -> list[str] | None:
    """The models Ollama has pulled, or None when no Ollama answers at `ollama_url`."""
    try:
        response = httpx.get(f"{ollama_url.rstrip('/')}/api/tags", timeout=timeout)
        response.raise_for_status()
        return model_names(response.json())
    except (httpx.HTTPError, ValueError):
        return None


def has_model(pulled: list[str], wanted: str) -> bool:
    """`llama3.2` names `llama3.2:latest`, as it does for `ollama run`."""
    return wanted in pulled or (":" not in wanted and f"{wanted}:latest" in pulled)


def check(settings: Settings) -> Availability:
    url = settings.ollama_url
    pulled = pulled_models(url)
    if pulled is None:
        return Availability.no(f"no Ollama answers at {url} (PARLEY_OLLAMA_URL)")
    if not pulled:
        return Availability.no(f"Ollama runs at {url} but has no models pulled; {PULL_HINT}")
    wanted = settings.llm_model
    if wanted and not has_model(pulled, wanted):
        return Availability.no(
            f"Ollama at {url} has no model {wanted!r} (PARLEY_LLM_MODEL); run `ollama pull {wanted}`"
        )
    return Availability.ok(f"Ollama runs at {url} with {', '.join(pulled)}")
