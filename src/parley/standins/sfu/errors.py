"""The stand-in's one error type; `app.py` turns it into Cloudflare's error object.

    SFUError(status, code, description) -> HTTP status, {"errorCode": code, "errorDescription": ...}

Whole-request problems only. A track that cannot be published, pulled or closed is not an
exception: it comes back as an item of `tracks` with its own `errorCode`, inside an HTTP 200
(`TrackRefused` carries it from the session to that item).
"""

from __future__ import annotations


class SFUError(Exception):
    """A whole request refused with one of the API's documented codes."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description


class TrackRefused(Exception):
    """One track of a request failed (`not_found_track_error`, `empty_track_error`, ...)."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def invalid_params(field: str, problem: str) -> SFUError:
    return SFUError(400, "invalid_params", f"{field}: {problem}")


def invalid_description(problem: str) -> SFUError:
    return SFUError(400, "invalid_session_description", problem)


def session_closed(session_id: str) -> SFUError:
    # 410 tells a client to give up on this session and rebuild its tracks in a new one
    return SFUError(410, "session_error", f"session {session_id} is closed")
