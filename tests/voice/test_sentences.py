"""SentenceChunker: chunks leave on their own end punctuation, never inside numbers or abbreviations."""

from __future__ import annotations

import pytest

from parley.voice.sentences import SentenceChunker


def chunks_of(deltas: list[str], **options: int) -> list[tuple[int, str]]:
    """(index of the delta that released it, chunk) for every chunk, flush included (index -1)."""
    chunker = SentenceChunker(**options)
    out = [(i, c) for i, d in enumerate(deltas) for c in chunker.feed(d)]
    return out + [(-1, c) for c in chunker.flush()]


def tokens(text: str) -> list[str]:
    """Word tokens as LLMs stream them: a leading space on all but the first."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def test_a_sentence_is_released_by_the_token_holding_its_full_stop() -> None:
    deltas = tokens("Hello there. How are you today? I am fine!")
    assert chunks_of(deltas) == [(1, "Hello there."), (5, "How are you today?"), (8, "I am fine!")]


@pytest.mark.parametrize(
    "text",
    [
        "Pi is about 3.14 and e is 2.72 today",
        "Use a tool, e.g. a hammer, for nails",
        "Dr. Smith and Mr. Jones live on Elm St. near the park",
        "The U.S. economy grew",
        "John F. Kennedy spoke",
        "Well... I think so",
        "Visit example.com or version v1.2.3 now",
        "It costs 3,000 dollars at 10:30 sharp",
    ],
)
def test_no_split_inside_numbers_abbreviations_or_ellipses(text: str) -> None:
    assert chunks_of(tokens(text)) == [(-1, text)]


@pytest.mark.parametrize(
    "text",
    [
        "Pi is about 3.14 and e is 2.72 today",
        "Use a tool, e.g. a hammer, for nails",
        "Dr. Smith and Mr. Jones live on Elm St. near the park",
        "The U.S. economy grew",
        "It costs 3,000 dollars at 10:30 sharp",
    ],
)
def test_numbers_and_abbreviations_survive_one_character_deltas(text: str) -> None:
    # (A stop after a word is released at once by design, so "example." cut after its dot
    # would go out; LLM tokenizers keep ".com" and "..." whole, so that does not happen.)
    assert chunks_of(list(text)) == [(-1, text)]


def test_a_stop_after_a_digit_waits_one_character() -> None:
    assert chunks_of(["I have 3.", " Then more"]) == [(1, "I have 3."), (-1, "Then more")]
    assert chunks_of(["I have 3.", "5 apples"]) == [(-1, "I have 3.5 apples")]


def test_list_markers_do_not_end_chunks() -> None:
    assert chunks_of(["1. Buy milk.\n2. Call mom."]) == [(0, "1. Buy milk."), (0, "2. Call mom.")]


def test_cjk_stops_need_no_space() -> None:
    assert chunks_of(["你好。今天天气很好！", "是吗？"]) == [
        (0, "你好。"),
        (0, "今天天气很好！"),
        (1, "是吗？"),
    ]


def test_only_the_first_chunk_may_end_at_a_comma_and_only_when_long() -> None:
    short = "Sure, here it is."
    assert chunks_of(tokens(short)) == [(3, short)]
    long = "Well, that is a really interesting question to ask, and the answer is long, so listen."
    out = chunks_of(tokens(long))
    assert [c for _, c in out] == [
        "Well, that is a really interesting question to ask,",
        "and the answer is long, so listen.",
    ]


def test_semicolons_colons_and_newlines_end_long_clauses() -> None:
    text = "Here is what you need: flour and sugar; then bake it\nEnjoy"
    assert [c for _, c in chunks_of([text])] == [
        "Here is what you need:",
        "flour and sugar;",
        "then bake it",
        "Enjoy",
    ]
    assert [c for _, c in chunks_of(["Note: yes."])] == ["Note: yes."]  # too short to cut


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert [c for _, c in chunks_of(['He said "stop." Then he left.'])] == [
        'He said "stop."',
        "Then he left.",
    ]


def test_a_runaway_sentence_is_cut_at_a_space() -> None:
    text = " ".join(["word"] * 100)
    out = [c for _, c in chunks_of(tokens(text), max_chars=50)]
    assert all(len(c) <= 50 for c in out)
    assert " ".join(out) == text


def test_flush_returns_the_rest_and_resets() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("No punctuation here") == []
    assert chunker.flush() == ["No punctuation here"]
    assert chunker.flush() == []
    assert chunker.feed("Hi, this is a new reply that is long enough, to cut.") == [
        "Hi, this is a new reply that is long enough,",
        "to cut.",
    ]
