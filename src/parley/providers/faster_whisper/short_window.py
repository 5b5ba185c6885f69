"""Whisper on the utterance's own length instead of a 30 s window: the encoder pass that dominates.

faster-whisper pads every recording to 30 s before the encoder, so a 2 s question costs as much
as 30 s of audio (0.7-2 s for Whisper base on 2 busy cores), and with no language given it runs
that encoder twice (once to detect the language, once to transcribe). CTranslate2's encoder
takes any even number of mel frames, so here the utterance is encoded once, followed by
`PAD_FRAMES` of the silence value faster-whisper pads with, and the same encoding serves language
detection and greedy decoding.

Why the padding: with the window cut right after the speech the decoder does not see the audio
end and repeats the sentence until `max_length` ("Yes. Yes. Yes. ..."); measured on 26 clips
(Piper and espeak-ng, 1-5 s), 1, 2 and 3 s of padding still looped on 5-10 of them, 5 s on
none, with the 30 s window's word error rate (0.094 against 0.096) at 70-500 ms a clip instead of
700-2,000 ms.

A short window is never trusted blindly: a decode that runs to its token budget (a loop), that
compresses like a loop, whose two halves are the same text, that the model is unsure of, or whose
language it cannot tell, returns None, and the caller transcribes the 30 s way. So the worst case
is the old cost plus one short pass.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

#: silence after the speech (in 10 ms mel frames) that lets the decoder see where the audio ends
PAD_FRAMES = 500
#: a generous speaking rate: a decode longer than this for its audio is a loop
TOKENS_PER_SECOND = 6.0
#: tokens any decode may use on top of the rate (punctuation, a short clip's one word)
SPARE_TOKENS = 10
#: faster-whisper's own limit: a loop compresses better than this
COMPRESSION_RATIO_LIMIT = 2.4
#: below this mean log-probability the short window's text is left to the 30 s window. Stricter
#: than faster-whisper's -1: on the clips above, the short window's wrong words ("No fangs" for
#: "No thanks", -0.83) came with -0.4 to -0.9, its right sentences with -0.03 to -0.3; one-word
#: answers ("Yes.", "Stop.", -1.0 to -1.3) take the 30 s way.
LOG_PROB_LIMIT = -0.7
#: a detected language less likely than this is not trusted for the text, and one less likely
#: than the second not even for the 30 s window (which then detects it again, one pass more)
LANGUAGE_PROB_LIMIT = 0.5
LANGUAGE_SURE = 0.8


@dataclass(slots=True, frozen=True)
class ShortResult:
    #: None: not trusted, the 30 s window decides
    text: str | None
    #: the language given or detected (with `text` None: only when it was sure; else None, for
    #: the 30 s window to detect)
    language: str | None
    duration: float


def transcribe_short(model: Any, samples: np.ndarray, language: str | None) -> ShortResult | None:
    """The transcript of `samples` (16 kHz float32) from one short encoder pass; its `text` is
    None when the 30 s window must decide (any sign that the short decode went wrong), and None
    as a whole when the recording is too long for a short window.

    `model` is a loaded `faster_whisper.WhisperModel`: its feature extractor, tokenizer and the
    CTranslate2 model inside it are used directly.
    """
    import ctranslate2  # type: ignore[import-untyped]

    extractor = model.feature_extractor
    duration = len(samples) / extractor.sampling_rate
    features = extractor(samples)
    frames = features.shape[-1] - 1  # the extractor adds one frame for its own padding
    width = frames + PAD_FRAMES
    width += width % 2  # the encoder's convolution halves the length: it must be even
    if width > extractor.nb_max_frames:
        return None
    window = np.zeros((1, features.shape[0], width), dtype=np.float32)
    window[0, :, :frames] = features[:, :frames]
    whisper = model.model
    encoded = whisper.encode(ctranslate2.StorageView.from_array(window))
    if language is None:
        if not whisper.is_multilingual:
            language = "en"
        else:
            token, probability = whisper.detect_language(encoded)[0][0]
            detected = token[2:-2]
            if probability < LANGUAGE_PROB_LIMIT:
                return ShortResult(None, None, duration)
            result = _decode(model, encoded, detected, duration)
            if result.text is None and probability < LANGUAGE_SURE:
                # good enough to decode with, not to spare the 30 s window its own detection
                return ShortResult(None, None, duration)
            return result
    return _decode(model, encoded, language, duration)


def _decode(model: Any, encoded: Any, language: str, duration: float) -> ShortResult:
    """Greedy decoding of the short window's encoding; `text` None when it looks wrong."""
    from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]

    whisper = model.model
    tokenizer = Tokenizer(model.hf_tokenizer, whisper.is_multilingual, task="transcribe", language=language)
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    budget = int(duration * TOKENS_PER_SECOND) + SPARE_TOKENS
    result = whisper.generate(
        encoded,
        [prompt],
        beam_size=1,
        max_length=len(prompt) + budget,
        return_scores=True,
        suppress_blank=True,
        suppress_tokens=[-1],
    )[0]
    tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
    mean_log_prob = float(result.scores[0])
    # Noise and silence score low too: faster-whisper's no-speech test then decides what to drop.
    if len(tokens) >= budget or mean_log_prob < LOG_PROB_LIMIT:
        return ShortResult(None, language, duration)
    text = tokenizer.decode(tokens).strip()
    return ShortResult(None if _looks_like_a_loop(text) else text, language, duration)


def _looks_like_a_loop(text: str) -> bool:
    """The signs of a decoder that did not see the end: a text that compresses like repetition,
    or one that is the same words twice ("Stop. Stop." is then left to the 30 s window)."""
    encoded = text.encode("utf-8")
    if encoded and len(encoded) / len(zlib.compress(encoded)) > COMPRESSION_RATIO_LIMIT:
        return True
    words = re.findall(r"\w+", text.lower())
    half = len(words) // 2
    return half > 0 and len(words) % 2 == 0 and words[:half] == words[half:]
