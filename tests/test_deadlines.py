"""Deadlines: many timeouts on one loop timer (qtasks_mp/deadlines.py)."""

from __future__ import annotations

import asyncio

from qtasks_mp.deadlines import Deadlines


async def test_deadlines_fire_in_order_and_cancelled_ones_never() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    fired: list[str] = []
    done = loop.create_future()
    deadlines.add(0.06, lambda: fired.append("late"))
    deadlines.add(0.02, lambda: fired.append("early"))  # earlier than the armed timer
    deadlines.add(0.04, lambda: fired.append("cancelled")).cancel()
    deadlines.add(0.08, lambda: done.set_result(None))
    start = loop.time()
    await asyncio.wait_for(done, 5)
    assert fired == ["early", "late"]
    assert loop.time() - start >= 0.08 - 0.002  # never more than the slack early
    assert len(deadlines) == 0


async def test_deadlines_ended_early_do_not_pile_up() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    for _ in range(10_000):  # a waiter per round trip, each done long before its timeout
        deadlines.add(10.0, lambda: None).cancel()
    assert len(deadlines) <= 1
    deadlines.close()
