"""Deadlines: many timeouts on one loop timer (qtasks_mp/deadlines.py).

Most tests drive a fake loop clock by hand (`FakeLoop`): a deadline fires when the test
says time has passed, never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from qtasks_mp.deadlines import Deadlines


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The two things `Deadlines` asks of a loop: `time()` and `call_at()`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move the clock and run the timers that came due, earliest first."""
        self.now += seconds
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when <= self.now]
            if not due:
                return
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            timer.callback()

    @property
    def armed(self) -> list[float]:
        return [t.when - self.now for t in self.timers if not t.cancelled]


def make() -> tuple[FakeLoop, Deadlines]:
    loop = FakeLoop()
    return loop, Deadlines(loop)  # type: ignore[arg-type]


async def test_deadlines_fire_in_order_and_cancelled_ones_never() -> None:
    """On a real loop: the one timer fires them in order, never early by more than 1 ms."""
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


def test_deadlines_ended_early_do_not_pile_up() -> None:
    _, deadlines = make()
    for _ in range(10_000):  # a waiter per round trip, each done long before its timeout
        deadlines.add(10.0, lambda: None).cancel()
    assert len(deadlines) <= 1
    deadlines.close()


def test_200k_ended_waits_behind_one_long_wait_are_not_kept() -> None:
    """Issue 10: one wait(timeout=30) used to keep all 200,000 later cancelled deadlines."""
    loop, deadlines = make()
    fired: list[str] = []
    deadlines.add(30.0, lambda: fired.append("long"))
    for _ in range(200_000):
        deadlines.add(60.0, lambda: fired.append("ended")).cancel()
    assert len(deadlines) < 1_000
    loop.advance(29.9)
    assert fired == []
    loop.advance(0.2)
    assert fired == ["long"]
    loop.advance(60.0)
    assert fired == ["long"]  # none of the cancelled ones ever fires
    assert len(deadlines) == 0


def test_heap_stays_proportional_to_live_deadlines() -> None:
    """With many live deadlines, cancelled slots never outnumber them (plus a small floor)."""
    _, deadlines = make()
    live = [deadlines.add(100.0 + i, lambda: None) for i in range(5_000)]
    for i in range(50_000):
        deadlines.add(200.0 + i % 7, lambda: None).cancel()
        assert len(deadlines) <= 2 * len(live) + 300
    for d in live[:4_000]:
        d.cancel()
    assert len(deadlines) <= 2 * 1_000 + 300


def test_compaction_keeps_order_and_times() -> None:
    """Deadlines that survive a rebuild of the heap still fire in order, each on time."""
    loop, deadlines = make()
    fired: list[tuple[int, float]] = []

    def at(i: int) -> Callable[[], None]:
        return lambda: fired.append((i, loop.now))

    keep = list(range(0, 3_000, 3))
    handles = {i: deadlines.add(1.0 + i / 1000, at(i)) for i in range(3_000)}
    for i, handle in handles.items():
        if i not in keep:
            handle.cancel()  # 2,000 cancelled out of 3,000: rebuilds on the way
    assert len(deadlines) < 3_000
    for _ in range(4_000):
        loop.advance(0.001)
    assert [i for i, _ in fired] == keep
    for i, when in fired:  # each fired no earlier than 1 ms before its time, and not late
        assert 1000.0 + 1.0 + i / 1000 - 0.001 - 1e-9 <= when <= 1000.0 + 1.0 + i / 1000 + 0.0011


def test_a_callback_that_cancels_others_while_firing() -> None:
    """A rebuild triggered from inside a firing callback leaves the firing loop consistent."""
    loop, deadlines = make()
    fired: list[int] = []
    later = [deadlines.add(5.0 + i / 10_000, lambda: fired.append(-1)) for i in range(2_000)]

    def cancel_all() -> None:
        fired.append(0)
        for d in later:
            d.cancel()

    deadlines.add(1.0, cancel_all)
    deadlines.add(1.0, lambda: fired.append(1))  # due in the same pass, after a rebuild
    loop.advance(1.0)
    assert fired == [0, 1]
    assert len(deadlines) < 300
    loop.advance(10.0)
    assert fired == [0, 1]
    assert len(deadlines) == 0


def test_cancel_is_idempotent_and_a_no_op_after_firing_or_close() -> None:
    loop, deadlines = make()
    fired: list[str] = []
    d = deadlines.add(1.0, lambda: fired.append("x"))
    loop.advance(1.0)
    d.cancel()
    d.cancel()
    assert fired == ["x"] and deadlines._cancelled == 0
    d = deadlines.add(1.0, lambda: fired.append("y"))
    d.cancel()
    d.cancel()
    assert deadlines._cancelled == 1
    e = deadlines.add(2.0, lambda: None)
    deadlines.close()
    e.cancel()
    assert deadlines._cancelled == 0 and len(deadlines) == 0


def test_one_timer_armed_for_the_earliest_live_deadline() -> None:
    loop, deadlines = make()
    deadlines.add(5.0, lambda: None)
    deadlines.add(2.0, lambda: None)
    assert loop.armed == [2.0]
    loop.advance(2.0)
    assert loop.armed == [3.0]


@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 10_000])
def test_counts_of_cancelled_slots_stay_exact(n: int) -> None:
    """The count that decides rebuilds matches the heap, whatever the history."""
    loop, deadlines = make()
    handles: list[Any] = [deadlines.add(1.0 + i % 13, lambda: None) for i in range(n)]
    for h in handles[::2]:
        h.cancel()
    held = deadlines._heap
    assert deadlines._cancelled == sum(1 for e in held if e[2].callback is None)
    loop.advance(7.0)
    held = deadlines._heap
    assert deadlines._cancelled == sum(1 for e in held if e[2].callback is None)
