"""Any accepted recording -> 16 kHz mono s16le PCM, in-process with PyAV (FFmpeg, no binary needed).

The container is recognised by its first bytes (`formats.sniff`) and only that demuxer is
opened, so FFmpeg never guesses among its hundreds of formats for bytes a client sent. Limits
are enforced twice: the byte size before anything is parsed, and the duration while decoding,
so a small file that claims (or expands to) hours of audio stops at the limit. `measure` applies
the same duration limit to a recording that is sent on as it is (to a cloud speech-to-text).

The result is `bytes` of little-endian int16 samples, not a numpy array: pocketsphinx and
`AudioChunk` both take bytes. Every FFmpeg failure becomes `UnsupportedMediaType` naming the
field; a caller never sees a PyAV traceback.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING, TypeVar

from parley.audio.formats import SUPPORTED, check_audio
from parley.audio.pcm import SAMPLE_WIDTH, STT_RATE, WavStream
from parley.errors import ConfigError, PayloadTooLarge, UnsupportedMediaType

if TYPE_CHECKING:
    import av.container

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_SECONDS = 300.0
DEFAULT_MAX_BYTES = 25 * 1024 * 1024

#: sniffed container -> the FFmpeg demuxer that reads it (mp4 covers m4a; matroska covers webm)
DEMUXER = {
    "webm": "matroska",
    "ogg": "ogg",
    "wav": "wav",
    "mp3": "mp3",
    "mp4": "mp4",
    "flac": "flac",
}


def decode(
    data: bytes,
    *,
    sample_rate: int = STT_RATE,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    field: str = "audio",
) -> bytes:
    """The first audio stream of `data` as mono s16le PCM at `sample_rate`.

    Raises `PayloadTooLarge` (bytes, or longer than `max_seconds`), `InvalidInput` (empty) and
    `UnsupportedMediaType` (not a supported container, unreadable, truncated before any sound,
    or without an audio track), each naming `field` and the limit. Blocking CPU work: from async code use `decode_async`.
    """
    kind = check_audio(data, limit=max_bytes, field=field)
    pcm = _with_container(
        data, kind, field, lambda c: _decode_first_audio(c, kind, sample_rate, max_seconds, field)
    )
    if not pcm:
        raise UnsupportedMediaType(
            f"{field} holds no decodable audio (empty or truncated {kind})", field=field, limit=SUPPORTED
        )
    return pcm


def measure(
    data: bytes, *, max_seconds: float, max_bytes: int = DEFAULT_MAX_BYTES, field: str = "audio"
) -> float:
    """The seconds of audio in `data`'s first audio stream, decoded (not resampled) to count them.

    For a recording passed on whole, such as to a cloud speech-to-text: the same checks and
    errors as `decode`, so one past `max_seconds` is refused before it is sent anywhere. A
    container's declared duration can lie, which is why the samples are counted.
    """
    kind = check_audio(data, limit=max_bytes, field=field)
    seconds = _with_container(data, kind, field, lambda c: _count_seconds(c, kind, max_seconds, field))
    if seconds <= 0:
        raise UnsupportedMediaType(
            f"{field} holds no decodable audio (empty or truncated {kind})", field=field, limit=SUPPORTED
        )
    return seconds


async def measure_async(
    data: bytes, *, max_seconds: float, max_bytes: int = DEFAULT_MAX_BYTES, field: str = "audio"
) -> float:
    """`measure` in a worker thread."""
    return await asyncio.to_thread(measure, data, max_seconds=max_seconds, max_bytes=max_bytes, field=field)


def _with_container(
    data: bytes, kind: str, field: str, read: Callable[[av.container.InputContainer], T]
) -> T:
    """`read(container)` on `data` opened with its demuxer; FFmpeg's failures become a 415."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - the `local` extra is missing
        raise ConfigError("decoding audio needs PyAV: pip install 'parley[local]'") from exc
    try:
        with av.open(io.BytesIO(data), mode="r", format=DEMUXER[kind]) as container:
            return read(container)
    except (av.FFmpegError, EOFError, ValueError, IndexError) as exc:
        # PyAV raises its own errors for bad data, and plain ValueError/EOFError/IndexError for
        # some truncated headers.
        raise UnsupportedMediaType(
            f"{field} could not be decoded as {kind} ({_reason(exc)}); send one of: {SUPPORTED}",
            field=field,
            limit=SUPPORTED,
        ) from exc


async def decode_async(
    data: bytes,
    *,
    sample_rate: int = STT_RATE,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    field: str = "audio",
) -> bytes:
    """`decode` in a worker thread, so the event loop keeps serving while FFmpeg works.

    Cancelling the caller does not stop the thread, but the thread is bounded by `max_seconds`
    of audio (decoding runs hundreds of times faster than real time).
    """
    return await asyncio.to_thread(
        decode,
        data,
        sample_rate=sample_rate,
        max_seconds=max_seconds,
        max_bytes=max_bytes,
        field=field,
    )


