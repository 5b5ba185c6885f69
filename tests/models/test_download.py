"""The downloader against a real HTTP server on 127.0.0.1: progress, resume, checksum, cache, errors."""

from __future__ import annotations

import hashlib
import random
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from parley.errors import NotFound, ProviderError, ProviderUnavailable
from parley.models import Downloader, is_present, local_path, pull
from parley.models.catalog import ModelFile
from tests.conftest import make_settings

BODY = random.Random(1).randbytes(200_000)
SHA = hashlib.sha256(BODY).hexdigest()
REPO = "acme/tiny-model"


@dataclass
class Hub:
    """A tiny model hub: every `/<repo>/resolve/main/<path>` is BODY. Records what it was asked."""

    ranges: bool = True
    #: bytes after which the next response is cut (one entry per response to cut)
    cuts: list[int] = field(default_factory=list)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    url: str = ""


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            asked = self.headers.get("Range")
            hub.requests.append((self.path, asked))
            if "/resolve/main/" not in self.path or self.path.endswith("/missing.bin"):
                self.send_error(404)
                return
            start = int(asked.removeprefix("bytes=").split("-")[0]) if asked and hub.ranges else 0
            if start >= len(BODY):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(BODY)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
            self.send_header("Content-Length", str(len(BODY) - start))
            self.end_headers()
            body = BODY[start:]
            if hub.cuts:
                body = body[: hub.cuts.pop(0)]
                self.close_connection = True
            self.wfile.write(body)
            hub.sent.append(len(body))

    return Handler


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler] | partial[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def hub() -> Iterator[Hub]:
    hub = Hub()
    with _serving(_handler(hub)) as hub.url:
        yield hub


@contextmanager
def static_hub(files: dict[str, bytes], root: Path) -> Iterator[tuple[str, list[str]]]:
    """A hub serving `files` ({"<repo>/<path>": bytes}) from disk, without Range support, like a
    plain mirror; yields (base URL, paths requested). For the provider tests."""
    for name, data in files.items():
        repo, path = name.split("/", 2)[:2], name.split("/", 2)[2]
        target = root.joinpath(*repo, "resolve", "main", path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    asked: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            asked.append(self.path)

    with _serving(partial(Handler, directory=str(root))) as url:
        yield url, asked


def _downloader(root: Path, hub: Hub, **options: object) -> Downloader:
    return Downloader(root, base_url=hub.url, progress=False, **options)  # type: ignore[arg-type]


def test_fetches_into_the_repo_path_and_reports_progress(tmp_path: Path, hub: Hub) -> None:
    seen: list[tuple[int, int | None]] = []
    path = _downloader(tmp_path, hub, on_progress=lambda done, total: seen.append((done, total))).fetch(
        REPO, ModelFile("sub/weights.bin")
    )
    assert path == tmp_path / REPO / "sub" / "weights.bin"
    assert path.read_bytes() == BODY
    assert not path.with_name("weights.bin.part").exists()
    assert seen[0] == (0, len(BODY)) and seen[-1] == (len(BODY), len(BODY))
    assert len(seen) >= 3 and [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_a_present_file_is_not_fetched_again(tmp_path: Path, hub: Hub) -> None:
    downloader = _downloader(tmp_path, hub)
    for file in (ModelFile("a.bin"), ModelFile("b.bin", sha256=SHA)):
        downloader.fetch(REPO, file)
        downloader.fetch(REPO, file)
    assert len(hub.requests) == 2
    assert (tmp_path / REPO / "b.bin.sha256").read_text().startswith(SHA)


def test_a_cut_transfer_resumes_with_only_the_missing_bytes(tmp_path: Path, hub: Hub) -> None:
    hub.cuts = [80_000]
    path = _downloader(tmp_path, hub).fetch(REPO, ModelFile("w.bin", sha256=SHA))
    assert path.read_bytes() == BODY
    assert [asked for _, asked in hub.requests] == [None, "bytes=80000-"]
    assert hub.sent == [80_000, len(BODY) - 80_000]


def test_the_next_run_resumes_a_partial_file(tmp_path: Path, hub: Hub) -> None:
    hub.cuts = [50_000]
    with pytest.raises(ProviderUnavailable, match=r"broke off after 50000 bytes.*next attempt resumes"):
        _downloader(tmp_path, hub, retries=0).fetch(REPO, ModelFile("w.bin"))
    assert (tmp_path / REPO / "w.bin.part").stat().st_size == 50_000
    _downloader(tmp_path, hub).fetch(REPO, ModelFile("w.bin"))
    assert (tmp_path / REPO / "w.bin").read_bytes() == BODY
    assert hub.requests[-1][1] == "bytes=50000-"


def test_a_server_that_ignores_range_restarts_the_file(tmp_path: Path, hub: Hub) -> None:
    hub.ranges = False
    hub.cuts = [70_000]
    path = _downloader(tmp_path, hub).fetch(REPO, ModelFile("w.bin", sha256=SHA))
    assert path.read_bytes() == BODY  # the 200 body replaced the partial one, not appended to it
    assert hub.sent == [70_000, len(BODY)]


def test_a_partial_file_that_is_already_whole_is_kept(tmp_path: Path, hub: Hub) -> None:
    part = tmp_path / REPO / "w.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BODY)
    path = _downloader(tmp_path, hub).fetch(REPO, ModelFile("w.bin", sha256=SHA))
    assert path.read_bytes() == BODY
    assert hub.sent == []  # the 416 answer carried no body


def test_a_checksum_mismatch_deletes_the_file_and_says_so(tmp_path: Path, hub: Hub) -> None:
    wrong = "0" * 64
    with pytest.raises(ProviderError, match=rf"checksum mismatch .*expected sha256 {wrong}, got {SHA}"):
        _downloader(tmp_path, hub).fetch(REPO, ModelFile("w.bin", sha256=wrong))
    assert list((tmp_path / REPO).iterdir()) == []


def test_a_missing_file_is_a_clear_error(tmp_path: Path, hub: Hub) -> None:
    with pytest.raises(ProviderError, match=r"missing.bin does not exist \(404\)"):
        _downloader(tmp_path, hub).fetch(REPO, ModelFile("missing.bin"))


def test_an_unreachable_host_says_where_to_put_the_file(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    downloader = Downloader(tmp_path, base_url=f"http://127.0.0.1:{port}", progress=False)
    with pytest.raises(ProviderUnavailable, match=r"cannot reach 127.0.0.1: no network\?") as caught:
        downloader.fetch(REPO, ModelFile("w.bin"))
    assert str(tmp_path / REPO / "w.bin") in caught.value.message
    assert caught.value.field == "PARLEY_MODEL_BASE_URL"


def test_pull_fetches_a_catalog_model_through_the_configured_base_url(tmp_path: Path, hub: Hub) -> None:
    settings = make_settings(tmp_path / "data", model_base_url=hub.url)
    assert not is_present("en_US-lessac-medium", settings)
    path = pull("en_US-lessac-medium", settings, progress=False)
    assert path == local_path("en_US-lessac-medium", settings)
    assert (
        path == tmp_path / "data/models/rhasspy/piper-voices/en/en_US/lessac/medium/en_US-lessac-medium.onnx"
    )
    assert is_present("en_US-lessac-medium", settings)
    assert [p for p, _ in hub.requests] == [
        "/rhasspy/piper-voices/resolve/main/en/en_US/lessac/medium/en_US-lessac-medium.onnx",
        "/rhasspy/piper-voices/resolve/main/en/en_US/lessac/medium/en_US-lessac-medium.onnx.json",
    ]


def test_an_unknown_model_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"unknown model 'gpt-5'.*faster-whisper-base.*qwen2.5-0.5b-instruct"):
        pull("gpt-5", make_settings(tmp_path))
    with pytest.raises(NotFound, match=r"unknown faster-whisper model 'huge'"):
        pull("faster-whisper-huge", make_settings(tmp_path))
