"""Cloudflare Workers AI: chat (Llama) and speech-to-text (Whisper) over the REST API."""

from parley.providers.workers_ai.chat import DEFAULT_CHAT_MODEL, WorkersAIChat
from parley.providers.workers_ai.client import DEFAULT_BASE_URL, WorkersAIClient
from parley.providers.workers_ai.stt import DEFAULT_STT_MODEL, WorkersAISTT

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CHAT_MODEL",
    "DEFAULT_STT_MODEL",
    "WorkersAIChat",
    "WorkersAIClient",
    "WorkersAISTT",
]
