"""Who waits for which task, and how many tasks added here have not ended yet.

`add_task(..., timeout=)`, `app.wait()` and `Task.wait_result*()` register a future
under the task's uuid; when the dispatcher records the end of a task (`finished`), the
futures registered for it are resolved, and nothing else. `wait_idle()` waits on one
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
from .deadlines import Deadlines
from .lifecycle import Supervisor
from .task import FINISHED, Task, TaskRecord


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
        self._futures: dict[UUID, list[asyncio.Future[Task | None]]] = {}
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
        return len(self._futures)

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
        futures = self._futures.pop(record.uuid, None) if self._futures else None
        if futures:
            snap = record.snapshot(self._host)
            for fut in futures:
                if not fut.done():
                    fut.set_result(snap)

    def forget_unfinished(self) -> None:
        """The app stopped with a store of its own: nothing added here can end any more."""
        self._unfinished = 0
        self._idle.set()

    async def wait(self, uuid: UUID, timeout: float | None) -> Task | None:
        """Wait for `uuid` to be resolved; None when `timeout` runs out first."""
        fut: asyncio.Future[Task | None] = self.loop.create_future()
        self._futures.setdefault(uuid, []).append(fut)
        # A deadline on our own future: cheaper than asyncio.wait_for's extra future and turn.
        deadline = None if timeout is None else self.deadlines.add(timeout, partial(_time_out, fut))
        try:
            return await fut
        finally:
            if deadline is not None:
                deadline.cancel()
            left = self._futures.get(uuid)
            if left is not None and fut in left:
                left.remove(fut)
                if not left:
                    del self._futures[uuid]

    async def wait_idle(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def waited_for(self) -> list[UUID]:
        return list(self._futures)

    def recheck(self) -> None:
        """Another process changed the store: re-read the tasks someone here waits for."""
        if not self._futures:
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
                for uuid in list(self._futures):
                    record = await self._read(uuid)
                    if record is not None and record.status in FINISHED:
                        self.resolve(record)
                again = self._recheck and bool(self._futures)
        finally:
            self._checking = False

    async def close(self) -> None:
        await self._background.cancel_all()
        self.deadlines.close()


def _time_out(fut: asyncio.Future[Task | None]) -> None:
    if not fut.done():
        fut.set_result(None)  # None: the time ran out (QTasks' answer)
