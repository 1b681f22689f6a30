"""Functions the direct-call tests run in workers (importable there by name)."""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("directfuncs")


def add(a: int, b: int) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def chatty(x: int) -> int:
    log.warning("chatty %d", x)  # an OP_LOG before the answer
    return x


def wait_for(started: str, release: str) -> str:
    """Say so on the named pipe `started`, then return what arrives on `release`."""
    with open(started, "w") as f:
        f.write(str(os.getpid()))
    with open(release) as f:
        return f.read()


def announce_and_wait(self: Any, started: str, release: str) -> str:
    """As `wait_for`, saying the task's uuid instead of the pid."""
    with open(started, "w") as f:
        f.write(str(self.uuid))
    with open(release) as f:
        return f.read()


def report(self: Any, n: int) -> int:
    for i in range(n):
        self.progress(i + 1, n)
    return n


def nested(self: Any, a: int) -> int:
    task = self.add_task("add", a, 1, timeout=30)
    return int(task.returning)


def forks() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def die() -> None:
    os._exit(7)


def block() -> None:
    import threading

    threading.Event().wait()


def size(data: bytes) -> int:
    return len(data)


def big() -> bytes:
    """2 MiB: the answer comes back through shared memory."""
    return b"x" * (2 << 20)


def sleepy(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds
