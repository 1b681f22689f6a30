"""The run states of an app, the supervised group its background coroutines run in,
and waiting for a stop signal.

The states and their transitions are `Runtime`'s (`qtasks_mp/runtime.py`), their only
owner. Every background coroutine of a running app (the dispatcher's loop, its lane
workers, calls that went on after their caller stopped waiting) runs in a
`Supervisor`: when one ends with an exception, the failure is logged once, with its
traceback, where its owner's log shows it. Nothing dies silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn

log = logging.getLogger("qtasks_mp")


class RunState(str, enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"

    def __str__(self) -> str:
        return self.value


class Supervisor:
    """Background tasks whose failures are seen: each is retrieved and logged once."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.adopt(task)
        return task

    def adopt(self, task: asyncio.Task[Any]) -> None:
        """Watch a task started elsewhere (e.g. by `Eager.detach`)."""
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here: never "Task exception was never retrieved"
        if exc is None:
            return
        log.error(
            "background task %r failed (a bug: please report it with this traceback)",
            task.get_name(),
            exc_info=exc,
        )

    async def cancel_all(self) -> None:
        """Cancel every task of the group and wait for them to end."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)


@contextlib.contextmanager
def _on_stop_signals(callback: Callable[[signal.Signals], object]) -> Iterator[None]:
    """While inside: SIGINT and SIGTERM call `callback(signal)` in the running loop
    (from the main thread only; elsewhere, or on Windows, nothing is installed)."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, callback, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


class SignalPipe:
    """SIGINT and SIGTERM for a blocking main thread (the sync facade's `run_forever`),
    as Python's C-level handler writes them to its wakeup fd: seen whichever thread the
    kernel delivers them to. (A Python-level handler runs only once the main thread runs
    again, and CPython may not wake it for a signal another thread received: a Ctrl-C
    could wait for the end of whatever the main thread waits for.) Main thread only;
    `with SignalPipe() as signals: name = signals.wait(timeout)`."""

    _WATCHED = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> SignalPipe:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        # A Python handler of our own (not SIG_IGN): only then does the C one write.
        self._previous = {s: signal.signal(s, _noted) for s in self._WATCHED}
        return self

    def wait(self, timeout: float | None = None) -> str | None:
        """The name of the next SIGINT or SIGTERM, or None if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if select.select([self._read], [], [], left)[0]:
                with contextlib.suppress(BlockingIOError):
                    for number in self._read.recv(64):
                        if number in self._WATCHED:
                            return signal.Signals(number).name
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._read.close()
        self._write.close()


def _noted(signum: int, frame: object) -> None:
    """(`SignalPipe`'s Python-level handler: the wakeup fd says it.)"""


def leave_now(signal_name: str) -> NoReturn:
    """A third Ctrl-C: the stop hangs (an event handler that never returns, say). The
    process exits now, with nothing run after (a durable store's leases bring its
    running tasks back at the next start)."""
    log.warning("%s a third time: exiting now, without waiting for the stop", signal_name)
    logging.shutdown()
    os._exit(130)


@contextlib.contextmanager
def stop_signals(hurry: Callable[[], object] = lambda: None) -> Iterator[asyncio.Event]:
    """While inside: the first SIGINT or SIGTERM sets the event it gives (logged, "Ctrl-C:
    stop cleanly"); the second calls `hurry` (logged), for a stop under way to cancel
    the running tasks now instead of giving them the rest of shutdown_timeout; a third
    exits the process at once (`leave_now`), for a stop that hangs. One set of handlers for
    the whole time: no signal finds Python's default handler between the first two, to
    interrupt a stop half done."""
    stop = asyncio.Event()
    seen: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        seen.append(sig.name)
        if len(seen) == 1:
            log.info("%s received: stopping", sig.name)
            stop.set()
        elif len(seen) == 2:
            log.warning("%s again: cancelling the running tasks now", sig.name)
            hurry()
        else:  # a stop that hangs (a handler that never returns): out, at once
            leave_now(sig.name)

    with _on_stop_signals(on_signal):
        yield stop


async def wait_for_stop_signal() -> None:
    """Return when SIGINT or SIGTERM arrives (logs which)."""
    with stop_signals() as stop:
        log.info("running; press Ctrl-C to stop")
        await stop.wait()


#: True while `qtasks-mp run` imports the user's module: a `run_forever()` called then
#: returns at once, since the CLI runs the app and its timers itself after the import.
defer_run_forever: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "qtasks_mp_defer_run_forever", default=False
)


def run_forever_deferred(runner: object) -> bool:
    """Whether `runner.run_forever()` must return at once; logs why when it must."""
    if not defer_run_forever.get():
        return False
    log.warning(
        "qtasks-mp run: %s.run_forever() at import skipped (qtasks-mp runs the app and its "
        'timers itself; put that call under `if __name__ == "__main__":`)',
        type(runner).__name__,
    )
    return True
