"""A XiaoZhi device on MQTT + UDP in Python: aiomqtt for its JSON, a UDP socket for its audio.

It does what the firmware's mqtt_protocol.cc does, with its own code (not Parley's): the header
written over the server's nonce, AES-128-CTR with the header as the counter block (the
`cryptography` package), downlink datagrams checked for type, length and a rising sequence.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.xiaozhi.device import opus_packets

HEADER = struct.Struct(">BBHIII")


def ctr(key: bytes, block: bytes, data: bytes) -> bytes:
    codec = Cipher(algorithms.AES(key), modes.CTR(block)).encryptor()
    return codec.update(data) + codec.finalize()


class _Audio(asyncio.DatagramProtocol):
    def __init__(self, inbox: asyncio.Queue[dict[str, Any] | bytes]) -> None:
        self.inbox = inbox

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.inbox.put_nowait(data)


@dataclass
class MqttDevice:
    """One device: `log` records what the server sent (JSON dicts and decrypted Opus packets)."""

    block: dict[str, Any]
    client: aiomqtt.Client
    hello: dict[str, Any] = field(default_factory=dict)
    log: list[dict[str, Any] | bytes] = field(default_factory=list)
    key: bytes = b""
    nonce: bytes = b""
    sequence: int = 0
    #: downlink datagrams the device refused (bad type or length, an old sequence)
    refused: int = 0
    sequences_in: list[int] = field(default_factory=list)
    #: JSON messages (dicts) and UDP datagrams (bytes) as they arrive
    _inbox: asyncio.Queue[dict[str, Any] | bytes] = field(default_factory=asyncio.Queue)
    _udp: asyncio.DatagramTransport | None = None
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, block: dict[str, Any]) -> MqttDevice:
        host, _, port = block["endpoint"].rpartition(":")
        client = aiomqtt.Client(
            host,
            int(port),
            identifier=block["client_id"],
            username=block["username"] or None,
            password=block["password"] or None,
        )
        await client.__aenter__()
        await client.subscribe(block["subscribe_topic"])
        device = cls(block, client)
        device._reader = asyncio.create_task(device._read())
        return device

    async def _read(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            self._inbox.put_nowait(json.loads(message.payload))

    async def send(self, message: dict[str, Any]) -> None:
        await self.publish(json.dumps(message))

    async def publish(self, payload: str | bytes) -> None:
        await self.client.publish(self.block["publish_topic"], payload)

    async def open_audio(
        self, features: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        """hello with transport udp; the server's hello gives the UDP address, key and nonce."""
        await self.send(
            {
                "type": "hello",
                "version": 3,
                "transport": "udp",
                "features": features or {"mcp": True},
                "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60},
            }
        )
        self.hello = await self.until_json("hello", timeout=timeout)
        udp = self.hello["udp"]
        self.key, self.nonce = bytes.fromhex(udp["key"]), bytes.fromhex(udp["nonce"])
        assert len(self.key) == 16 and len(self.nonce) == 16
        self.sequence = 0
        if self._udp is not None:
            self._udp.close()
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Audio(self._inbox), remote_addr=(udp["server"], udp["port"])
        )
        return self.hello

    async def listen(self, mode: str = "auto") -> None:
        """`listen start`, known to be processed when this returns: JSON (over the broker) is slower
        than audio (straight over UDP), so a frame the server answers (an unknown type: an alert)
        follows it, and its answer comes after the listen took effect."""
        await self.send(
            {"session_id": self.hello["session_id"], "type": "listen", "state": "start", "mode": mode}
        )
        await self.send({"type": "barrier"})
        alert = await self.until_json("alert")
        assert "barrier" in alert["message"]
        self.log.clear()

    def datagram(self, opus: bytes, *, key: bytes | None = None, sequence: int | None = None) -> bytes:
        """One uplink datagram as the firmware makes it (the next sequence unless one is given)."""
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        header = bytearray(self.nonce)
        struct.pack_into(">H", header, 2, len(opus))
        struct.pack_into(">II", header, 8, sequence * 60, sequence)
        return bytes(header) + ctr(key or self.key, bytes(header), opus)

    def send_datagram(self, data: bytes) -> None:
        assert self._udp is not None
        self._udp.sendto(data)

    def speak(self, pcm: bytes, *, key: bytes | None = None) -> list[bytes]:
        """Send `pcm` as 60 ms Opus packets; returns the datagrams sent."""
        sent = [self.datagram(packet, key=key) for packet in opus_packets(pcm)]
        for data in sent:
            self.send_datagram(data)
        return sent

    def _downlink(self, data: bytes) -> bytes | None:
        if len(data) < HEADER.size:
            self.refused += 1
            return None
        kind, _, size, _, _, sequence = HEADER.unpack_from(data)
        last = self.sequences_in[-1] if self.sequences_in else 0
        if kind != 1 or size != len(data) - HEADER.size or sequence <= last:
            self.refused += 1
            return None
        self.sequences_in.append(sequence)
        return ctr(self.key, data[: HEADER.size], data[HEADER.size :])

    async def next(self, timeout: float = 20.0) -> dict[str, Any] | bytes:
        """The next JSON message or downlink packet, in the order they arrived."""
        async with asyncio.timeout(timeout):
            while True:
                item = await self._inbox.get()
                if isinstance(item, bytes):
                    packet = self._downlink(item)
                    if packet is None:
                        continue
                    item = packet
                self.log.append(item)
                return item

    async def until_json(self, kind: str, state: str | None = None, timeout: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                item = await self.next(timeout)
                if isinstance(item, dict) and item.get("type") == kind and state in (None, item.get("state")):
                    return item

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.client.__aexit__(None, None, None)
