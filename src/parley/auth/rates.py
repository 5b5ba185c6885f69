"""UserLimits: per-user rates (the `limits` library's moving windows) and daily quotas.

Rates are keyed by user id, so one user at a limit never slows another; with PARLEY_REDIS_URL the
counters live in Redis and every process behind a balancer shares them (`rate_storage`, used by
the per-address limits too). Quotas (model tokens and
call minutes per UTC day) are counted from the usage the providers report, in the user store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from limits import RateLimitItem, parse
from limits.aio import storage, strategies

from parley.config import Settings
from parley.errors import ConfigError, ProviderUnavailable, QuotaExceeded, RateLimited
from parley.store.users import User, UserStore

#: what is counted -> the setting that bounds it
SETTINGS = {
    "chat": "PARLEY_RATE_CHAT",
    "transcribe": "PARLEY_RATE_TRANSCRIBE",
    "speak": "PARLEY_RATE_SPEAK",
    "calls": "PARLEY_RATE_CALLS",
    "ice": "PARLEY_RATE_ICE",
}
WORDS = {
    "chat": "turns",
    "transcribe": "transcriptions",
    "speak": "speech requests",
    "calls": "calls",
    "ice": "ICE requests",
}


def utc_day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def until_midnight(now: float) -> int:
    return max(1, math.ceil(86400 - now % 86400))


class UserLimits:
    def __init__(
        self,
        rates: Mapping[str, str],
        *,
        users: UserStore,
        redis_url: str | None = None,
        quota_tokens_per_day: int | None = None,
        quota_call_minutes_per_day: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spelled = dict(rates)
        self.rates: dict[str, RateLimitItem] = {}
        for what, rate in rates.items():
            try:
                self.rates[what] = parse(rate)
            except ValueError as exc:
                setting = SETTINGS.get(what, what)
                raise ConfigError(
                    f"{setting}={rate!r} is not a rate such as 30/minute", field=setting
                ) from exc
        self._storage = rate_storage(redis_url)
        self._limiter = strategies.MovingWindowRateLimiter(self._storage)
        self.users = users
        self.quota_tokens = quota_tokens_per_day
        self.quota_call_seconds = quota_call_minutes_per_day * 60 if quota_call_minutes_per_day else None
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, users: UserStore) -> UserLimits:
        rates = {
            "chat": settings.rate_chat,
            "transcribe": settings.rate_transcribe,
            "speak": settings.rate_speak,
            "calls": settings.rate_calls,
            "ice": settings.rate_ice,
        }
        return cls(
            rates,
            users=users,
            redis_url=settings.redis_url,
            quota_tokens_per_day=settings.quota_tokens_per_day,
            quota_call_minutes_per_day=settings.quota_call_minutes_per_day,
        )

    async def hit(self, user: User, what: str) -> None:
        rate = self.rates.get(what)
        if rate is None:
            return
        wait = await spent(self._limiter, rate, what, user.id)
        if wait is None:
            return
        raise RateLimited(
            f"too many {WORDS.get(what, what)} (limit {self.spelled[what]}); try again in {wait} s",
            field=what,
            limit=self.spelled[what],
            retry_after=wait,
        )

    async def check_quota(self, user: User, what: str) -> None:
        now = self.clock()
        if what == "chat" and self.quota_tokens is not None:
            used = (await self.users.usage(user.id, utc_day(now))).tokens
            if used >= self.quota_tokens:
                raise QuotaExceeded(
                    f"today's model tokens are used up ({used} of {self.quota_tokens}, "
                    "PARLEY_QUOTA_TOKENS_PER_DAY); they renew at midnight UTC",
                    field="tokens",
                    limit=self.quota_tokens,
                    retry_after=until_midnight(now),
                )
        if what == "calls" and self.quota_call_seconds is not None:
            used_s = (await self.users.usage(user.id, utc_day(now))).call_seconds
            if used_s >= self.quota_call_seconds:
                minutes = self.quota_call_seconds / 60
                raise QuotaExceeded(
                    f"today's call minutes are used up ({minutes:g} a day, PARLEY_QUOTA_CALL_MINUTES_PER_DAY); "
                    "they renew at midnight UTC",
                    field="calls",
                    limit=minutes,
                    retry_after=until_midnight(now),
                )

    async def record_tokens(self, user_id: str, tokens: int) -> None:
        if tokens > 0:
            await self.users.add_usage(user_id, utc_day(self.clock()), tokens=tokens)

    async def record_call_seconds(self, user_id: str, seconds: float) -> None:
        if seconds > 0:
            await self.users.add_usage(user_id, utc_day(self.clock()), call_seconds=seconds)

    async def status(self, user: User) -> dict[str, Any]:
        """What GET /api/me shows: the user, each rate and what is left of it, today's quotas."""
        limits: dict[str, Any] = {}
        for what, rate in self.rates.items():
            try:
                stats = await self._limiter.get_window_stats(rate, what, user.id)
            except Exception as exc:
                raise ProviderUnavailable("the rate-limit store (PARLEY_REDIS_URL) is unreachable") from exc
            limits[what] = {
                "rate": self.spelled[what],
                "remaining": stats.remaining,
                "resetsIn": max(0, math.ceil(stats.reset_time - time.time())),
            }
        now = self.clock()
        usage = await self.users.usage(user.id, utc_day(now))
        minutes = self.quota_call_seconds / 60 if self.quota_call_seconds is not None else None
        used_minutes = round(usage.call_seconds / 60, 2)
        return {
            "user": {"name": user.name, "admin": user.admin},
            "limits": limits,
            "quotas": {
                "tokensPerDay": {
                    "limit": self.quota_tokens,
                    "used": usage.tokens,
                    "remaining": None
                    if self.quota_tokens is None
                    else max(0, self.quota_tokens - usage.tokens),
                },
                "callMinutesPerDay": {
                    "limit": minutes,
                    "used": used_minutes,
                    "remaining": None if minutes is None else max(0.0, round(minutes - used_minutes, 2)),
                },
                "resetsIn": until_midnight(now),
            },
        }

    async def aclose(self) -> None:
        await close_storage(self._storage)


def rate_storage(redis_url: str | None) -> storage.Storage:
    """Where rate windows are counted: in Redis when several processes share them, else here."""
    if not redis_url:
        return storage.MemoryStorage()
    uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
    return storage.RedisStorage(uri, implementation="redispy", key_prefix="parley-rate")


async def spent(limiter: strategies.MovingWindowRateLimiter, rate: RateLimitItem, *keys: str) -> int | None:
    """Count one hit; None when it was allowed, else the seconds until the window lets one in."""
    try:
        if await limiter.hit(rate, *keys):
            return None
        stats = await limiter.get_window_stats(rate, *keys)
    except Exception as exc:  # a Redis that is down: never name the URL (it may hold a password)
        raise ProviderUnavailable("the rate-limit store (PARLEY_REDIS_URL) is unreachable") from exc
    return max(1, math.ceil(stats.reset_time - time.time()))


async def close_storage(counted: storage.Storage) -> None:
    if isinstance(counted, storage.RedisStorage):
        bridge: Any = getattr(counted, "bridge", None)
        client: Any = getattr(bridge, "storage", None)
        close = getattr(client, "aclose", None)
        if close is not None:
            await close()
