"""A local stand-in for Ollama: its own `/api/tags`, and the OpenAI-compatible `/v1` it also serves.

`/v1/...` is the shared OpenAI stand-in mounted unchanged, as Ollama's `/v1` is (by design) the
OpenAI wire format; only the model list is Ollama's own:

    GET /api/tags -> {"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest", ...}]}
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from parley.standins import openai


def create_app(models: Sequence[str] = ("llama3.2:latest", "qwen2.5:0.5b")) -> Starlette:
    """State for tests: `tags_requests` here, and the OpenAI stand-in's state on `app.state.v1`."""
    # Ollama answers `llama3.2` for `llama3.2:latest`, so the /v1 side accepts both spellings.
    aliases = [m.removesuffix(":latest") for m in models]
    v1 = openai.create_app(models=[*models, *aliases])

    async def tags(request: Request) -> JSONResponse:
        request.app.state.tags_requests += 1
        entries = [
            {
                "name": name,
                "model": name,
                "modified_at": "2025-01-01T00:00:00Z",
                "size": 1_000_000,
                "digest": "0" * 64,
                "details": {"format": "gguf", "family": "llama"},
            }
            for name in models
        ]
        return JSONResponse({"models": entries})

    app = Starlette(routes=[Route("/api/tags", tags), Mount("/", app=v1)])
    app.state.tags_requests = 0
    app.state.v1 = v1.state
    return app
