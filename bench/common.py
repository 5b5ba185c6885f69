"""What the benchmarks share: the two server processes, the clock, percentiles and tables.

Every timestamp is `time.perf_counter()`. On Linux CPython implements it with
`clock_gettime(CLOCK_MONOTONIC)`, one system-wide clock, so a stamp taken in the stand-in's process
can be subtracted from one taken in a client process; `check_shared_clock()` verifies both the
implementation and that a child's stamp falls inside the parent's window.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from parley.standins.server import free_port

BENCH_DIR = Path(__file__).resolve().parent
ACCOUNT = "bench-account"
TOKEN = "bench-token"
MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
FIRST_TOKEN_DELAY = 0.05
TOKEN_INTERVAL = 0.02
HOST = "127.0.0.1"
#: PARLEY_AUTH=none is one user: its default rate (30 turns a minute) and session cap would refuse
#: a bench's turns long before they measure anything. The limiter still runs on every turn.
UNLIMITED = {"PARLEY_RATE_CHAT": "1000000/minute", "PARLEY_MAX_SESSIONS_PER_USER": "1000000"}

T = TypeVar("T")


def raise_nofile() -> int:
    """Lift the soft open-files limit to the hard one (no root needed); children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 16 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """uvloop when installed, as uvicorn picks it for both servers: the clients should not be the
    slowest loop in the room."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# -- the clock ------------------------------------------------------------------------------------


def check_shared_clock() -> str:
    """Fail loudly if perf_counter stamps cannot be compared across processes."""
    info = time.get_clock_info("perf_counter")
    if sys.platform.startswith("linux") and "CLOCK_MONOTONIC" not in info.implementation:
        raise RuntimeError(f"perf_counter is {info.implementation}; cross-process stamps would not compare")
    before = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", "import time; print(repr(time.perf_counter()))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = time.perf_counter()
    child = float(out)
    if not before <= child <= after:
        raise RuntimeError(f"a child's perf_counter {child} is outside the parent's [{before}, {after}]")
    return (
        f"perf_counter = {info.implementation}; a child process's stamp fell inside the parent's "
        f"{(after - before) * 1000:.0f} ms window"
    )


# -- the servers ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(slots=True, frozen=True)
class Stamps:
    """Upstream `perf_counter()` just before each stream's first and last token, by user message."""

    first: dict[str, float]
    last: dict[str, float]


@dataclass(slots=True)
class Servers:
    standin_url: str
    parley_url: str
    parley_pid: int
    http: httpx.AsyncClient

    async def stamps(self) -> Stamps:
        """The stand-in's stamps since the last call (it forgets them once read)."""
        response = await self.http.post(f"{self.standin_url}/_bench/stamps")
        response.raise_for_status()
        body = response.json()
        return Stamps(body["first"], body["last"])

    def parley_cpu(self) -> float:
        return cpu_seconds(self.parley_pid)

    def parley_rss_mb(self) -> float:
        return rss_mb(self.parley_pid)


async def _wait_ready(http: httpx.AsyncClient, proc: asyncio.subprocess.Process, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode} before answering")
        try:
            await http.get(url)
            return
        except httpx.TransportError:
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within 30 s")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def server_env(standin_url: str, data_dir: str | Path) -> dict[str, str]:
    """The environment of a `parley serve` under measurement: the Workers AI stand-in at
    `standin_url` as its model, its data in `data_dir`. Nothing from the caller's environment or a
    stray .env may change what is measured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "CLOUDFLARE_"))}
    return env | {
        "CLOUDFLARE_ACCOUNT_ID": ACCOUNT,
        "CLOUDFLARE_API_TOKEN": TOKEN,
        "PARLEY_WORKERS_AI_BASE_URL": f"{standin_url}/client/v4",
        "PARLEY_LLM": "workers-ai",
        "PARLEY_LLM_MODEL": MODEL,
        "PARLEY_DATA_DIR": str(data_dir),
        "PARLEY_LOG_LEVEL": "WARNING",
        # a new conversation's title would be a second model call per measured turn
        "PARLEY_TITLES": "words",
    }


@asynccontextmanager
async def servers(settings: Mapping[str, str] | None = None) -> AsyncIterator[Servers]:
    """The Workers AI stand-in and `parley serve`, each in its own process, on 127.0.0.1;
    `settings` adds PARLEY_* variables of the bench's own to the server's environment."""
    standin_port, parley_port = free_port(HOST), free_port(HOST)
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        standin = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH_DIR / "standin.py"),
            f"--port={standin_port}",
            f"--first-token-delay={FIRST_TOKEN_DELAY}",
            f"--token-interval={TOKEN_INTERVAL}",
        )
        procs = [standin]
        try:
            standin_url = f"http://{HOST}:{standin_port}"
            env = server_env(standin_url, tmp) | UNLIMITED | dict(settings or {})
            parley = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "parley"),
                "serve",
                f"--port={parley_port}",
                env=env,
                cwd=tmp,
                stderr=asyncio.subprocess.DEVNULL,
            )
            procs.append(parley)
            # No keep-alive: httpcore 1.0's pool polls every idle connection on each request and
            # each response close (encode/httpx#3215), which with 100 idle connections costs this
            # client ~1 s per burst of 100 streams and would skew both paths. A loopback connect is cheap.
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
            async with httpx.AsyncClient(limits=limits, timeout=30) as http:
                parley_url = f"http://{HOST}:{parley_port}"
                await _wait_ready(http, standin, f"{standin_url}/_bench/ping")
                await _wait_ready(http, parley, f"{parley_url}/healthz")
                yield Servers(standin_url, parley_url, parley.pid, http)
        finally:
            for proc in reversed(procs):
                await _stop(proc)


# -- numbers and tables ---------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Summary:
    n: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        ordered = sorted(values)
        if not ordered:
            return cls(0, float("nan"), float("nan"), float("nan"), float("nan"))
        return cls(
            len(ordered),
            percentile(ordered, 50),
            percentile(ordered, 95),
            percentile(ordered, 99),
            ordered[-1],
        )

    def cells(self) -> list[str]:
        return [str(self.n), *(f"{v:.2f}" for v in (self.p50, self.p95, self.p99, self.max))]


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) on sorted values."""
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def machine() -> list[str]:
    cpu = "unknown cpu"
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for dist in ("parley", "uvicorn", "fastapi", "starlette", "httpx", "websockets", "uvloop", "httptools"):
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist} -")
    return [
        f"machine: nproc={os.cpu_count()} ({len(os.sched_getaffinity(0))} usable), {cpu}, "
        f"{platform.system()} {platform.release()}",
        f"python {platform.python_version()}; " + ", ".join(versions),
        f"open files limit: {raise_nofile()}",
    ]
