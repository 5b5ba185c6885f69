"""Call: what a transport (rtc/peer.py, rtc/sfu_peer.py) needs from the voice side of one call.

Two kinds satisfy it: `VoiceCall` (Parley's own pipeline: VAD, STT, the session's model, TTS) and
`BridgeCall` (xiaozhi/bridge.py: the audio goes to a remote XiaoZhi server, which answers). The
transport pushes 16 kHz PCM in and reads 20 ms 48 kHz frames out of `playout`; events reach it
through the `on_event` callback its call was built with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from parley.sessions.events import Event
from parley.voice.playout import Playout

log = logging.getLogger("parley.voice")


class Call(Protocol):
    #: the call's id (`call_...`), which its events carry
    id: str
    #: the id the session's events carry (the client's own, not the `<owner>/<id>` key)
    session_id: str
    playout: Playout

    def start(self) -> None: ...

    def push(self, pcm: bytes) -> None:
        """16 kHz mono s16le input as it arrives (any size); never blocks."""

    def read_frame(self) -> bytes | None:
        """The next 20 ms of 48 kHz output, or None for silence."""

    async def answer_text(self, text: str, language: str | None = None) -> bool:
        """Answer `text` aloud as if it had been heard; False when the call could not."""

    def interrupt(self) -> bool:
        """Stop the reply now, as a barge-in does; False when none was under way."""

    @property
    def responding(self) -> bool:
        """A reply is being written or spoken (speech now would be a barge-in)."""

    def notify(self, event: Event) -> None:
        """A transport's own event, sent in order with the call's."""

    async def aclose(self) -> None:
        """Cancel every task and release everything the call holds; idempotent."""


# -- what every kind of call does alike --------------------------------------------------------

#: an event for the call's client, and whether the session's sockets get it too
Outgoing = tuple[Event, bool]


async def deliver(
    outbox: asyncio.Queue[Outgoing],
    on_event: Callable[[Event], None] | None,
    publish: Callable[[Event], Awaitable[object]],
    *,
    call_id: str,
) -> None:
    """A call's events, in order: each to its client (a failing callback is logged, not fatal),
    and those marked so to the session's sockets."""
    while True:
        event, published = await outbox.get()
        if on_event is not None:
            try:
                on_event(event)
            except Exception:
                log.exception("call event callback failed call=%s", call_id)
        if published:
            await publish(event)


def spawn_owned(
    tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None], name: str
) -> asyncio.Task[None]:
    """A task the call owns (kept in `tasks` while it runs, cancelled with the call); a crash is
    logged with its traceback."""
    task = asyncio.create_task(coro, name=name)
    tasks.add(task)

    def reap(done: asyncio.Task[None]) -> None:
        tasks.discard(done)
        if not done.cancelled() and done.exception() is not None:
            log.error("call task %s crashed", done.get_name(), exc_info=done.exception())

    task.add_done_callback(reap)
    return task
