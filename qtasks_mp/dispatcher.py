"""The dispatcher: moves tasks from the store to the executors, one loop per app.

    store ──take(lane, room)──> lane.inbox ──> worker ──chain──> executor.run(call)
      ^                                           │
      └────────── put(record, eta) on Retry ──────┤ success / error / cancel
                                                  └──> store.finish ──> app wakes waiters

One lane per executor. The dispatcher loop takes from the store only what an
executor has room for (`capacity` minus what already waits in the lane's inbox), so
a million queued tasks stay records in the store, not a million coroutines. Each
lane has at most `executor.slots` worker coroutines; a worker runs records from the
inbox one after another, so a call costs no `asyncio.Task` of its own.

A worker whose inbox runs dry takes the next batch from the store itself before it
parks, so a busy lane costs no dispatcher turn per batch.

Workers are recruited one at a time: a worker that takes a record and sees more
waiting recruits one helper (waking an idle worker, or starting one while under
`slots`) if no recruit is already on its way. Tasks that never suspend are run by
one worker back to back (yielding to the loop every few milliseconds); tasks that
wait on I/O ramp up one more worker per loop turn until `slots` run at once.

`add_task` offers each new task to its lane directly (`offer`): an idle worker is
woken and takes it from the store, with no dispatcher turn in between.

The loop wakes on events only: a new task for a lane it has not seen, a retry put
back, another process changing a shared store, an executor's own `wakeup()` (its
room grew), or a timer set for the earliest future ETA. A finished call does not
wake it: the worker that ran it takes the next batch itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections import deque
from typing import TYPE_CHECKING

from .eager import Eager
from .errors import Retry
from .executors.base import Call, Executor
from .registries import AsyncTask, SyncTask, TaskSpec
from .task import TaskRecord, TaskStatus

if TYPE_CHECKING:
    from .app import AppCore

log = logging.getLogger("qtasks_mp.dispatcher")

_SLICE_S = 0.005  # a worker running tasks that never suspend yields this often


class _Lane:
    __slots__ = ("executor", "idle", "inbox", "name", "recruiting", "starved", "workers")

    def __init__(self, name: str, executor: Executor) -> None:
        self.name = name
        self.executor = executor
        self.inbox: deque[TaskRecord] = deque()
        self.idle: deque[asyncio.Future[None]] = deque()
        self.workers: set[asyncio.Task[None]] = set()
        self.recruiting = False
        self.starved = False  # a worker parked because the executor had no room


class Dispatcher:
    def __init__(self, app: AppCore) -> None:
        self.app = app
        self.store = app.store
        self.wake_event = asyncio.Event()
        self.lanes: dict[str, _Lane] = {}
        self._stopping = False
        self._main: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._eager: set[Eager[None]] = set()  # calls run in their waiting caller's task
        self._detached: set[asyncio.Task[None]] = set()  # ... that went on alone

    def start(self) -> None:
        self._main = asyncio.get_running_loop().create_task(self._loop(), name="qtasks_mp")

    def wake(self) -> None:
        self.wake_event.set()

    def _lane(self, name: str, executor: Executor) -> _Lane:
        lane = self.lanes.get(name)
        if lane is None:
            lane = self.lanes[name] = _Lane(name, executor)
        return lane

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        store, wake_event = self.store, self.wake_event
        while not self._stopping:
            wake_event.clear()
            now = time.time()
            soonest: float | None = None
            started = self.app.started_executors
            for name, executor in self.app.executors.items():
                if name not in started:
                    continue
                lane = self._lane(name, executor)
                room = executor.capacity - len(lane.inbox)
                if room > 0:
                    taken = await store.take(name, room, now)
                    if taken:
                        lane.inbox.extend(taken)
                        self._recruit(lane)
                elif not lane.inbox:  # held by calls run by their callers: they recruit
                    lane.starved = True
                # A delayed task already due in a full lane is taken by its workers with
                # their next batch; only a future ETA needs a timer.
                eta = await store.next_eta(name)
                if eta is not None and eta > now and (soonest is None or eta < soonest):
                    soonest = eta
            timer = None
            if soonest is not None:
                timer = loop.call_later(max(0.0, soonest - time.time()), wake_event.set)
            await wake_event.wait()
            if timer is not None:
                timer.cancel()

    def offer(self, lane_name: str) -> None:
        """A task was put in the store for `lane_name`: get a worker to take it.

        An idle worker is woken (or one started) and takes from the store itself, so
        the common path costs no dispatcher turn. Without a lane yet, the loop does it.
        """
        lane = self.lanes.get(lane_name)
        if lane is None or self._stopping:
            self.wake_event.set()
        elif lane.inbox:
            pass  # its workers are on it
        elif lane.executor.capacity > 0:
            self._recruit(lane)
        else:  # the room is held by calls run by their callers: they recruit when done
            lane.starved = True

    async def run_waited(self, record: TaskRecord, timeout: float) -> TaskRecord | None:
        """Run a task whose caller waits for it in the caller's own task, if its lane is idle.

        Returns the record it ran (ended, or back in the store for a retry), or None:
        the lane was busy (a worker takes the task as usual), or the call went on in a
        task of its own (the timeout ran out, the caller was cancelled, the app stops).
        """
        executor = self.app.executors.get(record.lane)
        spec = self.app.specs.get(record.task_name)
        if (
            executor is None
            or spec is None
            or not spec.eager
            or record.lane not in self.app.started_executors
            or self._stopping
        ):
            self.offer(record.lane)
            return None
        lane = self._lane(record.lane, executor)
        if (
            lane.inbox
            or executor.capacity <= 0
            or not (lane.idle or len(lane.workers) < executor.slots)
        ):
            self.offer(record.lane)
            return None
        taken = await self.store.take(lane.name, 1, time.time())
        if not taken:
            return None  # a worker was quicker
        mine = taken[0]
        if mine.uuid != record.uuid or self._stopping:  # another task comes first
            lane.inbox.extend(taken)
            self._recruit(lane)
            return None
        eager = Eager(self._execute(mine, spec, executor), self._adopt)
        self._eager.add(eager)
        assert self.app.deadlines is not None
        deadline = self.app.deadlines.add(timeout, eager.detach)
        try:
            ran, _ = await eager.run()
        finally:
            deadline.cancel()
            self._eager.discard(eager)
        return mine if ran else None

    def _adopt(self, task: asyncio.Task[None]) -> None:
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

    def _recruit(self, lane: _Lane) -> None:
        """Get one more worker onto `lane` unless one is already on its way."""
        if lane.recruiting:
            return
        while lane.idle:
            fut = lane.idle.popleft()
            if not fut.done():
                lane.recruiting = True
                fut.set_result(None)
                return
        if len(lane.workers) < lane.executor.slots:
            lane.recruiting = True
            worker = asyncio.get_running_loop().create_task(self._work(lane))
            lane.workers.add(worker)
            worker.add_done_callback(lane.workers.discard)

    async def _work(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        inbox, executor, specs = lane.inbox, lane.executor, self.app.specs
        deadline = loop.time() + _SLICE_S
        lane.recruiting = False
        while True:
            if not inbox:
                if self._stopping:
                    return
                if len(lane.workers) > executor.slots:  # the executor shrank: retire
                    # now (not in a done-callback a turn later: workers ending in the same
                    # turn must see each other go), and let the loop hand on our share.
                    lane.workers.discard(asyncio.current_task())
                    self.wake_event.set()
                    return
                room = executor.capacity
                if room > 0:  # serve ourselves before parking: saves a loop turn per batch
                    taken = await self.store.take(lane.name, room, time.time())
                    if taken:
                        inbox.extend(taken)
                        continue
                else:  # the room is held by calls run by their callers: they wake us
                    lane.starved = True
                fut = loop.create_future()
                lane.idle.append(fut)
                await fut
                lane.recruiting = False
                deadline = loop.time() + _SLICE_S
                continue
            record = inbox.popleft()
            if inbox:
                self._recruit(lane)
            await self._execute(record, specs.get(record.task_name), executor)
            if loop.time() > deadline:
                await asyncio.sleep(0)  # let the producers, timers and other lanes run
                deadline = loop.time() + _SLICE_S

    async def _execute(self, record: TaskRecord, spec: TaskSpec | None, executor: Executor) -> None:
        app = self.app
        executor.active += 1
        record.started_at = record.updated_at = time.time()
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
            record.traceback = None  # an earlier attempt's failure is history now
        except Retry as r:
            record.retry += 1
            record.status = TaskStatus.NEW
            record.eta = time.time() + r.delay_s if r.delay_s > 0 else 0.0
            record.updated_at = time.time()
            record.traceback = _format(r.__cause__ or r)
            await self.store.put(record)
            self.wake_event.set()  # the dispatcher keeps the timer for delayed retries
            return
        except asyncio.CancelledError:
            if self.store.shared:  # durable: the next start runs it again (at-least-once)
                record.retry += 1
                record.status = TaskStatus.NEW
                record.eta = 0.0
                record.updated_at = time.time()
                record.traceback = "interrupted: the app stopped while the task was running"
                await self.store.put(record)
                return
            record.status = TaskStatus.CANCEL
            record.traceback = "cancelled: the app stopped while the task was running"
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except BaseException as e:  # SystemExit from a task fails that task only
            record.status = TaskStatus.ERROR
            record.traceback = _format(e)
        finally:
            # No dispatcher wake-up here: this worker takes the next batch itself. A
            # call run by its caller does not, so it wakes a worker that found no room.
            executor.active -= 1
            lane = self.lanes.get(record.lane)
            if lane is not None and lane.starved and executor.capacity > 0:
                lane.starved = False
                self._recruit(lane)
            if self._stopping and not any(e.active for e in app.executors.values()):
                self._drained.set()
        record.finished_at = record.updated_at = time.time()
        await self.store.finish(record)
        app.task_finished(record)

    async def stop(self, timeout_s: float) -> tuple[int, int]:
        """Stop taking tasks; give running ones `timeout_s`, then cancel them.

        Records taken into an inbox but not started go back to the store.
        Returns (finished in time, cancelled).
        """
        self._stopping = True
        self.wake_event.set()
        if self._main is not None:
            await self._main
        for lane in self.lanes.values():
            while lane.inbox:
                record = lane.inbox.pop()
                record.status = TaskStatus.NEW
                await self.store.put(record)
            for fut in lane.idle:
                if not fut.done():
                    fut.set_result(None)
        running = sum(e.active for e in self.app.executors.values())
        if running:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout_s)
        cancelled = sum(e.active for e in self.app.executors.values())
        for eager in list(self._eager):
            eager.detach()  # out of its caller's task, into one we can cancel
        if self._detached:
            await asyncio.sleep(0)  # let them start: one cancelled unstarted would not see it
        workers = [w for lane in self.lanes.values() for w in lane.workers]
        workers += self._detached
        for worker in workers:
            worker.cancel()
        if workers:
            await asyncio.wait(workers)
        return running - cancelled, cancelled


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
