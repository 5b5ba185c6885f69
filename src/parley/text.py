"""Text that can always be written out: no unpaired UTF-16 surrogates.

JSON may spell a lone surrogate (`"\\ud800"`) and Python decodes it into a `str` that no UTF-8
encoder accepts, so one such character reaching a socket, an SSE stream or SQLite raises
`UnicodeEncodeError` far from where it came in. Client text is refused where it enters (see
`web/body.py`); text from models and anything serialised for clients goes through `valid_text`.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")

REPLACEMENT = "\ufffd"


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def valid_text(text: str) -> str:
    """`text` with every unpaired surrogate replaced by U+FFFD (the same object when there is none)."""
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(REPLACEMENT, text)
