"""XiaoZhi audio over UDP: the 16-byte header, AES-128-CTR, replay protection, one socket for all.

    | type 1u = 0x01 | flags 1u | payload_len 2u | ssrc 4u | timestamp 4u | sequence 4u | payload |

big-endian; the payload is one Opus packet encrypted with AES-128-CTR whose initial counter block
is the header itself. A session's key and nonce are random (the server hello gives them to the
device over its MQTT topic); the device writes its payload length, timestamp and sequence over
the nonce to make each header, so the nonce's ssrc names the session in every datagram.

What is dropped (counted by reason, logged at debug, never an error for anyone else): a datagram
too short or too long, of another type, whose length disagrees with its header, of an unknown
ssrc, with a sequence not greater than the last accepted one (a replay, or late), or whose
plaintext is not an Opus packet of the session's frame length. CTR mode authenticates nothing:
a wrong key decrypts to noise, and that last check is what keeps such noise out of the call
(random bytes pass it about one time in forty; the decoder refuses most of the rest). Only a
datagram that passes every check moves the session's sequence and its address, so a forged one
cannot push a device's own packets out or redirect its downlink.

Uplink and downlink share the key: Parley's packets carry `DOWNLINK_FLAGS` where the device's
carry the nonce's flags (zero), so no downlink counter block ever repeats an uplink one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from parley.xiaozhi.protocol import FRAME_MS, MAX_FRAME_BYTES

log = logging.getLogger("parley.xiaozhi.udp")

HEADER = struct.Struct(">BBHIII")
HEADER_BYTES = HEADER.size
TYPE_AUDIO = 0x01
DOWNLINK_FLAGS = 0x01
KEY_BYTES = 16


@dataclass(slots=True, frozen=True)
class Header:
    flags: int
    payload_len: int
    ssrc: int
    timestamp: int
    sequence: int

    def pack(self) -> bytes:
        return HEADER.pack(
            TYPE_AUDIO,
            self.flags,
            self.payload_len,
            self.ssrc,
            self.timestamp & 0xFFFFFFFF,
            self.sequence & 0xFFFFFFFF,
        )


class Dropped(Exception):
    """A datagram refused; `reason` is the counter it is counted under."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def unpack_header(datagram: bytes) -> Header:
    if len(datagram) < HEADER_BYTES:
        raise Dropped("short")
    if len(datagram) > HEADER_BYTES + MAX_FRAME_BYTES:
        raise Dropped("too_long")
    kind, flags, size, ssrc, timestamp, sequence = HEADER.unpack_from(datagram)
    if kind != TYPE_AUDIO:
        raise Dropped("type")
    if size != len(datagram) - HEADER_BYTES:
        raise Dropped("length")
    return Header(flags, size, ssrc, timestamp, sequence)


def crypt(key: bytes, counter_block: bytes, data: bytes) -> bytes:
    """AES-128-CTR both ways (encryption and decryption are the same keystream XOR)."""
    codec = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()
    return codec.update(data) + codec.finalize()


#: frame length of each Opus configuration (RFC 6716 section 3.1), in tenths of a millisecond
_SILK = (100, 200, 400, 600)
_CELT = (25, 50, 100, 200)


def opus_duration_ms(packet: bytes) -> float | None:
    """The audio length an Opus packet's TOC byte declares (RFC 6716 3.1-3.2); None if malformed."""
    if not packet:
        return None
    toc = packet[0]
    config, code = toc >> 3, toc & 0x03
    if config < 12:
        frame = _SILK[config % 4]
    elif config < 16:
        frame = _SILK[config % 2]
    else:
        frame = _CELT[config % 4]
    if code == 0:
        frames = 1
    elif code in (1, 2):
        if code == 1 and (len(packet) - 1) % 2:
            return None  # two frames of equal size need an even payload
        frames = 2
    else:
        if len(packet) < 2:
            return None
        frames = packet[1] & 0x3F
    if frames == 0 or frames * frame > 1200:
        return None
    return frames * frame / 10


