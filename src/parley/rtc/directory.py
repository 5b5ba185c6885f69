"""The call directory seam: which node holds a call's media, and how a request for it gets there.

A call lives where its peer connection (or its SFU tracks' puller) is: the node that answered its
offer. A hang-up, a mic move or (Cloudflare mode) the browser's pull of the assistant's voice may
arrive at any node behind a load balancer; the directory brings it to that node, or answers from
what the call's node recorded. One process (`LocalCalls`) holds every call; several
(`rtc/cluster.py`) record each call's node in Redis and hand the request over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parley.rtc.registry import CallRegistry

if TYPE_CHECKING:
    from parley.rtc.sfu_peer import TrackRef


class CallDirectory:
    """One process: every call is in this node's CallRegistry."""

    def __init__(self, calls: CallRegistry) -> None:
        self.calls = calls

    async def hangup(self, call_id: str, *, owner: str) -> None:
        """End `owner`'s call `call_id` wherever it lives (another user's is "no call")."""
        await self.calls.hangup(call_id, owner=owner)

    async def move_mic(self, call_id: str, mic: TrackRef) -> dict[str, Any]:
        """The browser publishes its mic from a new SFU session: the call pulls that instead.
        Returns the call's voice track ({} while it has none)."""
        peer = self.calls.sfu_call(call_id)
        await peer.move_mic(mic)
        voice = peer.voice
        return {"sfuSessionId": voice.session_id, "trackName": voice.track_name} if voice else {}

    async def may_pull(self, sfu_session_id: str, voice_session_id: str) -> bool:
        """Whether the browser's SFU session `sfu_session_id` may pull the tracks of
        `voice_session_id`: only the assistant's voice of a call that browser speaks into."""
        return voice_session_id in self.calls.pullable_by(sfu_session_id)

    async def voice_ready(self, call_id: str) -> None:
        """The call's voice can be pulled now, by the browser session its mic is in (a cluster
        records that for the other nodes)."""

    def start(self) -> None:
        """Start background work (a cluster's call records)."""

    async def aclose(self) -> None: ...
