"""Per-key rate limits (requests per minute) as token buckets.

A bucket holds up to ``per_minute`` requests (the burst) and refills at
``per_minute / 60`` per second; a request takes one. When the bucket is empty the
caller gets ``RateLimitedError`` with the whole seconds until one request is free
(the API turns it into 429 + ``Retry-After``).

- ``TokenBucketRateLimiter``: in process, for the embedded default (one gateway).
- ``RedisRateLimiter``: one bucket shared by every gateway process, updated atomically
  by a Lua script that uses the Redis server's clock, so gateways need not agree on time.
  While Redis cannot be reached it lets requests through (and logs so, at most every
  ``WARN_EVERY_S``): a rate limit is not worth refusing every paying request for.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
import redis.exceptions
import structlog

from comfygate.domain.errors import RateLimitedError

_PRUNE_AT = 10_000
_OUTAGE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica, after a failover
    redis.exceptions.OutOfMemoryError,  # maxmemory reached, with noeviction
)
"""Redis cannot count for now: requests go through uncounted. Any other error (a
user without the scripting permission, a key of another type) is a configuration's
fault, and raised."""
_MISCONFIGURED = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
"""Connection errors by their class, but a configuration's fault, not an outage's."""
WARN_EVERY_S = 60.0
REDIS_TIMEOUT_S = 0.5
"""How long a request waits for Redis (to connect, or to answer) before going ahead."""


class RateLimiter(Protocol):
    async def acquire(self, key: str) -> None:
        """Take one request from ``key``'s bucket or raise ``RateLimitedError``."""
        ...

    async def close(self) -> None: ...


def _refuse(wait_s: float) -> RateLimitedError:
    retry_after_s = max(1, math.ceil(wait_s))
    return RateLimitedError(
        f"rate limit reached; retry in {retry_after_s} s", retry_after_s=retry_after_s
    )


class TokenBucketRateLimiter:
    """In-process buckets; ``per_minute <= 0`` disables the limit."""

    def __init__(self, *, per_minute: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0
        self._monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}
        # Routes run on the event loop and in worker threads; the lock keeps the
        # read-modify-write of one bucket whole.
        self._lock = threading.Lock()

    def wait_s(self, key: str) -> float:
        """Take one request if possible (returns 0), else the seconds until one is free."""
        if self.capacity <= 0:
            return 0.0
        now = self._monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate_per_s)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                waited = 0.0
            else:
                self._buckets[key] = (tokens, now)
                waited = (1.0 - tokens) / self.rate_per_s
            if len(self._buckets) > _PRUNE_AT:
                self._prune(now)
        return waited

    def _prune(self, now: float) -> None:
        # A bucket that has refilled completely is the same as no bucket: drop it.
        full_after_s = self.capacity / self.rate_per_s
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after_s}

    async def acquire(self, key: str) -> None:
        waited = self.wait_s(key)
        if waited > 0:
            raise _refuse(waited)

    async def close(self) -> None:
        return None


_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter:
    """Buckets in Redis (``{prefix}{key}`` hashes), shared by many gateway processes."""

    def __init__(self, *, url: str, per_minute: int, prefix: str = "comfygate:ratelimit:") -> None:
        self.capacity = per_minute
        self.rate_per_s = per_minute / 60.0
        self._prefix = prefix
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
        )
        self._script = self._client.register_script(_BUCKET_LUA)
        self._warned_at = -math.inf
        self.unlimited_for_outage = 0
        """Requests let through because Redis could not be reached or would not write."""

    async def wait_s(self, key: str) -> float:
        """Take one request if possible (returns 0), else the seconds until one is free."""
        if self.capacity <= 0:
            return 0.0
        raw = await self._script(
            keys=[self._prefix + key], args=[repr(self.rate_per_s), str(self.capacity)]
        )
        return float(raw.decode() if isinstance(raw, bytes) else raw)

    async def acquire(self, key: str) -> None:
        try:
            waited = await self.wait_s(key)
        except _OUTAGE as exc:
            if isinstance(exc, _MISCONFIGURED):  # not an outage: fix the URL
                raise
            self.unlimited_for_outage += 1
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log = structlog.get_logger("comfygate.ratelimit")
                log.warning("rate_limiter_unreachable_letting_requests_through", error=str(exc))
            return
        if waited > 0:
            raise _refuse(waited)

    async def close(self) -> None:
        await self._client.aclose()
