"""The model's history window advances in blocks, so consecutive prompts share their beginning.

llama.cpp reuses its KV cache for the longest token prefix a prompt shares with the previous one;
a window sliding by one message a turn changes the first message every turn and costs a full
evaluation. `EchoChat` records every request the session sends: what the model was given.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from parley.bus.memory import LocalBus
from parley.providers.llm import ChatMessage
from parley.providers.testing import EchoChat
from parley.sessions.registry import SessionRegistry
from parley.sessions.session import SessionConfig, window_overflow
from parley.store.sqlite import SQLiteStore

SID = "session-window"
LIMIT = 20
TURNS = 40


@dataclass
class Parts:
    store: SQLiteStore
    chat: EchoChat
    registry: SessionRegistry


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    store = SQLiteStore(tmp_path / "p.db")
    await store.open()
    chat = EchoChat()
    config = SessionConfig(system_prompt="sys", history_limit=LIMIT, max_tokens=64, max_queued_turns=4)
    registry = SessionRegistry(store=store, chat=chat, bus=LocalBus(), config=config)
    try:
        yield Parts(store, chat, registry)
    finally:
        await registry.aclose()
        await store.aclose()


def prompts(chat: EchoChat) -> list[list[ChatMessage]]:
    return [list(request.messages) for request in chat.requests]


async def test_consecutive_prompts_extend_the_previous_one_for_many_turns(parts: Parts) -> None:
    session = parts.registry.get(SID)
    for i in range(TURNS):
        await session.submit(f"question {i}").done
    sent = prompts(parts.chat)
    assert len(sent) == TURNS

    extended = []
    for before, after in itertools.pairwise(sent):
        # The previous prompt, then its reply and the new question: all llama.cpp has to evaluate.
        extended.append(after[: len(before)] == before and len(after) == len(before) + 2)
    # With a 20-message window: 5 turns in 6 only add to the prompt (a sliding window: none
    # once the window is full, after turn 11).
    assert sum(extended) >= 30, extended
    assert extended[:10] == [True] * 10
    # Between two block drops the prompt keeps growing for limit / 4 turns.
    runs = "".join("x" if e else "." for e in extended).split(".")
    assert all(len(run) >= LIMIT // 4 for run in runs[:-1] if run), runs

    for i, prompt in enumerate(sent):
        assert prompt[0] == ChatMessage("system", "sys")
        assert prompt[-1] == ChatMessage("user", f"question {i}")
        earlier = prompt[1:-1]
        assert len(earlier) <= LIMIT
        if 2 * i >= LIMIT:  # enough history: the model always sees at least half the limit
            assert len(earlier) >= LIMIT // 2
        # Always whole exchanges, oldest first, the newest exchange last.
        assert [m.role for m in earlier] == ["user", "assistant"] * (len(earlier) // 2)
        if earlier:
            assert earlier[-1].content == f"You said: question {i - 1}"


async def test_a_reloaded_session_sees_at_most_the_limit(parts: Parts) -> None:
    for i in range(30):
        await parts.store.add_message(SID, f"turn_{i}", "user", f"old {i}")
        await parts.store.add_message(SID, f"turn_{i}", "assistant", f"old reply {i}")
    session = parts.registry.get(SID)
    for i in range(3):
        await session.submit(f"new {i}").done
    first, second, third = prompts(parts.chat)
    # Loaded from storage: the newest `limit` messages before the new question.
    assert [m.content for m in first[1:3]] == ["old 20", "old reply 20"]
    assert len(first) == 1 + LIMIT + 1
    # The next turn would hold 22 earlier messages: the oldest are dropped in one block...
    assert len(second) - 2 == LIMIT // 2 and second[1].content == "old 26"
    # ...and the turn after that only adds to it.
    assert third[: len(second)] == second


def test_the_window_drops_to_half_at_once_and_starts_with_the_user() -> None:
    pairs = ["user", "assistant"] * 11
    assert window_overflow(pairs[:20], 20) == 0  # full, not over: nothing moves
    assert window_overflow(pairs, 20) == 12  # 22 -> the newest 10
    assert window_overflow(pairs[:21], 20) == 10  # 21 -> 11: the kept part starts with the user
    assert window_overflow(pairs[:4], 3) == 2  # 4 -> ceil(3 / 2) = 2
    assert window_overflow(pairs[:3], 1) == 2  # 3 -> 1
    assert window_overflow(pairs[:2], 0) == 2  # no history at all
    assert window_overflow([], 0) == 0
