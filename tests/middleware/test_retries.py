"""Retries: counts, isinstance matching, backoff through the store, Retry raised by a task."""

from __future__ import annotations

import asyncio
import time

import pytest

from qtasks_mp import Retries, Retry
from qtasks_mp.asyncio import QueueTasks


class Flaky:
    def __init__(self, failures: int, exc: type[Exception] = ConnectionError) -> None:
        self.failures, self.exc, self.calls = failures, exc, 0
        self.first_attempt = asyncio.Event()

    async def __call__(self) -> int:
        self.calls += 1
        self.first_attempt.set()
        if self.calls <= self.failures:
            raise self.exc(f"attempt {self.calls} failed")
        return self.calls


async def test_fails_twice_then_succeeds_within_three_retries(app: QueueTasks) -> None:
    flaky = Flaky(2)
    app.task(name="crm", retry=3, retry_on_exc=[ConnectionError])(flaky)
    await app.start()
    done = await app.add_task("crm", timeout=5)
    assert done is not None and done.status == "success" and done.returning == 3
    assert done.retry == 2 and flaky.calls == 3
    stats = app.stats()["tasks"]["crm"]
    assert (stats["count"], stats["ok"], stats["retried"], stats["failed"]) == (1, 1, 2, 0)


async def test_gives_up_after_retry_attempts_with_the_last_traceback(app: QueueTasks) -> None:
    flaky = Flaky(10)
    app.task(name="crm", retry=2)(flaky)
    await app.start()
    done = await app.add_task("crm", timeout=5)
    assert done is not None and done.status == "error" and flaky.calls == 3
    assert "ConnectionError: attempt 3 failed" in (done.traceback or "")


async def test_retry_on_exc_uses_isinstance_and_skips_other_errors(app: QueueTasks) -> None:
    class Timeoutish(ConnectionError): ...

    sub = Flaky(1, Timeoutish)
    other = Flaky(1, ValueError)
    app.task(name="sub", retry=1, retry_on_exc=[ConnectionError])(sub)
    app.task(name="other", retry=1, retry_on_exc=[ConnectionError])(other)
    await app.start()
    done = await app.add_task("sub", timeout=5)
    assert done is not None and done.status == "success" and sub.calls == 2
    done = await app.add_task("other", timeout=5)
    assert done is not None and done.status == "error" and other.calls == 1


async def test_no_retry_by_default(app: QueueTasks) -> None:
    flaky = Flaky(1)
    app.task(name="f")(flaky)
    await app.start()
    done = await app.add_task("f", timeout=5)
    assert done is not None and done.status == "error" and flaky.calls == 1


async def test_backoff_waits_in_the_store_not_in_a_slot(app: QueueTasks) -> None:
    """With one inline slot, a task in backoff must not block another task."""
    app.config.max_tasks_process = 1
    flaky = Flaky(1)
    app.task(name="slow_retry", retry=1, retry_backoff=0.3)(flaky)
    ran_at: list[float] = []

    @app.task
    async def quick() -> None:
        ran_at.append(time.monotonic())

    await app.start()
    t0 = time.monotonic()
    retried = await app.add_task("slow_retry")
    assert retried is not None
    await asyncio.wait_for(flaky.first_attempt.wait(), 5)
    await app.add_task("quick", timeout=5)
    done = await app.wait(retried.uuid, timeout=5)
    assert done is not None and done.status == "success"
    assert ran_at[0] - t0 < 0.2  # quick ran during the backoff, not after it
    assert time.monotonic() - t0 >= 0.3 * 0.75  # the retry honoured its ETA


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    r = Retries(max_backoff_s=5.0)
    for done, base in [(0, 1.0), (1, 2.0), (2, 4.0)]:
        assert 0.75 * base <= r.delay_s(1.0, done) <= 1.25 * base
    assert r.delay_s(1.0, 10) <= 5.0 * 1.25
    assert r.delay_s(None, 3) == 0.0  # default backoff 0: immediate, as QTasks


async def test_app_wide_retry_default_and_task_precedence() -> None:
    app = QueueTasks(middlewares=[Retries(max_retries=2)])  # replaces the built-in one
    assert sum(isinstance(m, Retries) for m in app.middlewares) == 1
    default = Flaky(2)
    none = Flaky(1)
    app.task(name="default")(default)
    app.task(name="none", retry=0)(none)
    async with app:
        done = await app.add_task("default", timeout=5)
        assert done is not None and done.status == "success" and default.calls == 3
        done = await app.add_task("none", timeout=5)
        assert done is not None and done.status == "error" and none.calls == 1


async def test_retry_raised_by_the_task_counts_against_its_limit(app: QueueTasks) -> None:
    calls = 0

    @app.task(retry=2)
    async def never_ready() -> None:
        nonlocal calls
        calls += 1
        raise Retry(delay_s=0.0, reason="not ready")

    await app.start()
    done = await app.add_task("never_ready", timeout=5)
    assert done is not None and done.status == "error" and calls == 3
    assert "RetriesExhausted" in (done.traceback or "") and "used its 2 retries" in (
        done.traceback or ""
    )


async def test_success_after_retries_clears_the_traceback(app: QueueTasks) -> None:
    app.task(name="crm", retry=1)(Flaky(1))
    await app.start()
    done = await app.add_task("crm", timeout=5)
    assert done is not None and done.status == "success" and done.traceback is None


async def test_task_may_raise_retry_itself(app: QueueTasks) -> None:
    calls = 0

    @app.task(retry=5)
    async def poll() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise Retry(delay_s=0.01, reason="not ready")
        return "ready"

    await app.start()
    done = await app.add_task("poll", timeout=5)
    assert done is not None and done.returning == "ready" and done.retry == 2


@pytest.mark.parametrize("retry", [0, 1])
async def test_final_failure_keeps_the_last_traceback(app: QueueTasks, retry: int) -> None:
    flaky = Flaky(5)
    app.task(name="f", retry=retry)(flaky)
    await app.start()
    done = await app.add_task("f", timeout=5)
    assert done is not None and "ConnectionError" in (done.traceback or "")
    assert done.retry == retry
