"""Turn a live 16 kHz stream into speech-start / speech-end events, whatever the frame model.

The decision is Silero's own hysteresis with pipecat's start delay:
- silence -> speech after `start_secs` of consecutive frames at or above `threshold`;
- speech -> silence after `stop_secs` counted from the first frame below `threshold - 0.15`,
  a run that only a frame back at or above `threshold` breaks (frames in between are unsure
  and count as neither).

Keeping the end decision close to the nominal hangover: Silero's probability does not drop at
the last phoneme but decays over two or three frames (1.0 -> 0.9 -> 0.5 -> 0.2), which is where
pipecat loses ~70 ms. The low exit threshold catches the decay early, and the hangover is counted
from the start of the decay (the strictly falling frames after the last confident one, at most
`DECAY_SECS` back), because those frames were already silence the model had not caught up with. Measured on
espeak speech with faint noise: speech_end lands 20-50 ms after the true end, so the decision
comes ~30 ms past the nominal hangover instead of ~80 ms without the back-dating.

The hangover is counted as `stop_secs` minus half a frame, in audio received rather than scored:
the quiet run starts on a frame boundary, on average half a frame after the true edge; and a
32 ms Silero frame fills from 20 ms packets, so waiting for it to be whole cost another ~8 ms.
The end is decided at the packet nearest to the hangover, the last fraction of a frame unscored
(if speech comes back in it, the next start continues the utterance: see voice/pipeline.py).
In the voice bench this puts the decision 180-200 ms after the true end for a 200 ms hangover,
where whole frames put it at ~220 ms.

Events carry the stream time of the speech edge itself, not of the decision; a caller that wants
the decision latency compares `at` with `received` when the event comes back.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from parley.providers.vad import SAMPLE_RATE, SpeechModel, VADEvent

#: below this many frames a chunk is scored inline: a thread hop costs more than 1-2 frames
INLINE_FRAMES = 2
#: Silero's own gap between its entry and exit thresholds
EXIT_GAP = 0.15
#: a probability this high is speech for sure; the decay towards silence starts after it
CONFIDENT = 0.95
#: how far back a quiet run may be dated into the model's decay (Silero: 2-3 frames)
DECAY_SECS = 0.1


@runtime_checkable
class ScoresFrames(Protocol):
    """A model that scores several frames of one stream at once (cheaper than one by one)."""

    def score_frames(self, frames: bytes) -> list[float]: ...


@dataclass(slots=True)
class _State:
    speaking: bool = False
    run_start: int | None = None  # frame index where the current candidate run began
    run_frames: int = 0  # frames since run_start (the candidate start or hangover run)


class VADStream:
    """One per audio stream; not safe to feed from two tasks at once (`feed_async` serialises).

    `model` must have clean state for this stream (`SpeechModel.fresh()`).
    """

    def __init__(
        self, model: SpeechModel, *, threshold: float = 0.5, start_secs: float = 0.2, stop_secs: float = 0.2
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be between 0 and 1")
        if start_secs < 0 or stop_secs < 0:
            raise ValueError("start_secs and stop_secs must not be negative")
        self.model = model
        self.threshold = threshold
        # Never 0: with a yes/no model (webrtcvad: 0.0/1.0) a 0.0 frame must still count as silence.
        self.exit_threshold = max(threshold - EXIT_GAP, threshold / 2)
        self.frame_samples = model.frame_samples
        self.frame_secs = self.frame_samples / SAMPLE_RATE
        # Rounded, not ceiled: the start lands within half a frame of the nominal delay.
        self.start_frames = max(1, round(start_secs / self.frame_secs))
        #: quiet audio after the end edge (scored or not) that ends the speech (see above)
        self.hangover_secs = max(0.0, stop_secs - self.frame_secs / 2)
        #: quiet frames that end the speech on their own (within one `feed`)
        self.stop_frames = max(1, math.ceil(self.hangover_secs / self.frame_secs - 1e-9))
        self._decay_frames = round(DECAY_SECS / self.frame_secs)
        self._confident = max(CONFIDENT, threshold)
        # one more than the decay can span: the frame before the decay tells where it began
        self._recent: deque[float] = deque(maxlen=self._decay_frames + 1)
        self._frame_bytes = self.frame_samples * 2
        self._many = model if isinstance(model, ScoresFrames) else None
        self._buffer = bytearray()
        self._frames = 0  # frames scored since the stream began
        self._state = _State()
        self._lock = asyncio.Lock()

    @property
    def speaking(self) -> bool:
        return self._state.speaking

    @property
    def position(self) -> float:
        """Seconds of audio scored so far (the stream clock events are measured on)."""
        return self._frames * self.frame_secs

    @property
    def received(self) -> float:
        """Seconds of audio fed so far, scored or still short of a whole frame."""
        return self.position + len(self._buffer) // 2 / SAMPLE_RATE

    def feed(self, pcm: bytes) -> list[VADEvent]:
        """Score every whole frame now buffered (CPU work: ~0.06 ms per Silero frame on onnxruntime)."""
        self._buffer += pcm
        whole = len(self._buffer) - len(self._buffer) % self._frame_bytes
        events: list[VADEvent] = []
        if whole:
            view = bytes(self._buffer[:whole])
            del self._buffer[:whole]
            if self._many is not None:
                scores = self._many.score_frames(view)
            else:
                step = self._frame_bytes
                scores = [self.model.probability(view[i : i + step]) for i in range(0, whole, step)]
            for score in scores:
                event = self._step(score)
                if event is not None:
                    events.append(event)
        if (end := self._end_before_frame(len(pcm))) is not None:
            events.append(end)
        return events

    async def feed_async(self, pcm: bytes) -> list[VADEvent]:
        """`feed` for the event loop: inline for a packet or two, in a worker thread beyond that."""
        async with self._lock:
            pending = (len(self._buffer) + len(pcm)) // self._frame_bytes
            if pending <= INLINE_FRAMES:
                return self.feed(pcm)
            return await asyncio.to_thread(self.feed, pcm)

    def flush(self) -> list[VADEvent]:
        """End of stream: close an open speech segment and start the next stream from clean state.

        A trailing partial frame is not scored (at most 32 ms), but it still counts as time.
        """
        tail = len(self._buffer) // 2 / SAMPLE_RATE
        self._buffer.clear()
        events: list[VADEvent] = []
        state = self._state
        if state.speaking:
            # Still inside the hangover: the speech ended where the quiet run began.
            quiet = state.run_start
            at = quiet * self.frame_secs if quiet is not None else self.position + tail
            events.append(VADEvent("speech_end", at))
        self._state = _State()
        self._recent.clear()
        self.model.reset()
        return events

    def _end_before_frame(self, packet_bytes: int) -> VADEvent | None:
        """End the speech now if the quiet run plus the unscored tail reaches the hangover, to
        within half a packet (the next packet would overshoot it by more)."""
        state = self._state
        if not state.speaking or state.run_start is None:
            return None
        unscored = len(self._buffer) // 2 / SAMPLE_RATE
        rounding = min(packet_bytes, self._frame_bytes) // 2 / 2 / SAMPLE_RATE
        if state.run_frames * self.frame_secs + unscored + rounding < self.hangover_secs:
            return None
        end = state.run_start
        self._state = _State()
        return VADEvent("speech_end", end * self.frame_secs)

    def _decay(self, recent: list[float]) -> int:
        """How many frames just before the first quiet one were the model's fall from speech:
        each below the confident level and strictly below the one before it. A model that stays
        flat (webrtcvad's 1.0s, a steady 0.8) has no decay to date back into."""
        decay = 0
        for later, earlier in zip(reversed(recent), reversed(recent[:-1]), strict=False):
            if later >= self._confident or later >= earlier:
                break
            decay += 1
        return decay

    def _step(self, probability: float) -> VADEvent | None:
        index = self._frames
        self._frames += 1
        state = self._state
        if not state.speaking:
            if probability >= self.threshold:
                if state.run_start is None:
                    state.run_start, state.run_frames = index, 0
                state.run_frames += 1
                if state.run_frames >= self.start_frames:
                    start = state.run_start
                    self._state = _State(speaking=True)
                    self._recent.clear()
                    return VADEvent("speech_start", start * self.frame_secs)
            else:
                state.run_start, state.run_frames = None, 0
            return None
        recent = list(self._recent)
        self._recent.append(probability)
        if probability >= self.threshold:
            state.run_start, state.run_frames = None, 0
            return None
        if state.run_start is None:
            if probability >= self.exit_threshold:
                return None  # unsure, and no quiet run to extend
            decay = self._decay(recent)
            state.run_start, state.run_frames = index - decay, decay
        state.run_frames += 1
        if state.run_frames >= self.stop_frames:
            end = state.run_start
            self._state = _State()
            return VADEvent("speech_end", end * self.frame_secs)
        return None
