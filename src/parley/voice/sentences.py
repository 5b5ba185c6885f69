"""Cut a streamed LLM reply into speakable chunks the moment each one ends.

A chunk is released on its OWN end punctuation, not when the next token arrives (pipecat's
aggregator waits one token interval for that, ~35 ms at 30 tokens/s): "today." goes to TTS as soon
as the token holding the full stop is fed. Only a truly ambiguous end waits for one more character:
a full stop after a digit ("3." may become "3.14"), and a colon after a digit ("10:" may become
"10:30").

Not chunk ends: decimals and versions (3.14, v1.2), dotted initialisms (e.g., i.e., U.S.) and
single-letter initials (John F. Kennedy), common abbreviations (Dr., Mr., St., vs.), ellipses,
list markers ("1. " at the start of a chunk), URLs and file names (a stop followed by a letter).

To cut time-to-first-audio, the first chunk of a reply may end at a comma once it is long enough
(`first_clause_chars`); later chunks wait for a sentence end, because every chunk boundary is a
small prosody break in the synthesised speech. `;`, `:` and newlines end long clauses, and a run
with no punctuation at all is cut at a space after `max_chars`, so TTS never waits on a runaway
sentence.
"""

from __future__ import annotations

#: sentence ends that need a space (or the end of the text) after them
_STOPS = frozenset(".!?")
#: CJK sentence ends: no space follows them in CJK text
_CJK_STOPS = frozenset("。！？")
#: clause ends that end a chunk once it has `min_clause_chars`
_CLAUSE_ENDS = frozenset(";:；：")
#: commas that may end the first chunk of a reply
_COMMAS = frozenset(",，、")
#: closing marks that belong to the chunk they follow: `"Hi."` keeps its quote
_CLOSERS = frozenset("\"'”’)]}»」』")

#: abbreviations (lower case, without the stop) that never end a sentence
ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "approx", "fig", "vol",
        "cf", "al", "inc", "ltd", "corp", "dept", "gov", "lt", "sgt", "capt", "rev", "jan", "feb",
        "apr", "jun", "jul", "aug", "sept", "oct", "nov", "dec",
    }
)  # fmt: skip


class SentenceChunker:
    """Feed text deltas, get chunks to synthesise; `flush()` at the end of the reply.

    Chunks come out stripped of surrounding whitespace, in order, and together hold every
    non-space character fed.
    """

    def __init__(
        self, *, first_clause_chars: int = 40, min_clause_chars: int = 12, max_chars: int = 250
    ) -> None:
        self.first_clause_chars = first_clause_chars
        self.min_clause_chars = min_clause_chars
        self.max_chars = max_chars
        self._buf = ""
        self._released = 0  # chunks released so far

    def feed(self, text: str) -> list[str]:
        """Chunks completed by `text` (usually none or one)."""
        self._buf += text
        chunks: list[str] = []
        while (end := self._boundary()) is not None:
            chunk, self._buf = self._buf[:end].strip(), self._buf[end:]
            if chunk:
                chunks.append(chunk)
                self._released += 1
        return chunks

    def flush(self) -> list[str]:
        """Whatever is left (a reply that ends without punctuation); resets for the next reply."""
        chunk, self._buf = self._buf.strip(), ""
        self._released = 0
        return [chunk] if chunk else []

    def _boundary(self) -> int | None:
        """Where the first complete chunk in the buffer ends (exclusive), or None."""
        buf = self._buf
        start = len(buf) - len(buf.lstrip())
        for i in range(start, len(buf)):
            ch = buf[i]
            length = i - start + 1
            if ch == "\n":
                if buf[start:i].strip():
                    return i + 1
                continue
            if ch in _CJK_STOPS:
                return self._with_closers(i + 1)
            if ch in _STOPS:
                verdict = self._sentence_end(buf, start, i)
                if verdict is None:
                    return None  # wait for the next character
                if verdict:
                    return self._with_closers(i + 1)
                continue
            if ch in _CLAUSE_ENDS and length >= self.min_clause_chars:
                verdict = self._clause_end(buf, i)
                if verdict is None:
                    return None
                if verdict:
                    return i + 1
                continue
            if ch in _COMMAS and self._released == 0 and length >= self.first_clause_chars:
                verdict = self._clause_end(buf, i)
                if verdict is None:
                    return None
                if verdict:
                    return i + 1
                continue
            if length >= self.max_chars and ch.isspace():
                return i
        return None

    def _with_closers(self, end: int) -> int:
        while end < len(self._buf) and self._buf[end] in _CLOSERS:
            end += 1
        return end

    def _sentence_end(self, buf: str, start: int, i: int) -> bool | None:
        """Whether the stop at `i` ends a sentence; None when only the next character can tell."""
        ch = buf[i]
        if ch == "." and ((i + 1 < len(buf) and buf[i + 1] == ".") or (i > 0 and buf[i - 1] == ".")):
            # An ellipsis is a pause, not an end ("Well... I think"): the next stop ends the chunk.
            return False
        after = buf[i + 1] if i + 1 < len(buf) else None
        if after is not None and not (after.isspace() or after in _CLOSERS or after in _STOPS):
            return False  # 3.14, example.com, v1.2.3, "e.g." inside
        if ch != ".":
            return True
        word = _word_before(buf, i)
        if not word:
            return after is not None  # a stray stop: fine to end on once something follows
        if word[-1].isdigit():
            if word.isdigit() and buf[start:i].strip() == word:
                return False  # a list marker: "1. First"
            return None if after is None else True
        if len(word) == 1 and word.isalpha() and word != "I":
            return False  # an initial ("John F. Kennedy"), or "e." of "e.g." cut by a token edge
        if "." in word:
            return False  # the end of a dotted initialism: "e.g.", "U.S."
        return word.lower() not in ABBREVIATIONS

    @staticmethod
    def _clause_end(buf: str, i: int) -> bool | None:
        """A comma or colon ends a clause before a space, not inside a number (3,000 or 10:30)."""
        if i + 1 >= len(buf):
            return None if i > 0 and buf[i - 1].isdigit() else True
        return buf[i + 1].isspace() or buf[i] in "，、；："


def _word_before(buf: str, i: int) -> str:
    """The word that a stop at `i` ends, without opening quotes or brackets."""
    j = i
    while j > 0 and not buf[j - 1].isspace():
        j -= 1
    return buf[j:i].lstrip("\"'“‘([{«")
