"""`parley sfu`: a single-process stand-in for the Cloudflare Realtime SFU, for development and tests.

It speaks the SFU's HTTP API (`app.py`) and is a real WebRTC peer (aiortc) for every session, so
Parley's Cloudflare mode, its browser client and its tests run without Cloudflare. It is not an
SFU for production: no TURN, no scaling beyond one process, and it decodes and re-encodes audio
for every puller (`relay.py`) where Cloudflare forwards packets.

    errors.py    the error type and its codes      wire.py      request bodies and their checks
    relay.py     published track -> pullers        sessions.py  one session: peer, tracks, SDP
    registry.py  all sessions, cross-session pulls  app.py       routes, auth, test hooks
"""

from parley.standins.sfu.app import create_app

__all__ = ["create_app"]
