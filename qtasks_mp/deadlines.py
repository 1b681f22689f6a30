"""Many deadlines on one loop timer.

Callers of `add_task(..., timeout=)` and `wait()` need deadlines (those ending in the
same 2 ms share one: `waiters.py`), and so do calls a waiting caller runs itself;
nearly all of them end well before it. `loop.call_later` + `cancel` per call leaves a cancelled
timer in the loop's heap for each (the loop rebuilds that heap every hundred or so),
which cost a tenth of a process round trip. Here a cancelled deadline is one cleared
slot, dropped as soon as it reaches the top, and the loop holds a single timer: the
earliest live deadline's.

A cleared slot behind a live one cannot reach the top until that one fires: one
`wait(timeout=30)` would keep every later cancelled deadline for 30 s (200,000 ended
round trips: 33 MiB, and a 300 ms stall when it fires). So the cancelled slots are
counted, and when they outnumber the live ones (and a small floor) the heap is rebuilt
without them, in place. Each rebuild removes at least half of what it walks, so
memory stays proportional to live deadlines at an amortised O(1) per cancel.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from itertools import count

#: A deadline fires this early at most: the loop's timers are not more precise anyway.
_SLACK_S = 0.001

#: Cancelled slots tolerated whatever the live count: below it a rebuild is not worth it.
_COMPACT_FLOOR = 256


class Deadline:
    __slots__ = ("_owner", "callback", "when")

    def __init__(self, when: float, callback: Callable[[], None], owner: Deadlines) -> None:
        self.when = when
        self.callback: Callable[[], None] | None = callback
        self._owner = owner

    def cancel(self) -> None:
        """Forget the deadline; its slot is dropped later. Idempotent; a no-op once fired."""
        if self.callback is None:
            return
        self.callback = None
        owner = self._owner
        cancelled = owner._cancelled = owner._cancelled + 1
        if cancelled > _COMPACT_FLOOR and cancelled * 2 > len(owner._heap):
            owner._compact()


class Deadlines:
    __slots__ = ("_cancelled", "_heap", "_loop", "_seq", "_timer", "_timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Deadline]] = []
        self._cancelled = 0  # slots in the heap whose deadline was cancelled
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
            self._cancelled -= 1
        deadline = Deadline(self._loop.time() + delay_s, callback, self)
        heapq.heappush(heap, (deadline.when, next(self._seq), deadline))
        if deadline.when < self._timer_at:
            self._arm(deadline.when)
        return deadline

    def _compact(self) -> None:
        # In place: `_fire` may be iterating over this very list (a callback that cancels).
        heap = self._heap
        heap[:] = [entry for entry in heap if entry[2].callback is not None]
        heapq.heapify(heap)
        self._cancelled = 0

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
            if callback is None:
                self._cancelled -= 1
            else:
                callback()
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = float("inf")
        for entry in self._heap:
            entry[2].callback = None  # a later cancel() must not count a slot that is gone
        self._heap.clear()
        self._cancelled = 0
