"""Language codes: checked once at the edge, named for the model's prompt."""

from __future__ import annotations

import re

from parley.errors import InvalidInput

# BCP-47-ish: "en", "de", "pt-BR", "zh-Hans"; enough for STT, prompts and voice choice.
_CODE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?$")

NAMES = {
    "ar": "Arabic",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "hu": "Hungarian",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sv": "Swedish",
    "th": "Thai",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "vi": "Vietnamese",
    "zh": "Chinese",
}


def check_language(value: object, field: str = "language") -> str | None:
    """None for unset, else the code; a malformed code is a 400 naming the field."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _CODE.match(value):
        raise InvalidInput(
            f"{field} must be a language code such as 'en' or 'pt-BR'", field=field, limit="ll or ll-RR"
        )
    return value


def language_name(code: str) -> str:
    base = code.replace("_", "-").split("-")[0].lower()
    return NAMES.get(base, code)


def reply_instruction(code: str) -> str:
    """What the model is told so a spoken or chosen language carries into the reply."""
    return f"The user speaks {language_name(code)} ({code}). Reply in {language_name(code)}."
