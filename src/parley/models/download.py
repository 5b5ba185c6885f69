"""Fetch model files once into PARLEY_DATA_DIR/models/<repo>/<path>, then never again.

A model is hundreds of megabytes over whatever link the user has, so a download must survive
being cut: bytes land in `<file>.part`, a retry (or the next run) asks for the rest with an HTTP
Range, and a server that ignores Range (answers 200) simply starts the file over. Only a complete,
verified file is renamed into place, so a present file is always a whole one. A known sha256 is
checked once and remembered in `<file>.sha256` (hash, size, mtime) so later starts skip hashing.

Blocking by design (httpx sync, file IO, hashing): the CLI calls it directly and providers call it
inside the worker thread that loads the model.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import httpx
from tqdm import tqdm  # type: ignore[import-untyped]

from parley.config import Settings
from parley.errors import ParleyError, ProviderError, ProviderRateLimited, ProviderUnavailable
from parley.models.catalog import ModelFile, ModelSpec

#: (bytes on disk so far, total bytes or None when the server does not say)
ProgressCallback = Callable[[int, int | None], None]

BASE_URL_SETTING = "PARLEY_MODEL_BASE_URL"
_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


class _Interrupted(Exception):
    """The body stopped before its end: keep the .part and resume."""


def models_dir(settings: Settings) -> Path:
    return settings.data_dir / "models"


def _lock_for(path: Path) -> threading.Lock:
    # Two providers (or a pull and a first use) asking for the same file download it once.
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class Downloader:
    """Fetches catalog files from `base_url` (the hub, a mirror, a test server) into `root`.

    `progress` shows a tqdm bar on stderr when stderr is a terminal; `on_progress` is called
    after every chunk whatever the terminal. `retries` is how many times a transfer cut midway
    is resumed before giving up (the .part stays for the next run).
    """

    def __init__(
        self,
        root: Path,
        *,
        base_url: str = "https://huggingface.co",
        progress: bool = True,
        on_progress: ProgressCallback | None = None,
        timeout: float = 30.0,
        retries: int = 3,
    ) -> None:
        self.root = root
        self.base_url = base_url.rstrip("/")
        self.progress = progress
        self.on_progress = on_progress
        self.timeout = timeout
        self.retries = retries

    @classmethod
    def from_settings(
        cls, settings: Settings, *, progress: bool = True, on_progress: ProgressCallback | None = None
    ) -> Downloader:
        return cls(
            models_dir(settings), base_url=settings.model_base_url, progress=progress, on_progress=on_progress
        )

    # -- where things are ----------------------------------------------------------------------
    def url(self, repo: str, path: str) -> str:
        return f"{self.base_url}/{repo}/resolve/main/{path}"

    def folder(self, spec: ModelSpec) -> Path:
        return self.root / spec.repo

    def local_path(self, spec: ModelSpec) -> Path:
        """What a loader opens: the main file, or the model's folder when it has none."""
        return self.folder(spec) / spec.main if spec.main else self.folder(spec)

    def is_present(self, spec: ModelSpec) -> bool:
        """Every file is in place (not hashed: a cheap answer for `parley doctor`)."""
        return all((self.folder(spec) / file.path).is_file() for file in spec.files)

    # -- fetching ------------------------------------------------------------------------------
    def fetch_model(self, spec: ModelSpec) -> Path:
        """Make every file of `spec` present and verified; return `local_path(spec)`."""
        for file in spec.files:
            self.fetch(spec.repo, file)
        return self.local_path(spec)

    def fetch(self, repo: str, file: ModelFile) -> Path:
        """One file: from the cache when present and verified, else downloaded (resuming a .part)."""
        dest = self.root / repo / file.path
        with _lock_for(dest):
            if self._cached(dest, file):
                return dest
            url = self.url(repo, file.path)
            part = dest.with_name(dest.name + ".part")
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                self._download(url, part, dest, file)
                self._verify(url, part, file)
                os.replace(part, dest)
                if file.sha256:
                    self._remember(dest, file.sha256)
            except OSError as exc:
                raise ParleyError(f"cannot write {dest}: {exc.strerror or exc}") from exc
            return dest

    def _cached(self, dest: Path, file: ModelFile) -> bool:
        if not dest.is_file():
            return False
        if file.size is not None and dest.stat().st_size != file.size:
            dest.unlink()
            return False
        if file.sha256 is None or self._remembered(dest, file.sha256):
            return True
        if _sha256(dest) == file.sha256:
            self._remember(dest, file.sha256)
            return True
        dest.unlink()  # put there by hand, or damaged: fetch a good copy
        return False

    def _download(self, url: str, part: Path, dest: Path, file: ModelFile) -> None:
        failures = 0
        while True:
            try:
                self._transfer(url, part, file)
                return
            except _Interrupted as exc:
                failures += 1
                if failures > self.retries:
                    have = part.stat().st_size if part.exists() else 0
                    raise ProviderUnavailable(
                        f"download of {url} broke off after {have} bytes ({exc}); the partial file "
                        f"{part} is kept and the next attempt resumes from it"
                    ) from exc
            except httpx.ConnectError as exc:
                host = urlsplit(url).hostname or url
                raise ProviderUnavailable(
                    f"cannot reach {host}: no network? fetch {url} elsewhere and put it at {dest}, "
                    f"or point {BASE_URL_SETTING} at a mirror",
                    field=BASE_URL_SETTING,
                ) from exc
            except httpx.TimeoutException as exc:
                raise ProviderUnavailable(
                    f"{urlsplit(url).hostname} did not answer within {self.timeout:g} s: fetch {url} "
                    f"elsewhere and put it at {dest}",
                    field=BASE_URL_SETTING,
                ) from exc

    def _transfer(self, url: str, part: Path, file: ModelFile) -> None:
        offset = part.stat().st_size if part.exists() else 0
        if file.size is not None and offset > file.size:
            part.unlink()
            offset = 0
        # identity: byte ranges of a compressed body would not be byte ranges of the file
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        try:
            with (
                httpx.Client(follow_redirects=True, timeout=timeout) as client,
                client.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code == 416 and offset:
                    # The .part already holds every byte (cut just before the rename) or is junk.
                    if _range_total(response) == offset:
                        return
                    part.unlink()
                    raise _Interrupted("the server refused to resume; starting over")
                if response.status_code == 206 and _range_start(response) == offset:
                    mode = "ab"
                elif response.status_code == 200:
                    offset, mode = 0, "wb"  # Range ignored: the body is the whole file
                elif response.status_code == 206:
                    part.unlink()
                    raise _Interrupted("the server resumed at the wrong byte; starting over")
                else:
                    _raise_status(url, response)
                length = response.headers.get("content-length")
                total = offset + int(length) if length is not None else file.size
                self._write(response, part, mode, offset, total, Path(file.path).name)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout, httpx.WriteError) as exc:
            raise _Interrupted(str(exc) or type(exc).__name__) from exc
        have = part.stat().st_size
        if total is not None and have < total:
            raise _Interrupted(f"got {have} of {total} bytes")

    def _write(
        self, response: httpx.Response, part: Path, mode: str, done: int, total: int | None, label: str
    ) -> None:
        bar = tqdm(
            total=total,
            initial=done,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=label,
            file=sys.stderr,
            disable=not (self.progress and sys.stderr.isatty()),
            leave=False,
        )
        if self.on_progress is not None:
            self.on_progress(done, total)
        with bar, part.open(mode) as out:
            # As the bytes arrive, not re-chunked: a re-chunking buffer loses its tail when the
            # connection drops, and the .part must keep every byte that came.
            for chunk in response.iter_bytes():
                out.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
                if self.on_progress is not None:
                    self.on_progress(done, total)

    def _verify(self, url: str, part: Path, file: ModelFile) -> None:
        size = part.stat().st_size
        if file.size is not None and size != file.size:
            part.unlink()
            raise ProviderError(f"{url} has {size} bytes, expected {file.size}; the file was deleted")
        if file.sha256 is None:
            return
        actual = _sha256(part)
        if actual != file.sha256:
            part.unlink()
            raise ProviderError(
                f"checksum mismatch for {url}: expected sha256 {file.sha256}, got {actual}; the file was "
                f"deleted. A broken mirror or proxy? Check {BASE_URL_SETTING} and try again",
                field=BASE_URL_SETTING,
            )

    @staticmethod
    def _marker(dest: Path) -> Path:
        return dest.with_name(dest.name + ".sha256")

    def _remember(self, dest: Path, sha256: str) -> None:
        stat = dest.stat()
        self._marker(dest).write_text(f"{sha256} {stat.st_size} {stat.st_mtime_ns}\n")

    def _remembered(self, dest: Path, sha256: str) -> bool:
        try:
            recorded = self._marker(dest).read_text().split()
        except OSError:
            return False
        stat = dest.stat()
        return recorded == [sha256, str(stat.st_size), str(stat.st_mtime_ns)]


