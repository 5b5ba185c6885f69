"""Prometheus metrics of voice calls, exported as text at GET /metrics.

Latency stages are measured from the end of the user's speech (the VAD's speech edge), the one
instant every stage can be compared with: `vad` (the end-of-turn decision, hangover included),
`transcript`, `first_token`, `first_tts_audio` and `first_frame` (the first reply frame handed to
the transport, what the user hears next). Their own registry, not prometheus-client's global
one, so several apps in one process (tests) share one set of series instead of clashing.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)

#: 10 ms to 10 s: voice latencies live between a frame and a slow model
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

STAGES = ("vad", "transcript", "first_token", "first_tts_audio", "first_frame")

active_calls = Gauge("parley_voice_active_calls", "Voice calls open now.", registry=REGISTRY)
calls_total = Counter("parley_voice_calls", "Voice calls opened.", registry=REGISTRY)
call_ends = Counter("parley_voice_call_ends", "Voice calls closed, by reason.", ["reason"], registry=REGISTRY)
sfu_recoveries = Counter(
    "parley_sfu_recoveries", "Cloudflare-mode calls whose SFU media path was rebuilt.", registry=REGISTRY
)
turns_total = Counter("parley_voice_turns", "Voice turns, by outcome.", ["outcome"], registry=REGISTRY)
errors_total = Counter(
    "parley_voice_errors", "Provider failures inside calls, by stage.", ["stage"], registry=REGISTRY
)
stage_seconds = Histogram(
    "parley_voice_stage_seconds",
    "Seconds from the end of the user's speech to each stage of a voice turn.",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
barge_in_seconds = Histogram(
    "parley_voice_barge_in_seconds",
    "Seconds from the VAD's speech-start decision to the outbound audio being dropped.",
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
    registry=REGISTRY,
)


def observe_turn(stages_ms: Mapping[str, float]) -> None:
    """Record one turn's stage offsets (milliseconds, as in the `metrics` event)."""
    for stage, ms in stages_ms.items():
        if stage in STAGES:
            stage_seconds.labels(stage).observe(ms / 1000)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type, for the /metrics response."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
