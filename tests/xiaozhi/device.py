"""A XiaoZhi device in Python: OTA over httpx, the WebSocket over `websockets`, Opus with PyAV.

It speaks the protocol as the firmware docs describe it and encodes/decodes Opus with its own
PyAV codecs (not Parley's), so a downlink packet of the wrong length or an unreadable one shows.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
import websockets

UPLINK_RATE = 16000
FRAME_MS = 60


def opus_packets(pcm: bytes, rate: int = UPLINK_RATE) -> list[bytes]:
    """16 kHz mono s16 PCM as 60 ms Opus packets (the last one padded with silence)."""
    codec: Any = av.CodecContext.create("libopus", "w")
    codec.sample_rate = rate
    codec.layout = "mono"
    codec.format = "s16"
    codec.options = {"frame_duration": str(FRAME_MS)}
    codec.open()
    step = rate * FRAME_MS // 1000
    samples = np.frombuffer(pcm, dtype="<i2")
    samples = np.concatenate([samples, np.zeros((-len(samples)) % step, dtype=np.int16)])
    packets: list[bytes] = []
    for i in range(0, len(samples), step):
        frame = av.AudioFrame.from_ndarray(samples[i : i + step].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = i
        packets.extend(bytes(p) for p in codec.encode(frame))
    return packets


class Decoder:
    """Downlink packets -> samples at 48 kHz (libopus decodes every packet at 48 kHz here)."""

    def __init__(self) -> None:
        self._codec: Any = av.CodecContext.create("libopus", "r")
        self._codec.sample_rate = 48000
        self._codec.layout = "mono"

    def samples(self, packet: bytes) -> int:
        return sum(frame.samples for frame in self._codec.decode(av.Packet(packet)))


def frame(version: int, payload: bytes, kind: int = 0) -> bytes:
    if version == 1:
        return payload
    if version == 2:
        return struct.pack(">HHIII", 2, kind, 0, 0, len(payload)) + payload
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def unframe(version: int, data: bytes) -> bytes:
    if version == 1:
        return data
    size = 16 if version == 2 else 4
    declared = struct.unpack(">I", data[12:16])[0] if version == 2 else struct.unpack(">H", data[2:4])[0]
    assert declared == len(data) - size, "the header's payload size is not the payload's"
    return data[size:]


async def ota(base: str, mac: str, client: str, path: str = "/xiaozhi/ota/") -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            f"{base}{path}",
            headers={"Device-Id": mac, "Client-Id": client, "Activation-Version": "2"},
            json={"application": {"name": "xiaozhi", "version": "1.6.0"}, "mac_address": mac},
        )


async def history(base: str, session_id: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{base}/api/history", params={"sessionId": session_id}, headers=headers)
    assert answer.status_code == 200, answer.text
    messages: list[dict[str, Any]] = answer.json()["messages"]
    return messages


@dataclass
class Device:
    """One connected device; `messages` and `audio` record what the server sent, in order."""

    ws: Any
    version: int
    hello: dict[str, Any] = field(default_factory=dict)
    log: list[dict[str, Any] | bytes] = field(default_factory=list)

    @classmethod
    async def connect(
        cls, url: str, token: str, mac: str, *, version: int = 1, features: dict[str, Any] | None = None
    ) -> Device:
        ws = await websockets.connect(
            url,
            additional_headers={
                "Authorization": f"Bearer {token}",
                "Protocol-Version": str(version),
                "Device-Id": mac,
                "Client-Id": "c-" + mac.replace(":", ""),
            },
            max_size=1 << 20,
        )
        device = cls(ws, version)
        await device.send(
            {
                "type": "hello",
                "version": version,
                "transport": "websocket",
                "features": features or {"mcp": False},
                "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60},
            }
        )
        device.hello = await device.until_json("hello", timeout=10)
        return device

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def speak(self, pcm: bytes) -> None:
        for packet in opus_packets(pcm):
            await self.ws.send(frame(self.version, packet))

    async def next(self, timeout: float = 20.0) -> dict[str, Any] | bytes:
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        item: dict[str, Any] | bytes = json.loads(raw) if isinstance(raw, str) else unframe(self.version, raw)
        self.log.append(item)
        return item

    async def until_json(self, kind: str, state: str | None = None, timeout: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                item = await self.next(timeout)
                if isinstance(item, dict) and item.get("type") == kind and state in (None, item.get("state")):
                    return item

    async def close(self) -> None:
        await self.ws.close()
