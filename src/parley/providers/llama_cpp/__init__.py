"""In-process chat with llama.cpp on a GGUF file (optional extra `llama`, which compiles llama.cpp).

PARLEY_LLM_MODEL is either a path to a `.gguf` file or a catalogue name (`parley models list`);
unset means the catalogue's default once it has been pulled, else the bundled SmolLM2, else the
catalogue's default downloaded into PARLEY_DATA_DIR on the first turn (see models/locate.py).
Importing this package does not import llama-cpp-python: that happens when the model loads.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import partial
from pathlib import Path

from parley.config import Settings
from parley.errors import NotFound
from parley.models import ModelLocator
from parley.providers.availability import Availability, model_availability
from parley.providers.llama_cpp.chat import INSTALL_HINT, MODEL_SETTING, LlamaCppChat, ModelSource

__all__ = ["INSTALL_HINT", "LlamaCppChat", "build", "check", "model_source"]


def _is_path(name: str) -> bool:
    return name.endswith(".gguf") or "/" in name or Path(name).is_file()


def _model_name(settings: Settings) -> str:
    return settings.llm_model or ModelLocator.from_settings(settings, progress=False).default_chat_model()


def model_source(settings: Settings) -> tuple[str, ModelSource]:
    """(model label, where its file comes from): a path as given, or the locator's fetch."""
    name = _model_name(settings)
    if _is_path(name):
        path = Path(name).expanduser()
        return path.stem, path
    fetch: Callable[[], Path] = partial(ModelLocator.from_settings(settings, progress=True).fetch, name)
    return name, fetch


def build(settings: Settings) -> LlamaCppChat:
    model, source = model_source(settings)
    return LlamaCppChat(source, model=model)


def check(settings: Settings) -> Availability:
    """Installed, and the model is a file here or can be downloaded now (a quick probe of the hub)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return Availability.no(INSTALL_HINT)
    name = _model_name(settings)
    if _is_path(name):
        path = Path(name).expanduser()
        if path.is_file():
            return Availability.ok(f"model file {path}")
        return Availability.no(f"{MODEL_SETTING}={name} is not a file")
    try:
        ModelLocator.spec(name)
    except NotFound as exc:
        return Availability.no(exc.message)
    return model_availability(
        settings,
        name,
        f"model {name}",
        fix=f"set {MODEL_SETTING} to a .gguf file",
        probe_timeout=1.0,
    )
