"""Fields of OpenAI-shaped JSON that several vendors share (OpenAI-compatible servers, Workers AI)."""

from __future__ import annotations

from typing import Any

from parley.providers.llm import Usage


def content_of(chunk: dict[str, Any], key: str) -> str:
    """`choices[0][key].content`, where key is `delta` in a stream and `message` in a completion."""
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        part = choices[0].get(key)
        if isinstance(part, dict):
            content = part.get("content")
            if isinstance(content, str):
                return content
    return ""


def finish_reason_of(chunk: dict[str, Any]) -> str | None:
    """`choices[0].finish_reason`: why the model stopped ("stop", "length", ...), once it says."""
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        if isinstance(reason, str) and reason:
            return reason
    return None


def usage_of(chunk: dict[str, Any]) -> Usage | None:
    # Chunks before the last carry `"usage": null` when include_usage is on.
    raw = chunk.get("usage")
    if not isinstance(raw, dict):
        return None

    def count(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) else 0

    prompt, completion = count("prompt_tokens"), count("completion_tokens")
    return Usage(prompt, completion, count("total_tokens") or prompt + completion)
