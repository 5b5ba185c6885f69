"""Parley's benchmarks: `make bench` (~40 s on 2 cores, then ~4 min of voice) or `bench/run.py --quick`.

`--voice` runs only the voice latency bench (`voice.py`, Parley against pipecat); `--no-voice` skips it.

Three processes besides this one: the Workers AI stand-in, `parley serve`, and (for fan-out) the
WebSocket client processes, all on 127.0.0.1. Every figure is compared with another from the same
run; targets are printed as PASS or MISS for information and never change the exit status.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import fanout
import ttft
import voice
from common import FIRST_TOKEN_DELAY, TOKEN_INTERVAL, Summary, check_shared_clock, machine, run_loop, servers
from profiling import hot_spots, profiled

TTFT_TARGET_MS = 5.0  # p50 added time to first token at 100 concurrent streams
FANOUT_TARGET_MS = 50.0  # p99 fan-out latency at 1,000 sockets
BUDGET_S = 170.0


@dataclass(slots=True, frozen=True)
class Plan:
    sequential: int  # single streams, one after another, per path
    concurrent: int
    concurrent_rounds: int
    fanout_cases: tuple[tuple[int, bool], ...]  # (sockets, offer permessage-deflate)
    fanout_rounds: int
    fanout_processes: int


# Clients offer permessage-deflate as browsers do; `parley serve` declines it (see fanout.py).
FANOUT_CASES = ((100, True), (1000, True))
FULL = Plan(50, 100, 10, FANOUT_CASES, 6, 2)
QUICK = Plan(10, 100, 2, FANOUT_CASES, 1, 2)


async def bench(plan: Plan, profile_dir: Path | None) -> None:
    deadline = time.monotonic() + BUDGET_S
    profiles: list[Path] = []

    def out(phase: str) -> Path | None:
        if profile_dir is None:
            return None
        profiles.append(profile_dir / f"parley-{phase}.txt")
        return profiles[-1]

    async with servers() as running:
        await ttft.warm_up(running)
        results: dict[int, ttft.Samples] = {}
        for concurrency, rounds in ((1, plan.sequential), (plan.concurrent, plan.concurrent_rounds)):
            async with profiled(running.parley_pid, out(f"ttft-{concurrency}")):
                results[concurrency] = await ttft.measure(
                    running, concurrency=concurrency, rounds=rounds, deadline=deadline
                )
        fans = []
        for sockets, deflate in plan.fanout_cases:
            path = out(f"fanout-{sockets}" + ("-deflate" if deflate else ""))
            fans.append(
                await fanout.measure(
                    running,
                    sockets=sockets,
                    rounds=plan.fanout_rounds,
                    processes=plan.fanout_processes,
                    deflate=deflate,
                    deadline=deadline,
                    around_rounds=functools.partial(profiled, running.parley_pid, path),
                )
            )
    print(
        f"\n## Time to first token, ms: client's first token bytes - stand-in's first token write "
        f"(stand-in: first token after {FIRST_TOKEN_DELAY * 1000:.0f} ms, then one per "
        f"{TOKEN_INTERVAL * 1000:.0f} ms)\n"
    )
    print(ttft.report(results))
    print(
        f"\nto upstream: request sent -> the stand-in's first token, minus its "
        f"{FIRST_TOKEN_DELAY * 1000:.0f} ms delay (via Parley: the turn's set-up and any wait for its loop)"
    )
    print(
        f"\n## Fan-out, ms: each socket's first `chunk` of a turn - stand-in's first token write "
        f"({plan.fanout_processes} client processes)\n"
    )
    print(fanout.report(fans))
    print(
        "\nreply lag: each socket's `reply` event - the stand-in's last token (~20 tokens per turn); "
        "it grows when fanning one event out takes longer than the gap between tokens"
    )
    for fan in fans:
        print(
            f"{fan.sockets} sockets (deflate: {fan.deflate}): connecting took {fan.connect_s:.1f} s; "
            f"Parley's RSS {fan.rss_before_mb:.0f} MB before, {fan.rss_after_mb:.0f} MB with them open"
        )

    print("\n## Targets (informational)\n")
    added = Summary.of(results[plan.concurrent].parley.added).p50
    print(_verdict(f"added TTFT p50 at {plan.concurrent} streams", added, TTFT_TARGET_MS))
    for fan in fans:
        if fan.sockets == 1000:
            offer = "offering" if fan.deflate else "not offering"
            what = f"fan-out p99 at 1000 sockets (clients {offer} permessage-deflate)"
            print(_verdict(what, Summary.of(fan.latencies).p99, FANOUT_TARGET_MS))
    if profiles:
        print("\n## Where Parley spent its CPU (py-spy; figures above are perturbed by the sampling)\n")
        for path in profiles:
            print("\n".join(hot_spots(path)))


def _verdict(what: str, value: float, target: float) -> str:
    word = "PASS" if value < target else "MISS"
    return f"{word} {what}: {value:.2f} ms (target < {target:g} ms)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="sample Parley with py-spy into DIR, per measurement"
    )
    parser.add_argument(
        "--voice", action="store_true", help="only the voice latency bench (voice.py; Parley vs pipecat)"
    )
    parser.add_argument("--no-voice", action="store_true", help="skip the voice latency bench")
    args = parser.parse_args()
    if args.voice:
        voice.run_voice(args.quick)
        return
    started = time.monotonic()
    print("# Parley benchmarks" + (" (quick)" if args.quick else ""))
    for line in machine():
        print(line)
    print(f"clock: {check_shared_clock()}")
    print(f"load average at start: {_load()} (other work on this machine skews every figure)")
    run_loop(bench(QUICK if args.quick else FULL, args.profile))
    print(f"\nbench took {time.monotonic() - started:.0f} s; load average at end: {_load()}")
    if not args.no_voice:
        voice.run_voice(args.quick)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
