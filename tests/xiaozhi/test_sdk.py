"""xiaozhi-sdk, a public XiaoZhi client from PyPI, talks to Parley: OTA, hello, streamed 60 ms Opus
speech, the reply's stt / tts start / audio / tts stop, a second turn, and an abort mid-reply.

The client runs in its own process (tests/xiaozhi/sdk_client.py: the SDK patches ctypes for the
whole process); the server is the real app with the fixed test providers and Silero VAD.
"""

from __future__ import annotations

import asyncio
import json
import sys
import wave
from pathlib import Path
from typing import Any

from parley.config import Settings
from parley.providers.factory import build_vad
from parley.providers.testing import EchoChat
from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS
from tests.conftest import ServerFactory, make_settings, require_package
from tests.xiaozhi.conftest import Speech

CLIENT = Path(__file__).with_name("sdk_client.py")
HEARD = "turn on the lights"
TTS = FixedLatencyTTS(first_byte=0.05, secs_per_char=0.03)


async def test_the_public_client_talks_to_parley(
    serve: ServerFactory, tmp_path: Path, speech: Speech
) -> None:
    require_package("xiaozhi_sdk", "the dev extra installs it")
    settings: Settings = make_settings(tmp_path / "data", vad="silero")
    server = serve(
        chat=EchoChat(), stt=FixedLatencySTT(text=HEARD), tts=TTS, vad=build_vad(settings), settings=settings
    )
    wav = tmp_path / "question.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(speech("Please turn on the kitchen lights.", before=0.5, after=0.0))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT),
        f"{server.url}/xiaozhi/ota",
        str(wav),
        "00:11:22:33:44:55",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        async with asyncio.timeout(120):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:  # timed out: the client must not outlive the test
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()[-2000:]
    lines: list[dict[str, Any]] = [
        json.loads(line) for line in out.decode().splitlines() if line.startswith("{")
    ]
    turns = [line for line in lines if line["event"] == "turn"]
    assert [t["turn"] for t in turns] == [0, 1]
    reply = f"You said: {HEARD}"
    # every 60 ms frame of the reply, and no more (the client pads or drops off-length packets)
    expected = -(-round(TTS.duration(reply) * 1000) // 60)
    assert all(abs(t["frames"] - expected) <= 1 for t in turns), (turns, expected)
    messages = [line["message"] for line in lines if line["event"] == "message"]
    kinds = [(m["type"], m.get("state")) for m in messages]
    first = kinds[: kinds.index(("tts", "stop")) + 1]
    assert first[0] == ("stt", None) and messages[0]["text"] == HEARD
    assert ("tts", "start") in first and ("tts", "sentence_start") in first
    aborted = next(line for line in lines if line["event"] == "aborted")
    long_reply = TTS.duration(
        "You said: tell me a very long story about the sea and the sky and all the stars above"
    )
    assert aborted["frames"] < long_reply / 0.06 / 2
