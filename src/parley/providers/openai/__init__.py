"""OpenAI-compatible servers (OpenAI, Ollama, vLLM, llama.cpp, LM Studio, Groq): chat and speech-to-text."""

from parley.providers.openai.chat import DEFAULT_CHAT_MODEL, OpenAIChat
from parley.providers.openai.client import DEFAULT_BASE_URL, OpenAIClient
from parley.providers.openai.stt import DEFAULT_STT_MODEL, OpenAISTT

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CHAT_MODEL",
    "DEFAULT_STT_MODEL",
    "OpenAIChat",
    "OpenAIClient",
    "OpenAISTT",
]
