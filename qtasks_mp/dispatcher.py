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
parks, so a busy lane costs no dispatcher turn per batch. Takes of one lane may
overlap (a shared store's take suspends): each asks for the room left after the
others' requests (`_Lane.taking`), so an app never leases more tasks than its lanes
can start, and another app with idle workers gets the rest.

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
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from time import monotonic
from typing import Any
from uuid import UUID

from .context import AsyncTask, SyncTask, TaskHost
from .deadlines import Deadlines
from .eager import Eager, carry_on
from .errors import Retry, TaskCancelError
from .executors.base import Call, Executor
from .lending import Lending, Slot, current_call, running_call
from .lifecycle import Supervisor
from .registries import TaskSpec
from .stores.base import CANCELLED_QUEUED, Store
from .task import TaskRecord, TaskStatus

log = logging.getLogger("qtasks_mp.dispatcher")

_SLICE_S = 0.005  # a worker running tasks that never suspend yields this often (monotonic)
#: Waits between tries of a failing store: the loop's, and finishing a task's.
_BACKOFF_S = (0.05, 0.2, 1.0, 2.0)
_FINISH_TRIES = 3


#: `Dispatcher.run_taken`: what a direct call's chain waits for, and how to go on.
Taken = tuple[Any, Callable[[], None]]


@dataclass(frozen=True)
class Route:
    """How to run a task: its spec, its middleware chain ending at its executor (built
    once by the app), and whether a waiting caller may drive that chain (`eager.py`)."""

    spec: TaskSpec
    chain: Callable[[Call], Awaitable[Any]]
    eager: bool


class _Lane:
    __slots__ = (
        "caller_due",
        "executor",
        "idle",
        "inbox",
        "name",
        "recruiting",
        "starved",
        "taking",
        "workers",
    )

    def __init__(self, name: str, executor: Executor) -> None:
        self.name = name
        self.executor = executor
        self.inbox: deque[TaskRecord] = deque()
        # Records asked of the store by takes still under way. A shared store's take
        # suspends; the room it asked for is spoken for until it returns, so takes that
        # overlap (workers, the loop, a waiting caller) never lease more than the room.
        self.taking = 0
        self.idle: deque[asyncio.Future[None]] = deque()
        self.workers: set[asyncio.Task[None]] = set()
        self.recruiting = False
        # Tasks may wait in the store with no worker coming for them: a worker parked
        # for want of room, or a take filled all the room there was. Whoever frees
        # room (a call run by its caller) recruits a worker then.
        self.starved = False
        # A waiting caller was told it may run its call itself, and has not looked yet
        # (`may_run_waited`): the calls after it go to the workers.
        self.caller_due = False


class Dispatcher:
    """Moves tasks of the lanes it was given from `store` to their executors.

    It knows the app only through what it is handed: the store, the routes (task name
    -> `Route`, owned by the app), a `TaskHost` for task contexts, the deadlines of
    waiting callers, and `on_finished`, called once when a task ends for good.
    """

    def __init__(
        self,
        store: Store,
        routes: Mapping[str, Route],
        host: TaskHost,
        deadlines: Deadlines,
        on_finished: Callable[[TaskRecord], None],
    ) -> None:
        self.store = store
        self.routes = routes
        self.host = host
        self.deadlines = deadlines
        self.on_finished = on_finished
        self.wake_event = asyncio.Event()
        self.lanes: dict[str, _Lane] = {}
        self.supervisor = Supervisor()
        self._stopping = False
        self._main: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._hurried = asyncio.Event()  # `hurry`: the stop under way cancels at once
        self._eager: set[Eager[None]] = set()  # calls run in their waiting caller's task
        self._detached: set[asyncio.Task[None]] = set()  # ... that went on alone
        # When a worker that has not suspended since should yield to the loop (monotonic).
        # One for all workers: a worker whose calls suspend anyway (a process call waits
        # for its answer) does not also yield every slice of its own.
        self._slice_end = 0.0
        self._store_error: str | None = None  # the failing store call, while it fails
        # Calls running now, by uuid.int: their Call, and the asyncio task running them
        # when no caller drives them (non-eager routes). The only per-call cost of cancel.
        self._running: dict[int, tuple[Call, asyncio.Task[Any] | None]] = {}
        # Running calls whose cancel was asked: uuid.int -> whether their task was cancelled.
        self._cancelling: dict[int, bool] = {}
        # The slots of running calls that wait for other tasks, lent meanwhile.
        self.lending = Lending(self._executor_of)

    def add_lane(self, name: str, executor: Executor) -> None:
        """Run `name`'s tasks on `executor` (started by the app) from now on."""
        self.lanes[name] = _Lane(name, executor)
        self.wake_event.set()

    def start(self) -> None:
        self._main = self.supervisor.spawn(self._loop(), "qtasks_mp dispatcher")

    def wake(self) -> None:
        self.wake_event.set()

    @property
    def active(self) -> int:
        return sum(lane.executor.active for lane in self.lanes.values())

    def _executor_of(self, call: Call) -> Executor | None:
        """(For `lending`.) The executor running `call`; None once it has ended."""
        entry = self._running.get(call.record.key)
        if entry is None or entry[0] is not call:
            return None
        lane = self.lanes.get(call.record.lane)
        return None if lane is None else lane.executor

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        wake_event = self.wake_event
        failures = 0
        while not self._stopping:
            wake_event.clear()
            try:
                soonest = await self._pass()
            except Exception as e:  # the store failed: say so once, try again later
                self._store_failed("taking tasks", e)
                soonest = time.time() + _BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)]
                failures += 1
            else:
                if failures:
                    self._store_recovered()
                failures = 0
            timer = None
            if soonest is not None:
                timer = loop.call_later(max(0.0, soonest - time.time()), wake_event.set)
            await wake_event.wait()
            if timer is not None:
                timer.cancel()

    async def _pass(self) -> float | None:
        """Fill every lane's inbox up to its room; the soonest future ETA, if any."""
        store = self.store
        now = time.time()
        soonest: float | None = None
        for name, lane in list(self.lanes.items()):
            room = lane.executor.capacity - len(lane.inbox) - lane.taking
            if room > 0:
                taken = await self._take(lane, room, now)
                if taken:
                    lane.inbox.extend(taken)
                    lane.starved |= len(taken) == room  # more may wait
                    self._recruit(lane)
            elif not lane.inbox and not lane.taking:  # held by calls run by their callers
                lane.starved = True  # they recruit when done
            # A delayed task already due in a full lane is taken by its workers with
            # their next batch; only a future ETA needs a timer.
            eta = await store.next_eta(name)
            if eta is not None and eta > now and (soonest is None or eta < soonest):
                soonest = eta
        return soonest

    async def _take(self, lane: _Lane, room: int, now: float) -> list[TaskRecord]:
        """`store.take` of up to `room` records for `lane`, that room spoken for meanwhile."""
        lane.taking += room
        try:
            return await self.store.take(lane.name, room, now)
        finally:
            lane.taking -= room

    def _store_failed(self, doing: str, e: BaseException) -> None:
        """Log a store failure once per streak of failures (not once per try)."""
        if self._store_error is None:
            self._store_error = doing
            log.error(
                "task store %r failed while %s: %s: %s. Tasks wait in the store and are tried "
                "again as it recovers; check the store (disk space, locks held by other "
                "programs, the server).",
                self.store,
                doing,
                type(e).__name__,
                e,
            )

    def _store_recovered(self) -> None:
        if self._store_error is not None:
            log.warning("task store %r works again", self.store)
            self._store_error = None

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

    def may_run_waited(self, record: TaskRecord) -> bool:
        """For a task accepted without suspending (`add_task` in the loop): whether its
        caller should look, when its asyncio task starts, whether it may run the call
        itself (`run_waited`). Yes for the first such call on a lane a caller may drive;
        the calls made before that caller looks (a gather makes them all at once) are
        offered to the lane's workers instead."""
        lane = self.lanes.get(record.lane)
        if lane is None or lane.caller_due:  # (the common case: a gather's later calls)
            return False
        route = self.routes.get(record.task_name)
        if route is None or not route.eager:
            return False
        lane.caller_due = True
        return True

    def run_waited(
        self, record: TaskRecord, timeout: float
    ) -> Coroutine[Any, Any, TaskRecord | None] | None:
        """A task was put in the store and its caller waits for it: if its lane is idle
        (and its route lets a caller drive it), the coroutine that runs it in the
        caller's own task; otherwise None, and the task is offered to its lane's workers.

        The coroutine returns the record it ran (ended, or back in the store for a
        retry), or None: a worker was quicker (it takes the task as usual), or the call
        went on in a task of its own (the timeout ran out, the caller was cancelled, the
        app stops). Deciding without a coroutine keeps a gather of waiting callers on a
        busy lane at one coroutine each.
        """
        lane = self.lanes.get(record.lane)
        route = self.routes.get(record.task_name)
        if lane is not None:
            lane.caller_due = False
        if lane is None or route is None or not route.eager or self._stopping:
            self.offer(record.lane)
            return None
        executor = lane.executor
        if (
            lane.inbox
            or executor.capacity - lane.taking <= 0
            or not (lane.idle or len(lane.workers) < executor.slots)
        ):
            self.offer(record.lane)
            return None
        return self._run_waited(record, route, lane, timeout)

    async def _run_waited(
        self, record: TaskRecord, route: Route, lane: _Lane, timeout: float
    ) -> TaskRecord | None:
        try:
            if self.store.shared:  # its take suspends: the caller may be cancelled there
                taken = await self._take_for_caller(lane)
            else:
                taken = await self._take(lane, 1, time.time())
        except Exception as e:
            self._store_failed("taking a task", e)
            self.wake_event.set()  # the loop tries again, with its backoff
            return None
        if not taken:
            return None  # a worker was quicker
        mine = taken[0]
        if mine.key != record.key or self._stopping:  # another task comes first
            lane.inbox.extend(taken)
            self._recruit(lane)
            return None
        # A running call driving this one (say of another lane) waits for it: its slot
        # is lent meanwhile, as to a waiter (lending.py); this call may wait for a task
        # of the caller's lane.
        caller = current_call()
        lent = caller is not None and self.lending.lend(caller)
        eager = Eager(self._execute(mine, route, lane, None), self._adopt)
        self._eager.add(eager)
        deadline = self.deadlines.add(timeout, eager.detach)
        try:
            ran, _ = await eager.run()
        finally:
            deadline.cancel()
            self._eager.discard(eager)
            if lent:
                assert caller is not None
                self.lending.give_back(caller)
        return mine if ran else None

    def run_taken(self, record: TaskRecord) -> Taken | None:
        """Hook for a sync caller's direct call (executors/process/direct.py): run
        `record`, accepted and marked running already, through its chain as a lane's
        worker would, here until it first waits. None if it has ended; else what it
        waits for, and the function that runs it on once that is done (or hands it to
        a task of its own, if not): the caller's answer wakes it with no loop turn."""
        return self._run_on(
            record,
            self._execute(record, self.routes.get(record.task_name), self.lanes[record.lane], None),
        )

    def _run_on(self, record: TaskRecord, coro: Coroutine[Any, Any, None]) -> Taken | None:
        try:
            fut = coro.send(None)
        except StopIteration:
            return None
        except BaseException:
            log.exception("task %r: its direct call failed", record.task_name)
            return None

        def go() -> None:
            if fut is None or not fut.done():  # a bare yield, or still waiting
                self._adopt(asyncio.get_running_loop().create_task(carry_on(coro, fut)))
                return
            # The rest, here once more until it waits; then on, as above (e.g. a result
            # still to be read from shared memory): never dropped half-way.
            taken = self._run_on(record, coro)
            if taken is not None:
                taken[1]()

        return fut, go

    async def _take_for_caller(self, lane: _Lane) -> list[TaskRecord]:
        """`store.take` for a waiting caller, shielded: if the caller is cancelled while
        the store takes (and leases) a task, the task goes to the lane's workers, not
        nowhere (it would stay leased, renewed by this live app, and never run)."""
        take = asyncio.ensure_future(self._take(lane, 1, time.time()))
        try:
            return await asyncio.shield(take)
        except asyncio.CancelledError:
            take.add_done_callback(lambda fut: self._hand_to_lane(lane, fut))
            raise

    def _hand_to_lane(self, lane: _Lane, fut: asyncio.Future[list[TaskRecord]]) -> None:
        if fut.cancelled() or fut.exception() is not None or not fut.result():
            return
        lane.inbox.extend(fut.result())
        self._recruit(lane)

    def _adopt(self, task: asyncio.Task[None]) -> None:
        self.supervisor.adopt(task)
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
            worker = self.supervisor.spawn(self._work(lane), f"qtasks_mp lane {lane.name!r}")
            lane.workers.add(worker)
            worker.add_done_callback(lane.workers.discard)

    async def _work(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        inbox, executor, routes = lane.inbox, lane.executor, self.routes
        me = asyncio.current_task()
        slot = Slot()  # the call this worker runs, for a wait made there (lending.py)
        running_call.set(slot)
        self._slice_end = monotonic() + _SLICE_S
        lane.recruiting = False
        while True:
            if not inbox:
                if self._stopping:
                    return
                if len(lane.workers) > executor.slots:  # the executor shrank: retire
                    # now (not in a done-callback a turn later: workers ending in the same
                    # turn must see each other go), and let the loop hand on our share.
                    lane.workers.discard(me)
                    self.wake_event.set()
                    return
                room = executor.capacity - lane.taking
                if room > 0:  # serve ourselves before parking: saves a loop turn per batch
                    try:
                        taken = await self._take(lane, room, time.time())
                    except Exception as e:  # the loop tries again, with its backoff
                        self._store_failed("taking tasks", e)
                        self.wake_event.set()
                        taken = []
                    if taken:
                        inbox.extend(taken)
                        # More may wait: a call run by its caller that ends before ours
                        # recruits a worker for them (this one is busy until then).
                        lane.starved |= len(taken) == room
                        continue
                elif not lane.taking:  # the room is held by calls run by their callers:
                    lane.starved = True  # they wake us
                lane.caller_due = False  # (a caller told so never looked)
                fut = loop.create_future()
                lane.idle.append(fut)
                await fut
                lane.recruiting = False
                self._slice_end = monotonic() + _SLICE_S
                continue
            record = inbox.popleft()
            if inbox and not lane.recruiting:  # (`_recruit` would return at once)
                self._recruit(lane)
            await self._execute(record, routes.get(record.task_name), lane, me, slot)
            if monotonic() > self._slice_end:
                self._slice_end = monotonic() + _SLICE_S  # (for the workers run meanwhile)
                await asyncio.sleep(0)  # let the producers, timers and other lanes run

    async def _execute(
        self,
        record: TaskRecord,
        route: Route | None,
        lane: _Lane,
        worker: asyncio.Task[Any] | None,
        slot: Slot | None = None,
    ) -> None:
        """Run one call through its chain, record its outcome and finish it. `worker`:
        the asyncio task of the lane's worker running it, and its `slot`; or None when
        its waiting caller drives it (eager.py); `cancel` cancels a worker's task for a
        non-eager route."""
        executor = lane.executor
        executor.claim()
        record.started_at = record.updated_at = time.time()
        call: Call | None = None
        # The call running here (lending.py): in the worker's slot, or (a caller driving
        # it) in the context variable, restored after it (the caller may be a call).
        outer = None if slot is not None else running_call.get()
        try:
            if route is None:  # (no chain, so no CallLogging: said here)
                unknown = LookupError(
                    f"task {record.task_name!r} is not registered in this app (it was queued "
                    "by another program or version); register it, then add it again"
                )
                log.error("task %s failed: %s", record.uuid, unknown)
                raise unknown
            spec = route.spec
            context = None
            if spec.pass_context:
                ctx_type = AsyncTask if spec.kind.is_async else SyncTask
                context = ctx_type(self.host, spec.name, record.uuid, record.retry + 1, record)
            call = Call(spec, record, context)
            if slot is not None:
                slot.call = call
            else:
                running_call.set(call)
            key = record.key
            self._running[key] = (call, None if route.eager else worker)
            # Decided as the chain ends, with no await in between: a cancel asked before
            # wins over whatever the call ended with; one asked after finds the call gone
            # (app.cancel() then says False).
            try:
                record.returning = await route.chain(call)
            except BaseException as e:
                del self._running[key]
                if self._cancelling:
                    self._cancelled_here(key, e)
                raise
            del self._running[key]
            if self._cancelling:
                self._cancelled_here(key, None)
            record.status = TaskStatus.SUCCESS
            record.traceback = None  # an earlier attempt's failure is history now
        except Retry as r:
            record.retry += 1
            record.status = TaskStatus.NEW
            record.eta = time.time() + r.delay_s if r.delay_s > 0 else 0.0
            record.updated_at = time.time()
            record.traceback = _format(r.__cause__ or r)
            if await self._put_back(record, "retry"):
                self.wake_event.set()  # the dispatcher keeps the timer for delayed retries
                return
        except TaskCancelError as e:  # app.cancel(), or the task's own self.cancel()
            record.status = TaskStatus.CANCEL
            record.returning = None
            record.traceback = str(e)
        except asyncio.CancelledError:
            if self.store.shared:  # durable: the next start runs it again (at-least-once)
                record.retry += 1
                record.status = TaskStatus.NEW
                record.eta = 0.0
                record.updated_at = time.time()
                record.traceback = "interrupted: the app stopped while the task was running"
                if await self._put_back(record, "interrupted"):
                    return
            else:
                record.status = TaskStatus.CANCEL
                record.traceback = "cancelled: the app stopped while the task was running"
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except BaseException as e:  # SystemExit from a task fails that task only
            record.status = TaskStatus.ERROR
            record.traceback = _format(e)
        finally:
            if slot is not None:
                slot.call = None
            elif call is not None:
                running_call.set(outer)
            # No dispatcher wake-up here: this worker takes the next batch itself. A
            # call run by its caller does not, so it wakes a worker that found no room.
            executor.release()
            if lane.starved and executor.capacity > 0:
                lane.starved = False
                self._recruit(lane)
            if self._stopping and not self.active:
                self._drained.set()
        record.finished_at = record.updated_at = time.time()
        if not self._finish_now(record):
            await self._finish(record)

    def _cancelled_here(self, key: int, ended: BaseException | None) -> None:
        """(As a chain ends.) If this call's cancel was asked, raise `TaskCancelError` in
        place of its outcome (its result is discarded, a retry is not put back), unless
        it ended with one already (the executor's says how it stopped); take back the
        cancellation of its asyncio task, if there was one."""
        cancelled_task = self._cancelling.pop(key, None)
        if cancelled_task is None:
            return
        if cancelled_task:
            task = asyncio.current_task()
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+
            if uncancel is not None and getattr(task, "cancelling")():  # noqa: B009
                uncancel()
        if not isinstance(ended, TaskCancelError):
            raise TaskCancelError("cancelled: by app.cancel() while it was running") from None

    def cancel(self, record_uuid: UUID) -> bool:
        """Cancel a task this dispatcher holds: running (its executor stops it, see
        `Executor.cancel`) or taken and waiting in a lane's inbox. False if it holds no
        such task. The task then ends `cancel` through the one finishing path, which
        wakes its waiters; a second cancel of it is a no-op that also returns True."""
        key = record_uuid.int
        entry = self._running.get(key)
        if entry is None:
            for lane in self.lanes.values():
                for record in lane.inbox:
                    if record.key == key:
                        lane.inbox.remove(record)
                        record.status = TaskStatus.CANCEL
                        record.traceback = CANCELLED_QUEUED
                        record.finished_at = record.updated_at = time.time()
                        self.supervisor.spawn(self._finish(record), "qtasks_mp cancel")
                        return True
            return False
        if key in self._cancelling:
            return True
        call, task = entry
        if self.lanes[call.record.lane].executor.ended(call):
            return True  # its outcome is decided already (a direct call): it stands
        if call.context is not None:
            call.context.cancelled = True  # a thread's function may look, and stop
        stopped = self.lanes[call.record.lane].executor.cancel(call)
        cancel_task = not stopped and task is not None
        self._cancelling[key] = cancel_task
        if cancel_task:
            assert task is not None
            # A non-eager route: the task is suspended inside this call's chain (the
            # entry is in _running only while the chain is awaited), so the
            # CancelledError lands there; `_cancelled_here` takes it back.
            task.cancel()
        # else: an eager call on an executor that cannot stop it: it ends `cancel`
        # when its executor returns (its outcome discarded).
        return True

    async def _put_back(self, record: TaskRecord, why: str) -> bool:
        """Return a task to the store (a retry, an interrupted run). On failure, the task
        ends `error` naming the store error instead: never left `process`."""
        try:
            await self.store.put(record)
        except Exception as e:
            self._store_failed(f"putting back a task for its {why}", e)
            record.status = TaskStatus.ERROR
            record.traceback = (
                f"{record.traceback or ''}\nStoreError: the task was to run again ({why}), "
                f"but the task store {self.store!r} failed to take it back: "
                f"{type(e).__name__}: {e}. Fix the store, then requeue or add the task again.\n"
            )
            return False
        return True

    def _finish_now(self, record: TaskRecord) -> bool:
        """`_finish` for a store that keeps the outcome without suspending (memory):
        two coroutines fewer per call. False if it cannot (or failed: `_finish` retries)."""
        try:
            if not self.store.finish_now(record):
                return False
        except Exception:
            return False
        if self._store_error is not None:
            self._store_recovered()
        self.on_finished(record)
        return True

    async def _finish(self, record: TaskRecord) -> None:
        """Record the end in the store (tried `_FINISH_TRIES` times), then wake waiters.

        If the store keeps failing, the task still ends here, as `error` naming the store
        error: waiters are woken and `wait_idle()` can return. The store's own copy stays
        `process`; a durable store hands it out again (at-least-once) after this app
        closes it or its lease runs out.
        """
        for attempt in range(_FINISH_TRIES):
            try:
                await self.store.finish(record)
            except Exception as e:
                if attempt + 1 < _FINISH_TRIES:
                    await asyncio.sleep(_BACKOFF_S[attempt])
                    continue
                self._store_failed("saving a task's outcome", e)
                record.traceback = (
                    f"{record.traceback or ''}\nStoreError: the task ended {record.status}, "
                    f"but the task store {self.store!r} failed to save it: "
                    f"{type(e).__name__}: {e}. Fix the store; a durable store runs the task "
                    "again after a restart (at-least-once).\n"
                )
                record.status = TaskStatus.ERROR
            else:
                if self._store_error is not None:
                    self._store_recovered()
            break
        self.on_finished(record)

    def hurry(self) -> None:
        """(A second Ctrl-C.) The stop under way, or the next, cancels the running
        tasks now instead of giving them the rest of its `timeout_s`."""
        self._hurried.set()

    @property
    def hurried(self) -> bool:
        return self._hurried.is_set()

    async def stop(self, timeout_s: float) -> tuple[int, int]:
        """Stop taking tasks; give running ones `timeout_s`, then cancel them.

        Records taken into an inbox but not started go back to the store.
        Returns (finished in time, cancelled).
        """
        self._stopping = True
        self.wake_event.set()
        if self._main is not None:
            with contextlib.suppress(Exception):  # its failure was logged by the supervisor
                await self._main
        for lane in self.lanes.values():
            while lane.inbox:
                record = lane.inbox.pop()
                record.status = TaskStatus.NEW
                try:
                    await self.store.put(record)
                except Exception as e:
                    self._store_failed("putting back tasks not started at stop", e)
            for fut in lane.idle:
                if not fut.done():
                    fut.set_result(None)
        running = self.active
        if running and not self._hurried.is_set():
            drained = asyncio.ensure_future(self._drained.wait())
            hurried = asyncio.ensure_future(self._hurried.wait())
            try:
                await asyncio.wait(
                    (drained, hurried), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                drained.cancel()
                hurried.cancel()
        cancelled = self.active
        for eager in list(self._eager):
            eager.detach()  # out of its caller's task, into one we can cancel
        if self._detached:
            await asyncio.sleep(0)  # let them start: one cancelled unstarted would not see it
        await self.supervisor.cancel_all()
        return running - cancelled, cancelled


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
