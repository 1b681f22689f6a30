"""Task functions for the executor contract suite, in an importable module so process,
Dask and subprocess workers can load them by name.

Cross-process signals use files under a test's `tmp_path`: a worker on the same
machine can create them wherever it runs.
"""

# The tasks here signal through small files on purpose, from coroutines too.
# ruff: noqa: ASYNC110, ASYNC240

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qtasks_mp.asyncio import QueueTasks

RAISE_LINE = 'raise ValueError(f"contract failure: {message}")'


def add(a: int, b: int = 0) -> int:
    return a + b


def length(data: bytes) -> int:
    return len(data)


def fail(message: str) -> None:
    raise ValueError(f"contract failure: {message}")


def count(n: int) -> Iterator[int]:
    yield from range(n)


async def tag_item(item: int) -> list[int]:
    """The generate_handler: must run in the app's process, in its event loop."""
    asyncio.get_running_loop()
    return [item * 10, os.getpid()]


def flaky(counter: str, failures: int) -> int:
    """Fails with ConnectionError `failures` times (counted in a file), then succeeds."""
    with open(counter, "a") as f:
        f.write("x")
    attempts = Path(counter).stat().st_size
    if attempts <= failures:
        raise ConnectionError(f"attempt {attempts} fails")
    return attempts


def echo_sync(self: Any, a: int, b: int) -> list[Any]:
    """An echo task (plain function): queue a nested task, wait for it."""
    task = self.add_task("nested_add", a, b, timeout=5)
    return [self.task_name, task.status, task.returning]


async def echo_async(self: Any, a: int, b: int) -> list[Any]:
    task = await self.add_task("nested_add", a, b, timeout=5)
    return [self.task_name, task.status, task.returning]


def block_until(started: str, release: str, done: str, limit_s: float = 10.0) -> str:
    """Say we started (with our pid), wait for the release file, then say we are done."""
    Path(started).write_text(str(os.getpid()))
    deadline = time.monotonic() + limit_s
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.005)
    Path(done).write_text("done")
    return "released"


async def block_until_async(started: str, release: str, done: str, limit_s: float = 10.0) -> str:
    Path(started).write_text(str(os.getpid()))
    try:
        deadline = time.monotonic() + limit_s
        while not os.path.exists(release) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
    except asyncio.CancelledError:
        Path(done).write_text("cancelled")
        raise
    Path(done).write_text("done")
    return "released"


def die_once(counter: str, started: str, limit_s: float = 30.0) -> str:
    """First attempt: say we started (our pid), then hang until killed. Later: return."""
    with open(counter, "a") as f:
        f.write("x")
    attempts = Path(counter).stat().st_size
    if attempts == 1:
        Path(started).write_text(str(os.getpid()))
        time.sleep(limit_s)  # the test SIGKILLs this process long before
    return f"attempt {attempts}"


def make_adder(n: int) -> Any:
    """A closure: no importable name, so it travels by value (cloudpickle)."""

    def add_n(x: int) -> int:
        return x + n

    return add_n


# A tasks module as users write it: the module attribute is what `@app.task` returned,
# so a worker must import it and unwrap it (`__wrapped__`) to find the function.
tasks_app = QueueTasks("contract_funcs")


@tasks_app.task(name="square")
def square(x: int) -> int:
    return x * x


def cancel_self(self: Any, reason: str) -> None:
    """QTasks' self-cancel from inside a task: `self.ctx.cancel(reason)` raises."""
    self.ctx.cancel(reason)
