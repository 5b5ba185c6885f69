"""`parley doctor`, `parley models`, `parley transcribe` and `parley speak`: local models from a shell.

Each command builds the same providers `parley serve` would (through the factory), so what works
here works in the server, and what fails here fails with the message the server would give.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import get_args

from parley.config import load_settings
from parley.errors import InvalidInput, ParleyError


def doctor(args: argparse.Namespace) -> int:
    """Print every provider, usable or not and why, then what `parley serve` picks (always exit 0)."""
    from parley.providers.factory import describe_choice, doctor
    from parley.redact import redact, settings_secrets

    settings = load_settings()
    rows = doctor(settings)
    # Reasons and choices name base URLs, which may carry credentials.
    secrets = settings_secrets(settings)
    header = ("CAPABILITY", "PROVIDER", "USABLE", "PICKED", "WHY")
    table = [
        (
            row.capability,
            row.provider,
            "yes" if row.usable else "no",
            "*" if row.selected else "",
            redact(row.reason, secrets, shapes=False),
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in (header, *table)) for i in range(4)]
    for cells in (header, *table):
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=False)), cells[4])
    print("\nparley serve will use:")
    for line in describe_choice(settings):
        print(f"  {redact(line, secrets, shapes=False)}")
    return 0


def models_list(args: argparse.Namespace) -> int:
    """The bundled models first (installed with Parley), then the catalogue (`models pull`)."""
    from parley import models

    settings = load_settings()
    locator = models.ModelLocator.from_settings(settings, progress=False)
    rows: list[tuple[str, str, str, str]] = []
    for bundled in models.BUNDLED.values():
        installed = locator.bundled.installed(bundled.name) is not None
        rows.append(
            (bundled.name, bundled.kind, "bundled" if installed else "not installed", bundled.description)
        )
    for spec in models.known():
        if spec.name in models.BUNDLED and locator.source(spec.name) == "bundled":
            continue  # listed above; pulling it would fetch the same model again
        here = "downloaded" if locator.source(spec.name) == "downloaded" else ""
        rows.append((spec.name, spec.kind, here, spec.description))
    for name, kind, here, description in rows:
        print(f"{name:<28} {kind:<4} {here:<13} {description}")
    return 0


def models_pull(args: argparse.Namespace) -> int:
    """Download a model now (a progress bar on a terminal), so the first turn does not wait."""
    from parley import models

    try:
        path = models.pull(args.name, load_settings(), progress=True)
    except ParleyError as exc:
        return _fail(exc)
    print(path)
    return 0


def transcribe(args: argparse.Namespace) -> int:
    try:
        path = Path(args.file)
        text = asyncio.run(_transcribe(path.read_bytes(), path.name, args.language))
    except (ParleyError, OSError) as exc:
        return _fail(exc)
    print(text)
    return 0


async def _transcribe(data: bytes, name: str, language: str | None) -> str:
    from parley.audio.decode import measure_async
    from parley.audio.formats import MIME, check_audio
    from parley.providers.factory import build_stt
    from parley.providers.stt import AudioInput

    settings = load_settings()
    kind = check_audio(data, limit=settings.max_audio_bytes, field=name)
    # The same length limit as /api/transcribe, whichever provider gets the recording.
    await measure_async(
        data, max_seconds=settings.max_audio_seconds, max_bytes=settings.max_audio_bytes, field=name
    )
    stt = build_stt(settings)
    try:
        audio = AudioInput(data, MIME[kind], name)
        transcript = await stt.transcribe(audio, language=language or settings.stt_language)
    finally:
        await stt.aclose()
    return transcript.text


def speak(args: argparse.Namespace) -> int:
    out = Path(args.output)
    try:
        audio = asyncio.run(_speak(args.text, args.voice, out.suffix.lower().lstrip(".")))
        out.write_bytes(audio)
    except (ParleyError, OSError) as exc:
        return _fail(exc)
    return 0


async def _speak(text: str, voice: str | None, fmt: str) -> bytes:
    from parley.audio.encode import Format, encode_async
    from parley.providers.factory import build_tts

    formats: tuple[Format, ...] = get_args(Format)
    if fmt not in formats:
        raise InvalidInput(
            f"cannot tell the audio format from {'.' + fmt if fmt else 'a name without extension'}; "
            f"use one of: {', '.join('.' + f for f in formats)}",
            field="--output",
        )
    if not text.strip():
        raise InvalidInput("there is no text to speak", field="TEXT")
    tts = build_tts(load_settings())
    pcm = bytearray()
    rate = 0
    try:
        async for chunk in tts.synthesize(text, voice=voice):
            if rate and chunk.sample_rate != rate:
                raise InvalidInput(f"{tts.name} changed sample rate mid-stream", field="voice")
            rate = chunk.sample_rate
            pcm += chunk.pcm
    finally:
        await tts.aclose()
    if not rate:
        raise InvalidInput(f"{tts.name} produced no audio for this text", field="TEXT")
    return await encode_async(bytes(pcm), rate, next(f for f in formats if f == fmt))


def _fail(exc: BaseException) -> int:
    message = exc.message if isinstance(exc, ParleyError) else str(exc)
    print(f"parley: error: {message}", file=sys.stderr)
    return 1


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor_cmd = sub.add_parser("doctor", help="which providers can run here, and which `serve` picks")
    doctor_cmd.set_defaults(func=doctor)

    models_cmd = sub.add_parser("models", help="list or fetch local model files")
    models_sub = models_cmd.add_subparsers(dest="models_command", required=True)
    models_sub.add_parser("list", help="models `pull` knows, and which are downloaded").set_defaults(
        func=models_list
    )
    pull = models_sub.add_parser("pull", help="download a model now (into PARLEY_DATA_DIR/models)")
    pull.add_argument("name", help="a name from `parley models list`, e.g. faster-whisper-base")
    pull.set_defaults(func=models_pull)

    transcribe_cmd = sub.add_parser("transcribe", help="print the text spoken in an audio file")
    transcribe_cmd.add_argument("file", help="wav, mp3, ogg/opus, webm/opus, m4a or flac")
    transcribe_cmd.add_argument("--language", default=None, help="e.g. en; unset detects it")
    transcribe_cmd.set_defaults(func=transcribe)

    speak_cmd = sub.add_parser("speak", help="write speech for TEXT to an audio file")
    speak_cmd.add_argument("text", help="what to say")
    speak_cmd.add_argument(
        "-o", "--output", required=True, help="the file; its extension picks the format (.wav, .mp3, .ogg)"
    )
    speak_cmd.add_argument("--voice", default=None, help="a voice of the picked provider")
    speak_cmd.set_defaults(func=speak)
