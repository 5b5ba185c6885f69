"""A second OS process: publishes `count` events on one topic through its own RedisBus.

python -m tests.bus.publisher <redis-url> <prefix> <topic> <count>
"""

from __future__ import annotations

import asyncio
import sys

from parley.bus.redis import RedisBus


async def main(url: str, prefix: str, topic: str, count: int) -> None:
    bus = RedisBus.from_url(url, prefix=prefix)
    try:
        for n in range(count):
            await bus.publish(topic, f"from-process-{n}")
    finally:
        await bus.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
