"""Optional: sample the Parley process with py-spy while a measurement runs (`run.py --profile DIR`).

py-spy is not a dependency (`.venv/bin/pip install py-spy`). It reads the process from outside,
with `--nonblocking` so Parley is never paused, but the sampling still costs CPU on a 2-core box:
take figures from a run without `--profile`.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

_FRAME = re.compile(r"^(.*) \(([^()]*):\d+\)$")


def py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


@asynccontextmanager
async def profiled(pid: int, out: Path | None) -> AsyncIterator[None]:
    """Record collapsed stacks of `pid` to `out` (nothing happens when `out` is None)."""
    if out is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        py_spy(),
        "record",
        f"--pid={pid}",
        "--rate=500",
        "--nonblocking",
        "--format=raw",
        f"--output={out}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)  # attaching takes a moment; samples before the load are idle anyway
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def hot_spots(path: Path, top: int = 12) -> list[str]:
    """Where the event-loop thread was on CPU: own time per function, and Parley's frames inclusive.

    Only samples under `asyncio.Runner.run` count: the loop is what delays a token. Own time in
    `Runner.run` itself is uvloop's C code (socket reads and writes, callbacks).
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "Runner.run (" not in stack or not count.isdigit():
            continue
        frames = [_short(frame) for frame in stack.split(";")]
        busy += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            if "[parley/" in frame and "[parley/cli.py]" not in frame:
                inclusive[frame] += int(count)
    if not busy:
        return [f"{path.name}: no samples of the event loop"]
    lines = [f"{path.name}: {busy} samples of the event loop on CPU; own time:"]
    lines += [f"  {n * 100 / busy:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("  Parley's frames, inclusive:")
    lines += [f"  {n * 100 / busy:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return lines


def _short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `func [pkg/mod.py]`."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    name, file = match.groups()
    return f"{name} [{file.split('site-packages/')[-1].split('src/')[-1]}]"
