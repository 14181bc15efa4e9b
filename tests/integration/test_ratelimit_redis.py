"""The Redis rate limiter against a real Redis: one bucket shared by every gateway."""

from __future__ import annotations

import asyncio

import pytest

from comfygate.adapters.ratelimit import RedisRateLimiter
from comfygate.domain.errors import RateLimitedError

pytestmark = pytest.mark.redis


def test_buckets_are_shared_between_limiters(redis_url: str) -> None:
    async def scenario() -> tuple[list[float], int]:
        gateways = [RedisRateLimiter(url=redis_url, per_minute=5) for _ in range(2)]
        try:
            waits = [await gateways[i % 2].wait_s("key_1") for i in range(5)]
            with pytest.raises(RateLimitedError) as caught:
                await gateways[1].acquire("key_1")
            await gateways[0].acquire("key_2")  # another key, another bucket
            return waits, caught.value.retry_after_s
        finally:
            for g in gateways:
                await g.close()

    waits, retry_after_s = asyncio.run(scenario())
    assert waits == [0.0] * 5
    assert 1 <= retry_after_s <= 12  # one request per 12 s at 5/min


def test_concurrent_requests_never_exceed_the_burst(redis_url: str) -> None:
    async def scenario() -> int:
        limiter = RedisRateLimiter(url=redis_url, per_minute=20)
        try:
            waits = await asyncio.gather(*(limiter.wait_s("hot") for _ in range(50)))
        finally:
            await limiter.close()
        return sum(1 for w in waits if w == 0.0)

    admitted = asyncio.run(scenario())
    assert 20 <= admitted <= 21  # the burst, plus at most what refilled during the run


def test_zero_disables(redis_url: str) -> None:
    async def scenario() -> None:
        limiter = RedisRateLimiter(url=redis_url, per_minute=0)
        try:
            for _ in range(100):
                await limiter.acquire("k")
        finally:
            await limiter.close()

    asyncio.run(scenario())


def test_wrong_credentials_are_not_an_outage(redis_url: str) -> None:
    """A refused login is a connection error to redis-py; it was taken for Redis being
    down, and every request went through unlimited, for good."""
    import redis.exceptions

    wrong = redis_url.replace("redis://", "redis://nobody:wrong@", 1)

    async def scenario() -> None:
        limiter = RedisRateLimiter(url=wrong, per_minute=1)
        try:
            await limiter.acquire("k")
        finally:
            await limiter.close()

    with pytest.raises(redis.exceptions.AuthenticationError):
        asyncio.run(scenario())
