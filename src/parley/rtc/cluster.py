"""ClusterCalls: each call's node recorded in Redis, so its hang-up, mic move and voice pull work
from any node.

`<prefix>call:<id>` names the node holding the call (set when it opens, renewed with the session
leases, deleted when it ends); a node asked about a call it does not hold hands the request to
that node through the session directory's inbox (`ClusterDirectory.ask`). In Cloudflare mode
`<prefix>voice:<assistant's SFU session>` names the browser SFU session that may pull that voice
(written before the call's start is answered and after each mic move, renewed with the leases),
so the browser's `tracks/new` is checked by whichever node it reaches without a round trip to
the call's node.
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
        #: call id -> the assistant SFU session whose voice record this node keeps
        self._voices: dict[str, str] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        cluster.handlers["hangup"] = self._hangup_here
        cluster.handlers["mic"] = self._mic_here
        cluster.renewals.append(self._renew)
        calls.on_open = self._opened
        calls.on_close = self._closed

    def _key(self, call_id: str) -> str:
        return f"{self._prefix}call:{call_id}"

    def _voice_key(self, voice_session_id: str) -> str:
        return f"{self._prefix}voice:{voice_session_id}"

    async def may_pull(self, sfu_session_id: str, voice_session_id: str) -> bool:
        if await super().may_pull(sfu_session_id, voice_session_id):
            return True
        try:
            allowed = await uncancelled(self._cluster.redis.get(self._voice_key(voice_session_id)))
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc
        return allowed == sfu_session_id

    async def voice_ready(self, call_id: str) -> None:
        record = self._voice_record(call_id)
        if record is None:
            return
        voice, mic = record
        earlier = self._voices.get(call_id)
        self._voices[call_id] = voice
        try:
            async with self._cluster.redis.pipeline(transaction=False) as pipe:
                if earlier is not None and earlier != voice:  # the call's SFU session was replaced
                    pipe.delete(self._voice_key(earlier))
                pipe.set(self._voice_key(voice), mic, px=self._cluster.lease_ms)
                await uncancelled(pipe.execute())
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from exc

    def _voice_record(self, call_id: str) -> tuple[str, str] | None:
        """(assistant's SFU session, the browser's mic session) of a Cloudflare-mode call here."""
        try:
            peer = self.calls.sfu_call(call_id)
        except NotFound:
            return None
        voice = peer.voice
        return (voice.session_id, peer.mic.session_id) if voice is not None else None

    async def hangup(self, call_id: str, *, owner: str) -> None:
        if call_id in self.calls:
            await super().hangup(call_id, owner=owner)
            await self._settled()  # answered once no node would let its voice be pulled
            return
        await self._cluster.ask(
            await self._holder(call_id), {"op": "hangup", "call": call_id, "owner": owner}
        )

    async def move_mic(self, call_id: str, mic: TrackRef) -> dict[str, Any]:
        if call_id in self.calls:
            voice = await super().move_mic(call_id, mic)
            await self.voice_ready(call_id)  # the new mic session may pull, the old one no more
            return voice
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
        await self._settled()
        return {}

    async def _settled(self) -> None:
        """Until the records of calls that ended are gone from Redis."""
        await asyncio.gather(*self._jobs, return_exceptions=True)

    async def _mic_here(self, command: dict[str, Any]) -> dict[str, Any]:
        from parley.rtc.sfu_peer import TrackRef

        mic = TrackRef(str(command["session"]), str(command["track"]))
        voice = await super().move_mic(str(command["call"]), mic)
        await self.voice_ready(str(command["call"]))
        return voice

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
        keys = [self._key(call_id)]
        if (voice := self._voices.pop(call_id, None)) is not None:
            keys.append(self._voice_key(voice))
        try:
            await uncancelled(self._cluster.redis.delete(*keys))
        except (RedisError, OSError):
            log.warning("could not forget call=%s in Redis; its record expires", call_id)

    async def _renew(self) -> None:
        if not self._here:
            return
        async with self._cluster.redis.pipeline(transaction=False) as pipe:
            for call_id in self._here:
                pipe.set(self._key(call_id), self._cluster.instance, px=self._cluster.lease_ms)
                if call_id in self._voices and (record := self._voice_record(call_id)) is not None:
                    self._voices[call_id] = record[0]
                    pipe.set(self._voice_key(record[0]), record[1], px=self._cluster.lease_ms)
            await uncancelled(pipe.execute())

    async def aclose(self) -> None:
        await self._settled()
