"""The downloader against a hub stand-in on 127.0.0.1: placement, resume, checksum, cache, locking, errors.

The stand-in speaks what huggingface_hub asks of a hub: HEAD and GET on
`/<org>/<name>/resolve/main/<path>` answered with `ETag` (the sha256, as the hub gives for LFS
files), `X-Repo-Commit` and `Content-Length`, byte ranges (206 + `Content-Range`), and the hub's
404 (`X-Error-Code: EntryNotFound`). It can cut a body short, reset the connection, ignore Range,
hold a body until told, or answer like a plain web server that is no hub.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from parley.errors import NotFound, ProviderError, ProviderUnavailable
from parley.models import Downloader, is_present, local_path, pull
from parley.models.catalog import ModelFile
from tests.conftest import make_settings

MiB = 1024 * 1024
SMALL = random.Random(1).randbytes(200_000)
# Larger than the 10 MiB huggingface_hub writes at a time, so a body cut at CUT leaves whole
# chunks on disk to resume after.
BIG = random.Random(2).randbytes(12 * MiB)
CUT = 11 * MiB
REPO = "acme/tiny-model"
COMMIT = "5f3a" * 10
_RESOLVE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/main/(?P<path>.+)")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class Hub:
    """What the stand-in serves and how; what it was asked.

    A file ("<repo>/<path>") is `served[name]`, else `default`; `read` replaces both (files on
    disk); `missing.bin` is never there.
    """

    served: dict[str, bytes] = field(default_factory=dict)
    default: bytes | None = None
    read: Callable[[str], bytes | None] | None = None
    #: False: answer like a plain web server (no ETag, no X-Repo-Commit, no X-Error-Code)
    speaks_hub: bool = True
    ranges: bool = True
    #: offer the file through Xet storage too, as the hub does for large files
    xet: bool = False
    #: bytes after which the next GET body is cut short (one entry per response to cut)
    cuts: list[int] = field(default_factory=list)
    #: bytes after which the next GET's connection is reset (TCP RST)
    resets: list[int] = field(default_factory=list)
    #: when set, the first GET body waits for it (and `streaming` says it is waiting)
    gate: threading.Event | None = None
    streaming: threading.Event = field(default_factory=threading.Event)
    on_request: Callable[[Request], None] | None = None
    requests: list[Request] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    url: str = ""

    def content(self, name: str) -> bytes | None:
        if name.endswith("/missing.bin"):
            return None
        return self.read(name) if self.read is not None else self.served.get(name, self.default)

    def asked(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and _RESOLVE.fullmatch(urlsplit(r.path).path)]


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, *, body: bool) -> None:
            request = Request(
                self.command, self.path, self.headers.get("Range"), self.headers.get("Authorization")
            )
            hub.requests.append(request)
            if hub.on_request is not None:
                hub.on_request(request)
            match = _RESOLVE.fullmatch(unquote(urlsplit(self.path).path))
            repo, path = match.group("repo", "path") if match else ("", "")
            data = hub.content(f"{repo}/{path}") if match else None
            if data is None:
                self.send_response(404)
                if hub.speaks_hub:
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Error-Message", "Entry not found")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = (
                int(request.range.removeprefix("bytes=").split("-")[0]) if request.range and hub.ranges else 0
            )
            self.send_response(206 if start else 200)
            if hub.speaks_hub:
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
            if hub.xet:
                self.send_header("X-Xet-Hash", hashlib.sha256(data + b"xet").hexdigest())
                route = f"{hub.url}/api/models/{repo}/xet-read-token/{COMMIT}"
                self.send_header("X-Xet-Refresh-Route", route)
            if hub.ranges:
                self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if body:
                self._body(data[start:])

        def _body(self, payload: bytes) -> None:
            if hub.gate is not None and not hub.streaming.is_set():
                hub.streaming.set()
                hub.gate.wait(60)  # a bound so a broken test fails instead of hanging
            if hub.resets:
                self.wfile.write(payload[: hub.resets.pop(0)])
                self.wfile.flush()
                # SO_LINGER 0 turns the close into a reset. The file objects hold the socket open,
                # so they go first; the server's own final flush then lands in a dummy.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.wfile.close()
                self.rfile.close()
                self.connection.close()
                self.wfile = io.BytesIO()
                self.close_connection = True
                hub.sent.append(-1)
                return
            if hub.cuts:
                payload = payload[: hub.cuts.pop(0)]
                self.close_connection = True
            self.wfile.write(payload)
            hub.sent.append(len(payload))

    return Handler


@contextmanager
def _serving(hub: Hub) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        hub.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield hub.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def hub() -> Iterator[Hub]:
    """Every path of every repository is SMALL, unless a test serves something else."""
    hub = Hub(default=SMALL)
    with _serving(hub):
        yield hub


def _serve(hub: Hub, path: str, data: bytes) -> None:
    hub.served[f"{REPO}/{path}"] = data


@contextmanager
def static_hub(files: dict[str, bytes], root: Path) -> Iterator[tuple[str, list[str]]]:
    """A hub serving `files` ({"<repo>/<path>": bytes}) from `root` on disk; yields (base URL,
    paths of the files transferred, i.e. GETs). For the provider tests."""
    for name, data in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    asked: list[str] = []

    def read(name: str) -> bytes | None:
        path = root / name
        return path.read_bytes() if path.is_file() else None

    def note(request: Request) -> None:
        if request.method == "GET":
            asked.append(request.path)

    with _serving(Hub(read=read, on_request=note)) as url:
        yield url, asked


def _downloader(root: Path, hub: Hub, **options: object) -> Downloader:
    return Downloader(root, base_url=hub.url, progress=False, **options)  # type: ignore[arg-type]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _leftovers(root: Path) -> list[Path]:
    """Files a failed download left outside huggingface_hub's bookkeeping folder."""
    return [p for p in root.rglob("*") if p.is_file() and ".cache" not in p.relative_to(root).parts]


