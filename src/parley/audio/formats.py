"""Recognise an uploaded recording by its first bytes, not by what the client claims it is."""

from __future__ import annotations

from parley.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

#: container -> the MIME type Parley forwards to providers
MIME = {
    "webm": "audio/webm",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "mp4": "audio/mp4",
    "flac": "audio/flac",
}

SUPPORTED = "webm/opus, ogg/opus, mp4/aac (m4a), wav, mp3, flac"


def sniff(data: bytes) -> str | None:
    """The container format of `data`, or None when it is not a recording we accept."""
    head = data[:16]
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"  # EBML: WebM and Matroska
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def check_audio(data: bytes, *, limit: int, field: str = "audio") -> str:
    """Validate an upload; return its container format or raise a clear error naming the field."""
    if not data:
        raise InvalidInput(f"{field} is empty", field=field)
    if len(data) > limit:
        raise PayloadTooLarge(f"{field} is larger than {limit} bytes", field=field, limit=limit)
    kind = sniff(data)
    if kind is None:
        raise UnsupportedMediaType(
            f"{field} is not a recording in a supported format ({SUPPORTED})", field=field, limit=SUPPORTED
        )
    return kind
