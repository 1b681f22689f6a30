"""The loop's side of direct calls (direct.py): parked workers, and what threads leave it.

The loop parks idle workers for sync callers' threads, takes them back when its own
calls wait for a worker, at close, and when a worker is retired, and records what the
threads did with them. Every crossing from a thread to the loop is here: the steps a
thread leaves (`post_*`), the posts that wake the loop (`flush_soon`, `ask_to_park`),
and what each step does once the loop runs it (`flush`).

The loop keeps every piece of bookkeeping (store, waiters, the dispatcher's record of
the running call, the executor's claim, the middleware chain, stats), by the same code
as ever; the caller leaves it in `steps`, in order, and never waits for it. Posting it
per call (a wake-up of the loop per call) cost more than everything else: the loop
then fought the caller for the GIL on every call (p50 ~130 us against ~50 us). So the
loop's flush timer (FLUSH_S) collects the steps while calls come; a thread posts only
when no timer is armed, and at once when its call took FLUSH_S / 2 or more, or handed
the worker back. The sync facade posts what is left before each of its own calls into
the loop (`app.get(uuid)` or `app.cancel(uuid)` right after sees the task as it is), and
`app.get` / `app.wait` in the loop do when they do not find a uuid (`post_direct_calls`).
A flush runs accepts after the endings it has: a call already ended runs its chain to
the end at once, with no task.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import WorkerCrashed
from ...task import TaskRecord
from .calls import PendingCall
from .handle import WorkerHandle, WorkerState

if TYPE_CHECKING:
    from ...dispatcher import Taken
    from ..base import Call
    from .pool import ProcessExecutor

#: The ending of a thread's direct call is recorded by the loop within this long.
FLUSH_S = 0.002
OK: Any = ["ok"]  # p.fut's result when the thread decoded the value itself


class DirectCall:
    """One call a thread sent to a worker it holds."""

    __slots__ = (
        *("cancelled", "call_id", "decided", "early", "handle", "key"),
        *("ended", "go", "message", "pending", "record", "sent_at", "value"),
    )

    def __init__(self, record: TaskRecord, handle: WorkerHandle, call_id: int, key: int) -> None:
        self.record = record
        self.handle = handle
        self.call_id = call_id
        self.key = key
        self.sent_at = 0.0  # time.monotonic() when it was sent
        # Who ends it, settled under the lock: "ok" or "err" (the thread read the answer:
        # `value`, or an OP_ERR; the worker stays parked) or "loop" (handed back, with
        # the message the thread read, if any: `message`).
        self.decided: str | None = None
        self.cancelled = False  # app.cancel() or the loop's abandon asked, before a decision
        self.pending: PendingCall | None = None  # the loop's, once `run` has the call
        self.early: Callable[[], None] | None = None  # what came before `run` had it
        self.go: Callable[[], None] | None = None  # runs the chain on once `pending` is done
        self.ended = False  # its ending (`_answered` or `_adopt`) has been applied
        self.value: Any = None
        self.message: list[Any] | None = None


class ParkedWorkers:
    """The parked workers of one pool, and the loop's side of the calls threads make on
    them (the threads' side: `DirectCalls` in direct.py)."""

    def __init__(self, pool: ProcessExecutor) -> None:
        self.pool = pool
        self.lock = threading.Lock()
        self.open = False
        self.free: list[WorkerHandle] = []
        # Who holds each lent worker: a thread's `Hold` (one assignment moves it on).
        self.held: dict[WorkerHandle, Hold] = {}
        # threads waiting for a held worker to come back (`DirectCalls.take`), first
        # come first served: a worker put back goes to the first, not to `free`
        self.waiting: deque[Hold] = deque()
        # handed back by a thread with a call in flight, until the loop adopts it
        self.returning: set[WorkerHandle] = set()
        self.socks: dict[WorkerHandle, socket.socket] = {}  # duplicates, for blocking I/O
        self.calls: dict[int, DirectCall] = {}  # by uuid.int: sent, not yet seen by `run`
        self.attached: dict[int, DirectCall] = {}  # by uuid.int: seen by `run`, not ended
        self.asked = False  # a caller found no free worker: park one (see `park_one`)
        self.want = False  # ... none was idle then: park the next that goes idle
        self.done = 0  # answers a thread read itself (stats: direct_calls)
        # Written by the threads: the moving average of a direct call's round trip, by
        # function key, and when each held worker's call is expected back (`_may_wait`).
        self.took: dict[int, float] = {}
        self.due: dict[WorkerHandle, float] = {}
        self.handed_back = 0  # calls a thread handed to the loop (stats: direct_handed_back)
        self.loop: asyncio.AbstractEventLoop | None = None
        # What threads leave the loop to do, in order (see `flush`); appended to
        # and popped from without a lock (deque's append and popleft are atomic).
        self.steps: deque[Callable[[], object] | _Accept] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._all_back: asyncio.Event | None = None

    # ---------------------------------------------------------------- parking

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._all_back = asyncio.Event()
        self._all_back.set()
        self.open = True

    def park_one(self) -> None:
        """(Loop.) A caller found no free parked worker: park an idle one, or the next
        one that goes idle (`idle`)."""
        self.asked = False
        roster = self.pool.roster
        if not self.open or roster is None or self.pool.scheduler.pending:
            return
        # The caller that asked makes its call the usual way meanwhile: the last worker
        # that takes calls is parked once idle after it (`idle`), not before; unless a
        # thread waits for a held one instead (`DirectCalls.take`): it gets this one.
        idle = [h for h in roster.workers if h.takes_calls and not h.calls]
        if len(idle) > 1 or (idle and self.waiting):
            self.park(idle[0])
        else:
            self.want = True

    def idle(self, h: WorkerHandle) -> None:
        """(Loop.) `h` holds no call and no call waits: park it if a caller asked."""
        if self.want and self.open and h.takes_calls and not h.parked:
            self.want = False
            self.park(h)

    def park(self, h: WorkerHandle) -> None:
        transport = h.transport
        if transport is None or transport.is_closing() or h.out:
            return
        if h not in self.socks:  # a duplicate: the transport keeps (and closes) its own
            fd = transport.get_extra_info("socket").fileno()
            self.socks[h] = socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_STREAM)
        transport.pause_reading()
        h.parked = True
        with self.lock:
            self.give(h)

    def give(self, h: WorkerHandle) -> None:
        """(Under the lock.) A parked worker is free (parked, or put back by the thread
        holding it): the thread waiting longest for one holds it now; if none waits, it
        is free. (In an order that an interrupt of the thread putting it back between
        any two steps leaves for `DirectCalls._put_back` to finish: see `Hold`.)"""
        if self.waiting:
            turn = self.waiting.popleft()
            turn.handle = h
            self.held[h] = turn
            assert turn.lock is not None
            turn.lock.release()
        else:
            self.free.append(h)
            self.held.pop(h, None)

    def release_waiting(self) -> None:
        """(Under the lock.) The threads waiting for a worker take the loop's way now:
        the pool closes, or the loop's own calls wait for a worker."""
        while self.waiting:
            lock = self.waiting.popleft().lock
            assert lock is not None
            lock.release()

    def recall_free(self) -> list[WorkerHandle]:
        """(Loop.) Take every free parked worker back for the loop's own calls."""
        with self.lock:
            back, self.free = self.free, []
            self.release_waiting()
        for h in back:
            self._unpark(h)
        return back

    def recall(self, h: WorkerHandle) -> bool:
        """(Loop.) Take `h` back if it is parked and free; False if a thread holds it."""
        with self.lock:
            if h in self.held or h in self.returning:
                return False
            if h in self.free:
                self.free.remove(h)
        if h.parked:
            self._unpark(h)
        return True

    def _unpark(self, h: WorkerHandle) -> None:
        h.parked = False
        if h.transport is not None and not h.transport.is_closing():
            h.transport.resume_reading()
        # Messages the thread read past its answer (none usually) are the loop's now.
        for message in h.unpacker:
            self.pool.scheduler.on_message(h, message)

    def forget(self, h: WorkerHandle) -> None:
        """(Loop.) `h` is gone: drop it, and its duplicate socket."""
        with self.lock:
            if h in self.free:
                self.free.remove(h)
            held = h in self.held
        h.parked = False
        sock = self.socks.get(h)
        if sock is not None and not held:
            del self.socks[h]
            sock.close()

    async def close(self) -> None:
        """(Loop.) No more direct calls; every worker back to the loop."""
        if self._all_back is None:  # never started (the pool's start failed)
            return
        with self.lock:
            self.open = False
            self.release_waiting()
            if self.held:
                assert self._all_back is not None
                self._all_back.clear()
        self.recall_free()
        with self.lock:  # (a thread interrupted after claiming a free one let it go now)
            if not self.held:
                self._all_back.set()
        for d in list(self.attached.values()):  # still running: killed, as at stop
            assert d.pending is not None
            self.cancel(d.pending.call)
        assert self._all_back is not None
        await self._all_back.wait()
        self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()

    # ---------------------------------------------------------------- the pool's `run`

    def attach(self, call: Call, ctx: list[Any] | None) -> DirectCall | None:
        """(Loop, in `run`.) The direct call standing for `call`, if a thread sent it;
        its `pending` is made now (what the thread posted before is applied)."""
        key = call.record.key
        d = self.calls.pop(key, None)
        if d is None:
            return None
        d.pending = PendingCall(call, d.call_id, d.key, b"", None, ctx, d.handle.loop)
        self.attached[key] = d
        if d.early is not None:
            d.early()
        return d

    def detach(self, d: DirectCall) -> None:
        """(Loop.) `run` of `d` has ended."""
        self.attached.pop(d.record.key, None)

    def cancel(self, call: Call) -> bool | None:
        """(Loop.) Stop a direct call (`app.cancel()`, or its `run` was cancelled).
        None: no direct call in a thread's hands (the scheduler has it, if anyone).
        True: its worker is being killed; its EOF hands it back, and the loop ends the
        call `cancel` (`_adopt`). False: the thread has its answer already."""
        d = self.attached.get(call.record.key)
        if d is None:
            return None
        with self.lock:
            if d.decided == "ok":
                return False
            if d.decided is not None:
                return None  # the loop's already (adopted, or an OP_ERR on its way)
            d.cancelled = True
        h = d.handle
        h.signal(kill=False)
        assert self.loop is not None
        self.loop.call_later(self.pool.kill_grace_s, h.signal, True)
        return True

    def ended(self, call: Call) -> bool:
        """(Loop.) Whether a thread took `call`'s answer already: that outcome stands."""
        d = self.attached.get(call.record.key)
        return d is not None and d.decided == "ok"

    # ---------------------------------------------------------------- what threads leave

    def ask_to_park(self) -> None:
        """(Any thread.) A caller found no free parked worker: have the loop park one
        (`park_one`), once until it has."""
        with self.lock:
            ask = self.open and not self.asked
            self.asked = True
        if ask and self.loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self.loop.call_soon_threadsafe(self.park_one)

    def post_accept(self, d: DirectCall, accept: Callable[[], Taken | None]) -> None:
        """(The holding thread, before its send.) Leave the loop `d`'s acceptance (store,
        waiters, the chain: see `_Accept`); not posted (see `flush_unless_timed`)."""
        self.steps.append(_Accept(d, accept))

    def post_answered(self, d: DirectCall, message: list[Any] | None) -> None:
        """(The holding thread, which took the answer and put the worker back.) Leave the
        loop `d`'s ending (`_answered`). Posted only if the call took FLUSH_S / 2 or more
        (see `_young`) and no flush timer is armed, or the pool is closing; else the next
        post carries it (the next call's accept, any other call of the sync facade), or
        the loop's timer. (Threads calling at once made calls that long: a post per call
        then woke the loop for each, and the loop fought them for the GIL.)"""
        self.steps.append(lambda: self._on_loop(d, lambda: self._answered(d, message)))
        if time.monotonic() - d.sent_at >= FLUSH_S / 2 or not self.open:
            self.flush_unless_timed()  # an armed timer takes it within FLUSH_S anyway

    def post_handed_back(self, d: DirectCall, leftovers: list[list[Any]]) -> None:
        """(The thread that held `d`'s worker.) The worker and the call in flight are the
        loop's now (`_adopt`), with the messages the thread read past (`leftovers`)."""
        self.steps.append(lambda: self._on_loop(d, lambda: self._adopt(d, leftovers)))
        self.flush_soon()

    def post_given_back(self, h: WorkerHandle) -> None:
        """(The thread that held `h`.) `h` goes back to the loop, not to the parked ones:
        the pool is closing, or the loop's calls wait for a worker (`_given_back`)."""
        self.steps.append(lambda: self._given_back(h))
        self.flush_soon()

    def flush_unless_timed(self) -> None:
        """(Any thread.) `flush_soon`, unless the loop's flush timer is armed: it takes
        the steps within FLUSH_S (with the ending of the call before, if not posted)."""
        if self._timer is None or not self.open:
            self.flush_soon()

    def flush_soon(self) -> None:
        """(Any thread.) Have the loop run the steps threads left it, in order."""
        if self.steps and self.loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self.loop.call_soon_threadsafe(self.flush)

    # ---------------------------------------------------------------- what the loop does

    def flush(self) -> None:
        """(Loop.) Run the steps threads left, in order, accepts last. A timer runs
        this again within `FLUSH_S` while steps wait or a call in flight may still end
        without posting: the ending of a thread's last call is not left unrecorded
        longer. (A call that ends later posts its ending itself.)"""
        steps = self.steps
        accepts: list[_Accept] = []
        while steps:
            try:
                step = steps.popleft()
            except IndexError:
                break
            if isinstance(step, _Accept):  # after the endings: a quick call ends at once
                accepts.append(step)
            else:
                step()
        for accept in accepts:
            accept.run()
        if self._timer is None and self.loop is not None and (self.steps or self._young()):
            self._timer = self.loop.call_later(FLUSH_S, self._on_timer)

    def _young(self) -> bool:
        """Whether a call in flight may still end without posting (see `post_answered`):
        its thread leaves the ending of a call younger than FLUSH_S / 2 in `steps`."""
        since = time.monotonic() - FLUSH_S / 2
        calls = list(self.calls.values()) + list(self.attached.values())  # atomic copies
        return any(d.sent_at > since for d in calls)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    @staticmethod
    def _on_loop(d: DirectCall, step: Callable[[], None]) -> None:
        if d.pending is None:
            d.early = step  # `run` has not attached it yet: it applies this then
        else:
            step()

    def _answered(self, d: DirectCall, message: list[Any] | None) -> None:
        """(Loop.) The thread read the answer: `message` None for an "ok" it decoded.
        (Posted again by a thread interrupted around its post: applied once.)"""
        if d.ended:
            return
        self.pool.calls_done += 1
        h = d.handle
        h.done += 1
        h.idle_since = time.monotonic()  # busy lately: the autoscaler keeps it
        p = d.pending
        assert p is not None
        if not p.fut.done():
            p.fut.set_result(OK if message is None else message)
        self._go_on(d)

    @staticmethod
    def _go_on(d: DirectCall) -> None:
        """Run `d`'s chain on, if it waits for us (see `_Accept`)."""
        d.ended = True
        go, d.go = d.go, None
        if go is not None:
            go()

    def _adopt(self, d: DirectCall, leftovers: list[list[Any]]) -> None:
        """(Loop.) The thread handed back its worker with the call in flight: it goes on
        as if the loop had sent it. (Applied once, as `_answered`.)"""
        if d.ended:
            return
        h, p = d.handle, d.pending
        assert p is not None and self.loop is not None
        self.handed_back += 1
        with self.lock:
            self.returning.discard(h)
        self._came_back()
        scheduler = self.pool.scheduler
        if not h.alive:  # killed (its fork server died) or gone while held
            p.fail(WorkerCrashed(p.call.task_name, h.exitcode, h.killed_because))
            if h.state is not WorkerState.GONE:
                self._unpark(h)
            else:
                self.forget(h)  # its duplicate socket too
            self._go_on(d)
            return
        p.worker = h
        h.calls.append(p)
        elapsed = time.monotonic() - d.sent_at
        p.started = self.loop.time() - elapsed
        timeout = p.call.timeout
        if timeout is not None:  # the task's own clock, started when it was sent
            p.timer = self.loop.call_later(max(0.0, timeout - elapsed), scheduler._on_timeout, p)
        for message in leftovers:
            scheduler.on_message(h, message)
        self._unpark(h)
        if d.cancelled:
            if h.calls and h.calls[0] is p:
                scheduler.cancel(p.call)
            elif h.alive and self.pool.roster is not None:
                # It answered before the cancel's signal: that answer stands, but the
                # signal is on its way, so it takes no other call.
                self.pool.roster.doom(h, WorkerCrashed(p.call.task_name, None))
        if h.alive and not h.calls and scheduler.pending:
            scheduler.feed(h)  # the call ended among the leftovers: the loop's calls wait
        self._go_on(d)  # in a task of its own, waiting for the worker's answer

    def _came_back(self) -> None:
        assert self._all_back is not None
        if not self.held:
            self._all_back.set()

    def _given_back(self, h: WorkerHandle) -> None:
        """(Loop.) A thread gave `h` back to the loop: the pool is closing, or the
        loop's calls wait for a worker. (Posted again by an interrupted thread, maybe
        after `h` went on to another: then nothing.)"""
        with self.lock:
            if h in self.held or h in self.free or h in self.returning:
                return
        self._came_back()
        if h.parked:
            self._unpark(h)
            if self.pool.roster is not None and h.alive:
                self.pool.scheduler.feed(h)


