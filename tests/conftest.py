"""Shared fixtures: real servers on 127.0.0.1, real clients, no mocks."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from parley.app import create_app
from parley.config import Settings
from parley.models import BundledModels, Downloader, ModelLocator
from parley.providers.llm import ChatProvider
from parley.providers.stt import STTProvider
from parley.providers.tts import TTSProvider
from parley.providers.vad import SpeechModel
from parley.standins.server import BackgroundServer

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(name: str, why: str) -> str:
    """The path of a command the test needs: skip where it is missing, but fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({why}); `make test` installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_package(module: str, why: str = "") -> None:
    """Skip where an optional package is missing, but fail under CI=true (`make test` installs it)."""
    if importlib.util.find_spec(module) is None:
        message = f"{module} is not installed{f' ({why})' if why else ''}; `make test` installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def require_service(host: str, port: int, why: str) -> None:
    """Skip where a local service (PostgreSQL, Redis) does not answer, but fail under CI=true."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        message = f"nothing answers on {host}:{port} ({why}: {exc}); `make test` starts it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def hub_locator(root: Path, base_url: str = "http://127.0.0.1:9") -> ModelLocator:
    """Models from a (test) hub only: a machine without the bundled packs, for download tests."""
    return ModelLocator(
        Downloader(root, base_url=base_url, progress=False), BundledModels(root / "bundled", {})
    )


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "llm": "none",
        "stt": "none",
        "cloudflare_account_id": None,
        "cloudflare_api_token": None,
        "log_level": "WARNING",
        # never let a test probe the real model hub: a closed local port answers "unreachable" at once
        "model_base_url": "http://127.0.0.1:9",
        # loading real models ahead costs every server a test starts seconds of CPU; the tests of
        # the warm-up itself (tests/realmodels) turn it on
        "warm_up": False,
        # the test chat providers echo: a title they "wrote" would be the echo of the prompt
        # (the model's titles have their own tests: tests/sessions/test_titles.py)
        "titles": "words",
    }
    base.update(overrides)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


ServerFactory = Callable[..., BackgroundServer]


@pytest.fixture
def serve(settings: Settings) -> Iterator[ServerFactory]:
    """Start Parley on real uvicorn: `serve(chat=EchoChat(), settings=...)`; stopped after the test."""
    started: list[BackgroundServer] = []

    def start(
        *,
        chat: ChatProvider | None = None,
        stt: STTProvider | None = None,
        tts: TTSProvider | None = None,
        vad: SpeechModel | None = None,
        settings: Settings = settings,
        port: int = 0,
    ) -> BackgroundServer:
        app = create_app(settings, chat=chat, stt=stt, tts=tts, vad=vad)
        server = BackgroundServer(app, port=port, ws_max_size=1 << 20).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@contextmanager
def running(app: Any) -> Iterator[BackgroundServer]:
    with BackgroundServer(app) as server:
        yield server


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse a whole SSE body into (event, data) pairs."""
    out = []
    for block in text.strip().split("\n\n"):
        name, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
        if data:
            out.append((name, json.loads(data)))
    return out