def _range_start(response: httpx.Response) -> int | None:
    # "bytes 100-999/1000"
    value = response.headers.get("content-range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _range_total(response: httpx.Response) -> int | None:
    # "bytes */1000"
    value = response.headers.get("content-range", "")
    try:
        return int(value.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None


def _raise_status(url: str, response: httpx.Response) -> NoReturn:
    status = response.status_code
    if status == 404:
        raise ProviderError(
            f"{url} does not exist (404): a wrong model name, or {BASE_URL_SETTING} is not a hub mirror",
            field=BASE_URL_SETTING,
        )
    if status in (401, 403):
        raise ProviderError(f"{url} needs authorisation ({status}): a gated model? fetch it by hand")
    if status == 429:
        raise ProviderRateLimited(f"{url}: the hub is rate limiting downloads (429); try again later")
    if status >= 500:
        raise ProviderUnavailable(f"{url}: the server failed ({status}); try again later")
    raise ProviderError(f"{url}: unexpected HTTP {status}")


def probe(base_url: str, *, timeout: float = 2.0) -> str | None:
    """None when `base_url` answers at all; else why not (for `check()`: will a download work?)."""
    try:
        httpx.head(base_url, timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{urlsplit(base_url).hostname or base_url} unreachable ({type(exc).__name__})"
    return None
