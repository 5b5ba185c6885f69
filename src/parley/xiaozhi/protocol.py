"""The XiaoZhi WebSocket protocol: binary audio framing (versions 1, 2, 3) and the JSON messages.

Binary frames carry one Opus packet each. Version 1 is the bare packet; version 2 prefixes a
16-byte header (`u16 version, u16 type, u32 reserved, u32 timestamp ms, u32 payload size`) and
version 3 a 4-byte one (`u8 type, u8 reserved, u16 payload size`), all big-endian; type 0 is
Opus, 1 is JSON. Text frames are JSON objects with a `type`. What a device sends is parsed into
the models below (unknown fields are kept out of the way, not refused: firmware versions differ);
what Parley sends is built by the functions at the end, so every message has one spelling.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parley.errors import InvalidInput, PayloadTooLarge

VERSIONS = (1, 2, 3)
V2_HEADER = struct.Struct(">HHIII")
V3_HEADER = struct.Struct(">BBH")
#: the largest frame a device may send (a 60 ms Opus packet is at most ~3.8 kB; JSON is small)
MAX_FRAME_BYTES = 16 * 1024
#: the only frame length Parley speaks in and announces, both ways
FRAME_MS = 60


class PayloadType(IntEnum):
    OPUS = 0
    JSON = 1


@dataclass(slots=True, frozen=True)
class Packet:
    kind: PayloadType
    payload: bytes
    timestamp: int = 0


def check_version(value: object) -> int:
    """A `Protocol-Version` header or query value; a 400 naming it when it is not 1, 2 or 3."""
    if value is None or value == "":
        return 1
    try:
        version = int(str(value))
    except ValueError:
        version = 0
    if version not in VERSIONS:
        raise InvalidInput(
            f"Protocol-Version must be 1, 2 or 3, not {str(value)[:20]!r}",
            field="Protocol-Version",
            limit="1, 2, 3",
        )
    return version


def unpack(version: int, frame: bytes) -> Packet:
    """One binary frame from a device; InvalidInput naming what is wrong with it."""
    if len(frame) > MAX_FRAME_BYTES:
        raise PayloadTooLarge(
            f"binary frame is larger than {MAX_FRAME_BYTES} bytes", field="frame", limit=MAX_FRAME_BYTES
        )
    if version == 1:
        return Packet(PayloadType.OPUS, frame)
    header = V2_HEADER if version == 2 else V3_HEADER
    if len(frame) < header.size:
        raise InvalidInput(
            f"a protocol {version} frame starts with a {header.size}-byte header; this one has "
            f"{len(frame)} bytes",
            field="frame",
            limit=header.size,
        )
    if version == 2:
        _, kind, _, timestamp, size = V2_HEADER.unpack_from(frame)
    else:
        kind, _, size = V3_HEADER.unpack_from(frame)
        timestamp = 0
    payload = frame[header.size :]
    if size != len(payload):
        raise InvalidInput(
            f"the header says {size} payload bytes but the frame carries {len(payload)}",
            field="payload_size",
            limit=len(payload),
        )
    if kind not in (PayloadType.OPUS, PayloadType.JSON):
        raise InvalidInput(
            f"payload type must be 0 (opus) or 1 (json), not {kind}", field="type", limit="0, 1"
        )
    return Packet(PayloadType(kind), payload, timestamp)


def pack(version: int, payload: bytes, *, timestamp: int = 0, kind: PayloadType = PayloadType.OPUS) -> bytes:
    """One binary frame to a device in its protocol version."""
    if version == 1:
        return payload
    if version == 2:
        return V2_HEADER.pack(2, kind, 0, timestamp & 0xFFFFFFFF, len(payload)) + payload
    return V3_HEADER.pack(kind, 0, len(payload)) + payload


# -- device -> server ---------------------------------------------------------------------------


class AudioParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: str = "opus"
    sample_rate: int = Field(16000, ge=8000, le=48000)
    channels: int = Field(1, ge=1, le=2)
    frame_duration: int = Field(FRAME_MS, ge=10, le=120)


class Features(BaseModel):
    model_config = ConfigDict(extra="ignore")

    mcp: bool = False
    aec: bool = False
    consistent_sample_rate: bool | None = None


class Hello(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["hello"]
    version: int = 1
    transport: str = "websocket"
    features: Features = Field(default_factory=Features)
    audio_params: AudioParams = Field(default_factory=AudioParams)


class ListenState(StrEnum):
    START = "start"
    STOP = "stop"
    DETECT = "detect"


class ListenMode(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"
    REALTIME = "realtime"


class Listen(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["listen"]
    state: ListenState
    mode: ListenMode | None = None
    text: str | None = Field(None, max_length=2000)


class Abort(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["abort"]
    reason: str | None = None


class Mcp(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["mcp"]
    payload: dict[str, Any]


class Ignored(BaseModel):
    """Messages a device may send that Parley accepts and does nothing with (`iot` is deprecated)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["iot", "goodbye", "ping"]


