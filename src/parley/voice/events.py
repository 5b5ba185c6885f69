"""Every event a voice call adds to a session's own (`sessions/events.py`), one builder each.

They follow the session events' rules (a JSON object with a `type`, serialised once) and travel
the same ways: over the session's bus to its WebSockets, and over the call's data channel. The
turn's text (`user_message`, `turn_started`, `chunk`, `reply`, `interrupted`) is the session's
own, so a voice turn looks like a text turn to every other tab. Names follow pipecat's RTVI
vocabulary in Parley's snake_case.
"""

from __future__ import annotations

from typing import Any

from parley.sessions.events import Event


def user_started_speaking(session_id: str, call_id: str, at: float) -> Event:
    """`at`: seconds into the call's input where the speech began (the VAD's edge, not its decision)."""
    return Event.make("user_started_speaking", sessionId=session_id, callId=call_id, at=round(at, 3))


def user_stopped_speaking(session_id: str, call_id: str, at: float) -> Event:
    return Event.make("user_stopped_speaking", sessionId=session_id, callId=call_id, at=round(at, 3))


def transcript(
    session_id: str, call_id: str, text: str, language: str | None, *, final: bool = True
) -> Event:
    return Event.make(
        "transcript", sessionId=session_id, callId=call_id, text=text, language=language, final=final
    )


def assistant_started_speaking(session_id: str, call_id: str, turn_id: str) -> Event:
    return Event.make("assistant_started_speaking", sessionId=session_id, callId=call_id, turnId=turn_id)


def assistant_stopped_speaking(session_id: str, call_id: str, turn_id: str, *, interrupted: bool) -> Event:
    return Event.make(
        "assistant_stopped_speaking",
        sessionId=session_id,
        callId=call_id,
        turnId=turn_id,
        interrupted=interrupted,
    )


def call_stage(session_id: str, call_id: str, stage: str) -> Event:
    """What the call is doing now, sent when it changes: listening, transcribing, thinking or
    speaking (the user's own speech is `user_started_speaking` / `user_stopped_speaking`)."""
    return Event.make("call_stage", sessionId=session_id, callId=call_id, stage=stage)


def metrics(
    session_id: str, call_id: str, turn_id: str | None, stages: dict[str, float], providers: dict[str, float]
) -> Event:
    """`ms`: milliseconds from the end of the user's speech to each stage of the turn;
    `providers`: how many of them each provider took (the rest is the VAD's hangover and Parley)."""
    return Event.make(
        "metrics", sessionId=session_id, callId=call_id, turnId=turn_id, ms=stages, providers=providers
    )


def error(session_id: str, call_id: str, stage: str, err: dict[str, Any]) -> Event:
    """A provider failed inside the call (`stage`: stt or tts); the call goes on."""
    return Event.make("error", sessionId=session_id, callId=call_id, stage=stage, error=err)


def call_started(session_id: str, call_id: str) -> Event:
    return Event.make("call_started", sessionId=session_id, callId=call_id)


def call_ended(session_id: str, call_id: str, reason: str) -> Event:
    return Event.make("call_ended", sessionId=session_id, callId=call_id, reason=reason)


def reconnecting(session_id: str, call_id: str, attempt: int, reason: str) -> Event:
    """The call's media path broke (e.g. its SFU session ended) and is being rebuilt."""
    return Event.make(
        "call_reconnecting", sessionId=session_id, callId=call_id, attempt=attempt, reason=reason
    )


def track_moved(session_id: str, call_id: str, sfu_session_id: str, track_name: str, attempt: int) -> Event:
    """Cloudflare mode: the assistant's voice is now published by this SFU session; pull it from there."""
    return Event.make(
        "call_track",
        sessionId=session_id,
        callId=call_id,
        sfuSessionId=sfu_session_id,
        trackName=track_name,
        attempt=attempt,
    )
