"""Reading request bodies with one set of clear errors (field and limit named, nothing changed).

`parse_json` is shared with the WebSocket's frames: whatever a client sends as JSON is checked
here for syntax, nesting depth and text that cannot be encoded (an unpaired surrogate, which JSON
can spell as `"\\ud800"`), so nothing further in gets a value it cannot store or send back.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.types import Message, Receive

from parley.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from parley.text import has_surrogate

M = TypeVar("M", bound=BaseModel)

#: Deepest nesting of arrays and objects accepted in a JSON body or frame. Parley's own bodies
#: are flat; the limit only has to be below where Python's JSON decoder runs out of stack.
MAX_JSON_DEPTH = 32

#: Bytes a JSON string may need per character: a character outside the BMP written with ASCII
#: escapes (Python's `json.dumps` default) is a surrogate pair, `\\ud83d\\ude00`, 12 bytes.
BYTES_PER_CHAR = 12


def transport_limit(chars: int, slack: int = 4096) -> int:
    """Bytes allowed for a body or frame whose text may hold `chars` characters.

    The transport is bounded generously, so any spelling of an allowed text fits; the text
    itself is then bounded by characters, as documented.
    """
    return chars * BYTES_PER_CHAR + slack


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
    data = parse_json(body, what="body")
    if not isinstance(data, dict):
        raise InvalidInput("body must be a JSON object", field="body")
    return data


def parse_json(raw: bytes | bytearray | str, *, what: str) -> Any:
    """Decode a JSON body or frame (`what` names it in errors), refusing what cannot be used.

    Refused with InvalidInput: bad syntax, nesting deeper than MAX_JSON_DEPTH (the decoder
    itself raises RecursionError somewhere past ~900 levels), and an unpaired surrogate in any
    string or key (named by the top-level field that holds it).
    """
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}", field=what) from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} is not valid UTF-8 JSON", field=what) from exc
    except RecursionError as exc:
        raise _too_deep(what) from exc
    _check_tree(data, what)
    return data


def _too_deep(what: str) -> InvalidInput:
    return InvalidInput(
        f"{what} nests arrays or objects deeper than {MAX_JSON_DEPTH} levels",
        field=what,
        limit=MAX_JSON_DEPTH,
    )


def _check_tree(data: Any, what: str) -> None:
    """Depth and surrogates, walked without recursion (the tree may be as deep as the decoder allowed)."""
    # (value, depth, the top-level field it is in, or None at the top)
    stack: list[tuple[Any, int, str | None]] = [(data, 0, None)]
    while stack:
        value, depth, top = stack.pop()
        if isinstance(value, str):
            if has_surrogate(value):
                raise _surrogate(top or what)
        elif isinstance(value, dict):
            if depth >= MAX_JSON_DEPTH:
                raise _too_deep(what)
            for key, item in value.items():
                if has_surrogate(key):
                    raise _surrogate(top or what)
                stack.append((item, depth + 1, top if top is not None else key[:64]))
        elif isinstance(value, list):
            if depth >= MAX_JSON_DEPTH:
                raise _too_deep(what)
            stack.extend((item, depth + 1, top) for item in value)


def _surrogate(field: str) -> InvalidInput:
    return InvalidInput(
        f"{field} contains an unpaired UTF-16 surrogate (such as \\ud800), which is not valid text",
        field=field,
    )


def bounded_receive(receive: Receive, *, limit: int, error: InvalidInput) -> Receive:
    """`receive` that raises `error` once more than `limit` body bytes have arrived.

    Counting what arrives is the only bound that holds whatever the headers say: a chunked
    body has no Content-Length, and a declared one may lie. Raising from here stops the read
    (a form parser closes its temporary files), so at most `limit` bytes are ever taken in.
    """
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise error
        return message

    return bounded


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
