"""`ProcessExecutor`: the pool. Hands calls to workers and their answers back to `run`;
the workers' lives are the `Roster`'s (see the package docstring for the data flow)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import weakref
from collections.abc import Sequence
from typing import Any

from ...autoscale import Autoscaler, Policy, PoolLoad, ScalingPolicy
from ...errors import AppNotRunning, QTasksError
from ...registries import Kind, TaskSpec
from ..base import Call, Executor
from .calls import END, PendingCall
from .direct import DirectCalls
from .offload import Offload, encode_args
from .parked import OK, DirectCall
from .roster import Roster, worker_stats
from .schedule import Scheduler

log = logging.getLogger("qtasks_mp.process")

#: With a store other processes share, `slots` counts at most this many calls per worker
#: (quick calls may be pipelined deeper, up to 128: their tasks would be leased here
#: long before a worker could start them, while another machine's workers idle).
LEASED_DEPTH = 16

# A forked copy of a running program has only the thread that forked: locks that other
# threads held (logging's, an allocator's, the event loop's) stay locked in it forever.
FORK_REFUSED = (
    ": a plain fork of a program that runs an event loop and threads can deadlock its "
    "workers. 'forkserver' forks workers from a small single-threaded process instead"
)


class ProcessExecutor(Executor):
    """Runs plain functions and generators in `max_workers` processes (default: CPU count).

    - `start_method`: "forkserver" (the default): a small process of the pool's own,
      started once, forks each worker; it imports the worker side of qtasks_mp and the
      modules named in `preload` first (each worker imports them too). "spawn": each
      worker is a fresh interpreter (slower to start). Neither runs your `__main__`
      again. Plain "fork" is refused (see `FORK_REFUSED`). POSIX only.
    - `max_tasks_per_worker`, `max_memory_per_worker` (bytes of RSS, checked after each
      call): past either, a worker finishes what it holds and is replaced.
    - `autoscale` (default on): the pool starts with `min_workers` and an `Autoscaler`
      grows it up to `max_workers` while calls wait, and retires workers idle for
      `idle_timeout` seconds, keeping `memory_reserve` bytes of memory available (see
      `qtasks_mp.autoscale` and docs/autoscaling.md). Pass a policy object (anything
      with `decide(sample)`) instead of True to replace the default `ScalingPolicy`.
      With `autoscale=False` the pool keeps `max_workers` workers. While autoscaling,
      `slots` is `max_workers` x depth, so calls the pool cannot run yet wait in it,
      where the autoscaler sees them.
    - `pipeline_depth`: calls a worker may hold at once; `slots` is workers x depth.
      None (the default) adapts it to how long calls take: quicker calls are pipelined
      deeper, so that they never wait on a round trip and each write to a worker
      carries many (about 8 ms of calls may queue on a worker: 16 deep for 0.5 ms
      calls, up to 128); calls of 5 ms or more are sent one at a time, so no call waits
      behind a slow one while another worker idles; at least 2 below that.

    A worker that dies fails only the call it was running, with `WorkerCrashed`; the
    `Retries` middleware retries that like any error when the task sets `retry=` (the
    default is no retry). A call past `timeout` fails with `TaskTimeout` and its worker
    is killed and replaced. Constructing this starts nothing: `start()` does.
    """

    name = "process"
    eager = True
    kinds = frozenset({Kind.FUNCTION, Kind.GENERATOR})
    kill_grace_s = 0.5  # between SIGTERM and SIGKILL of a worker that overran
    start_timeout_s = 60.0  # for the first workers to report ready in `start()`

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        start_method: str | None = None,
        preload: Sequence[str] = (),
        max_tasks_per_worker: int | None = None,
        max_memory_per_worker: int | None = None,
        pipeline_depth: int | None = None,
        min_workers: int = 1,
        autoscale: bool | Policy = True,
        idle_timeout: float = 10.0,
        memory_reserve: int = 512 << 20,
        autoscale_interval_s: float = 0.1,
    ) -> None:
        super().__init__()
        if start_method not in (None, "forkserver", "spawn"):
            raise ValueError(
                f"start_method {start_method!r} is not 'forkserver' (the default) or 'spawn'"
                + FORK_REFUSED * (start_method == "fork")
            )
        for label, value in [
            ("max_workers", max_workers),
            ("max_tasks_per_worker", max_tasks_per_worker),
            ("max_memory_per_worker", max_memory_per_worker),
            ("pipeline_depth", pipeline_depth),
        ]:
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{label} must be a whole number >= 1, got {value!r}")
        self.max_workers: int = max_workers or os.cpu_count() or 1
        if not isinstance(min_workers, int) or not 0 <= min_workers <= self.max_workers:
            raise ValueError(
                f"min_workers must be a whole number from 0 to max_workers "
                f"({self.max_workers}), got {min_workers!r}"
            )
        self.min_workers = min_workers
        self.policy: Policy | None = None
        if autoscale is True:
            self.policy = ScalingPolicy(
                min_workers=min_workers,
                max_workers=self.max_workers,
                idle_timeout=idle_timeout,
                memory_reserve=memory_reserve,
            )
        elif autoscale is not False:
            self.policy = autoscale
        self.autoscale_interval_s = autoscale_interval_s
        self.start_method = start_method or "forkserver"
        self.preload = list(preload)
        self.max_tasks_per_worker = max_tasks_per_worker
        self.max_memory_per_worker = max_memory_per_worker
        self.pipeline_depth = pipeline_depth
        self.running = False
        self._owner = os.getpid()  # the process whose pool this is (see `_after_fork`)
        self._autoscaler: Autoscaler | None = None
        self.roster: Roster | None = None  # while started
        self.scheduler = Scheduler(self)
        self.startup_s: float | None = None  # moving average of worker start-up, for autoscaling
        self._ids = itertools.count(1)
        self.direct = DirectCalls(self)  # workers lent to sync callers (direct.py)
        self._offload = Offload(self.name)  # a fresh one per start
        self._inflight = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it runs in, once started
        self._quiet = asyncio.Event()  # set while no call is in flight
        self._quiet.set()
        self.calls_done = 0
        self.crashes = 0
        self.timeouts = 0
        self.recycles = 0
        self.cancels = 0  # running calls whose worker app.cancel() killed

    # ------------------------------------------------------------------ size

    @property
    def slots(self) -> int:
        roster = self.roster
        depth = self.scheduler.depth
        if self.shared_store and depth > LEASED_DEPTH:
            depth = LEASED_DEPTH
        if self.policy is not None and self.running:  # calls wait here, seen as backlog
            lent = 0 if roster is None else roster.lent  # see `Scheduler.lend`
            return (self.max_workers + lent) * depth
        return 0 if roster is None else roster.live * depth

    @property
    def _live(self) -> int:
        return 0 if self.roster is None else self.roster.live

    @property
    def wanted(self) -> int:
        """How many ready workers `wait_ready` waits for."""
        return self._live if self.policy is not None else self.max_workers

    @property
    def depth(self) -> int:
        """Calls a worker may hold at once now (see `pipeline_depth`)."""
        return self.scheduler.depth

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.running:
            return
        self.running = True
        self._owner = os.getpid()
        # Kept: on Python 3.11 each asyncio.get_running_loop() costs a getpid() syscall.
        self._loop = asyncio.get_running_loop()
        _running.add(self)
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._offload = Offload(self.name)
        self._offload.start()
        roster = self.roster = Roster(self)
        first = self.max_workers if self.policy is None else self.min_workers
        try:
            handles = roster.add(first)
            await roster.launch(handles)
            if handles:
                await asyncio.wait([h.ready for h in handles], timeout=self.start_timeout_s)
            for h in handles:
                if not h.ready.done():
                    raise QTasksError(
                        f"process executor {self.name!r}: worker {h.pid} did not start within "
                        f"{self.start_timeout_s:g}s"
                    )
                h.ready.result()
        except BaseException:
            await self.aclose(cancel_pending=True)
            raise
        self.direct = DirectCalls(self)
        self.direct.start()
        if self.policy is not None:
            self._autoscaler = Autoscaler(self, self.policy, interval_s=self.autoscale_interval_s)
            self._autoscaler.start()
        log.debug("process executor %r: %d workers (%s)", self.name, first, self.start_method)

    async def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Wait until `max_workers` workers (autoscaling: every worker it has started)
        are ready to take calls (after `start()`, or after replacing workers that died
        or retired). False if `timeout_s` ran out."""
        if self.roster is None:
            raise AppNotRunning(f"the process executor {self.name!r} is not started")
        try:
            await asyncio.wait_for(self.roster.full.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    async def aclose(self, cancel_pending: bool = False) -> None:
        """Stop the workers. Without `cancel_pending`, calls accepted so far finish first;
        with it, calls not finished fail with `CancelledError` and their workers are killed.
        Returns when every worker process has exited and its socket is closed."""
        roster = self.roster
        if roster is None:
            return
        if self._autoscaler is not None:
            await self._autoscaler.stop()  # it must not grow a pool that is closing
            self._autoscaler = None
        if not cancel_pending and self.running:
            await self._quiet.wait()
        try:
            await self.direct.close()  # held workers come back first
        finally:
            self.running = False
            _running.discard(self)
            self.scheduler.fail_waiting(asyncio.CancelledError())
            await roster.close()
        await self._offload.close()
        for task in list(self.scheduler.answers):
            task.cancel()
        self.roster = None

    def _forget(self) -> None:
        """In a forked child: the workers are the parent's. Let go of them untouched."""
        self.running = False
        if self.roster is not None:
            self.roster.forget()
        self.roster = None  # `aclose` and `stats` see a pool that was never started

    # ------------------------------------------------------------------ calls

    async def run(self, call: Call) -> Any:
        if not self.running:
            where = f" (it belongs to process {self._owner})" * (self._owner != os.getpid())
            raise AppNotRunning(
                f"task {call.task_name!r}: the process executor {self.name!r} is not started"
                f"{where}; a forked child must start a pool of its own"
            )
        key = self.scheduler.key(call.spec)
        context = call.context
        args = call.args
        ctx: list[Any] | None = None
        if context is not None:
            # The context holds the app; the worker gets a stand-in that asks us instead.
            args = args[1:]
            ctx = [context.task_name, str(context.uuid), context.attempt]
        direct = self.direct.attach(call, ctx)
        if direct is not None:  # a sync caller's thread sent it (direct.py)
            return await self._run_direct(direct)
        self._inflight += 1
        self._quiet.clear()
        shm = None
        p: PendingCall | None = None
        try:
            # Pickled here (protocol-5 buffers are not copied); only calls with large
            # buffers take the hop to a thread, to copy them into shared memory.
            payload, buffers = encode_args(call.task_name, args, call.kwargs)
            if buffers is not None:
                payload, shm = await self._offload.place(
                    call.task_name, args, call.kwargs, payload, buffers
                )
            assert self._loop is not None  # (running)
            p = PendingCall(call, next(self._ids), key, payload, shm, ctx, self._loop)
            self.scheduler.submit(p)
            if p.items is None:
                message = await p.fut
                if message[3].__class__ is list:  # buffers mapped from a segment
                    return await self._offload(p.result, message)
                return p.result(message)
            return await self._stream(p)
        except asyncio.CancelledError:
            if p is not None:
                self.scheduler.abandon(p)
            raise
        finally:
            if shm is not None:
                # Exactly once, however the call ended. A worker still running it (it
                # was cancelled) keeps its mapping; one yet to start it fails to open it.
                self._offload.unlink(shm)
            self._inflight -= 1
            if not self._inflight:
                self._quiet.set()

    def cancel(self, call: Call) -> bool:
        """`app.cancel()`: a running call's worker is killed (SIGTERM, then SIGKILL after
        `kill_grace_s`) and a replacement started at once; no other call is disturbed
        (those pipelined behind it go to other workers). See `Scheduler.cancel`."""
        if self.roster is None:
            return False
        direct = self.direct.cancel(call)
        if direct is not None:
            return direct
        return self.scheduler.cancel(call)

    def ended(self, call: Call) -> bool:
        return self.direct.ended(call)

    # ------------------------------------------------------------------ direct calls

    async def _run_direct(self, d: DirectCall) -> Any:
        """`run` of a call a sync caller's thread sent itself: wait for what it read
        (or, once it handed the worker back, for the worker's answer as usual)."""
        p = d.pending
        assert p is not None
        self._inflight += 1
        self._quiet.clear()
        try:
            message = await p.fut
            if message is OK:
                return d.value
            if message[3].__class__ is list:  # buffers mapped from a segment
                return await self._offload(p.result, message)
            return p.result(message)
        except asyncio.CancelledError:
            if self.direct.cancel(p.call) is None:
                self.scheduler.abandon(p)
            raise
        finally:
            self.direct.detach(d)
            self._inflight -= 1
            if not self._inflight:
                self._quiet.set()

    @property
    def call_ids(self) -> itertools.count[int]:
        return self._ids

    def function_key(self, spec: TaskSpec) -> int | None:
        """(Any thread.) `spec`'s function key if it was encoded already, else None."""
        return self.scheduler._keys.get(spec)

    def function_message(self, key: int) -> bytes:
        """(Any thread.) The OP_FUNC message of an encoded function."""
        return self.scheduler._functions[key]

    async def _stream(self, p: PendingCall) -> list[Any]:
        """Collect a generator's items as they arrive; the handler runs here, per item."""
        assert p.items is not None
        out = []
        while (got := await p.items.get()) is not END:
            try:
                if got[1].__class__ is list:  # buffers mapped from a segment
                    item = await self._offload(p.item, got)
                else:
                    item = p.item(got)
                out.append(await p.call.handle_item(item))
                self.scheduler.ack(p)
            except BaseException:
                self.scheduler.abandon(p)
                raise
        p.result(p.fut.result())
        return out

    def room_changed(self) -> None:
        """Tell the dispatcher the pool has room it did not have (a worker is ready, or
        one that left took nothing with it)."""
        self.wakeup()

    def calls_wait(self) -> None:
        """Calls start to wait for a worker: the autoscaler samples now."""
        if self._autoscaler is not None:
            self._autoscaler.nudge()
        # The loop's own calls come first: parked workers come back (once the call
        # that is about to wait is in `pending`).
        asyncio.get_running_loop().call_soon(self._recall_parked)

    def _recall_parked(self) -> None:
        if self.roster is not None and self.scheduler.pending:
            for h in self.direct.recall_free():
                self.scheduler.feed(h)

    # ------------------------------------------------------------------ autoscaling

    @property
    def autoscaler(self) -> Autoscaler | None:
        """The autoscaler while the pool runs (None before `start()` or without
        autoscale); append to its `on_decision` to hear of each decision."""
        return self._autoscaler

    def load(self) -> PoolLoad:
        """The pool now, for the autoscaler. A worker still being launched has no
        process yet: it is reported as starting, with a pid <= 0."""
        now = time.monotonic()
        waiting = [p.queued_at for p in self.scheduler.pending if not p.abandoned]
        workers = [] if self.roster is None else self.roster.samples(now, waiting)
        return PoolLoad(
            backlog=len(waiting),
            oldest_wait_s=now - min(waiting) if waiting else 0.0,
            workers=tuple(workers),
            full=self.active >= self.slots,
            mean_call_s=self.scheduler.service_s,
            startup_s=self.startup_s,
        )

    def grow(self, n: int) -> int:
        """Start up to `n` more workers in the background, never past `max_workers`."""
        if not self.running or self.roster is None:
            return 0
        n = max(0, min(n, self.max_workers + self.roster.lent - self._live))
        for _ in range(n):
            self.roster.replace()
        self.roster.check_full()
        return n

    def retire(self, pid: int) -> bool:
        """Stop the ready worker `pid` for good if it holds no call; False otherwise."""
        roster = self.roster
        h = next((h for h in roster.ready if h.pid == pid), None) if roster else None
        if roster is None or h is None or h.calls or not self.direct.recall(h):
            return False
        roster.retire(h, replace=False)  # not ready any more: it gets no new call
        return True

    # ------------------------------------------------------------------ stats

    def size_label(self) -> str:
        """Workers, not `slots` (calls it holds at once: workers x pipeline depth)."""
        low = self.min_workers if self.policy is not None else self.max_workers
        return (
            f"{self.max_workers} workers"
            if low == self.max_workers
            else (f"{low}-{self.max_workers} workers")
        )

    def stats(self) -> dict[str, Any]:
        workers = worker_stats(self.roster)
        return {
            **super().stats(),
            "start_method": self.start_method,
            "min_workers": self.min_workers if self.policy is not None else self.max_workers,
            "max_workers": self.max_workers,
            **workers,
            "queued": len(self.scheduler.pending) + workers["queued"],
            "calls_done": self.calls_done,
            "offloaded": self._offload.jobs,  # large-buffer work done off the loop
            "crashes": self.crashes,
            "timeouts": self.timeouts,
            "recycles": self.recycles,
            "cancels": self.cancels,
            "direct_calls": self.direct.done,  # answered to a sync caller's thread directly
            "direct_handed_back": self.direct.handed_back,  # ... that the loop finished
            "startup_s": self.startup_s,
            "autoscale": None if self._autoscaler is None else self._autoscaler.stats(),
        }


# A program that forks while a pool runs (os.fork(), a fork-context multiprocessing
# pool, gunicorn --preload) gives the child a copy of the pool: of its objects, and of
# its file descriptors. The child must leave the parent's workers alone: nothing it
# writes may reach them, closing its copy must not stop them, and the parent's death
# must still end them (they exit when every copy of their pipe's write end is gone).
_running: weakref.WeakSet[ProcessExecutor] = weakref.WeakSet()


def _after_fork() -> None:
    for pool in list(_running):
        pool._forget()
    _running.clear()


os.register_at_fork(after_in_child=_after_fork)
