"""Fetch model files once into PARLEY_DATA_DIR/models/<repo>/<path>, then never again.

The transfer is huggingface_hub's `hf_hub_download` in local-dir mode, from PARLEY_MODEL_BASE_URL
(the Hugging Face hub or a mirror that speaks its `/resolve/` protocol: ETag and X-Repo-Commit
headers), so the HTTP side is the library's and not ours to maintain: a HEAD for the ETag, commit
and size, a GET into a temporary file, a cut or stalled body resumed with a Range request (from
the last whole 10 MiB block it wrote), a file lock against a second process, and a rename of the
whole file into place. Its bookkeeping lives in `<root>/<repo>/.cache/huggingface/`. What it does
not resume is a reset connection or a new run: it deletes its partial file. So `retries` here
starts a download that broke off for good over again, from the first byte.

What Parley keeps around it, and why:

- A file already on disk is returned before any request: the library would first ask the server
  whether the file changed, and a machine that pulled once must work offline.
- The catalogue's sha256 is checked after the download (the library checks only the size) and
  remembered in `<file>.sha256` (hash, size, mtime) so later starts skip hashing; a file that
  fails the check is deleted.
- `token=False`, a cache dir inside the model's folder, and no Xet: nothing reads the user's hub
  token, the global ~/.cache/huggingface is not consulted, and every byte comes from the
  configured base URL (Xet fetches from a separate storage host, keeps its own cache under
  HF_HOME and reports telemetry).
- The base URL is knocked on first: the library retries a host it cannot reach with backoff for
  about 23 s before it gives up, and an offline start should say so at once.
- The library's exceptions are translated into `parley.errors` where they come out, with the
  setting to change and the file to put in place by hand.
- Two threads asking for the same file (two providers, or a pull and a first use) download it
  once: the library's lock only takes turns, and the second turn downloads the file again.

Blocking by design (network, file IO, hashing): the CLI calls it directly and providers call it
inside the worker thread that loads the model. huggingface_hub is imported on the first download
only, so `parley doctor` and the availability checks work without it.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from tqdm import tqdm  # type: ignore[import-untyped]

from parley.config import Settings
from parley.errors import (
    ParleyError,
    ProviderError,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderUnavailable,
)
from parley.models.catalog import ModelFile, ModelSpec, sha256_file

#: (bytes on disk so far, total bytes or None when the server does not say)
ProgressCallback = Callable[[int, int | None], None]

BASE_URL_SETTING = "PARLEY_MODEL_BASE_URL"
INSTALL_HINT = "downloading models needs huggingface_hub: pip install 'parley[local]'"

log = logging.getLogger(__name__)
_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def models_dir(settings: Settings) -> Path:
    return settings.data_dir / "models"


@contextmanager
def _only_one(dest: Path) -> Iterator[None]:
    with _locks_guard:
        lock = _locks.setdefault(dest, threading.Lock())
    if not lock.acquire(blocking=False):
        # Said out loud: otherwise a start that waits on another thread's download looks hung.
        log.info("waiting for the download of %s already under way", dest)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


class Downloader:
    """Fetches catalog files from `base_url` (the hub, a mirror, a test server) into `root`.

    `progress` shows a tqdm bar on stderr when stderr is a terminal; `on_progress` is called
    as the bytes land whatever the terminal. `timeout` bounds the knock on the base URL and the
    metadata request (the body's read timeout is the library's, HF_HUB_DOWNLOAD_TIMEOUT). `retries`
    is how many times a download that broke off for good (after the library's own resumes) is
    started again, from the beginning.
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
        """One file: from disk when present and verified (no request), else downloaded."""
        dest = self.root / repo / file.path
        with _only_one(dest):
            try:
                if self._cached(dest, file):
                    return dest
                url = self.url(repo, file.path)
                self._download(repo, file, dest, url)
                self._verify(url, dest, file)
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
        if sha256_file(dest) == file.sha256:
            self._remember(dest, file.sha256)
            return True
        dest.unlink()  # put there by hand, or damaged: fetch a good copy
        return False

    def _download(self, repo: str, file: ModelFile, dest: Path, url: str) -> None:
        try:
            from huggingface_hub import constants, hf_hub_download
        except ImportError as exc:
            raise ProviderNotConfigured(INSTALL_HINT) from exc
        # Process-wide, as the library offers no per-call switch. Parley hands its loaders local
        # folders, so no other hub download in this process depends on Xet.
        constants.HF_HUB_DISABLE_XET = True
        knock = _knock(self.base_url, httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)))
        if knock is not None:
            timed_out = isinstance(knock, httpx.TimeoutException)
            raise self._unreachable(url, dest, timed_out=timed_out) from knock
        local_dir = self.root / repo
        failures = 0
        while True:
            try:
                hf_hub_download(
                    repo,
                    file.path,
                    local_dir=local_dir,
                    cache_dir=local_dir / ".cache" / "huggingface",
                    endpoint=self.base_url,
                    token=False,
                    etag_timeout=self.timeout,
                    library_name="parley",
                    tqdm_class=self._bar_class(Path(file.path).name),
                )
                return
            except Exception as exc:
                error, broke_off = self._translate(exc, url, dest)
                if error is None:
                    raise
                failures += 1
                if not broke_off or failures > self.retries:
                    raise error from exc
                log.warning("%s; starting it again (%d of %d)", error.message, failures, self.retries)

    def _bar_class(self, label: str) -> type[Any]:
        """A tqdm for huggingface_hub to draw with: Parley's bar, and `on_progress` fed from it."""
        shown = self.progress and sys.stderr.isatty()
        on_progress = self.on_progress

        class Bar(tqdm):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.update(desc=label, file=sys.stderr, disable=not shown, leave=False, unit_divisor=1024)
                super().__init__(*args, **kwargs)
                # A disabled tqdm stops counting, and on_progress must not depend on the terminal.
                self.bytes_done: int = kwargs.get("initial") or 0
                self.bytes_total: int | None = kwargs.get("total")
                if on_progress is not None:
                    on_progress(self.bytes_done, self.bytes_total)

            def update(self, n: int = 1) -> bool | None:
                shown_now: bool | None = super().update(n)
                # n < 0 when a server ignored the Range of a resume and the file starts over.
                self.bytes_done += n
                if on_progress is not None:
                    on_progress(self.bytes_done, self.bytes_total)
                return shown_now

        return Bar

    def _translate(self, exc: BaseException, url: str, dest: Path) -> tuple[ParleyError | None, bool]:
        """Parley's error for what came out of huggingface_hub, and whether it broke off midway.

        The library wraps the cause of a failed metadata request in a LocalEntryNotFoundError
        ("not in the local cache"), so the chain is searched for the first link that says why.
        """
        import httpx2
        from huggingface_hub import errors

        for cause in _chain(exc):
            if isinstance(cause, errors.GatedRepoError):
                return _status_error(url, 401), False
            if isinstance(cause, errors.HfHubHTTPError):
                return _status_error(url, cause.response.status_code), False
            if isinstance(cause, errors.OfflineModeIsEnabled):
                message = (
                    f"HF_HUB_OFFLINE is set, so {url} is not fetched: unset it, or put the file at {dest}"
                )
                return ProviderUnavailable(message), False
            if isinstance(cause, errors.FileMetadataError):
                return ProviderError(
                    f"{self.base_url} did not answer like a model hub for {url} ({cause}): is "
                    f"{BASE_URL_SETTING} a hub mirror?",
                    field=BASE_URL_SETTING,
                ), False
            if isinstance(cause, httpx2.ConnectError | httpx2.ProxyError):
                return self._unreachable(url, dest, timed_out=False), False
            if isinstance(cause, httpx2.ConnectTimeout):
                return self._unreachable(url, dest, timed_out=True), False
            if isinstance(cause, httpx2.TransportError):
                return self._broke_off(url, dest, str(cause) or type(cause).__name__), True
        if isinstance(exc, errors.LocalEntryNotFoundError):
            return ProviderUnavailable(f"cannot fetch {url}: {exc}", field=BASE_URL_SETTING), False
        if isinstance(exc, OSError) and exc.errno is None:
            # The body ended short of its announced size ("Consistency check failed").
            return self._broke_off(url, dest, str(exc)), True
        return None, False

    def _unreachable(self, url: str, dest: Path, *, timed_out: bool) -> ProviderUnavailable:
        host = urlsplit(url).hostname or url
        what = f"{host} did not answer in time:" if timed_out else f"cannot reach {host}: no network?"
        return ProviderUnavailable(
            f"{what} fetch {url} elsewhere and put it at {dest}, or point {BASE_URL_SETTING} at a mirror",
            field=BASE_URL_SETTING,
        )

    @staticmethod
    def _broke_off(url: str, dest: Path, why: str) -> ProviderUnavailable:
        return ProviderUnavailable(
            f"download of {url} broke off ({why}); nothing of it was kept: try again, or fetch it "
            f"elsewhere and put it at {dest}",
            field=BASE_URL_SETTING,
        )

    def _verify(self, url: str, dest: Path, file: ModelFile) -> None:
        size = dest.stat().st_size
        if file.size is not None and size != file.size:
            dest.unlink()
            raise ProviderError(f"{url} has {size} bytes, expected {file.size}; the file was deleted")
        if file.sha256 is None:
            return
        actual = sha256_file(dest)
        if actual != file.sha256:
            dest.unlink()
            raise ProviderError(
                f"checksum mismatch for {url}: expected sha256 {file.sha256}, got {actual}; the file was "
                f"deleted. A broken mirror or proxy? Check {BASE_URL_SETTING} and try again",
                field=BASE_URL_SETTING,
            )
        self._remember(dest, file.sha256)

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


