"""Who waits for which task, and how many tasks added here have not ended yet.

`add_task(..., timeout=)`, `app.wait()` and `Task.wait_result*()` register a future
under the task's uuid (`enter`); when the dispatcher records the end of a task
(`finished`), the futures registered for it are resolved, and nothing else.

A gather of 50,000 waited `add_task` holds 50,000 waiters at once, so a waiter costs
one future and two dict entries, nothing more: no coroutine of its own (`add_task`
awaits the future itself), no list per task unless a second waiter comes, and no
deadline of its own. Waiters whose time runs out within the same `_TICK_S` share one
`_Expiry`: one deadline in the loop's `Deadlines` and one list for all of them (up to
`_TICK_S` late; the loop's timers are not more precise anyway). An expiry whose
waiters all ended is dropped at once, so memory follows the live waits. `wait_idle()` waits on one
event, set when the count of unfinished tasks reaches zero. Nothing re-reads the store
on a timer: a shared store says when another process changed it (`recheck`).

One `Waiters` per event loop the app runs in; it owns the deadlines of that loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from uuid import UUID

from .context import TaskHost
from .deadlines import Deadline, Deadlines
from .lifecycle import Supervisor
from .task import FINISHED, Task, TaskRecord

#: Waiters whose time runs out within the same slice of this many seconds share one
#: deadline, and time out together at its end.
_TICK_S = 0.002

Waiting = asyncio.Future[Task | None]


class _Expiry:
    """The waiters whose time runs out in one tick: one deadline for all of them."""

    __slots__ = ("deadline", "futures", "live", "tick")

    def __init__(self, tick: int) -> None:
        self.tick = tick
        self.futures: list[Waiting] = []
        self.live = 0  # of `futures`, those whose waiter still waits
        self.deadline: Deadline | None = None  # None once fired


class Waiters:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: TaskHost,
        read: Callable[[UUID], Awaitable[TaskRecord | None]],
        unfinished: int = 0,
    ) -> None:
        self.loop = loop
        self.deadlines = Deadlines(loop)
        self._host = host
        self._read = read  # the store's `get`
        # By `uuid.int`, as the memory store keys its records: a UUID hashes in Python.
        self._futures: dict[int, Waiting] = {}  # the first waiter of each task
        self._more: dict[int, list[Waiting]] = {}  # the others (rare)
        self._expiries: dict[int, _Expiry] = {}  # by tick: deadline // _TICK_S + 1
        self._unfinished = unfinished
        self._idle = asyncio.Event()
        if unfinished == 0:
            self._idle.set()
        self._checking = False
        self._recheck = False  # a change arrived while waiters were being checked
        self._background = Supervisor()

    @property
    def unfinished(self) -> int:
        return self._unfinished

    def __len__(self) -> int:
        """Tasks someone waits for."""
        return len(self._futures.keys() | self._more.keys()) if self._more else len(self._futures)

    def accepted(self) -> None:
        """A task added here was accepted by the store."""
        self._unfinished += 1
        if self._unfinished == 1:
            self._idle.clear()

    def finished(self, record: TaskRecord) -> None:
        """A task added here ended for good: wake its waiters."""
        self.resolve(record)
        self._unfinished -= 1
        if self._unfinished <= 0:
            self._unfinished = 0
            self._idle.set()

    def resolve(self, record: TaskRecord) -> None:
        """Wake the waiters of a finished task (ended here or elsewhere)."""
        key = record.uuid.int
        fut = self._futures.pop(key, None) if self._futures else None
        more = self._more.pop(key, None) if self._more else None
        if fut is None and more is None:
            return
        snap = record.snapshot(self._host)
        if fut is not None and not fut.done():
            fut.set_result(snap)
        for fut in more or ():
            if not fut.done():
                fut.set_result(snap)

    def forget_unfinished(self) -> None:
        """The app stopped with a store of its own: nothing added here can end any more."""
        self._unfinished = 0
        self._idle.set()

    async def wait(self, uuid: UUID, timeout: float | None) -> Task | None:
        """Wait for `uuid` to be resolved; None when `timeout` runs out first."""
        fut, expiry = self.enter(uuid, timeout)
        try:
            return await fut
        finally:
            self.leave(uuid, fut, expiry)

    def enter(self, uuid: UUID, timeout: float | None) -> tuple[Waiting, _Expiry | None]:
        """Register a waiter for `uuid`: its future (resolved with the finished `Task`,
        or None when `timeout` runs out), and what `leave` needs. Await the future,
        then call `leave` whatever happened."""
        fut: Waiting = self.loop.create_future()
        key = uuid.int
        if key in self._futures:
            self._more.setdefault(key, []).append(fut)
        else:
            self._futures[key] = fut
        if timeout is None:
            return fut, None
        # A deadline on our own future: cheaper than asyncio.wait_for's extra future and
        # turn; and shared by the waiters whose time ends in the same tick.
        now = self.loop.time()
        tick = int((now + timeout) // _TICK_S) + 1
        expiry = self._expiries.get(tick)
        if expiry is None:
            expiry = self._expiries[tick] = _Expiry(tick)
            expiry.deadline = self.deadlines.add(
                tick * _TICK_S - now, partial(self._expire, expiry)
            )
        expiry.futures.append(fut)
        expiry.live += 1
        return fut, expiry

    def leave(self, uuid: UUID, fut: Waiting, expiry: _Expiry | None) -> None:
        """The waiter of `fut` (from `enter`) stopped waiting: resolved, timed out or
        cancelled."""
        if expiry is not None:
            expiry.live -= 1
            if not expiry.live and expiry.deadline is not None:  # nobody left to time out
                expiry.deadline.cancel()
                expiry.deadline = None
                self._expiries.pop(expiry.tick, None)
        key = uuid.int
        if self._futures.get(key) is fut:  # not resolved: timed out or cancelled
            del self._futures[key]
        elif self._more and not fut.done():
            more = self._more.get(key)
            if more is not None and fut in more:
                more.remove(fut)
                if not more:
                    del self._more[key]

    def _expire(self, expiry: _Expiry) -> None:
        """The time of every waiter in `expiry` ran out."""
        expiry.deadline = None
        self._expiries.pop(expiry.tick, None)
        for fut in expiry.futures:
            if not fut.done():
                fut.set_result(None)  # None: the time ran out (QTasks' answer)

    async def wait_idle(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def waited_for(self) -> list[UUID]:
        keys = self._futures.keys() | self._more.keys() if self._more else self._futures
        return [UUID(int=key) for key in keys]

    def recheck(self) -> None:
        """Another process changed the store: re-read the tasks someone here waits for."""
        if not self._futures and not self._more:
            return
        if self._checking:
            self._recheck = True  # the check running now may have read too early
            return
        self._checking = True
        self._background.spawn(self._check(), "qtasks_mp waiters recheck")

    async def _check(self) -> None:
        try:
            again = True
            while again:
                self._recheck = False
                for uuid in self.waited_for():
                    record = await self._read(uuid)
                    if record is not None and record.status in FINISHED:
                        self.resolve(record)
                again = self._recheck and bool(self._futures or self._more)
        finally:
            self._checking = False

    async def close(self) -> None:
        await self._background.cancel_all()
        self.deadlines.close()
        self._expiries.clear()
