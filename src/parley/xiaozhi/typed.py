"""Turns typed into a device's conversation elsewhere (the web app), spoken on the device.

The device's conversation is an ordinary session: a browser can type into it. Those turns are not
the device call's own (its turns come from speech or `detect`), so the call does not speak them;
this watcher reads the session's bus and, when such a turn's reply is complete, synthesises it
into the call's playout, sentence by sentence, where the device connection sends it like any reply.

A turn is foreign when its `user_message` arrives while the call has no reply of its own under
way (the call's own turns exist, synchronously, before their `user_message` is published).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from parley.bus.base import Subscription
from parley.errors import ParleyError
from parley.providers.tts import TTSProvider
from parley.voice.pipeline import VoiceCall
from parley.voice.playout import Resampler
from parley.voice.sentences import SentenceChunker

log = logging.getLogger("parley.xiaozhi")


class TypedTurns:
    """One per device connection: `run()` reads the session's events until cancelled."""

    def __init__(
        self, sub: Subscription, call: VoiceCall, tts: TTSProvider, *, voice: str | None = None
    ) -> None:
        self.sub = sub
        self.call = call
        self.tts = tts
        self.voice = voice
        self._foreign: set[str] = set()
        self._speaking: asyncio.Task[None] | None = None
        #: set while a typed turn's reply is being synthesised or waits to play
        self.active = False
        self.on_done: Callable[[], None] | None = None

    async def run(self) -> None:
        try:
            while event := await self.sub.get():
                self._on_event(event)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop speaking (an abort, or the connection closing)."""
        task, self._speaking = self._speaking, None
        if task is not None:
            task.cancel()
        self.active = False

    def _on_event(self, raw: str) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        kind, turn_id = event.get("type"), event.get("turnId")
        if not isinstance(turn_id, str):
            return
        if kind == "user_message" and not self.call.responding:
            self._foreign.add(turn_id)
        elif kind == "reply" and turn_id in self._foreign:
            self._foreign.discard(turn_id)
            text = (event.get("message") or {}).get("content")
            if isinstance(text, str) and text.strip() and not self.call.responding:
                self.stop()
                self.active = True
                self._speaking = asyncio.create_task(self._speak(text), name=f"xiaozhi-typed:{turn_id}")
        elif kind in ("cancelled", "error"):
            self._foreign.discard(turn_id)

    async def _speak(self, text: str) -> None:
        playout = self.call.playout
        playout.start_turn()
        chunker = SentenceChunker()
        sentences = [*chunker.feed(text), *chunker.flush()]
        try:
            for sentence in sentences:
                if not any(ch.isalnum() for ch in sentence):
                    continue
                segment = playout.begin(sentence)
                resampler = Resampler()
                stream = self.tts.synthesize(sentence, voice=self.voice)
                try:
                    async for chunk in stream:
                        playout.write(segment, resampler.convert(chunk.pcm, chunk.sample_rate))
                    playout.write(segment, resampler.flush())
                finally:
                    playout.end(segment)
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        with contextlib.suppress(Exception):
                            await aclose()
            await playout.wait_drained()
        except ParleyError as exc:
            log.warning("speaking a typed turn failed call=%s: %s", self.call.id, exc)
        finally:
            self.active = False
