"""Many deadlines on one loop timer.

Callers of `add_task(..., timeout=)` and `wait()` each need a deadline, and nearly all
of them end well before it. `loop.call_later` + `cancel` per call leaves a cancelled
timer in the loop's heap for each (the loop rebuilds that heap every hundred or so),
which cost a tenth of a process round trip. Here a cancelled deadline is one cleared
slot, dropped as soon as it reaches the top, and the loop holds a single timer: the
earliest live deadline's.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from itertools import count

#: A deadline fires this early at most: the loop's timers are not more precise anyway.
_SLACK_S = 0.001


class Deadline:
    __slots__ = ("callback", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        self.callback = None


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def __len__(self) -> int:
        """Deadlines held, cancelled ones not yet dropped included."""
        return len(self._heap)

    def add(self, delay_s: float, callback: Callable[[], None]) -> Deadline:
        """Call `callback` in `delay_s` seconds, unless the returned deadline is cancelled."""
        heap = self._heap
        while heap and heap[0][2].callback is None:
            heapq.heappop(heap)
        deadline = Deadline(self._loop.time() + delay_s, callback)
        heapq.heappush(heap, (deadline.when, next(self._seq), deadline))
        if deadline.when < self._timer_at:
            self._arm(deadline.when)
        return deadline

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        heap = self._heap
        due = self._loop.time() + _SLACK_S
        while heap and (heap[0][0] <= due or heap[0][2].callback is None):
            deadline = heapq.heappop(heap)[2]
            callback, deadline.callback = deadline.callback, None
            if callback is not None:
                callback()
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = float("inf")
        self._heap.clear()
