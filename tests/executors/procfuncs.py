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


# ---------------------------------------------------------------- shared memory


def shm_segments() -> set[str]:
    """Names in /dev/shm that qtasks_mp made (as seen from this process)."""
    return {n for n in os.listdir("/dev/shm") if n.startswith("qtmp_")}


def look_at(value: Any) -> tuple[str, int, str, list[str]]:
    """What arrived: its type, size, what its memory belongs to, the segments now open."""
    return type(value).__name__, memoryview(value).nbytes, backing(value), sorted(shm_segments())


def backing(value: Any) -> str:
    """Type of the object that owns `value`'s memory ("mmap" for shared memory)."""
    while not isinstance(value, memoryview) and getattr(value, "base", None) is not None:
        value = value.base  # a numpy array's chain of bases ends in the buffer it views
    return type(value.obj if isinstance(value, memoryview) else value).__name__


def make_bytes(kind: str, mib: float) -> Any:
    data = bytes(range(256)) * int(mib * 4096)
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    return data


def echo(value: Any) -> Any:
    return value


def checksum(value: Any) -> str:
    import hashlib

    return hashlib.sha256(memoryview(value).cast("B")).hexdigest()


def yield_big(n: int, mib: float) -> Iterator[bytes]:
    for i in range(n):
        yield bytes([i]) * int(mib * (1 << 20))


def crash_with(blob: Any, how: str) -> None:
    do(how)


def block_with(blob: Any) -> None:
    threading.Event().wait()


def return_big_and(where: str, how: str) -> tuple[bytes, OnPickle | OnUnpickle]:
    """2 MiB, and an object that does `how` where it is pickled or unpickled."""
    return bytes(2 << 20), OnPickle(how) if where == "pickle" else OnUnpickle(how)


def big_result_then(how: str, mib: int) -> bytes:
    """Return `mib` MiB; right after its shared-memory segment is made, before its name
    is sent, this process is killed ("kill": SIGKILL) or stopped ("stop": SIGSTOP)."""
    from qtasks_mp import wire

    original = wire.shm_create

    def create_then_die(name: str, buffers: Any) -> Any:
        shm = original(name, buffers)
        os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        return shm

    wire.shm_create = create_then_die  # type: ignore[assignment]  # this worker dies anyway
    return bytes(mib << 20)


def refuse_shared_memory() -> None:
    """From now on, shared memory fails in this worker (as with a full /dev/shm)."""
    from qtasks_mp import wire

    def refuse(name: str, buffers: Any) -> Any:
        raise OSError(28, "No space left on device")

    wire.shm_create = refuse  # type: ignore[assignment]


def square(x: int) -> int:
    """For app.map tests."""
    if x == -1:
        raise ValueError("negative one is not welcome")
    return x * x


def our_modules() -> list[str]:
    """The qtasks_mp modules this process has imported."""
    return sorted(m for m in sys.modules if m == "qtasks_mp" or m.startswith("qtasks_mp."))


def nbytes(array: Any) -> int:
    return int(array.nbytes)


def ones(n: int) -> Any:
    """A numpy array of `n` bytes, made here."""
    import numpy

    return numpy.ones(n, dtype=numpy.uint8)


def touch(n: int) -> int:
    """The machine's work of `ones(n)` (page faults, memory traffic), nothing returned."""
    import numpy

    return int(numpy.ones(n, dtype=numpy.uint8)[:: 1 << 12].sum())


def nested_wait(context: Any, x: int, timeout_s: float) -> list[Any]:
    """Wait in a worker for a nested task ("add", on the same pool)."""
    task = context.add_task("add", x, 1, timeout=timeout_s)
    return [None, None] if task is None else [task.status, task.returning]


def nested_wait_after(context: Any, fifo: str, x: int, timeout_s: float) -> list[Any]:
    """`nested_wait`, once the test has written to `fifo` (a call is queued behind us)."""
    with open(fifo) as f:
        f.read()
    return nested_wait(context, x, timeout_s)


def progress_then_wait(self: Any, n: int, fifo: str) -> int:
    """An echo task: report progress once per item, then wait until the test writes to
    `fifo`, then report the end."""
    for i in range(n):
        self.progress(i + 1, total=n, note=f"item {i + 1}")
    with open(fifo) as f:
        f.read()
    self.progress(n, total=n, note="done")
    return n
