"""Parent-side helpers for the process-executor tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from qtasks_mp.executors.base import Call
from qtasks_mp.registries import TaskSpec, kind_of
from qtasks_mp.task import TaskRecord, new_key

_specs: dict[tuple[Any, float | None], TaskSpec] = {}


def make_call(fn: Callable[..., Any], *args: Any, timeout: float | None = None, **kw: Any) -> Call:
    """A `Call` as the dispatcher would build it (one spec per function and timeout)."""
    spec = _specs.get((fn, timeout))
    if spec is None:
        name = getattr(fn, "__name__", type(fn).__name__)
        spec = TaskSpec(name=name, fn=fn, kind=kind_of(fn), executor="process", timeout=timeout)
        _specs[(fn, timeout)] = spec
    record = TaskRecord(new_key(), spec.name, "process", 0, args, kw, time.time())
    return Call(spec, record, None)


def fifo(tmp_path: Path, name: str = "fifo") -> str:
    path = str(tmp_path / name)
    os.mkfifo(path)
    return path


async def read_fifo(path: str, timeout_s: float = 10) -> str:
    """Wait, without a thread, until a worker has written to the named pipe and closed it."""
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # does not wait for a writer
    done: asyncio.Future[str] = loop.create_future()
    chunks: list[bytes] = []

    def on_readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if data:
            chunks.append(data)
        elif chunks and not done.done():  # EOF: the writer closed it
            done.set_result(b"".join(chunks).decode())

    loop.add_reader(fd, on_readable)
    try:
        return await asyncio.wait_for(done, timeout_s)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def write_fifo(path: str, text: str, timeout_s: float = 10) -> None:
    """Write to a named pipe that a worker opens for reading (in a thread: open() waits)."""

    def write() -> None:
        with open(path, "w") as f:
            f.write(text)

    writing = asyncio.ensure_future(asyncio.to_thread(write))
    try:
        await asyncio.wait_for(asyncio.shield(writing), timeout_s)
    except asyncio.TimeoutError:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets the stuck open() return
        await writing
        os.close(fd)
        raise


def gone(pids: list[int], timeout: float = 5.0) -> bool:
    """Whether every pid has exited within `timeout` (a blocking wait, no polling loop)."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def grandchildren() -> set[int]:
    """Processes below our children: under forkserver, exactly the worker processes."""
    me = psutil.Process()
    direct = {p.pid for p in me.children()}
    return {p.pid for p in me.children(recursive=True)} - direct


def assert_roster_counts(pool: Any) -> None:
    """The roster's kept counts (read per task by `slots`) match its handles' states."""
    roster = pool.roster
    assert roster is not None
    assert roster.live == sum(h.state.live for h in roster.workers)
    assert roster.lent == sum(1 for h in roster.workers if h.lent and h.state.live)
