"""executors/rate_limited.py: the token bucket, driven by hand with an injected clock,
and the start rate through the app, counted over windows with generous bounds."""

from __future__ import annotations

import time

import pytest
from recipe_loader import load_recipe
from recipe_support import make_call

from qtasks_mp import InlineExecutor, ThreadExecutor
from qtasks_mp.asyncio import QueueTasks

RateLimitedExecutor = load_recipe("rate_limited").RateLimitedExecutor


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def noop() -> None: ...


async def test_the_bucket_by_hand() -> None:
    clock = Clock()
    executor = RateLimitedExecutor(InlineExecutor(10), rate=4, per_s=2.0, burst=3, clock=clock)
    await executor.start()
    assert executor.capacity == 3  # a full bucket: the burst
    for _ in range(3):
        await executor.run(make_call(noop))
    assert executor.capacity == 0
    assert executor.next_token_in_s() == pytest.approx(0.5)  # 4 per 2 s: one every 0.5 s
    assert executor._timer is not None  # the dispatcher will be woken, not polled
    clock.now += 0.25
    assert executor.capacity == 0 and executor.next_token_in_s() == pytest.approx(0.25)
    clock.now += 0.25
    assert executor.capacity == 1
    clock.now += 60
    assert executor.capacity == 3  # never more than the burst
    await executor.aclose()
    assert executor._timer is None


async def test_capacity_is_also_bounded_by_the_inner_executor() -> None:
    executor = RateLimitedExecutor(InlineExecutor(2), rate=100, clock=Clock())
    await executor.start()
    assert executor.capacity == 2
    executor.claim()
    executor.claim()
    assert executor.capacity == 0


async def test_an_overdrawn_bucket_reserves_the_next_token() -> None:
    clock = Clock()  # stands still: the reservation is the only way to a token
    executor = RateLimitedExecutor(InlineExecutor(10), rate=20, burst=1, clock=clock)
    await executor.start()
    await executor.run(make_call(noop))
    assert executor.reserved == 0 and executor.capacity == 0
    # Handed a call anyway (the dispatcher took more than `capacity`): it reserves the
    # next token, sleeps the 1/20 s until it is due, and leaves the bucket overdrawn.
    await executor.run(make_call(noop))
    assert executor.reserved == 1 and executor.started == 2
    assert executor.next_token_in_s() == pytest.approx(0.1)  # two tokens' worth behind
    await executor.aclose()


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="rate and per_s"):
        RateLimitedExecutor(InlineExecutor(), rate=0)
    with pytest.raises(ValueError, match="burst"):
        RateLimitedExecutor(InlineExecutor(), rate=5, burst=0)


async def test_starts_stay_under_the_rate_through_the_app() -> None:
    rate, burst, n = 20.0, 4, 24
    executor = RateLimitedExecutor(ThreadExecutor(4), rate=rate, burst=burst)
    app = QueueTasks("rated", executors={"api": executor})

    @app.task(executor="api")
    def call_api(i: int) -> float:
        return time.monotonic()

    async with app:
        tasks = [await app.add_task("call_api", i) for i in range(n)]
        assert await app.wait_idle(timeout=20)
        starts = sorted([(await app.get(t.uuid)).returning for t in tasks])  # type: ignore[union-attr]
    assert len(starts) == n and executor.started == n
    window_s = 0.5
    most = max(sum(1 for s in starts if t <= s < t + window_s) for t in starts)
    # A token bucket starts at most burst + rate * window in any window; +1 for rounding.
    assert most <= burst + rate * window_s + 1, starts
    # Waiting costs wake-ups, not a loop: about one timer per token that had to be waited for.
    assert executor.timer_fires <= n - burst + 2