def test_fetches_into_the_repo_path_without_a_token_and_reports_progress(
    tmp_path: Path, hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_a_token_parley_must_not_send")
    _serve(hub, "sub/weights.bin", BIG)
    seen: list[tuple[int, int | None]] = []
    path = _downloader(tmp_path, hub, on_progress=lambda done, total: seen.append((done, total))).fetch(
        REPO, ModelFile("sub/weights.bin")
    )
    assert path == tmp_path / REPO / "sub" / "weights.bin"
    assert path.read_bytes() == BIG
    assert _leftovers(tmp_path) == [path]
    assert [(r.method, r.path) for r in hub.asked("HEAD") + hub.asked("GET")] == [
        ("HEAD", f"/{REPO}/resolve/main/sub/weights.bin"),
        ("GET", f"/{REPO}/resolve/main/sub/weights.bin"),
    ]
    assert all(r.authorization is None for r in hub.requests)
    assert seen[0] == (0, len(BIG)) and seen[-1] == (len(BIG), len(BIG))
    assert len(seen) >= 3 and [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_a_present_file_is_not_fetched_again_and_needs_no_network(tmp_path: Path, hub: Hub) -> None:
    downloader = _downloader(tmp_path, hub)
    files = (ModelFile("a.bin"), ModelFile("b.bin", sha256=hashlib.sha256(SMALL).hexdigest()))
    for file in files:
        downloader.fetch(REPO, file)
        downloader.fetch(REPO, file)
    assert [r.method for r in hub.asked("HEAD") + hub.asked("GET")] == ["HEAD", "HEAD", "GET", "GET"]
    asked = len(hub.requests)
    assert (tmp_path / REPO / "b.bin.sha256").read_text().startswith(hashlib.sha256(SMALL).hexdigest())
    offline = Downloader(tmp_path, base_url=f"http://127.0.0.1:{_closed_port()}", progress=False)
    assert [offline.fetch(REPO, file).read_bytes() for file in files] == [SMALL, SMALL]
    assert len(hub.requests) == asked


def test_a_cut_transfer_resumes_with_a_range_request(tmp_path: Path, hub: Hub) -> None:
    _serve(hub, "w.bin", BIG)
    hub.cuts = [CUT]
    path = _downloader(tmp_path, hub).fetch(REPO, ModelFile("w.bin", sha256=hashlib.sha256(BIG).hexdigest()))
    assert path.read_bytes() == BIG
    first, second = hub.asked("GET")
    assert first.range is None and second.range is not None
    start = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= CUT
    assert hub.sent == [CUT, len(BIG) - start]


def test_a_server_that_ignores_range_restarts_the_file(tmp_path: Path, hub: Hub) -> None:
    _serve(hub, "w.bin", BIG)
    hub.ranges = False
    hub.cuts = [CUT]
    path = _downloader(tmp_path, hub).fetch(REPO, ModelFile("w.bin", sha256=hashlib.sha256(BIG).hexdigest()))
    assert path.read_bytes() == BIG  # the 200 body replaced the partial one, not appended to it
    assert hub.sent == [CUT, len(BIG)]


def test_a_reset_connection_starts_the_download_again(tmp_path: Path, hub: Hub) -> None:
    hub.resets = [50_000]
    path = _downloader(tmp_path, hub, retries=1).fetch(REPO, ModelFile("w.bin"))
    assert path.read_bytes() == SMALL
    assert [r.range for r in hub.asked("GET")] == [None, None]


def test_a_download_that_keeps_breaking_gives_up_and_keeps_nothing(tmp_path: Path, hub: Hub) -> None:
    hub.resets = [50_000, 50_000]
    with pytest.raises(ProviderUnavailable, match=r"download of .*/w.bin broke off .*nothing of it was kept"):
        _downloader(tmp_path, hub, retries=1).fetch(REPO, ModelFile("w.bin"))
    assert len(hub.asked("GET")) == 2
    assert _leftovers(tmp_path) == []


def test_a_checksum_mismatch_deletes_the_file_and_says_so(tmp_path: Path, hub: Hub) -> None:
    wrong = "0" * 64
    actual = hashlib.sha256(SMALL).hexdigest()
    with pytest.raises(ProviderError, match=rf"checksum mismatch .*expected sha256 {wrong}, got {actual}"):
        _downloader(tmp_path, hub).fetch(REPO, ModelFile("w.bin", sha256=wrong))
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("speaks_hub", [True, False], ids=["hub", "plain-404"])
def test_a_missing_file_is_a_clear_error(tmp_path: Path, hub: Hub, speaks_hub: bool) -> None:
    hub.speaks_hub = speaks_hub
    with pytest.raises(ProviderError, match=r"missing.bin does not exist \(404\)") as caught:
        _downloader(tmp_path, hub).fetch(REPO, ModelFile("missing.bin"))
    assert type(caught.value) is ProviderError
    assert caught.value.field == "PARLEY_MODEL_BASE_URL"


def test_a_server_that_is_no_hub_is_named(tmp_path: Path, hub: Hub) -> None:
    hub.speaks_hub = False
    with pytest.raises(ProviderError, match=r"did not answer like a model hub .*PARLEY_MODEL_BASE_URL a hub"):
        _downloader(tmp_path, hub).fetch(REPO, ModelFile("w.bin"))
    assert hub.asked("GET") == []


def test_an_unreachable_host_says_where_to_put_the_file(tmp_path: Path) -> None:
    downloader = Downloader(tmp_path, base_url=f"http://127.0.0.1:{_closed_port()}", progress=False)
    with pytest.raises(ProviderUnavailable, match=r"cannot reach 127.0.0.1: no network\?") as caught:
        downloader.fetch(REPO, ModelFile("w.bin"))
    assert str(tmp_path / REPO / "w.bin") in caught.value.message
    assert "PARLEY_MODEL_BASE_URL" in caught.value.message
    assert caught.value.field == "PARLEY_MODEL_BASE_URL"


def test_an_unreachable_host_is_asked_once(tmp_path: Path) -> None:
    """huggingface_hub alone retries a host it cannot get an answer from, with backoff."""
    hang_ups = 0
    with socket.create_server(("127.0.0.1", 0)) as server:

        def hang_up() -> None:
            nonlocal hang_ups
            while True:
                try:
                    connection, _ = server.accept()
                except OSError:
                    return  # the test is over
                hang_ups += 1
                connection.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        downloader = Downloader(
            tmp_path, base_url=f"http://127.0.0.1:{server.getsockname()[1]}", progress=False
        )
        try:
            with pytest.raises(ProviderUnavailable, match=r"cannot reach 127.0.0.1"):
                downloader.fetch(REPO, ModelFile("w.bin"))
        finally:
            server.shutdown(socket.SHUT_RDWR)  # wakes the accept()
            thread.join()
    assert hang_ups == 1


def test_a_file_the_hub_offers_through_xet_still_comes_from_the_base_url(tmp_path: Path, hub: Hub) -> None:
    hub.xet = True
    path = _downloader(tmp_path, hub).fetch(REPO, ModelFile("w.bin"))
    assert path.read_bytes() == SMALL
    assert [r.method for r in hub.requests if "/api/" in r.path or "/resolve/" in r.path] == ["HEAD", "GET"]


def test_two_threads_fetching_one_file_download_it_once(
    tmp_path: Path, hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    hub.gate = threading.Event()
    # The second fetch either waits for the first (and says so) or, wrongly, asks the hub itself.
    second_moved = threading.Event()
    hub.on_request = lambda _: second_moved.set() if hub.streaming.is_set() else None

    class Waits(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "already under way" in record.getMessage():
                second_moved.set()

    logger = logging.getLogger("parley.models.download")
    caplog.set_level(logging.INFO, logger=logger.name)
    waits = Waits()
    logger.addHandler(waits)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(_downloader(tmp_path, hub).fetch, REPO, ModelFile("w.bin"))
            assert hub.streaming.wait(60)
            second = pool.submit(_downloader(tmp_path, hub).fetch, REPO, ModelFile("w.bin"))
            assert second_moved.wait(60)
            hub.gate.set()
            paths = {first.result(), second.result()}
    finally:
        logger.removeHandler(waits)
    assert paths == {tmp_path / REPO / "w.bin"}
    assert [r.method for r in hub.asked("HEAD") + hub.asked("GET")] == ["HEAD", "GET"]
    assert (tmp_path / REPO / "w.bin").read_bytes() == SMALL


def test_pull_fetches_a_catalog_model_through_the_configured_base_url(tmp_path: Path, hub: Hub) -> None:
    settings = make_settings(tmp_path / "data", model_base_url=hub.url)
    assert not is_present("en_US-lessac-medium", settings)
    path = pull("en_US-lessac-medium", settings, progress=False)
    assert path == local_path("en_US-lessac-medium", settings)
    assert (
        path == tmp_path / "data/models/rhasspy/piper-voices/en/en_US/lessac/medium/en_US-lessac-medium.onnx"
    )
    assert is_present("en_US-lessac-medium", settings)
    voice = "/rhasspy/piper-voices/resolve/main/en/en_US/lessac/medium/en_US-lessac-medium.onnx"
    assert [r.path for r in hub.asked("GET")] == [voice, f"{voice}.json"]


def test_an_unknown_model_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"unknown model 'gpt-5'.*faster-whisper-base.*qwen2.5-0.5b-instruct"):
        pull("gpt-5", make_settings(tmp_path))
    with pytest.raises(NotFound, match=r"unknown faster-whisper model 'huge'"):
        pull("faster-whisper-huge", make_settings(tmp_path))