class UdpSession:
    """One device's audio channel: its key and nonce, the sequences both ways, where it is."""

    def __init__(self, endpoint: UdpEndpoint, ssrc: int, on_audio: Callable[[bytes], None]) -> None:
        self.endpoint = endpoint
        self.ssrc = ssrc
        self.key = secrets.token_bytes(KEY_BYTES)
        # the device keeps the type, flags and ssrc of the nonce in every header it sends
        self.nonce = Header(0, 0, ssrc, 0, 0).pack()
        self.on_audio = on_audio
        self.frame_ms: float = FRAME_MS
        self.address: tuple[str, int] | None = None
        self.last_sequence = 0
        self._sequence_out = 0
        self._timestamp_out = 0
        self.packets_in = 0
        self.packets_out = 0
        #: downlink packets with nowhere to go (the device has not sent a datagram yet)
        self.unsent = 0

    def hello_block(self) -> dict[str, Any]:
        host, port = self.endpoint.announced
        return {"server": host, "port": port, "key": self.key.hex(), "nonce": self.nonce.hex()}

    def receive(self, header: Header, datagram: bytes, address: tuple[str, int]) -> None:
        if header.sequence <= self.last_sequence:
            raise Dropped("replayed")
        opus = crypt(self.key, datagram[:HEADER_BYTES], datagram[HEADER_BYTES:])
        if opus_duration_ms(opus) != self.frame_ms:
            raise Dropped("not_opus")
        self.last_sequence = header.sequence
        self.address = address
        self.packets_in += 1
        self.on_audio(opus)

    def send(self, opus: bytes) -> None:
        """One downlink packet (bare Opus), encrypted, to where the device last sent from."""
        self._sequence_out += 1
        header = Header(DOWNLINK_FLAGS, len(opus), self.ssrc, self._timestamp_out, self._sequence_out)
        self._timestamp_out += int(self.frame_ms)
        if self.address is None:
            self.unsent += 1
            return
        block = header.pack()
        self.endpoint.sendto(block + crypt(self.key, block, opus), self.address)
        self.packets_out += 1

    def close(self) -> None:
        self.endpoint.forget(self)


class UdpEndpoint(asyncio.DatagramProtocol):
    """The one UDP socket of every device's audio; datagrams go to sessions by ssrc."""

    def __init__(self, announced_host: str) -> None:
        self.announced_host = announced_host
        self.sessions: dict[int, UdpSession] = {}
        self.dropped: Counter[str] = Counter()
        self._transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @classmethod
    async def bind(cls, host: str, port: int, *, announced_host: str) -> UdpEndpoint:
        loop = asyncio.get_running_loop()
        _, endpoint = await loop.create_datagram_endpoint(
            lambda: cls(announced_host), local_addr=(host, port)
        )
        return endpoint

    @property
    def announced(self) -> tuple[str, int]:
        return self.announced_host, self.port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        self.port = transport.get_extra_info("sockname")[1]

    def open(self, on_audio: Callable[[bytes], None]) -> UdpSession:
        """A new session with a fresh key, nonce and ssrc (never one that is in use)."""
        while (ssrc := secrets.randbits(32)) in self.sessions or ssrc == 0:
            pass
        session = UdpSession(self, ssrc, on_audio)
        self.sessions[ssrc] = session
        return session

    def forget(self, session: UdpSession) -> None:
        if self.sessions.get(session.ssrc) is session:
            del self.sessions[session.ssrc]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            header = unpack_header(data)
            session = self.sessions.get(header.ssrc)
            if session is None:
                raise Dropped("unknown_ssrc")
            session.receive(header, data, addr)
        except Dropped as exc:
            self.dropped[exc.reason] += 1
            log.debug(
                "udp datagram from %s:%d dropped: %s (%d bytes)", addr[0], addr[1], exc.reason, len(data)
            )

    def error_received(self, exc: Exception) -> None:
        log.debug("udp socket error: %s", exc)

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, address)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
