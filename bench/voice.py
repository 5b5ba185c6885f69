"""Voice latency: end of speech -> first reply audio, Parley against pipecat, on this machine.

    .venv/bin/python bench/voice.py [--quick] [--no-pipecat]     (also `bench/run.py --voice`)

The scenario is in `voice_common.py` (espeak-ng speech in real time, fixed-latency providers,
Silero with a 0.2 s stop). Three measurements at 1, 10 and 30 concurrent calls, each call its own
session, one after another so they never share the CPU:

- Parley in-process: `VoiceCall` fed 20 ms frames; "ready" is when the first TTS audio reaches the
  playout (what pipecat's figure measures), "packet" when a 20 ms pacer takes the first frame.
- Parley over WebRTC: an aiortc client peer per call on loopback, in a process of its own
  (`voice_client.py`: this process's loop and CPU figure are the server's only; both processes
  stamp on the machine's one monotonic clock); "sent" is when the server's outbound track
  hands the reply's first audible frame to aiortc's encoder, "heard" when the client decodes it.
  The target is judged on "sent": between the two is the client's own receive path (aiortc's
  default jitter buffer holds 4 frames, 80 ms; a browser's adapts), which is not Parley's cost.
- pipecat 1.14 in-process (`pipecat_voice.py`), in `.bench-venv/pipecat`, created here on first use.

Overhead = latency - the VAD's hangover - the providers' time; "nominal" takes the hangover as
stop_secs, "actual" takes the VAD's own decision (true end of speech -> its stop event), which
over WebRTC also holds the inbound transport. Prints markdown; always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import voice_client
from parley.bus.memory import LocalBus
from parley.providers import silero
from parley.providers.testing import EchoChat
from parley.providers.testing_voice import FixedLatencySTT, FixedLatencyTTS
from parley.providers.tts import AudioChunk
from parley.providers.vad import SpeechModel
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig
from parley.store.sqlite import SQLiteStore
from parley.voice.pipeline import VoiceCall, VoiceConfig
from parley.voice.playout import Resampler, pace
from voice_common import (
    AUDIBLE_RMS,
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
    Timeline,
    cpu_seconds,
    load,
    percentile,
    provider_ms,
    rms,
    schedule,
    sleep_until,
    speech,
    timeline,
)

ROOT = Path(__file__).resolve().parents[1]
PIPECAT_VENV = ROOT / ".bench-venv" / "pipecat"
PIPECAT_REQUIREMENT = "pipecat-ai[silero]==1.14.0"  # the version voice-design.md measured
TARGET_P50_MS, TARGET_P95_MS, TARGET_CALLS = 20.0, 50.0, 10
#: (concurrent calls, turns per call)
FULL = ((1, 6), (10, 3), (30, 2))
QUICK = ((1, 3), (10, 1))


class StampedTTS(FixedLatencyTTS):
    """FixedLatencyTTS that notes when each sentence's first audio leaves it (one per call)."""

    def __init__(self) -> None:
        super().__init__(first_byte=TTS_FIRST_BYTE, secs_per_char=TTS_SECS_PER_CHAR)
        self.first_audio: list[float] = []

    async def synthesize(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> AsyncIterator[AudioChunk]:
        first = True
        async for chunk in super().synthesize(text, voice=voice, language=language):
            if first:
                self.first_audio.append(time.perf_counter())
                first = False
            yield chunk


@dataclass(slots=True)
class Probe:
    """One call's stamps: true speech ends, VAD stop decisions, reply audio."""

    ends: list[float]
    decided: list[float]
    ready: list[float]
    packets: list[float]
    sent: list[float] = field(default_factory=list)  # over WebRTC: the server's outbound frames


def stamp_vad(call: VoiceCall, decided: list[float]) -> None:
    """Note the moment the VAD's stop decision comes back to the call (bench-only wrapper)."""
    feed = call.vad.feed_async

    async def feed_async(pcm: bytes) -> list:  # type: ignore[type-arg]
        found = await feed(pcm)
        if any(e.kind == "speech_end" for e in found):
            decided.append(time.perf_counter())
        return found

    call.vad.feed_async = feed_async  # type: ignore[method-assign]


def score(run: Run, probes: list[Probe]) -> None:
    """Per turn: the first reply audio after each true end of speech, before the next one."""
    for probe in probes:
        for k, end in enumerate(probe.ends):
            until = probe.ends[k + 1] if k + 1 < len(probe.ends) else math.inf

            def first(stamps: list[float], end: float = end, until: float = until) -> float | None:
                return next((t for t in stamps if end < t < until), None)

            packet = first(probe.packets)
            if packet is None:
                run.missed += 1
                continue
            run.latency.append((packet - end) * 1000)
            if (decided := first(probe.decided)) is not None:
                run.vad.append((decided - end) * 1000)
            if (ready := first(probe.ready)) is not None:
                run.extra.setdefault("ready", []).append((ready - end) * 1000)
            if (sent := first(probe.sent)) is not None:
                run.extra.setdefault("sent", []).append((sent - end) * 1000)


class Parley:
    """Sessions, storage and the shared LLM for one measurement."""

    def __init__(self, tmp: Path, model: SpeechModel) -> None:
        self.model = model
        self.store = SQLiteStore(tmp / f"voice-{time.monotonic_ns()}.db")
        self.sessions = SessionRegistry(
            store=self.store,
            chat=EchoChat(first_token_delay=FIRST_TOKEN, token_interval=TOKEN_INTERVAL),
            bus=LocalBus(),
            config=SessionConfig(system_prompt="sys", history_limit=20, max_tokens=128, max_queued_turns=4),
        )

    async def __aenter__(self) -> Parley:
        await self.store.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sessions.aclose()
        await self.store.aclose()

    def call(self, index: int, on_event: Callable | None = None) -> tuple[VoiceCall, StampedTTS]:  # type: ignore[type-arg]
        tts = StampedTTS()
        call = VoiceCall(
            f"bench-voice-{index}",
            sessions=self.sessions,
            model=self.model.fresh(),
            stt=FixedLatencySTT(delay=STT_DELAY, text=TRANSCRIPT),
            tts=tts,
            config=VoiceConfig(stop_secs=STOP_SECS),
            on_event=on_event,
        )
        return call, tts


# -- Parley in-process ----------------------------------------------------------------------------


async def inprocess_call(parley: Parley, index: int, line: Timeline, start: float, run: Run) -> Probe:
    call, tts = parley.call(index)
    probe = Probe([], [], tts.first_audio, [])
    stamp_vad(call, probe.decided)

    def sink(at: float, frame: bytes | None) -> None:
        if frame is not None and rms(frame) > AUDIBLE_RMS:
            probe.packets.append(at)

    call.start()
    pacer = asyncio.create_task(pace(call.playout, sink))
    try:
        for i in range(line.frames):
            await sleep_until(schedule(start, i))
            call.push(line.frame(i))
            if i + 1 in line.ends:
                probe.ends.append(time.perf_counter())
    finally:
        pacer.cancel()
        await asyncio.gather(pacer, return_exceptions=True)
        await call.aclose()
    run.call_s += time.perf_counter() - start
    return probe


async def measure_inprocess(tmp: Path, model: SpeechModel, voice: np.ndarray, calls: int, turns: int) -> Run:
    run = Run("parley", calls)
    async with Parley(tmp, model) as parley:
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        first = wall0 + 0.2
        probes = await asyncio.gather(
            *(
                inprocess_call(parley, i, timeline(voice, turns, i), first + STAGGER_SECS * i / calls, run)
                for i in range(calls)
            )
        )
        run.cpu_s, run.wall_s = cpu_seconds() - cpu0, time.perf_counter() - wall0
    score(run, list(probes))
    return run


# -- Parley over aiortc on loopback ---------------------------------------------------------------


async def measure_rtc(
    tmp: Path, model: SpeechModel, voice: np.ndarray, calls: int, turns: int, prefetch: int | None = None
) -> Run:
    """The callers run in a spawned process (`voice_client.py`); this process answers them."""
    from parley.rtc.peer import CallPeer

    run = Run("parley-webrtc", calls)
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe()
    child = spawn.Process(
        target=voice_client.main, args=(theirs, voice, calls, turns, prefetch), name="voice-callers"
    )
    peers: list[CallPeer] = []
    probes: dict[int, Probe] = {}

    async def answer(index: int, sdp: str) -> None:
        peer = CallPeer(f"call_bench_{index}", idle_seconds=60)
        peers.append(peer)
        call, tts = parley.call(index, on_event=peer.send)
        probe = probes[index] = Probe([], [], tts.first_audio, [])
        stamp_vad(call, probe.decided)
        read_frame = call.read_frame

        def stamp_sent() -> bytes | None:  # what the server's PlayoutTrack hands to aiortc
            frame = read_frame()
            if frame is not None and rms(frame) > AUDIBLE_RMS:
                probe.sent.append(time.perf_counter())
            return frame

        call.read_frame = stamp_sent  # type: ignore[method-assign]  # before answer() wires the track
        call.start()
        ours.send(("answer", index, await peer.answer(call, sdp)))

    async with Parley(tmp, model) as parley:
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        child.start()
        answering: list[asyncio.Task[None]] = []
        done = 0
        try:
            while done < calls:
                kind, index, payload = await asyncio.to_thread(_receive, ours, child)
                if kind == "offer":
                    answering.append(asyncio.create_task(answer(index, payload)))
                    continue
                done += 1
                heard: voice_client.Heard = payload
                probes[index].ends, probes[index].packets = heard.ends, heard.packets
                run.call_s += heard.call_s
            await asyncio.gather(*answering)
        finally:
            await asyncio.gather(*(peer.aclose("hangup") for peer in peers), return_exceptions=True)
            await asyncio.to_thread(child.join, 30)
        run.cpu_s, run.wall_s = cpu_seconds() - cpu0, time.perf_counter() - wall0
    score(run, [probes[i] for i in sorted(probes)])
    return run


def _receive(conn: Connection, child: BaseProcess) -> Any:
    """The callers' next message; an error, not a hang, if their process died."""
    while not conn.poll(0.5):
        if not child.is_alive():
            raise RuntimeError(f"the callers' process exited with {child.exitcode}")
    return conn.recv()


# -- pipecat, in its own virtualenv ---------------------------------------------------------------


def pipecat_python() -> tuple[Path | None, str]:
    """The pipecat virtualenv's interpreter, created on first use; (None, why) if it cannot be."""
    python = PIPECAT_VENV / "bin" / "python"
    if python.exists():
        return python, "existing"
    steps = (
        [sys.executable, "-m", "venv", str(PIPECAT_VENV)],
        [str(python), "-m", "pip", "install", "-q", PIPECAT_REQUIREMENT],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, f"`{' '.join(step)}` failed: " + " / ".join(tail)
    return python, "created"


def measure_pipecat(python: Path, plan: tuple[tuple[int, int], ...]) -> tuple[list[Run], str]:
    done = subprocess.run(
        [
            str(python),
            str(Path(__file__).resolve().parent / "pipecat_voice.py"),
            "--calls",
            *(str(c) for c, _ in plan),
            "--turns",
            *(str(t) for _, t in plan),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    runs = [Run.from_json(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        return runs, "pipecat run failed: " + " / ".join(done.stderr.strip().splitlines()[-3:])
    return runs, ""


def pipecat_version(python: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('pipecat-ai'), m.version('onnxruntime'))"
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=False
    ).stdout.split()
    return f"pipecat-ai {out[0]}, onnxruntime {out[1]}" if len(out) == 2 else "pipecat-ai ?"


# -- the report -----------------------------------------------------------------------------------


def fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def row(label: str, run: Run, latency: list[float]) -> list[str]:
    provider = provider_ms()
    nominal = [v - STOP_SECS * 1000 - provider for v in latency]
    actual = (
        [v - d - provider for v, d in zip(latency, run.vad, strict=False)]
        if len(run.vad) == len(latency)
        else []
    )
    return [
        label,
        str(run.calls),
        f"{len(latency)}" + (f" ({run.missed} missed)" if run.missed else ""),
        fmt(percentile(latency, 50)),
        fmt(percentile(latency, 95)),
        fmt(percentile(run.vad, 50)),
        fmt(percentile(nominal, 50)),
        fmt(percentile(nominal, 95)),
        fmt(percentile(actual, 50)),
        fmt(percentile(actual, 95)),
        f"{run.cpu_share() * 100:.1f}",
        f"{run.cpu_s / max(1, len(latency)):.2f}",
    ]


HEADERS = [
    "system",
    "calls",
    "turns",
    "latency p50",
    "p95",
    "VAD stop p50",
    "overhead nominal p50",
    "p95",
    "overhead actual p50",
    "p95",
    "CPU % core/call",
    "CPU s/turn",
]


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def verdicts(label: str, run: Run, latency: list[float]) -> list[str]:
    overhead = [v - STOP_SECS * 1000 - provider_ms() for v in latency]
    out = []
    for q, target in ((50, TARGET_P50_MS), (95, TARGET_P95_MS)):
        value = percentile(overhead, q)
        word = "PASS" if value < target else "MISS"
        out.append(
            f"{word} {label} overhead p{q} at {run.calls} calls: {value:.1f} ms (target < {target:g} ms)"
        )
    return out


async def bench(plan: tuple[tuple[int, int], ...], with_pipecat: bool) -> None:
    model = silero.build()
    voice = speech()
    # A server has done this by its first call (aiortc imports PyAV); else the first turn
    # measured here pays ~40 ms for importing it and building FFmpeg's first resampler.
    Resampler().convert(bytes(960), 24000)
    print(
        f"scenario: espeak-ng '{TRANSCRIPT}' ({len(voice) / RATE:.2f} s) in real time, 20 ms frames; "
        f"Silero stop {STOP_SECS} s; STT {STT_DELAY * 1000:.0f} ms, LLM first token "
        f"{FIRST_TOKEN * 1000:.0f} ms then {1 / TOKEN_INTERVAL:.0f}/s, TTS first byte "
        f"{TTS_FIRST_BYTE * 1000:.0f} ms; provider time to the first sentence's audio {provider_ms():.0f} ms; "
        f"calls start spread over {STAGGER_SECS:g} s; turns x calls: {plan}"
    )
    inproc, rtc, pipecat = [], [], []
    with tempfile.TemporaryDirectory(prefix="parley-voice-") as tmp:
        for calls, turns in plan:
            inproc.append(await measure_inprocess(Path(tmp), model, voice, calls, turns))
        for calls, turns in plan:
            rtc.append(await measure_rtc(Path(tmp), model, voice, calls, turns))
        calls, turns = next((c, t) for c, t in plan if c == TARGET_CALLS)
        nobuffer = await measure_rtc(Path(tmp), model, voice, calls, turns, prefetch=0)
    note = ""
    if with_pipecat:
        python, how = await asyncio.to_thread(pipecat_python)
        if python is None:
            note = f"pipecat skipped: {how}"
        else:
            print(f"pipecat: {pipecat_version(python)} in {PIPECAT_VENV.relative_to(ROOT)} ({how})")
            pipecat, note = await asyncio.to_thread(measure_pipecat, python, plan)
    else:
        note = "pipecat skipped (--no-pipecat)"

    print("\n## End of speech -> first reply audio, ms\n")
    rows = []
    for run in inproc:
        rows.append(row("Parley in-process, audio ready", run, run.extra.get("ready", [])))
        rows.append(row("Parley in-process, 20 ms packet", run, run.latency))
    for run in rtc:
        rows.append(row("Parley over aiortc, server sends (target)", run, run.extra.get("sent", [])))
        rows.append(row("Parley over aiortc, client hears", run, run.latency))
    rows.append(
        row("Parley over aiortc, client hears, client prefetch 0 (diagnostic)", nobuffer, nobuffer.latency)
    )
    for run in pipecat:
        rows.append(row("pipecat in-process, TTSAudioRawFrame out", run, run.latency))
    print(table(HEADERS, rows))
    print(
        f"\nlatency: true end of speech (the frame holding its last sample) -> first reply audio "
        f"(over aiortc: sent = the server's track hands it to the encoder; hears = the client decoded it). "
        f"VAD stop: -> the VAD's stop decision (over WebRTC including the inbound Opus/jitter buffer). "
        f"overhead nominal = latency - {STOP_SECS * 1000:.0f} ms hangover - {provider_ms():.0f} ms providers; "
        f"actual = latency - VAD stop - providers. CPU: this process's CPU time / call-seconds "
        f"(over aiortc the callers run in another process: the server's share only)."
    )
    if note:
        print(f"\n{note}")
    if pipecat:
        print("\n## Parley / pipecat (same run, in-process, audio ready vs TTSAudioRawFrame out)\n")
        ratios = []
        for ours, theirs in zip(inproc, pipecat, strict=False):
            ready = ours.extra.get("ready", [])
            cells = [str(ours.calls)]
            for q in (50, 95):
                a, b = percentile(ready, q), percentile(theirs.latency, q)
                cells += [f"{a:.0f} / {b:.0f} = {a / b:.2f}"]
            over = [
                percentile([v - STOP_SECS * 1000 - provider_ms() for v in vals], 50)
                for vals in (ready, theirs.latency)
            ]
            cells.append(f"{over[0]:.0f} / {over[1]:.0f}")
            cells.append(f"{ours.cpu_share() / theirs.cpu_share():.2f}" if theirs.cpu_s else "-")
            ratios.append(cells)
        print(table(["calls", "latency p50", "latency p95", "overhead nominal p50", "CPU ratio"], ratios))
    print("\n## Targets (informational; issue 4: overhead p50 < 20 ms, p95 < 50 ms at 10 calls)\n")
    for run in rtc:
        if run.calls == TARGET_CALLS:
            print("\n".join(verdicts("over aiortc, server sends", run, run.extra.get("sent", []))))
            print("\n".join(verdicts("over aiortc, client hears", run, run.latency)))
    for run in inproc:
        if run.calls == TARGET_CALLS:
            print("\n".join(verdicts("in-process (packet)", run, run.latency)))


def header() -> None:
    import importlib.metadata as md

    versions = []
    for dist in ("parley", "aiortc", "av", "onnxruntime", "numpy"):
        try:
            versions.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            versions.append(f"{dist} -")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown cpu",
    )
    print(f"machine: nproc={os.cpu_count()}, {cpu}, {platform.system()} {platform.release()}")
    print(f"python {platform.python_version()}; " + ", ".join(versions))


def run_voice(quick: bool, with_pipecat: bool = True) -> None:
    """The voice section (also called from run.py)."""
    started = time.monotonic()
    print("\n# Voice latency" + (" (quick)" if quick else ""))
    header()
    print(f"load average at start: {load()} (other work on this machine skews every figure)")
    asyncio.run(bench(QUICK if quick else FULL, with_pipecat))
    print(f"\nvoice bench took {time.monotonic() - started:.0f} s; load average at end: {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer calls and turns, for a smoke run")
    parser.add_argument("--no-pipecat", action="store_true", help="skip the pipecat comparison")
    args = parser.parse_args()
    run_voice(args.quick, not args.no_pipecat)


if __name__ == "__main__":
    main()
