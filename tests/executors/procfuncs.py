"""Functions the process-executor tests run in workers (importable there by name)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("procfuncs")


def add(a: int, b: int) -> int:
    return a + b


def noop() -> None:
    return None


def pid() -> int:
    return os.getpid()


def block_forever() -> None:
    threading.Event().wait()  # never set: only a kill ends this call


def fail(message: str) -> None:
    raise ValueError(message)


def count(n: int) -> Iterator[int]:
    yield from range(n)


def log_something(message: str) -> int:
    log.warning("from the worker: %s", message)
    return os.getpid()


_hoard: list[bytes] = []


def hoard(mib: int) -> int:
    """Keep `mib` MiB alive in this worker; return its pid."""
    _hoard.append(os.urandom(1) * (mib << 20))
    return os.getpid()


def do(how: str) -> None:
    """Fail in one of the ways of the crash table."""
    if how == "raise":
        raise RuntimeError("boom")
    if how == "exit":
        sys.exit(2)
    if how == "os_exit":
        os._exit(3)
    if how == "segfault":
        ctypes.string_at(0)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
        threading.Event().wait()


def _unpickled(how: str) -> None:
    do(how)


class OnUnpickle:
    """Pickles fine; does `how` in the process that unpickles it."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unpickled, (self.how,))


class OnPickle:
    """Does `how` in the process that pickles it."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __reduce__(self) -> tuple[Any, ...]:
        do(self.how)
        return (str, ("",))


def crash(how: str) -> None:
    do(how)


def return_on_pickle(how: str) -> OnPickle:
    return OnPickle(how)


def return_on_unpickle(how: str) -> OnUnpickle:
    return OnUnpickle(how)


def take(value: Any) -> str:
    return type(value).__name__


def report_pid_and_block(fifo: str) -> None:
    """Tell the test (through a named pipe) which process runs this call, then block."""
    with open(fifo, "w") as f:
        f.write(str(os.getpid()))
    threading.Event().wait()


def yield_then_wait(fifo: str) -> Iterator[str]:
    """Yield one item, then wait until the parent has seen it (it writes to `fifo`)."""
    yield "first"
    with open(fifo) as f:
        yield f.read()


def spawn_child(self: Any, a: int, b: int) -> list[Any]:
    """An echo task: queue a nested task through the context and wait for it."""
    task = self.add_task("add_in_thread", a, b, timeout=5)
    return [task.status, task.returning, task.task_name, str(task.uuid), self.task_name]


def cpu(ms: float) -> int:
    """Busy for about `ms` milliseconds of CPU."""
    import time

    end = time.process_time() + ms / 1000
    n = 0
    while time.process_time() < end:
        n += 1
    return n


class NeedsTwoArgs(Exception):
    """An exception that cannot be unpickled: __init__ takes two arguments, args has one."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


def raise_needs_two_args() -> None:
    raise NeedsTwoArgs("a", "b")


class PicklesOnce:
    """A callable object: it travels by value (an instance has no name to import).

    Calling it returns how often the worker unpickled it."""

    pickled = 0  # in the parent: how often it was pickled

    def __call__(self) -> int:
        return _unpickled_count

    def __reduce__(self) -> tuple[Any, ...]:
        PicklesOnce.pickled += 1
        return (_rebuild_pickles_once, ())


_unpickled_count = 0


def _rebuild_pickles_once() -> PicklesOnce:
    global _unpickled_count
    _unpickled_count += 1
    return PicklesOnce()
