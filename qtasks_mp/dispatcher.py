"""The dispatcher: moves tasks from the store to the executors, one loop per app.

    store ──take(lane, capacity)──> _execute(record) ──chain──> executor.run(call)
      ^                                   │
      └── put(record, eta) on Retry ──────┤ success / error / cancel
                                          └──> store.finish ──> app wakes waiters

It wakes on events only: a new task, a finished call (a slot came free), an
executor's own `wakeup()`, or a timer set for the earliest delayed retry. It takes
from the store only what executors have room for, so a million queued tasks stay
records in the store, not a million coroutines.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from typing import TYPE_CHECKING

from .errors import Retry
from .executors.base import Call, Executor
from .registries import AsyncTask, SyncTask, TaskSpec
from .task import TaskRecord, TaskStatus

if TYPE_CHECKING:
    from .app import AppCore

log = logging.getLogger("qtasks_mp.dispatcher")


class Dispatcher:
    def __init__(self, app: AppCore) -> None:
        self.app = app
        self.store = app.store
        self.wake_event = asyncio.Event()
        self.running: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._main: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._main = asyncio.get_running_loop().create_task(self._loop(), name="qtasks_mp")

    def wake(self) -> None:
        self.wake_event.set()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        store, wake_event = self.store, self.wake_event
        while not self._stopping:
            wake_event.clear()
            now = time.time()
            soonest: float | None = None
            for lane, executor in self.app.executors.items():
                room = executor.capacity
                if room <= 0:
                    continue  # a finishing call wakes us
                taken = await store.take(lane, room, now)
                for record in taken:
                    self._start(record, executor)
                if len(taken) < room:
                    eta = await store.next_eta(lane)
                    if eta is not None and (soonest is None or eta < soonest):
                        soonest = eta
            timer = None
            if soonest is not None:
                timer = loop.call_later(max(0.0, soonest - time.time()), wake_event.set)
            await wake_event.wait()
            if timer is not None:
                timer.cancel()

    def _start(self, record: TaskRecord, executor: Executor) -> None:
        spec = self.app.specs.get(record.task_name)
        executor.active += 1
        record.started_at = record.updated_at = time.time()
        task = asyncio.get_running_loop().create_task(self._execute(record, spec, executor))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _execute(self, record: TaskRecord, spec: TaskSpec | None, executor: Executor) -> None:
        app = self.app
        try:
            if spec is None or spec.chain is None:
                raise LookupError(
                    f"task {record.task_name!r} is not registered in this app (it was queued "
                    "by another program or version); register it, then add it again"
                )
            context = None
            if spec.pass_context:
                ctx_type = AsyncTask if spec.kind.is_async else SyncTask
                context = ctx_type(app, spec.name, record.uuid, record.retry + 1)
            record.returning = await spec.chain(Call(spec, record, context))
            record.status = TaskStatus.SUCCESS
        except Retry as r:
            record.retry += 1
            record.status = TaskStatus.NEW
            record.eta = time.time() + r.delay_s if r.delay_s > 0 else 0.0
            record.updated_at = time.time()
            record.traceback = _format(r.__cause__ or r)
            await self.store.put(record)
            return
        except asyncio.CancelledError:
            record.status = TaskStatus.CANCEL
            record.traceback = "cancelled: the app stopped while the task was running"
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except BaseException as e:  # SystemExit from a task fails that task only
            record.status = TaskStatus.ERROR
            record.traceback = _format(e)
        finally:
            executor.active -= 1
            self.wake_event.set()
        record.finished_at = record.updated_at = time.time()
        await self.store.finish(record)
        app.task_finished(record)

    async def stop(self, timeout_s: float) -> tuple[int, int]:
        """Stop taking tasks; give running ones `timeout_s`, then cancel them.

        Returns (finished in time, cancelled).
        """
        self._stopping = True
        self.wake_event.set()
        if self._main is not None:
            await self._main
        running = set(self.running)
        if not running:
            return 0, 0
        done, pending = await asyncio.wait(running, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return len(done), len(pending)


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
