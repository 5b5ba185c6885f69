"""The binary framing and the message models, on their own."""

from __future__ import annotations

import struct

import pytest

from parley.errors import InvalidInput, PayloadTooLarge
from parley.xiaozhi import protocol
from parley.xiaozhi.emotion import emotion_of
from parley.xiaozhi.protocol import Listen, ListenMode, ListenState, PayloadType


@pytest.mark.parametrize("version", [1, 2, 3])
def test_frames_round_trip_in_every_version(version: int) -> None:
    payload = bytes(range(200))
    frame = protocol.pack(version, payload, timestamp=120)
    assert len(frame) == len(payload) + {1: 0, 2: 16, 3: 4}[version]
    packet = protocol.unpack(version, frame)
    assert packet.payload == payload and packet.kind is PayloadType.OPUS
    assert packet.timestamp == (120 if version == 2 else 0)


def test_headers_are_big_endian_as_documented() -> None:
    assert protocol.pack(2, b"ab", timestamp=1) == struct.pack(">HHIII", 2, 0, 0, 1, 2) + b"ab"
    assert protocol.pack(3, b"ab") == b"\x00\x00\x00\x02ab"
    assert protocol.unpack(3, b"\x01\x00\x00\x02{}").kind is PayloadType.JSON


def test_versions_other_than_1_2_3_are_refused_by_name() -> None:
    assert protocol.check_version(None) == 1 and protocol.check_version("3") == 3
    for bad in ("0", "4", "two"):
        with pytest.raises(InvalidInput) as refused:
            protocol.check_version(bad)
        assert refused.value.field == "Protocol-Version"


def test_oversized_and_short_frames() -> None:
    with pytest.raises(PayloadTooLarge):
        protocol.unpack(1, bytes(protocol.MAX_FRAME_BYTES + 1))
    with pytest.raises(InvalidInput) as short:
        protocol.unpack(2, b"\x00" * 15)
    assert short.value.limit == 16


def test_messages_parse_into_their_models() -> None:
    message = protocol.parse_message('{"type":"listen","state":"detect","mode":"realtime","text":"hi","x":1}')
    assert message == Listen(type="listen", state=ListenState.DETECT, mode=ListenMode.REALTIME, text="hi")
    with pytest.raises(InvalidInput) as bad:
        protocol.parse_message('{"type":"hello","audio_params":{"sample_rate":5}}')
    assert bad.value.field == "audio_params.sample_rate"


def test_emotions_follow_the_reply() -> None:
    assert emotion_of("I'm sorry, I can't do that.") == "sad"
    assert emotion_of("Great, the lights are on!") == "happy"
    assert emotion_of("It is 5 o'clock.") == "neutral"
    assert emotion_of("Sure 😂") == "laughing"
