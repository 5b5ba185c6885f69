"""Chat on Ollama: its OpenAI-compatible `/v1` API, with the model defaulting to one it has pulled.

Only the choice of model is Ollama's own; streaming, cancellation and error translation are
`OpenAIChat`'s. When no model is named, the first pulled one is looked up (asynchronously) on
the first turn rather than at start-up, so building the provider never waits on the network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from parley.errors import ProviderNotConfigured, ProviderUnavailable
from parley.providers.llm import ChatDelta, ChatRequest
from parley.providers.ollama import PULL_HINT, model_names
from parley.providers.openai import OpenAIChat, OpenAIClient

URL_SETTING = "PARLEY_OLLAMA_URL"


def ollama_client(ollama_url: str, *, timeout: float = 60.0) -> OpenAIClient:
    """An OpenAI client for Ollama's `/v1`; its errors name PARLEY_OLLAMA_URL, not the base-URL setting."""
    return OpenAIClient(
        base_url=f"{ollama_url.rstrip('/')}/v1",
        api_key=None,
        timeout=timeout,
        base_url_setting=URL_SETTING,
    )


class OllamaChat(OpenAIChat):
    """Streams from Ollama; `model=None` means the first model `ollama list` would show."""

    name = "ollama"

    def __init__(self, client: OpenAIClient, *, ollama_url: str, model: str | None = None) -> None:
        super().__init__(client, model=model or "")
        self.ollama_url = ollama_url.rstrip("/")

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        if not self.model:
            self.model = await self._first_pulled()
        async for delta in super().stream(request):
            yield delta

    async def _first_pulled(self) -> str:
        url = f"{self.ollama_url}/api/tags"
        try:
            async with httpx.AsyncClient(timeout=self.client.timeout) as http:
                response = await http.get(url)
                response.raise_for_status()
                names = model_names(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderUnavailable(
                f"Cannot ask Ollama at {self.ollama_url} for its models ({exc}); is `ollama serve` "
                f"running? ({URL_SETTING})"
            ) from exc
        if not names:
            raise ProviderNotConfigured(
                f"Ollama at {self.ollama_url} has no models; {PULL_HINT} or set PARLEY_LLM_MODEL",
                field="PARLEY_LLM_MODEL",
            )
        return names[0]
