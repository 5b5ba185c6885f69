"""Wire models of the REST API (request bodies and documented replies)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from parley.sessions.registry import SESSION_ID_MAX, SESSION_ID_RE


def language_field(description: str) -> Any:
    """An optional BCP-47-like language code (`en`, `de`, `pt-BR`), checked where it enters."""
    return Field(
        None,
        min_length=2,
        max_length=8,
        pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,4})?$",
        description=description,
    )


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


def _session_id_schema(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update(
        type="string",
        pattern=SESSION_ID_RE.pattern,
        maxLength=SESSION_ID_MAX,
        description="Conversation id (letters, digits, `_ . : -`).",
    )


def session_id_field() -> Any:
    """`sessionId` as the docs show it: a required id of the documented shape. The model itself
    lets a missing one through, so the route answers with the seed's own words for it."""
    return Field(None, json_schema_extra=_session_id_schema)


def _message_schema(schema: dict[str, Any]) -> None:
    schema.clear()
    # not blank: a character that is not white space somewhere in it
    schema.update(type="string", pattern=r"\S", description="The user's message (not blank).")


def _requires(*names: str) -> ConfigDict:
    return ConfigDict(extra="ignore", strict=True, json_schema_extra={"required": list(names)})


class ChatIn(_Body):
    model_config = _requires("message", "sessionId")

    message: str | None = Field(None, json_schema_extra=_message_schema)
    sessionId: str | None = session_id_field()
    stream: bool = Field(False, description="Answer as Server-Sent Events instead of one JSON reply.")
    language: str | None = Field(
        None, description="The user's language (e.g. `de`, from speech-to-text or the UI): the reply uses it."
    )
    clientId: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The sender's own id, echoed in the turn's `user_message` event on the session's "
        "sockets, so a client following the session live can tell its own turns from others'.",
    )
    editOf: int | None = Field(
        None,
        ge=1,
        description="Edit and resend: the id of an earlier user message of this conversation that "
        "`message` replaces; it and every later message are stored as `replaced` (a `replaced` event "
        "tells the sockets). Regenerate a reply: resend its user message unchanged with its id.",
    )


class SessionIn(_Body):
    model_config = _requires("sessionId")

    sessionId: str | None = session_id_field()


class StopIn(_Body):
    model_config = _requires("sessionId")

    sessionId: str | None = session_id_field()
    turnId: str | None = Field(None, description="A running or queued turn; unset stops the running one.")


class HistoryEntry(BaseModel):
    id: int
    role: Literal["user", "assistant"]
    content: str
    status: Literal["complete", "cancelled", "interrupted", "failed"]
    created_at: str
    turnId: str
    error: str | None = None
    #: "length" when the reply was cut off by PARLEY_MAX_TOKENS; "stop" or None otherwise
    finishReason: str | None = None


class ChatOut(BaseModel):
    response: str
    sessionId: str
    turnId: str
    status: Literal["complete", "cancelled"]
    message: HistoryEntry
    usage: dict[str, int] | None = None


class TranscribeOut(BaseModel):
    text: str
    sessionId: str
    language: str | None = None


class HistoryOut(BaseModel):
    sessionId: str
    messages: list[HistoryEntry]


class ClearOut(BaseModel):
    success: bool
    removed: int


class StopOut(BaseModel):
    stopped: bool
    turnId: str | None


class ErrorOut(BaseModel):
    error: str
    code: str
    status: int
    field: str | None = None
    limit: int | float | str | None = None
    details: Any = None


#: every protected route may also answer 401 (no user) and 403 (a cookie sign-in from a foreign page)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 413, 415, 429, 500, 502, 503, 504)
}
#: routes that refuse what a caller may not do (another browser's session): 403 is in ERRORS now
FORBIDDEN_ERRORS: dict[int | str, dict[str, Any]] = ERRORS


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI text for a body that the route reads itself (so it controls the errors)."""
    schema = model.model_json_schema()
    # A nested model's `$ref: #/$defs/...` would point at the top of /openapi.json, where there
    # are no `$defs`: the nested schemas go in place (the bodies' models are not recursive).
    defs = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(schema, defs)}},
        }
    }


#: OpenAPI text for /api/transcribe's form, which the route reads itself (to bound its size)
MULTIPART_AUDIO: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["audio", "sessionId"],
                    "properties": {
                        "audio": {
                            "type": "string",
                            "format": "binary",
                            "description": "The recording: webm/opus, ogg/opus, mp4/aac, wav, mp3 or flac.",
                        },
                        "sessionId": {"type": "string"},
                        "language": {"type": "string", "description": "The speaker's language (`en`, `de`)."},
                    },
                }
            }
        },
    }
}


# -- conversations (web/conversations.py) ----------------------------------------------------------


class NewSessionIn(_Body):
    title: str | None = Field(None, description="A title; unset: set from the first message.")


DEVICE_NAME_MAX = 64


class BindIn(_Body):
    code: str | None = Field(None, description="The 6-digit code the XiaoZhi device shows or speaks.")


class DeviceNameIn(_Body):
    name: str | None = Field(None, description=f"The device's new name (1-{DEVICE_NAME_MAX} characters).")


class RenameIn(_Body):
    title: str | None = Field(None, description="The new title (1-200 characters).")


class SessionOut(BaseModel):
    sessionId: str
    title: str
    created_at: str
    updated_at: str
    messageCount: int


class SessionsOut(BaseModel):
    sessions: list[SessionOut]
    #: pass as `before` for the next page; null on the last page
    next: str | None = None


class DeletedOut(BaseModel):
    deleted: bool
    sessionId: str


class SearchHitOut(BaseModel):
    sessionId: str
    title: str
    messageId: int
    role: Literal["user", "assistant"]
    snippet: str
    #: the matched words in `snippet`: [start, end) offsets in characters (Unicode code points)
    highlights: list[list[int]]
    created_at: str


class SearchOut(BaseModel):
    results: list[SearchHitOut]


class ImportOut(BaseModel):
    sessions: list[SessionOut]
