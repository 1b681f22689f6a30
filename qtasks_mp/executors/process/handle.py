"""The parent's side of one worker: its process, its socket, the calls it holds."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ... import wire
from .calls import PendingCall

_READ_SIZE = 256 * 1024  # bytes read from a worker at most per loop turn
_placeholders = itertools.count(1)  # pids (<= 0) of workers whose process is not started yet


class WorkerState(enum.Enum):
    """starting -> ready -> retiring | doomed -> gone (any state may go straight to gone)."""

    STARTING = "starting"  # launched (or about to be), not ready yet
    READY = "ready"  # takes calls
    RETIRING = "retiring"  # finishes what it holds, then exits; gets no new call
    DOOMED = "doomed"  # being killed; what it still says is ignored
    GONE = "gone"  # exited and accounted for

    @property
    def live(self) -> bool:
        """Whether it counts towards the pool's size (and `slots`)."""
        return self is WorkerState.STARTING or self is WorkerState.READY


class WorkerHandle(asyncio.BufferedProtocol):
    """One worker, from `WorkerState.STARTING` (before its process exists) to `GONE`.

    A buffered protocol: the loop reads into one reused buffer. The plain protocol's
    `recv(256 KiB)` allocates a fresh buffer per read, which can cost an mmap: in a
    bare asyncio echo test it was a quarter of the round trip (40 µs, 29 µs without).
    """

    def __init__(self, on_message: Callable[[WorkerHandle, list[Any]], None]) -> None:
        self.on_message = on_message
        self.on_gone: Callable[[WorkerHandle], None] = lambda h: None  # exit + EOF seen
        self.pid: int = -next(_placeholders)  # the real one (> 0) once it is launched
        self.state = WorkerState.STARTING
        self.calls: deque[PendingCall] = deque()  # sent, in order; calls[0] is running
        self.known: set[int] = set()  # function keys this worker has been sent
        self.sent = 0
        self.parked = False  # lent to sync callers' threads (direct.py): not the loop's
        self.lent = 0  # nested waits of its running call: its slot is lent (Scheduler.lend)
        self.killed_because: str | None = None  # killed on purpose: why (for its call's error)
        self.done = 0
        self.transport: asyncio.Transport | None = None
        self.unpacker = wire.unpacker()
        self.view = memoryview(bytearray(_READ_SIZE))
        self.out: list[bytes] = []
        self.eof = False
        self.exited = False
        self.exitcode: int | None = None
        self.fatal: str | None = None
        self.orphans: list[tuple[int, int]] = []  # (call id, first segment) to sweep at exit
        self.loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.launched_at = time.monotonic()
        self.idle_since = self.launched_at  # when it last held no call

    # ---------------------------------------------------------------- the socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.unpacker.feed(self.view[:nbytes])
        for message in self.unpacker:
            self.on_message(self, message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if self.exited:
            self.on_gone(self)

    def write(self, data: bytes, now: bool = False) -> None:
        """Send `data`: at once if `now` (the worker waits for it), else when the turn ends.

        Messages for a busy worker are joined into one write per loop turn (the
        dispatcher starts several calls per turn); a worker that waits pays no extra turn.
        """
        if self.transport is None or self.transport.is_closing():
            return
        if now and not self.out:
            self.transport.write(data)
            return
        if not self.out:
            self.loop.call_soon(self.flush)
        self.out.append(data)

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def stop(self) -> None:
        """Ask it to finish what it holds, then exit."""
        self.write(wire.packb([wire.OP_STOP]))

    # ---------------------------------------------------------------- the process

    @property
    def launched(self) -> bool:
        return self.pid > 0

    @property
    def takes_calls(self) -> bool:
        """Ready, not waiting for a nested task, not parked for direct calls."""
        return self.state is WorkerState.READY and not self.lent and not self.parked

    @property
    def alive(self) -> bool:
        """Whether a message from it still counts (not being killed, not gone)."""
        return self.state is not WorkerState.DOOMED and self.state is not WorkerState.GONE

    def on_exit(self, exitcode: int | None) -> None:
        """Its process exited. Answers sent just before may still sit in the socket: it
        is gone once EOF is read too (or a second later: a grandchild holding the socket
        open would delay EOF forever)."""
        self.exited = True
        self.exitcode = exitcode
        if self.eof:
            self.on_gone(self)
        else:
            self.loop.call_later(1.0, self.on_gone, self)

    def signal(self, kill: bool) -> None:
        """SIGKILL (`kill`) or SIGTERM it, unless it has exited.

        The fork server reaps it as it exits and tells us in a message that may still be
        on its way: in that window the pid could, in theory, be reused by another
        process. (multiprocessing's forkserver has the same window; pids are reused only
        after the kernel has cycled through the pid space.)"""
        if self.launched and not self.exited and self.state is not WorkerState.GONE:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL if kill else signal.SIGTERM)

    def forget(self) -> None:
        """In a forked child: this worker is the parent's; never signal it from here."""
        self.exited = True
        self.state = WorkerState.GONE

    def close(self) -> None:
        """Release the socket (it has exited)."""
        if self.transport is not None:
            self.transport.close()

    def sweep(self) -> None:
        """Unlink the result segments it made and we never received (it is gone).

        A worker numbers a call's segments _0, _1, ... and makes each only after the
        last was sent; we received them in order. So they are the names from the first
        we did not receive, up to the first that does not exist."""
        for call_id, n in self.orphans:
            while wire.shm_unlink(wire.result_segment(self.pid, call_id, n)):
                n += 1
        self.orphans.clear()

    def release_calls(self) -> list[PendingCall]:
        """Take back every call it holds: it will answer none of them any more.

        What it sends from now on is ignored, so once it is gone `sweep` unlinks the
        segments it made for these calls. (Any of them: calls[0] may have finished and
        the next started, its answer still unread.)"""
        calls = list(self.calls)
        self.calls.clear()
        self.orphans += [(p.call_id, p.segments) for p in calls]
        for p in calls[1:]:  # received, never started: for another worker
            p.worker = None
            p.segments = 0
        return calls
