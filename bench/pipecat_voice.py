"""The voice scenario through pipecat's own pipeline; runs inside pipecat's virtualenv.

    `.bench-venv/pipecat/bin/python bench/pipecat_voice.py --calls 1 --turns 6`

Prints one JSON `Run` per line (the last lines of stdout); `voice.py` creates the virtualenv and
runs this. Each call is its own `PipelineTask`:

    InputAudioRawFrame (20 ms, real time) -> VADProcessor(SileroVADAnalyzer, stop 0.2 s)
    -> FixedSTT (SegmentedSTTService) -> LLMUserAggregator -> FixedLLM -> FixedTTS -> sink

The user turn ends on the VAD's stop plus the final transcript (SpeechTimeoutUserTurnStopStrategy
with no extra wait): the same rule as Parley's, rather than pipecat's default smart-turn model. The
sink stamps the first TTSAudioRawFrame of each turn: audio leaving the pipeline towards a transport.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.time import time_now_iso8601

from voice_common import (
    FIRST_TOKEN,
    RATE,
    STAGGER_SECS,
    STOP_SECS,
    STT_DELAY,
    TOKEN_INTERVAL,
    TRANSCRIPT,
    TTS_FIRST_BYTE,
    TTS_SECS_PER_CHAR,
    Run,
    cpu_seconds,
    reply_tokens,
    schedule,
    sleep_until,
    speech,
    timeline,
)

TTS_RATE = 24000


class FixedSTT(SegmentedSTTService):
    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        await asyncio.sleep(STT_DELAY)
        yield TranscriptionFrame(TRANSCRIPT, "", time_now_iso8601(), finalized=True)


class FixedLLM(LLMService):
    """EchoChat's reply at EchoChat's pace, one word per token."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(LLMFullResponseStartFrame())
        await asyncio.sleep(FIRST_TOKEN)
        for i, token in enumerate(reply_tokens()):
            if i:
                await asyncio.sleep(TOKEN_INTERVAL)
            await self.push_frame(LLMTextFrame(token))
        await self.push_frame(LLMFullResponseEndFrame())


class FixedTTS(TTSService):
    """FixedLatencyTTS: first audio after 100 ms, then a tone as long as the text says."""

    def can_generate_metrics(self) -> bool:
        return False

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        await asyncio.sleep(TTS_FIRST_BYTE)
        total = round(len(text) * TTS_SECS_PER_CHAR * TTS_RATE)
        step = TTS_RATE // 5
        for start in range(0, total, step):
            t = np.arange(start, min(total, start + step)) / TTS_RATE
            pcm = (0.3 * 32767 * np.sin(2 * np.pi * 220.0 * t)).astype("<i2").tobytes()
            yield TTSAudioRawFrame(audio=pcm, sample_rate=TTS_RATE, num_channels=1, context_id=context_id)


class Stamp(FrameProcessor):
    """Passes every frame on; notes when frames of the given types go by."""

    def __init__(self, *kinds: type[Frame]) -> None:
        super().__init__()
        self._kinds = kinds
        self.seen: list[float] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, self._kinds):
            self.seen.append(time.perf_counter())
        await self.push_frame(frame, direction)


async def one_call(index: int, turns: int, voice: np.ndarray, start: float, run: Run) -> None:
    vad = VADProcessor(vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=STOP_SECS)))
    after_vad = Stamp(VADUserStoppedSpeakingFrame)
    after_stt = Stamp(TranscriptionFrame)
    after_llm = Stamp(LLMTextFrame)
    sink = Stamp(TTSAudioRawFrame)
    context = LLMContext([{"role": "system", "content": "sys"}])
    strategies = UserTurnStrategies(stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.0)])
    pair = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(user_turn_strategies=strategies)
    )
    pipeline = Pipeline(
        [
            vad,
            after_vad,
            FixedSTT(sample_rate=RATE),
            after_stt,
            pair.user(),
            FixedLLM(),
            after_llm,
            FixedTTS(sample_rate=TTS_RATE),
            sink,
            pair.assistant(),
        ]
    )
    task = PipelineTask(
        pipeline, params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=TTS_RATE)
    )
    runner = PipelineRunner(handle_sigint=False)
    running = asyncio.create_task(runner.run(task))
    line = timeline(voice, turns, seed=index)
    ends: list[float] = []
    await asyncio.sleep(0.3)  # the pipeline's StartFrame reaches every processor
    begun = time.perf_counter()
    start = max(start, begun)
    for i in range(line.frames):
        await sleep_until(schedule(start, i))
        await task.queue_frame(InputAudioRawFrame(audio=line.frame(i), sample_rate=RATE, num_channels=1))
        if i + 1 in line.ends:
            ends.append(time.perf_counter())
    await task.queue_frame(EndFrame())
    await asyncio.wait_for(running, 10)
    run.call_s += time.perf_counter() - start
    for k, end in enumerate(ends):
        until = ends[k + 1] if k + 1 < len(ends) else float("inf")
        audio = next((t for t in sink.seen if end < t < until), None)
        if audio is None:
            run.missed += 1
            continue
        run.latency.append((audio - end) * 1000)
        decided = next((t for t in after_vad.seen if end < t < until), None)
        if decided is not None:
            run.vad.append((decided - end) * 1000)
        for name, stamps in (("transcript", after_stt.seen), ("first_token", after_llm.seen)):
            at = next((t for t in stamps if end < t < until), None)
            if at is not None:
                run.extra.setdefault(name, []).append((at - end) * 1000)


async def measure(calls: int, turns: int, voice: np.ndarray) -> Run:
    run = Run("pipecat", calls)
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    first = time.perf_counter() + 0.5
    await asyncio.gather(
        *(one_call(i, turns, voice, first + STAGGER_SECS * i / calls, run) for i in range(calls))
    )
    run.cpu_s = cpu_seconds() - cpu0
    run.wall_s = time.perf_counter() - wall0
    return run


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, nargs="+", default=[1])
    parser.add_argument("--turns", type=int, nargs="+", default=[6])
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    voice = speech()
    for calls, turns in zip(args.calls, args.turns, strict=True):
        run = await measure(calls, turns, voice)
        print(run.to_json(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