DeviceMessage = Hello | Listen | Abort | Mcp | Ignored
_MODELS: dict[str, type[BaseModel]] = {
    "hello": Hello,
    "listen": Listen,
    "abort": Abort,
    "mcp": Mcp,
    "iot": Ignored,
    "goodbye": Ignored,
    "ping": Ignored,
}
DEVICE_TYPES = tuple(_MODELS)


def parse_message(raw: str | bytes) -> DeviceMessage:
    """A device's JSON message as its model; InvalidInput naming the field that is wrong."""
    if len(raw) > MAX_FRAME_BYTES:
        raise PayloadTooLarge(
            f"message is larger than {MAX_FRAME_BYTES} bytes", field="frame", limit=MAX_FRAME_BYTES
        )
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"message is not valid JSON ({str(exc)[:80]})", field="frame") from None
    if not isinstance(data, dict):
        raise InvalidInput("message must be a JSON object with a type", field="type")
    kind = data.get("type")
    model = _MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise InvalidInput(
            f"unknown message type {str(kind)[:40]!r}; expected one of {', '.join(DEVICE_TYPES)}",
            field="type",
            limit=", ".join(DEVICE_TYPES),
        )
    try:
        message = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "message"
        raise InvalidInput(f"{kind}.{where}: {first.get('msg', 'invalid value')}", field=where) from None
    assert isinstance(message, Hello | Listen | Abort | Mcp | Ignored)
    return message


# -- server -> device ---------------------------------------------------------------------------


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def server_hello(session_id: str, sample_rate: int, *, transport: str = "websocket", **extra: Any) -> str:
    """The answer to a device's hello; `extra` is the transport's own (`udp {server, port, key,
    nonce}` for MQTT + UDP devices)."""
    return dumps(
        {
            "type": "hello",
            "transport": transport,
            "session_id": session_id,
            "audio_params": {
                "format": "opus",
                "sample_rate": sample_rate,
                "channels": 1,
                "frame_duration": FRAME_MS,
            },
            **extra,
        }
    )


def stt(session_id: str, text: str) -> str:
    return dumps({"type": "stt", "session_id": session_id, "text": text})


def llm(session_id: str, emotion: str, text: str) -> str:
    return dumps({"type": "llm", "session_id": session_id, "emotion": emotion, "text": text})


def tts(session_id: str, state: Literal["start", "stop", "sentence_start"], text: str | None = None) -> str:
    message: dict[str, Any] = {"type": "tts", "session_id": session_id, "state": state}
    if text is not None:
        message["text"] = text
    return dumps(message)


def mcp(session_id: str, payload: dict[str, Any]) -> str:
    """A JSON-RPC 2.0 message of Parley's MCP client to the device's tools (xiaozhi/mcp.py)."""
    return dumps({"session_id": session_id, "type": "mcp", "payload": payload})


def alert(session_id: str, error: dict[str, Any]) -> str:
    """A refused frame or a failed stage, in the one error shape under `error` (the device shows
    `message`; the connection stays open unless it was closed after this)."""
    return dumps(
        {
            "type": "alert",
            "session_id": session_id,
            "status": "error",
            "message": error.get("error", "error"),
            "emotion": "sad",
            "error": error,
        }
    )
