"""ClusterCalls: each call's node recorded in Redis, so its hang-up and mic move work from any node.

`<prefix>call:<id>` names the node holding the call (set when it opens, renewed with the session
leases, deleted when it ends); a node asked about a call it does not hold hands the request to
that node through the session directory's inbox (`ClusterDirectory.ask`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from parley.bus.cancel import unavailable, uncancelled
from parley.errors import NotFound
from parley.rtc.directory import CallDirectory
from parley.rtc.registry import CallRegistry
from parley.sessions.cluster import ClusterDirectory

if TYPE_CHECKING:
    from parley.rtc.sfu_peer import TrackRef

log = logging.getLogger("parley.cluster")


class ClusterCalls(CallDirectory):
    def __init__(self, calls: CallRegistry, cluster: ClusterDirectory, *, prefix: str = "parley:") -> None:
        super().__init__(calls)
        self._cluster = cluster
        self._prefix = prefix
        self._here: set[str] = set()
        self._jobs: set[asyncio.Task[None]] = set()
        cluster.handlers["hangup"] = self._hangup_here
        cluster.handlers["mic"] = self._mic_here
        cluster.renewals.append(self._renew)
        calls.on_open = self._opened
        calls.on_close = self._closed

    def _key(self, call_id: str) -> str:
        return f"{self._prefix}call:{call_id}"

    async def hangup(self, call_id: str, *, owner: str) -> None:
        if call_id in self.calls:
            await super().hangup(call_id, owner=owner)
            return
        await self._cluster.ask(
            await self._holder(call_id), {"op": "hangup", "call": call_id, "owner": owner}
        )

    async def move_mic(self, call_id: str, mic: TrackRef) -> dict[str, Any]:
        if call_id in self.calls:
            return await super().move_mic(call_id, mic)
        command = {"op": "mic", "call": call_id, "session": mic.session_id, "track": mic.track_name}
        return await self._cluster.ask(await self._holder(call_id), command)

    async def _holder(self, call_id: str) -> str:
        """The node holding `call_id`; NotFound when no node does (or only this one, which has not)."""
        try:
            holder = await uncancelled(self._cluster.redis.get(self._key(call_id)))
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc
        if holder is None or holder == self._cluster.instance:
            raise NotFound(f"no call {call_id!r}", field="callId")
        return str(holder)

    async def _hangup_here(self, command: dict[str, Any]) -> dict[str, Any]:
        await self.calls.hangup(str(command["call"]), owner=str(command["owner"]))
        return {}

    async def _mic_here(self, command: dict[str, Any]) -> dict[str, Any]:
        from parley.rtc.sfu_peer import TrackRef

        mic = TrackRef(str(command["session"]), str(command["track"]))
        return await super().move_mic(str(command["call"]), mic)

    # -- the records ----------------------------------------------------------------------------

    def _opened(self, call_id: str) -> None:
        self._here.add(call_id)
        self._spawn(self._record(call_id))

    def _closed(self, call_id: str) -> None:
        self._here.discard(call_id)
        self._spawn(self._forget(call_id))

    def _spawn(self, work: Any) -> None:
        job = asyncio.create_task(work, name="cluster-call-record")
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _record(self, call_id: str) -> None:
        try:
            await uncancelled(
                self._cluster.redis.set(self._key(call_id), self._cluster.instance, px=self._cluster.lease_ms)
            )
        except (RedisError, OSError):
            log.warning("could not record call=%s in Redis; the lease renewal retries", call_id)

    async def _forget(self, call_id: str) -> None:
        try:
            await uncancelled(self._cluster.redis.delete(self._key(call_id)))
        except (RedisError, OSError):
            log.warning("could not forget call=%s in Redis; its record expires", call_id)

    async def _renew(self) -> None:
        if not self._here:
            return
        async with self._cluster.redis.pipeline(transaction=False) as pipe:
            for call_id in self._here:
                pipe.set(self._key(call_id), self._cluster.instance, px=self._cluster.lease_ms)
            await uncancelled(pipe.execute())

    async def aclose(self) -> None:
        await asyncio.gather(*self._jobs, return_exceptions=True)
