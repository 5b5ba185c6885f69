"""WebRTC: aiortc peers of voice calls (`peer.py`, `tracks.py`), their registry, ICE servers."""
