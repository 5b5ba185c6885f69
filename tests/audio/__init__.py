"""Real test audio, made on the spot: tones with PyAV/numpy and speech with the espeak-ng binary.

Shared by the decoder, provider and end-to-end speech tests. Speech gets faint noise added
(std 0.003 of full scale) because espeak-ng writes exact digital silence, which makes
pocketsphinx's feature normalisation go wrong and recognition stop early; any microphone has
more noise than that.
"""

from __future__ import annotations

import io
import subprocess
import wave

import numpy as np

from parley.audio.decode import decode
from parley.audio.pcm import resample
from tests.conftest import require_tool

NOISE_STD = 0.003

#: sentences made of common words, all in pocketsphinx's dictionary
SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "please turn on the kitchen lights",
    "what is the weather like today",
    "set a timer for ten minutes",
    "call my mother tomorrow morning",
)


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """int16 samples shaped (channels, n): a sine at `freq`, -10 dBFS."""
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    return np.tile(wave, (channels, 1))


def peak_frequency(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def espeak_wav(text: str, voice: str = "en-us") -> bytes:
    """espeak-ng's own WAV (22,050 Hz mono), straight from the binary."""
    binary = require_tool("espeak-ng", "speech for the recognition tests")
    result = subprocess.run([binary, "--stdout", "-v", voice, text], capture_output=True, check=True)
    return result.stdout


def espeak_voiced(text: str, rate: int, *, speed: int = 160) -> np.ndarray:
    """espeak-ng saying `text` as int16 samples at `rate`, cut to its first and last non-zero one."""
    binary = require_tool("espeak-ng", "it generates the speech")
    wav = subprocess.run(
        [binary, "-v", "en-us", "-s", str(speed), "--stdout", text], capture_output=True, check=True
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        source_rate, pcm = reader.getframerate(), reader.readframes(reader.getnframes())
    samples = np.frombuffer(resample(pcm, source_rate, rate), dtype="<i2")
    voiced = np.flatnonzero(samples)
    return samples[voiced[0] : voiced[-1] + 1]


def with_noise(pcm: bytes, std: float = NOISE_STD, seed: int = 1) -> bytes:
    """`pcm` (s16le) plus Gaussian noise of `std` (fraction of full scale), reproducibly."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    noisy = samples + np.random.default_rng(seed).normal(0.0, std * 32768, samples.shape)
    return bytes(np.clip(np.round(noisy), -32768, 32767).astype("<i2").tobytes())


def espeak_speech(text: str, seed: int = 1) -> bytes:
    """`text` spoken by espeak-ng as 16 kHz mono s16le, with the faint noise described above."""
    return with_noise(decode(espeak_wav(text)), seed=seed)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + insertions + deletions, reference words): the numerator and denominator of WER."""
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, said in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != said))
    return row[-1], len(ref)
