"""A public XiaoZhi client (xiaozhi-sdk from PyPI) against a Parley: run as a script, in its own
process, because the SDK patches ctypes' library lookup for the whole process on import.

    python sdk_client.py OTA_URL SPEECH_WAV MAC

It does what the SDK's users do: OTA, hello, `listen start` in realtime mode, the microphone
streamed as 60 ms Opus frames in real time (speech, then silence until the reply ends), twice;
then a typed turn aborted once its first audio arrived. Every server message and the count of
audio frames received is printed as one JSON line; the exit status is 0 when all of it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import wave
from typing import Any

FRAME = 960  # 60 ms at 16 kHz


def say(kind: str, **fields: Any) -> None:
    print(json.dumps({"event": kind, **fields}), flush=True)


async def main(ota_url: str, wav_path: str, mac: str) -> int:
    from xiaozhi_sdk import XiaoZhiWebsocket

    stopped = asyncio.Event()

    async def on_message(message: dict[str, Any]) -> None:
        say("message", message=message)
        if message.get("type") == "tts" and message.get("state") == "stop":
            stopped.set()

    # the SDK's microphone default is 24 kHz; the recording is 16 kHz (its `send_audio` takes whole
    # 60 ms frames at the rate it was told)
    client = XiaoZhiWebsocket(on_message, ota_url=ota_url, audio_sample_rate=16000)
    if not await client.init_connection(mac):
        say("failed", why="init_connection")
        return 1
    say("connected", session_id=client.session_id)
    with wave.open(wav_path) as recording:
        speech = recording.readframes(recording.getnframes())
    for turn in range(2):
        stopped.clear()
        client.output_audio_queue.clear()
        for offset in range(0, len(speech), FRAME * 2):
            await client.send_audio(speech[offset : offset + FRAME * 2].ljust(FRAME * 2, b"\0"))
            await asyncio.sleep(0.06)  # a microphone delivers in real time
        while not stopped.is_set():  # the microphone goes on: silence until the reply ends
            await client.send_audio(bytes(FRAME * 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), 0.06)
        say("turn", turn=turn, frames=len(client.output_audio_queue))
    stopped.clear()
    client.output_audio_queue.clear()
    await client.send_text("tell me a very long story about the sea and the sky and all the stars above")
    while not client.output_audio_queue:  # the reply's first audio frame
        await asyncio.sleep(0.01)
    await client.send_abort()
    await asyncio.wait_for(stopped.wait(), 10)
    say("aborted", frames=len(client.output_audio_queue))
    await client.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:4])))
