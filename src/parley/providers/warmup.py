"""Load the local models in the background at start-up, and say when each is ready.

llama.cpp, faster-whisper and Piper load lazily: without this the first reply of a fresh server
waited seconds for a model to load (first token 3.1 s, first transcription 13.4 s measured on two
cores). The models load one after another, chat first (the first thing most users do is type),
so they do not fight over the CPU; a failure is logged and shown in /healthz, never fatal: the
provider raises the same error again, with its fix, when it is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from parley.errors import ParleyError

log = logging.getLogger(__name__)


class Warmable(Protocol):
    name: str

    async def warm_up(self) -> None: ...


class WarmUp:
    def __init__(self, parts: Mapping[str, Warmable], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.parts = dict(parts)
        self.clock = clock
        #: capability -> "waiting", "loading", "ready" or "failed" (why goes to the log only: it may
        #: name server paths, and /healthz is public)
        self.state: dict[str, str] = dict.fromkeys(self.parts, "waiting")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="parley-warm-up")

    async def wait(self) -> None:
        """Until every part has loaded or failed."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        for capability, part in self.parts.items():
            self.state[capability] = "loading"
            started = self.clock()
            try:
                await part.warm_up()
            except ParleyError as exc:
                self.state[capability] = "failed"
                log.warning("%s (%s) could not be loaded ahead: %s", capability, part.name, exc.message)
                continue
            except Exception:
                self.state[capability] = "failed"
                log.exception("%s (%s) failed while loading ahead", capability, part.name)
                continue
            self.state[capability] = "ready"
            log.info("%s ready: %s loaded in %.1f s", capability, part.name, self.clock() - started)

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
