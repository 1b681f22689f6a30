"""A running task that waits for another task lends its slot until the wait ends.

A call holds one slot of its executor while it runs, and a task that waits for a task
(`await self.add_task(..., timeout=)`, `await task.wait_result_async()`,
`await app.wait(uuid)`, or the same from a thread task) goes on holding it while it
waits. With N such tasks on an executor of N slots, each waiting for a task only that
executor runs, nothing could run the tasks they wait for: they would wait until their
timeout, or for ever.

So a waiter made while a call runs (`running_call`, set by the dispatcher for the time
of the call) lends that call's slot to its executor (`Executor.lend`) until the last of
the call's waits ends; the executor may then run one more call than its slots for each
slot lent (the thread executor starts a thread for it). A call that ends while lent
takes its slot back first, and a wait that outlives its call gives back nothing. The
process executor lends its workers' slots itself (a worker's nested wait comes as a
message), so it does not take part.

The call is found through a context variable, `running_call`: a lane worker's `Slot`
(set once per worker, updated per call), or the call itself where a waiting caller
drives it and in a thread executor's thread (the job runs in a context where it is
set); what a thread runs in the loop runs in the thread's context
(`handoff.call_in_loop`). A task that a call starts and leaves running sees the call
its worker runs when it waits, if any: its wait lends that call's slot (one call more
than the slots, for as long as that wait).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from .executors.base import Call, Executor


class Slot:
    """A lane worker's: the call it runs now (None between calls). A lane worker sets
    `running_call` to its slot once and updates the slot per call (an attribute store,
    where setting a context variable per call would cost ~0.3 us of each no-op task)."""

    __slots__ = ("call",)

    def __init__(self) -> None:
        self.call: Call | None = None


#: The call running here: a lane worker's `Slot`, or the `Call` itself (a call driven
#: by its waiting caller; a thread call, in its thread), or None.
running_call: ContextVar[Slot | Call | None] = ContextVar("qtasks_mp_running_call", default=None)


def current_call() -> Call | None:
    """The call running in this asyncio task or executor thread, if any. (A task that a
    call started and left running sees the call its worker runs now.)"""
    running = running_call.get()
    return running.call if isinstance(running, Slot) else running


class Lending:
    """The slots lent by the calls now waiting for other tasks (owned by the dispatcher,
    run in its loop). `executor_of(call)`: the executor running `call`, None once it
    has ended."""

    def __init__(self, executor_of: Callable[[Call], Executor | None]) -> None:
        self._executor_of = executor_of
        # Calls with a wait under way: how many waits, and the executor that lent the
        # call's slot (None: it could not lend, e.g. no thread could be started).
        self.waiting: dict[Call, tuple[int, Executor | None]] = {}
        self.lent = 0  # calls whose slot is lent now (running, but not counted active)
        self._lent_by: dict[Executor, int] = {}  # the same, per executor

    def lend(self, call: Call) -> bool:
        """A wait starts in `call`; False if the call is not running (it ended)."""
        entry = self.waiting.get(call)
        if entry is not None:
            self.waiting[call] = (entry[0] + 1, entry[1])
            return True
        executor = self._executor_of(call)
        if executor is None:
            return False
        if executor.lend():
            self.waiting[call] = (1, executor)
            self.lent += 1
            self._lent_by[executor] = self._lent_by.get(executor, 0) + 1
        else:
            self.waiting[call] = (1, None)
        return True

    def lent_by(self, executor: Executor) -> int:
        """How many of `executor`'s running calls lent their slot."""
        return self._lent_by.get(executor, 0) if self.lent else 0

    def give_back(self, call: Call) -> None:
        """A wait that started in `call` (`lend` said True) ended."""
        entry = self.waiting.get(call)
        if entry is None:  # the call ended first (`end`)
            return
        if entry[0] > 1:
            self.waiting[call] = (entry[0] - 1, entry[1])
        else:
            self.end(call)

    def end(self, call: Call) -> None:
        """`call` ends, or its last wait did: it holds its slot again."""
        entry = self.waiting.pop(call, None)
        if entry is None or entry[1] is None:
            return
        executor = entry[1]
        self.lent -= 1
        left = self._lent_by[executor] - 1
        if left:
            self._lent_by[executor] = left
        else:
            del self._lent_by[executor]
        executor.give_back()
