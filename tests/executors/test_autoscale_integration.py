"""The autoscaler driving a real process pool: a burst of CPU calls grows it from
min_workers to max_workers; the idle tail shrinks it back, one worker at a time.

Waits are on decision events and on process exits, never on a sleep. The policy here
turns the CPU rules off (`cpu_saturated_percent=None`): this machine is shared, and
whether other programs leave room is the policy tests' business, not this one's.
"""

from __future__ import annotations

import asyncio
import time

import procfuncs
import pytest
from proc_support import gone, grandchildren, make_call

from qtasks_mp.autoscale import Decision, ScalingPolicy
from qtasks_mp.executors.process import ProcessExecutor

pytestmark = pytest.mark.timeout(20)


async def _until(event: asyncio.Event, what: str, timeout_s: float = 8.0) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except asyncio.TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def test_a_burst_grows_the_pool_to_max_and_the_idle_tail_shrinks_it_to_min() -> None:
    workers_before = grandchildren()
    policy = ScalingPolicy(
        min_workers=1, max_workers=3, idle_timeout=0.3, memory_reserve=0, cpu_saturated_percent=None
    )
    pool = ProcessExecutor(max_workers=3, autoscale=policy, autoscale_interval_s=0.02)
    grown: set[int] = set()
    await pool.start()
    try:
        assert pool.stats()["workers"] == 1
        scaler = pool.autoscaler
        assert scaler is not None
        decisions: list[Decision] = []
        at_max, at_min = asyncio.Event(), asyncio.Event()

        def watch(d: Decision) -> None:
            decisions.append(d)
            if d.target == 3:
                at_max.set()
            if d.action == "shrink" and d.target == 1:
                at_min.set()

        scaler.on_decision.append(watch)
        first_pid = pool.stats()["pids"][0]

        burst_at = time.monotonic()
        calls = [asyncio.ensure_future(pool.run(make_call(procfuncs.cpu, 60))) for _ in range(24)]
        probe = [asyncio.ensure_future(pool.run(make_call(procfuncs.add, i, i))) for i in range(6)]
        await _until(at_max, "the pool to grow to max_workers")
        reaction_s = time.monotonic() - burst_at
        assert await pool.wait_ready(8), "the new workers did not start"
        assert len(pool.stats()["pids"]) == 3
        # at max now: on a busy machine a worker that runs out of calls first may be
        # retired before the slowest call of the burst returns
        grown = set(pool.stats()["pids"])
        results = await asyncio.gather(*calls)
        assert all(isinstance(n, int) and n > 0 for n in results)
        assert await asyncio.gather(*probe) == [2 * i for i in range(6)]
        assert decisions[0].action == "grow" and decisions[0].before == 1
        assert reaction_s < 2.0, decisions

        await _until(at_min, "the idle pool to shrink back to min_workers")
        shrinks = [d for d in decisions if d.action == "shrink"]
        assert [d.target for d in shrinks] == [2, 1]  # one at a time
        assert all(len(d.retire) == 1 for d in shrinks)
        retired = [d.retire[0] for d in shrinks]
        assert gone(retired), "a retired worker did not exit"
        stats = pool.stats()
        assert stats["workers"] == 1 and len(stats["pids"]) == 1
        assert set(stats["pids"]) | set(retired) == grown
        # no worker was killed mid-task, nor replaced
        assert (stats["crashes"], stats["timeouts"], stats["recycles"]) == (0, 0, 0)
        assert stats["calls_done"] == 30
        assert pool.load().mean_call_s is not None and stats["startup_s"] is not None
        history = stats["autoscale"]["history"]
        assert [h["action"] for h in history] == [d.action for d in decisions]
        assert first_pid in grown

        # a second burst after the shrink grows it again (the pool is not stuck at min)
        at_max.clear()
        again = [asyncio.ensure_future(pool.run(make_call(procfuncs.cpu, 60))) for _ in range(12)]
        await _until(at_max, "the pool to grow again")
        assert all(n > 0 for n in await asyncio.gather(*again))
    finally:
        await pool.aclose()
    left = grandchildren() - workers_before
    assert not left, f"worker processes leaked: {left}"
    assert gone(list(grown))


async def test_without_autoscale_the_pool_stays_at_max_workers() -> None:
    pool = ProcessExecutor(max_workers=2, autoscale=False)
    await pool.start()
    try:
        assert pool.autoscaler is None
        assert pool.stats()["workers"] == 2
        assert pool.slots == 2 * pool.depth
        assert await pool.run(make_call(procfuncs.add, 2, 3)) == 5
        assert pool.stats()["autoscale"] is None
    finally:
        await pool.aclose()


async def test_autoscaling_pool_takes_calls_for_max_workers_at_once() -> None:
    pool = ProcessExecutor(max_workers=3, min_workers=1, idle_timeout=5)
    assert pool.slots == 0
    await pool.start()
    try:
        assert pool.stats()["workers"] == 1
        assert pool.slots == 3 * pool.depth  # calls wait in the pool, seen as backlog
        assert pool.autoscaler is not None
        assert await pool.run(make_call(procfuncs.add, 1, 1)) == 2
    finally:
        await pool.aclose()
    with pytest.raises(ValueError, match="min_workers"):
        ProcessExecutor(max_workers=2, min_workers=3)