async def decode_stream(
    pieces: AsyncIterable[bytes],
    *,
    sample_rate: int,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    field: str = "audio",
) -> AsyncIterator[tuple[bytes, int]]:
    """(pcm, rate) pieces of an audio byte stream, such as a TTS service's HTTP body.

    A mono 16-bit WAV is passed through as it arrives, at its own rate, so the first words can
    play before the rest is downloaded; any other format is collected and decoded whole to
    `sample_rate`. Errors are those of `decode`, for the caller to translate.
    """
    wav: WavStream | None = WavStream()
    held = bytearray()  # everything until the WAV header has passed, or all of a non-WAV body
    received = 0
    async for piece in pieces:
        received += len(piece)
        if received > max_bytes:
            raise PayloadTooLarge(f"{field} is larger than {max_bytes} bytes", field=field, limit=max_bytes)
        if wav is None:
            held += piece
            continue
        if wav.sample_rate is None:
            held += piece
        try:
            pcm = wav.feed(piece)
        except ValueError:
            # Not a WAV we can stream (another format, or stereo/float): decode it whole below.
            wav = None
            continue
        if wav.sample_rate is not None:
            held.clear()
        if pcm:
            assert wav.sample_rate is not None
            yield pcm, wav.sample_rate
    if wav is not None and wav.sample_rate is not None:
        return
    pcm = await decode_async(
        bytes(held), sample_rate=sample_rate, max_seconds=max_seconds, max_bytes=max_bytes, field=field
    )
    yield pcm, sample_rate


def _too_long(field: str, max_seconds: float) -> PayloadTooLarge:
    return PayloadTooLarge(f"{field} is longer than {max_seconds:g} seconds", field=field, limit=max_seconds)


def _first_audio(
    container: av.container.InputContainer, kind: str, max_seconds: float, field: str
) -> av.AudioStream:
    """The first audio stream, refused at once when the container honestly says it is too long."""
    import av

    if not container.streams.audio:
        raise UnsupportedMediaType(f"{field} ({kind}) has no audio track", field=field, limit=SUPPORTED)
    # The declared duration is only a hint (it can lie), but it rejects honest long files at once.
    if container.duration is not None and container.duration / av.time_base > max_seconds + 1:
        raise _too_long(field, max_seconds)
    return container.streams.audio[0]


def _count_seconds(
    container: av.container.InputContainer, kind: str, max_seconds: float, field: str
) -> float:
    import av

    stream = _first_audio(container, kind, max_seconds, field)
    seconds = 0.0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                seconds += frame.samples / (frame.sample_rate or 1)
            if seconds > max_seconds:
                raise _too_long(field, max_seconds)
    except (av.FFmpegError, EOFError, ValueError, IndexError):
        if not seconds:  # as in `decode`: a cut-off recording counts up to the cut
            raise
    return seconds


def _decode_first_audio(
    container: av.container.InputContainer, kind: str, sample_rate: int, max_seconds: float, field: str
) -> bytes:
    import av

    stream = _first_audio(container, kind, max_seconds, field)
    too_long = _too_long(field, max_seconds)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    max_samples = int(max_seconds * sample_rate)
    out = bytearray()
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                for piece in resampler.resample(frame):
                    out += _samples(piece)
            if len(out) > max_samples * SAMPLE_WIDTH:
                raise too_long
    except (av.FFmpegError, EOFError, ValueError, IndexError):
        # A recording cut short (an upload that stopped, a recorder killed mid-write) keeps the
        # audio before the cut, as FFmpeg's own tools do; with nothing before it, it is an error.
        if not out:
            raise
        log.info(
            "%s (%s) is damaged or truncated; using its first %.2f s", field, kind, _seconds(out, sample_rate)
        )
    for piece in resampler.resample(None):
        out += _samples(piece)
    if len(out) > max_samples * SAMPLE_WIDTH:
        raise too_long
    return bytes(out)


def _samples(frame: av.AudioFrame) -> bytes:
    # The plane buffer is padded past the last sample; cut it to the real length.
    return bytes(frame.planes[0])[: frame.samples * SAMPLE_WIDTH]


def _seconds(pcm: bytes | bytearray, sample_rate: int) -> float:
    return len(pcm) / SAMPLE_WIDTH / sample_rate


def _reason(exc: BaseException) -> str:
    # FFmpeg errors carry a readable strerror ("Invalid data found when processing input").
    text = str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__
    return text[:160]
