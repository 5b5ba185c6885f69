"""`parley serve` itself, in a subprocess, against hostile clients on raw sockets.

The server is started exactly as a user starts it (`python -m parley.cli serve`), so what is
tested is uvicorn with the options and protocol `parley serve` gives it, not a test set-up.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from parley.standins import openai as openai_standin
from parley.standins.server import BackgroundServer, free_port


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int
    #: stderr lines up to "serving on" (the start-up banner)
    banner: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith(("PARLEY_", "CLOUDFLARE_"))}
    return clean | {
        "PARLEY_DATA_DIR": str(tmp_path / "data"),
        "PARLEY_OLLAMA_URL": f"http://127.0.0.1:{free_port()}",
        "PARLEY_MODEL_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "PARLEY_LLM": "none",
        "PARLEY_STT": "none",
        "PARLEY_TTS": "none",
        "PARLEY_WARM_UP": "false",
        "PARLEY_LOG_LEVEL": "WARNING",
        **extra,
    }


@contextmanager
def parley_serve(tmp_path: Path, **extra: str) -> Iterator[Served]:
    """`parley serve` on a free port, ready (its /healthz answers) when the block starts."""
    port = free_port()
    env = _env(tmp_path, {"PARLEY_PORT": str(port), **extra})
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    served = Served(proc, port)
    try:
        # a process boundary: wait for the banner and the first answer, with a deadline
        deadline = time.monotonic() + 60
        while not any("serving on" in line for line in served.banner):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "parley serve exited: " + "\n".join(served.banner)
            served.banner.append(line)
        while True:
            try:
                if httpx.get(served.url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "\n".join(served.banner)
            time.sleep(0.05)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)  # the pipe ends with the process
        proc.stderr.close()


# -- issue 11, defect 5: the start-up lines never print credentials --------------------------------

PASSWORD = "hunter2-in-the-url"
KEY = "sk-parley-serve-0123456789abcdef"


def test_the_start_up_lines_do_not_print_credentials(tmp_path: Path) -> None:
    with BackgroundServer(openai_standin.create_app()) as upstream:
        base = f"http://parley:{PASSWORD}@127.0.0.1:{upstream.port}/v1"
        with parley_serve(
            tmp_path, PARLEY_LLM="openai", PARLEY_LLM_BASE_URL=base, PARLEY_LLM_API_KEY=KEY
        ) as s:
            banner = "\n".join(s.banner)
    assert "chat: openai" in banner, banner
    assert f"127.0.0.1:{upstream.port}/v1" in banner  # still says where, without who
    assert PASSWORD not in banner and KEY not in banner and "parley:" + PASSWORD not in banner