def _status_error(url: str, status: int) -> ProviderError:
    if status == 404:
        return ProviderError(
            f"{url} does not exist (404): a wrong model name, or {BASE_URL_SETTING} is not a hub mirror",
            field=BASE_URL_SETTING,
        )
    if status in (401, 403):
        # The hub answers 401 for a repository that is missing, private or gated alike.
        return ProviderError(
            f"{url} is missing or needs authorisation ({status}): a gated model? fetch it by hand"
        )
    if status == 429:
        return ProviderRateLimited(f"{url}: the hub is rate limiting downloads (429); try again later")
    if status >= 500:
        return ProviderUnavailable(f"{url}: the server failed ({status}); try again later")
    return ProviderError(f"{url}: unexpected HTTP {status}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what caused it, in the order a traceback prints them from the bottom."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = (
            link.__cause__
            if link.__cause__ is not None
            else None
            if link.__suppress_context__
            else link.__context__
        )


def _knock(base_url: str, timeout: float | httpx.Timeout) -> httpx.HTTPError | None:
    try:
        httpx.head(base_url, timeout=timeout)
    except httpx.HTTPError as exc:
        return exc
    return None


def probe(base_url: str, *, timeout: float = 2.0) -> str | None:
    """None when `base_url` answers at all; else why not (for `check()`: will a download work?)."""
    failure = _knock(base_url, timeout)
    if failure is None:
        return None
    return f"{urlsplit(base_url).hostname or base_url} unreachable ({type(failure).__name__})"
