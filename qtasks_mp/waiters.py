"""Who waits for which task, and how many tasks added here have not ended yet.

`add_task(..., timeout=)`, `app.wait()` and `Task.wait_result*()` get a waiter for the
task's uuid (`wait`): a `Waiting`, the future they await. When the dispatcher records
the end of a task (`finished`), the waiters registered for it are resolved, and
nothing else.

A gather of 50,000 waited `add_task` holds 50,000 waiters at once, so a waiter costs
one future and two dict entries, nothing more: in the app's loop `add_task` returns the
waiter itself (no coroutine or asyncio task per caller: a future is what `gather`
takes as it is), no list per task unless a second waiter comes, and no deadline of its
own. Its done-callbacks (gather's, or the awaiting task's wake-up) are kept by the
waiter, not by asyncio: the waiters answered in one loop turn have them all run by one
loop callback (`_run_callbacks`), where an asyncio future schedules one loop handle per
callback; in a gather that halves what each answer costs. The callback
`asyncio.gather` puts on each waiter (it counts the answers and sets the gather's own
future at the last) runs as the waiter is answered, not a turn later.
Waiters whose time runs out within the same `_TICK_S` share one `_Expiry`: one
deadline in the loop's `Deadlines` and one list for all of them (up to `_TICK_S` late;
the loop's timers are not more precise anyway). A waiter leaves by itself however it
ends (answered, timed out, cancelled by whoever awaits it), and an expiry whose
waiters all ended is dropped at once, so memory follows the live waits. `wait_idle()`
waits on one event, set when the count of unfinished tasks reaches zero. Nothing
re-reads the store on a timer: a shared store says when another process changed it
(`recheck`).

One `Waiters` per event loop the app runs in; it owns the deadlines of that loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextvars import Context, copy_context
from functools import partial
from time import monotonic
from types import CodeType
from typing import Any
from uuid import UUID

from .context import TaskHost
from .deadlines import Deadline, Deadlines
from .executors.base import Call
from .lending import Lending, Slot, running_call
from .lifecycle import Supervisor
from .task import FINISHED, Task, TaskRecord, uuid_of

#: Waiters whose time runs out within the same slice of this many seconds share one
#: deadline, and time out together at its end.
_TICK_S = 0.002


#: The code of the callback `asyncio.gather` puts on each future it gathers. It reads no
#: context variable, so a waiter keeps no copy of the context for it (asyncio makes one
#: per callback): in a gather of 50,000 waiters, 50,000 objects fewer for the garbage
#: collector to walk, one full collection fewer. None if asyncio's gather has changed:
#: then every callback gets its copy.
_GATHER_CALLBACK: CodeType | None = next(
    (
        c
        for c in asyncio.tasks.gather.__code__.co_consts
        if isinstance(c, CodeType) and c.co_name == "_done_callback"
    ),
    None,
)


class Waiting(asyncio.Future[Task | None], Coroutine[Any, Any, Task | None]):
    """A waiter: the future a waiting caller awaits, resolved with the finished `Task`
    (None when its time ran out). It cleans up after itself (resolved, timed out, or
    cancelled by whoever awaits it), so nothing has to run after the `await`.

    `add_task(..., timeout=)` returns one as it is: `asyncio.gather` of many then holds
    one future each, no `asyncio.Task` and no coroutine frame (a Future is taken as it
    is by `gather`, `wait_for`, `ensure_future`). It is also a `Coroutine` (`send`,
    `throw`, `close` step the future's own iterator), so `asyncio.create_task()` and
    `run_coroutine_threadsafe()` take it too, as they take what an `async def` returns.

    Its done-callbacks are its own (`add_done_callback`, `remove_done_callback`): run
    as asyncio runs them (soon after it is done, each in its context, an exception
    reported to the loop's exception handler), but by one loop callback for all the
    waiters answered in a turn (`Waiters._run_callbacks`); `asyncio.gather`'s, which
    only counts, as it is answered. Whatever makes it done goes through its `Waiters`,
    which schedules them. They run where the first waiter
    answered in that turn would have had its handle in the loop's queue: a waiter
    answered after another future, in the same turn, may wake its caller first.
    """

    __slots__ = ("_callback", "_context", "_expiry", "_key", "_lent", "_more", "_owner", "_step")

    # Made by `Waiters.wait`, which sets these (no `__init__` of our own: a Python-level
    # one costs more than the rest of a waiter).
    _owner: Waiters
    _key: int  # the task's uuid.int
    _expiry: _Expiry | None
    _lent: Call | None  # made while this call ran: it lends its slot meanwhile (lending.py)
    # Its done-callbacks: the first in two fields (no tuple or list: a gather's waiter
    # has one, and each object more is one more for the garbage collector to walk).
    _callback: Callable[[Any], object] | None
    _context: Context | None  # None: asyncio.gather's callback, which reads none
    _more: list[tuple[Callable[[Any], object], Context | None]] | None
    _step: Generator[Any, None, Task | None]  # set by the first send()/throw()

    def add_done_callback(
        self, fn: Callable[[Any], object], *, context: Context | None = None
    ) -> None:
        if context is None and (
            _GATHER_CALLBACK is None or getattr(fn, "__code__", None) is not _GATHER_CALLBACK
        ):
            context = copy_context()
        if self.done():
            self._owner.loop.call_soon(fn, self, context=context)
            return
        if self._callback is None:
            self._callback = fn
            self._context = context
        elif self._more is None:
            self._more = [(fn, context)]
        else:
            self._more.append((fn, context))

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        if self.done():  # its callbacks are on their way already, as asyncio's are
            return 0
        removed = 0
        if self._more is not None:
            kept = [cb for cb in self._more if cb[0] != fn]
            removed = len(self._more) - len(kept)
            self._more = kept or None
        if self._callback is not None and self._callback == fn:
            removed += 1
            self._callback = None
            if self._more:
                self._callback, self._context = self._more.pop(0)
                self._more = self._more or None
        return removed

    def cancel(self, msg: Any = None) -> bool:
        """Whoever awaits it stopped waiting (cancelled): it leaves the waiters now."""
        if not super().cancel(msg):
            return False
        self._owner._left(self)
        self._owner._settled(self)
        return True

    # -- the Coroutine side, for create_task() and friends --

    def send(self, value: None) -> Any:
        return self._stepper().send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None and tb is None:  # the one-argument form (3-argument: deprecated)
            return self._stepper().throw(typ)
        return self._stepper().throw(typ, val, tb)

    def _stepper(self) -> Generator[Any, None, Task | None]:
        try:
            return self._step
        except AttributeError:
            step = self._step = self.__await__()
            return step

    def close(self) -> None:
        """Nothing to close: the task it waits for goes on either way."""


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
        # the loop's clock; the C function itself where it is (asyncio's own loops)
        self._now = monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        self.deadlines = Deadlines(loop)
        self._host = host
        self._read = read  # the store's `get`
        # By `uuid.int`, as the memory store keys its records: a UUID hashes in Python.
        self._futures: dict[int, Waiting] = {}  # the first waiter of each task
        self._more: dict[int, list[Waiting]] = {}  # the others (rare)
        self._expiries: dict[int, _Expiry] = {}  # by tick: deadline // _TICK_S + 1
        self._answered: list[Waiting] = []  # done, their callbacks not run yet
        self._unfinished = unfinished
        self._idle = asyncio.Event()
        if unfinished == 0:
            self._idle.set()
        self._checking = False
        self._recheck = False  # a change arrived while waiters were being checked
        self._background = Supervisor()
        #: The dispatcher's, while it runs: a wait made by a running call lends its slot.
        self.lending: Lending | None = None

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
        key = record.key
        fut = self._futures.pop(key, None)
        more = self._more.pop(key, None) if self._more else None
        if fut is None and more is None:
            return
        snap = Task(record, self._host)  # one snapshot for all its waiters
        if fut is not None and not fut.done():  # (one cancelled or timed out has left)
            fut.set_result(snap)
            fn = fut._callback
            if fn is not None:
                if fut._context is None and fut._more is None:
                    # asyncio.gather's own callback (the only one kept without a
                    # context): it counts the answer, and at the last one sets gather's
                    # future, whose callbacks asyncio schedules. Run now, not a turn later.
                    fut._callback = None
                    try:
                        fn(fut)
                    except Exception as exc:  # (it raises none: reported as asyncio would)
                        self._report(fn, exc, fut)
                else:  # (`_settled`, inlined)
                    answered = self._answered
                    if not answered:
                        self.loop.call_soon(self._run_callbacks)
                    answered.append(fut)
            expiry = fut._expiry
            if expiry is not None:
                if expiry.live > 1:  # `_unexpire`'s common case, without its call
                    expiry.live -= 1
                else:
                    self._unexpire(expiry)
            if fut._lent is not None:
                self._give_back(fut)
        for fut in more or ():
            if not fut.done():
                fut.set_result(snap)
                self._settled(fut)
                if fut._expiry is not None:
                    self._unexpire(fut._expiry)
                if fut._lent is not None:
                    self._give_back(fut)

    def forget_unfinished(self) -> None:
        """The app stopped with a store of its own: nothing added here can end any more."""
        self._unfinished = 0
        self._idle.set()

    def wait(self, key: int, timeout: float | None) -> Waiting:
        """A waiter for the task whose uuid is `key` as an int (`TaskRecord.key`):
        await it for the finished `Task`, or None when `timeout` runs out first. It
        leaves by itself, however it ends."""
        fut = Waiting(loop=self.loop)
        fut._owner = self
        fut._key = key
        fut._callback = fut._more = fut._lent = None
        running = running_call.get()
        if running is not None and self.lending is not None:
            call = running.call if isinstance(running, Slot) else running  # (current_call)
            if call is not None and self.lending.lend(call):
                fut._lent = call
        if self._futures.setdefault(key, fut) is not fut:
            self._more.setdefault(key, []).append(fut)
        if timeout is None:
            fut._expiry = None
            return fut
        # A deadline on our own future: cheaper than asyncio.wait_for's extra future and
        # turn; and shared by the waiters whose time ends in the same tick.
        now = self._now()
        tick = int((now + timeout) // _TICK_S) + 1
        expiry = self._expiries.get(tick)
        if expiry is None:
            expiry = self._expiries[tick] = _Expiry(tick)
            expiry.deadline = self.deadlines.add(
                tick * _TICK_S - now, partial(self._expire, expiry)
            )
        expiry.futures.append(fut)
        expiry.live += 1
        fut._expiry = expiry
        return fut

    def _unexpire(self, expiry: _Expiry) -> None:
        """One waiter of `expiry` got its answer: nobody left, no deadline left."""
        expiry.live -= 1
        if not expiry.live and expiry.deadline is not None:
            expiry.deadline.cancel()
            expiry.deadline = None
            self._expiries.pop(expiry.tick, None)

    def _give_back(self, fut: Waiting) -> None:
        """`fut`'s wait ended: its call's slot, lent meanwhile, is the call's again."""
        call, fut._lent = fut._lent, None
        if call is not None and self.lending is not None:
            self.lending.give_back(call)

    def _left(self, fut: Waiting) -> None:
        """`fut` was cancelled by whoever awaited it, or its time ran out: forget it."""
        if fut._expiry is not None:
            self._unexpire(fut._expiry)
        if fut._lent is not None:
            self._give_back(fut)
        key = fut._key
        if self._futures.get(key) is fut:
            del self._futures[key]
        elif self._more:
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
                fut._expiry = None
                self._left(fut)
                fut.set_result(None)  # None: the time ran out (QTasks' answer)
                self._settled(fut)

    def _settled(self, fut: Waiting) -> None:
        """`fut` is done: run its callbacks soon, with those of the others done meanwhile."""
        if fut._callback is not None:
            if not self._answered:
                self.loop.call_soon(self._run_callbacks)
            self._answered.append(fut)

    def _run_callbacks(self) -> None:
        """(One loop callback.) Run the callbacks of the waiters done since the last run,
        as asyncio would have, one handle each: in their context, an exception reported to
        the loop's handler, not raised (it does not stop the others). A SystemExit or
        KeyboardInterrupt leaves the loop, as from asyncio's handle; the callbacks not
        run yet stay queued for the next turn, as their handles would have."""
        answered, self._answered = self._answered, []
        for i, fut in enumerate(answered):
            fn, fut._callback = fut._callback, None
            context, fut._context = fut._context, None
            try:
                if fn is not None:  # (None: removed since it was done)
                    self._run_one(fn, context, fut)
                if fut._more is not None:
                    self._run_more(fut)
            except BaseException:  # SystemExit or KeyboardInterrupt: keep the rest
                rest = answered[i:] if fut._more else answered[i + 1 :]
                if rest:
                    if not self._answered:
                        self.loop.call_soon(self._run_callbacks)
                    self._answered[:0] = rest
                raise

    def _run_more(self, fut: Waiting) -> None:
        """The callbacks of `fut` after its first (rare), each taken off before it runs."""
        more = fut._more
        while more:
            fn, context = more.pop(0)
            self._run_one(fn, context, fut)
        fut._more = None

    def _run_one(self, fn: Callable[[Any], object], context: Context | None, fut: Waiting) -> None:
        """One callback, as asyncio's handle runs it: in its context (None: gather's,
        which needs none), an exception reported to the loop's handler, a SystemExit or
        KeyboardInterrupt raised."""
        try:
            if context is None:
                fn(fut)
            else:
                context.run(fn, fut)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report(fn, exc, fut)

    def _report(self, fn: Callable[[Any], object], exc: BaseException, fut: Waiting) -> None:
        self.loop.call_exception_handler(
            {"message": f"Exception in callback {fn!r}", "exception": exc, "future": fut}
        )

    async def wait_idle(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def waited_for(self) -> list[UUID]:
        keys = self._futures.keys() | self._more.keys() if self._more else self._futures
        return [uuid_of(key) for key in keys]

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
