"""A provider's failure reaches the call's client and the session's tabs without server paths.

The harness is turn-taking's (real Silero on espeak-ng speech, real sessions, `GatedSTT`).
"""

from __future__ import annotations

from parley.errors import ProviderUnavailable
from parley.voice.turns import public_error
from tests.voice.test_turn_taking import FIRST, Harness, harness  # noqa: F401 (the fixture)

FOLDER = "/var/lib/parley/models/whisper-base"


async def test_a_missing_model_error_names_no_server_path(harness: Harness) -> None:  # noqa: F811
    h, ev = harness, harness.events
    h.mic.silence(0.5)
    h.mic.say(FIRST)
    h.mic.silence(0.6)
    pending = await h.stt.next_call()
    pending.fail(
        ProviderUnavailable(
            f"cannot load faster-whisper model base from {FOLDER} (no model.bin in {FOLDER}/); delete "
            "that folder",
            field="PARLEY_STT_MODEL",
        )
    )
    await ev.until(lambda: ev.count("error") == 1 and any(e["type"] == "error" for e in ev.bus))
    for error in [e for e in ev.client + ev.bus if e["type"] == "error"]:
        text = str(error)
        assert "/var/lib" not in text and "whisper-base" not in text, error
        assert "cannot load faster-whisper model base from <server path>" in text, error
    assert not h.busy()  # nothing was answered, and the call goes on listening


def test_paths_go_and_everything_else_stays() -> None:
    body = {"error": "cannot fetch https://hub.example/a/b.bin to /tmp/x/b.part: offline", "code": "x"}
    assert public_error(body) == {
        "error": "cannot fetch https://hub.example/a/b.bin to <server path>: offline",
        "code": "x",
    }
    assert public_error({"error": "see ~/.cache/parley/x.bin"})["error"] == "see <server path>"
    assert public_error({"error": "3/4 of a/b"})["error"] == "3/4 of a/b"
