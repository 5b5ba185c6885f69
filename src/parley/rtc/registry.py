"""CallRegistry: every live call of the server, with its peer; closes them all at shutdown.

aiortc is imported on the first call, not here, so a server without it still starts (and
answers offers with a 503 naming the package to install).

Each call is a (CallPeer, VoiceCall) pair with one id. The registry is the only owner: a peer
that closes itself (hang-up over the data channel, ICE failure, idle) reports back and is
forgotten, so nothing keeps a closed peer alive.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from parley.errors import Busy, NotFound, ProviderNotConfigured
from parley.providers.stt import STTProvider
from parley.providers.tts import TTSProvider
from parley.providers.vad import SpeechModel
from parley.rtc.ice import IceServer
from parley.sessions.registry import SessionRegistry
from parley.voice.pipeline import VoiceCall, VoiceConfig, new_call_id

if TYPE_CHECKING:
    from parley.rtc.peer import CallPeer

log = logging.getLogger("parley.rtc")


@dataclass(slots=True, frozen=True)
class CallConfig:
    ice_servers: tuple[IceServer, ...] = ()
    idle_seconds: float = 30.0
    max_calls: int = 50
    voice: VoiceConfig = field(default_factory=VoiceConfig)


class CallRegistry:
    def __init__(
        self,
        *,
        sessions: SessionRegistry,
        vad: SpeechModel | None,
        stt: STTProvider,
        tts: TTSProvider,
        config: CallConfig | None = None,
    ) -> None:
        self._sessions = sessions
        self._vad = vad
        self._stt = stt
        self._tts = tts
        self.config = config or CallConfig()
        self._peers: dict[str, CallPeer] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._peers

    @property
    def ice_servers(self) -> tuple[IceServer, ...]:
        return self.config.ice_servers

    async def open(self, session_id: str, offer_sdp: str) -> tuple[str, str]:
        """Start a call of `session_id` from a browser's SDP offer: (call id, answer SDP)."""
        if self._closed:
            raise Busy("the server is shutting down")
        if self._vad is None:
            raise ProviderNotConfigured(
                "voice calls need voice activity detection: pip install 'parley[local]' "
                "(Silero or webrtcvad), or set PARLEY_VAD",
                field="PARLEY_VAD",
            )
        if len(self._peers) >= self.config.max_calls:
            raise Busy(
                f"too many calls at once (limit {self.config.max_calls})",
                field="callId",
                limit=self.config.max_calls,
            )
        try:
            from parley.rtc.peer import CallPeer
        except ImportError as exc:  # aiortc (or PyAV) is an optional extra
            raise ProviderNotConfigured(
                "voice calls need aiortc: pip install 'parley[local]'", field="aiortc"
            ) from exc
        call_id = new_call_id()
        peer = CallPeer(
            call_id,
            ice_servers=self.config.ice_servers,
            idle_seconds=self.config.idle_seconds,
            on_closed=self._forget,
        )
        call = VoiceCall(
            session_id,
            sessions=self._sessions,
            model=self._vad.fresh(),
            stt=self._stt,
            tts=self._tts,
            config=self.config.voice,
            on_event=peer.send,
            call_id=call_id,
        )
        self._peers[call_id] = peer
        call.start()
        try:
            answer = await peer.answer(call, offer_sdp)
        except BaseException:
            await peer.aclose("bad offer")
            raise
        log.info("call opened call=%s session=%s live=%d", call_id, session_id, len(self._peers))
        return call_id, answer

    async def hangup(self, call_id: str) -> None:
        peer = self._peers.get(call_id)
        if peer is None:
            raise NotFound(f"no call {call_id!r}", field="callId")
        await peer.aclose("hangup")

    def _forget(self, peer: CallPeer, reason: str) -> None:
        if self._peers.get(peer.id) is peer:
            del self._peers[peer.id]

    async def aclose(self) -> None:
        """Close every call (server shutdown); new offers are refused from now on."""
        self._closed = True
        peers = list(self._peers.values())
        await asyncio.gather(*(p.aclose("shutdown") for p in peers), return_exceptions=True)
        self._peers.clear()
