"""The in-process token bucket: burst, refusal with Retry-After, refill, per-key."""

from __future__ import annotations

import asyncio

import pytest
import redis.exceptions

from comfygate.adapters.ratelimit import TokenBucketRateLimiter
from comfygate.domain.errors import RateLimitedError


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refusal_with_whole_seconds_to_wait() -> None:
    clock = FakeMonotonic()
    limiter = TokenBucketRateLimiter(per_minute=3, monotonic=clock)
    assert [limiter.wait_s("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_s("k") == pytest.approx(20.0)  # one request per 20 s
    with pytest.raises(RateLimitedError) as caught:
        asyncio.run(limiter.acquire("k"))
    assert caught.value.retry_after_s == 20


def test_refills_at_the_configured_rate() -> None:
    clock = FakeMonotonic()
    limiter = TokenBucketRateLimiter(per_minute=60, monotonic=clock)
    for _ in range(60):
        assert limiter.wait_s("k") == 0.0
    assert limiter.wait_s("k") > 0
    clock.now += 1.0
    assert limiter.wait_s("k") == 0.0
    assert limiter.wait_s("k") > 0
    clock.now += 3600
    assert sum(limiter.wait_s("k") == 0.0 for _ in range(61)) == 60  # capped at the burst


def test_keys_have_separate_buckets() -> None:
    clock = FakeMonotonic()
    limiter = TokenBucketRateLimiter(per_minute=1, monotonic=clock)
    assert limiter.wait_s("a") == 0.0
    assert limiter.wait_s("a") > 0
    assert limiter.wait_s("b") == 0.0


def test_zero_disables_the_limit() -> None:
    limiter = TokenBucketRateLimiter(per_minute=0)
    assert all(limiter.wait_s("k") == 0.0 for _ in range(1000))
    asyncio.run(limiter.acquire("k"))


def test_idle_full_buckets_are_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    import comfygate.adapters.ratelimit as rl

    monkeypatch.setattr(rl, "_PRUNE_AT", 10)
    clock = FakeMonotonic()
    limiter = TokenBucketRateLimiter(per_minute=60, monotonic=clock)
    for i in range(10):
        limiter.wait_s(f"old-{i}")
    clock.now += 120  # every old bucket is full again
    limiter.wait_s("new-1")
    limiter.wait_s("new-2")
    assert set(limiter._buckets) == {"new-1", "new-2"}


def test_redis_out_of_reach_lets_requests_through() -> None:
    """Every authenticated request once failed with 500 while Redis was down (and the
    gateway still said it was ready). Nothing listens on port 1."""
    from comfygate.adapters.ratelimit import RedisRateLimiter

    async def scenario() -> int:
        limiter = RedisRateLimiter(url="redis://127.0.0.1:1/0", per_minute=1)
        try:
            for _ in range(3):
                await limiter.acquire("k")
            return limiter.unlimited_for_outage
        finally:
            await limiter.close()

    assert asyncio.run(scenario()) == 3


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
    ],
)
def test_a_redis_that_answers_with_an_error_lets_requests_through(error: Exception) -> None:
    """A replica after a failover, or a full Redis, answers every write with an error:
    each authenticated request was a 500 (the limiter caught only connection errors)."""
    from comfygate.adapters.ratelimit import RedisRateLimiter

    class Refusing(RedisRateLimiter):
        async def wait_s(self, key: str) -> float:
            raise error

    async def scenario() -> int:
        limiter = Refusing(url="redis://127.0.0.1:1/0", per_minute=1)
        try:
            for _ in range(2):
                await limiter.acquire("k")
            return limiter.unlimited_for_outage
        finally:
            await limiter.close()

    assert asyncio.run(scenario()) == 2


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.AuthenticationError("invalid password"),
        redis.exceptions.NoPermissionError("this user has no permissions to run 'evalsha'"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
    ],
)
def test_a_redis_that_is_set_up_wrong_is_not_an_outage(error: Exception) -> None:
    """Credentials refused, a user without the scripting permission, a key of another
    type: let through as an outage, they turned rate limiting off without a word."""
    from comfygate.adapters.ratelimit import RedisRateLimiter

    class Refusing(RedisRateLimiter):
        async def wait_s(self, key: str) -> float:
            raise error

    async def scenario() -> None:
        limiter = Refusing(url="redis://127.0.0.1:1/0", per_minute=1)
        try:
            await limiter.acquire("k")
        finally:
            await limiter.close()

    with pytest.raises(type(error)):
        asyncio.run(scenario())