class Hold:
    """One thread's claim on a parked worker for one direct call (`DirectCalls.call`):
    the thread holds `handle` while `held[handle] is` this. A thread waiting for one
    (`take`) waits on `lock`, released once `handle` is its (or the wait is called off).

    A KeyboardInterrupt may land between any two steps of the thread's: what it has done
    is read off this, its call (`d`, once `posted`) and who holds `handle`, and every
    step of the call's ending can be run again (`DirectCalls._end`): the worker goes
    back once, its ending is applied once (`giving_back`: it goes to the loop)."""

    __slots__ = ("d", "giving_back", "handle", "lock", "posted")

    def __init__(self) -> None:
        self.handle: WorkerHandle | None = None
        self.lock: threading.Lock | None = None
        self.d: DirectCall | None = None
        self.posted = False  # its accept is in `steps`
        self.giving_back = False


class _Accept:
    """A step that accepts a direct call in the loop (`ParkedWorkers.flush` runs these
    after the other steps it has, so that a call that has ended already runs its
    chain to the end at once, with no task)."""

    __slots__ = ("accept", "d")

    def __init__(self, d: DirectCall, accept: Callable[[], Taken | None]) -> None:
        self.d = d
        self.accept = accept

    def run(self) -> None:
        d = self.d
        taken = self.accept()
        if taken is None:
            return
        fut, go = taken
        p = d.pending
        if p is not None and fut is p.fut and not d.ended:
            d.go = go  # its ending (`_answered`, `_adopt`) runs it on
        else:
            go()
