"""Firmware files the operator placed for devices: `<PARLEY_DATA_DIR>/firmware/<board>_<version>.bin`.

A device is offered a file only for its own board (`board.type` of its system info: another
board's image would brick it) and only when the file's version is newer than the one it runs.
Versions compare as dotted numbers (`1.10.0` > `1.9.2`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from parley.errors import NotFound

FILE_RE = re.compile(r"^(?P<board>[A-Za-z0-9][A-Za-z0-9._-]{0,63})_(?P<version>\d+(?:\.\d+){0,3})\.bin$")


def version_key(version: str) -> tuple[int, ...] | None:
    if not re.fullmatch(r"\d+(?:\.\d+){0,3}", version):
        return None
    return tuple(int(part) for part in version.split("."))


def board_of(info: Any) -> str | None:
    board = info.get("board") if isinstance(info, dict) else None
    kind = board.get("type") if isinstance(board, dict) else None
    return kind if isinstance(kind, str) and kind else None


def newer_firmware(directory: Path, board: str | None, running: str | None) -> tuple[str, str] | None:
    """(file name, version) of the newest image for `board` newer than `running`, if any."""
    if board is None or not directory.is_dir():
        return None
    current = version_key(running or "0") or (0,)
    best: tuple[tuple[int, ...], str, str] | None = None
    for path in directory.iterdir():
        match = FILE_RE.match(path.name)
        if match is None or match["board"] != board or not path.is_file():
            continue
        key = version_key(match["version"])
        if key is not None and key > current and (best is None or key > best[0]):
            best = (key, path.name, match["version"])
    return None if best is None else (best[1], best[2])


def firmware_file(directory: Path, name: str) -> Path:
    """The file a device downloads; NotFound for any name that is not a placed image."""
    path = directory / name
    if FILE_RE.match(name) is None or not path.is_file():
        raise NotFound(f"no firmware file {name[:80]!r}", field="file")
    return path
