"""Reading request bodies with one set of clear errors (field and limit named, nothing changed)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from parley.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)


def _declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidInput("Content-Length is not a number", field="Content-Length") from exc


async def read_json(request: Request, *, limit: int) -> dict[str, Any]:
    """The JSON object in the body, checked for type, size and syntax before anything else."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {ctype or 'missing'!r}",
            field="Content-Type",
            limit="application/json",
        )
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes", field="body", limit=limit)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes", field="body", limit=limit)
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}", field="body") from exc
    if not isinstance(data, dict):
        raise InvalidInput("body must be a JSON object", field="body")
    return data


def validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{field}: {first['msg']}", field=field) from exc


def require_text(value: object, *, field: str, limit: int, missing: str | None = None) -> str:
    """A required, non-blank text field of at most `limit` characters."""
    if value is None:
        raise InvalidInput(missing or f"{field} is required", field=field)
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    if not value.strip():
        raise InvalidInput(f"{field} is empty", field=field)
    if len(value) > limit:
        raise InvalidInput(f"{field} is longer than {limit} characters", field=field, limit=limit)
    return value
