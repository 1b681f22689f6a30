"""A running task that waits for another task lends its slot until the wait ends.

A call holds one slot of its executor while it runs, and a task that waits for a task
(`await self.add_task(..., timeout=)`, `await task.wait_result_async()`,
`await app.wait(uuid)`, or the same from a thread task) goes on holding it while it
waits. With N such tasks on an executor of N slots, each waiting for a task only that
executor runs, nothing could run the tasks they wait for: they would wait until their
timeout, or for ever.

So a waiter made while a call runs lends that call's slot (`Executor.lend`): the
executor may run one call more than its slots until the last of the call's waits ends
(`give_back`); the thread executor starts a thread for it. The call itself still
counts as active: it runs, and a stop waits for it. The slot comes back when the wait
ends, even if the call ended first (a thread call that timed out while it waits goes on
in its thread). The process executor lends its workers' slots itself (a worker's
nested wait comes as a message), so it does not take part.

Which call runs is a context variable, `running_call`: a lane worker sets it once to
its `Slot`, whose `call` it sets as each call starts and clears as it ends (setting the
variable itself per call cost ~0.5 us of each no-op task: 6% of the no-op rate);
where a waiting caller drives a call in its own task (eager.py), and in a thread
executor's thread, it is the `Call` itself. Tasks a call starts inherit it (a gather of
its children lends its slot); one that outlives its call and waits later lends the
slot of whatever call its worker then runs, if any (one call more than the slots, for
that wait). Threads inherit it too: a thread executor's job runs in a context where
it is the call, and what a thread runs in the loop runs in the thread's context
(`handoff.call_in_loop`). A caller driving a call of another lane in its own task
lends its own slot meanwhile (`Dispatcher._run_waited`): the call it drives may wait
for a task of the caller's lane.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from .executors.base import Call, Executor


class Slot:
    """A lane worker's: the call it runs now (None between calls)."""

    __slots__ = ("call",)

    def __init__(self) -> None:
        self.call: Call | None = None


#: The call running here: a lane worker's `Slot`, or the `Call` itself (a call driven
#: by its waiting caller; a thread call, in its thread), or None.
running_call: ContextVar[Slot | Call | None] = ContextVar("qtasks_mp_running_call", default=None)


def current_call() -> Call | None:
    """The call running in this asyncio task (or one it started) or executor thread."""
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

    def lend(self, call: Call) -> bool:
        """A wait starts in `call`; False if the call is not running (it ended)."""
        entry = self.waiting.get(call)
        if entry is not None:
            self.waiting[call] = (entry[0] + 1, entry[1])
            return True
        executor = self._executor_of(call)
        if executor is None:
            return False
        self.waiting[call] = (1, executor if executor.lend() else None)
        return True

    def give_back(self, call: Call) -> None:
        """A wait that started in `call` (`lend` said True) ended: the last one gives
        the slot back, whether the call still runs or not."""
        entry = self.waiting.get(call)
        if entry is None:  # (a wait from before a restart: another dispatcher's)
            return
        waits, executor = entry
        if waits > 1:
            self.waiting[call] = (waits - 1, executor)
            return
        del self.waiting[call]
        if executor is not None:
            executor.give_back()
