"""PiperTTS with real piper code on a tiny voice this test writes itself.

No Piper voice can be downloaded here, so the test builds the smallest ONNX graph that has a
Piper voice's inputs (`input`, `input_lengths`, `scales`) and turns phoneme ids into samples
(sin of each id), encodes it by hand as ONNX protobuf, and serves it with a real .onnx.json from
a local hub. Everything else is real: the download, piper's espeak phonemizer and sentence
splitting, onnxruntime, our threading and voice choice.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parley.errors import NotFound, ProviderError, ProviderUnavailable
from parley.models.catalog import piper_voice
from parley.providers.piper import PiperTTS, check, choose_voice
from tests.conftest import hub_locator, make_settings
from tests.models.test_download import static_hub

FLOAT, INT64 = 1, 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: bytes | str | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, elem_type: int, dims: list[int | str]) -> bytes:
    shape = b"".join(_field(1, _field(2 if isinstance(d, str) else 1, d)) for d in dims)
    tensor = _field(1, elem_type) + _field(2, shape)
    return _field(1, name) + _field(2, _field(1, tensor))


def _node(op: str, inputs: list[str], outputs: list[str], **ints: int) -> bytes:
    body = b"".join(_field(1, name) for name in inputs) + b"".join(_field(2, name) for name in outputs)
    body += _field(4, op)
    for name, value in ints.items():
        body += _field(5, _field(1, name) + _field(3, value) + _field(20, 2))  # AttributeProto INT
    return body


def tiny_voice_onnx() -> bytes:
    """output[1, T] = sin(float(input[1, T])): one audible sample per phoneme id."""
    graph = _field(1, _node("Cast", ["input"], ["ids"], to=FLOAT))
    graph += _field(1, _node("Sin", ["ids"], ["output"]))
    graph += _field(2, "tiny-voice")
    graph += _field(11, _value_info("input", INT64, [1, "T"]))
    graph += _field(11, _value_info("input_lengths", INT64, [1]))
    graph += _field(11, _value_info("scales", FLOAT, [3]))
    graph += _field(12, _value_info("output", FLOAT, [1, "T"]))
    return _field(1, 8) + _field(8, _field(2, 13)) + _field(7, graph)


def tiny_voice_config(espeak_voice: str) -> bytes:
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    config = {
        "num_symbols": 256,
        "num_speakers": 1,
        "audio": {"sample_rate": 16000},
        "espeak": {"voice": espeak_voice},
        "phoneme_type": "espeak",
        "phoneme_id_map": DEFAULT_PHONEME_ID_MAP,
    }
    return json.dumps(config).encode()


def voice_files(name: str, espeak_voice: str, onnx: bytes | None = None) -> dict[str, bytes]:
    spec = piper_voice(name)
    onnx_path, config_path = (f"{spec.repo}/{file.path}" for file in spec.files)
    return {
        onnx_path: tiny_voice_onnx() if onnx is None else onnx,
        config_path: tiny_voice_config(espeak_voice),
    }


def test_check_says_package_ok_and_what_happens_to_the_voice(tmp_path: Path) -> None:
    with static_hub({}, tmp_path / "hub") as (url, _):
        reachable = check(make_settings(tmp_path / "data", model_base_url=url, bundled_models=False))
    assert reachable.usable and "en_US-lessac-medium not downloaded yet: fetched from" in reachable.reason
    # the hub is gone now, and no bundled voice
    offline = check(make_settings(tmp_path / "data", model_base_url=url, bundled_models=False))
    assert not offline.usable
    assert "not downloaded and 127.0.0.1 unreachable" in offline.reason
    assert "parley models pull en_US-lessac-medium" in offline.reason
    bad = check(make_settings(tmp_path / "data", tts_voice="lessac"))
    assert not bad.usable and "not a Piper voice name" in bad.reason


def test_check_reports_a_downloaded_voice(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", tts_voice="de_DE-thorsten-medium")
    spec = piper_voice("de_DE-thorsten-medium")
    for file in spec.files:
        target = settings.data_dir / "models" / spec.repo / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"{}")
    assert check(settings).reason == "voice de_DE-thorsten-medium, downloaded"


def test_the_voice_follows_the_language_unless_one_is_asked_for() -> None:
    assert choose_voice(None, None, None) == "en_US-lessac-medium"
    assert choose_voice(None, None, "de") == "de_DE-thorsten-medium"
    assert choose_voice(None, None, "en-GB") == "en_GB-alan-medium"
    assert choose_voice(None, None, "pt-BR") == "pt_BR-faber-medium"
    assert choose_voice(None, None, "tlh") == "en_US-lessac-medium"
    assert choose_voice("en_US-amy-low", None, "en") == "en_US-amy-low"
    assert choose_voice("en_US-amy-low", None, "fr") == "fr_FR-siwis-medium"
    assert choose_voice("en_US-amy-low", "es_ES-davefx-medium", "fr") == "es_ES-davefx-medium"
    with pytest.raises(NotFound, match=r"not a Piper voice name"):
        PiperTTS(hub_locator(Path("unused")), voice="amy")


async def test_downloads_the_voice_for_the_language_and_speaks_sentence_by_sentence(tmp_path: Path) -> None:
    files = voice_files("de_DE-thorsten-medium", "de")
    with static_hub(files, tmp_path / "hub") as (url, asked):
        tts = PiperTTS(hub_locator(tmp_path / "models", url))
        chunks = [c async for c in tts.synthesize("Guten Tag. Wie geht es dir? Gut.", language="de")]
        again = [c async for c in tts.synthesize("Noch einmal.", language="de")]
    assert len(chunks) == 3 and len(again) == 1
    assert all(c.sample_rate == 16000 and len(c.pcm) > 20 for c in chunks)
    assert len(asked) == 2 and all("de_DE-thorsten-medium.onnx" in path for path in asked)
    assert [c async for c in tts.synthesize("   ")] == []


async def test_a_damaged_voice_is_a_clear_load_error(tmp_path: Path) -> None:
    files = voice_files("en_US-lessac-medium", "en-us", onnx=b"<html>not a model</html>")
    with static_hub(files, tmp_path / "hub") as (url, _):
        tts = PiperTTS(hub_locator(tmp_path / "models", url))
        with pytest.raises(
            ProviderUnavailable, match=r"cannot load piper voice en_US-lessac-medium .*InvalidProtobuf"
        ):
            await anext(tts.synthesize("Hello."))


async def test_a_voice_that_is_not_a_piper_model_fails_when_speaking(tmp_path: Path) -> None:
    sigmoid = Path(__import__("onnxruntime").__file__).parent / "datasets" / "sigmoid.onnx"
    files = voice_files("en_US-lessac-medium", "en-us", onnx=sigmoid.read_bytes())
    with static_hub(files, tmp_path / "hub") as (url, _):
        tts = PiperTTS(hub_locator(tmp_path / "models", url))
        with pytest.raises(ProviderError, match=r"piper failed to synthesise"):
            await anext(tts.synthesize("Hello."))
