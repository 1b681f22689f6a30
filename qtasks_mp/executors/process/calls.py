"""One call between `run` and its answer, and what the parent makes of the answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ... import wire
from ...errors import SerializationError, TaskFailed
from ...registries import Kind

if TYPE_CHECKING:
    from ..base import Call
    from .handle import WorkerHandle

END: Any = object()  # end of a generator's items


class PendingCall:
    """One call between `run` and its answer: queued in the pool, then held by a worker."""

    __slots__ = (
        *("abandoned", "call", "call_id", "context", "fut", "items", "key", "payload"),
        *("queued_at", "segments", "shm", "started", "timer", "worker"),
    )

    def __init__(
        self,
        call: Call,
        call_id: int,
        key: int,
        payload: bytes,
        shm: list[Any] | None,
        context: list[Any] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.call = call
        self.call_id = call_id
        self.key = key
        self.payload = payload
        self.shm = shm  # [name, lengths] of the arguments' segment: ours to unlink
        self.segments = 0  # result segments of its current worker received so far
        self.started = 0.0  # loop time it became its worker's running call
        self.context = context
        self.fut: asyncio.Future[list[Any]] = loop.create_future()
        generator = call.spec.kind is Kind.GENERATOR
        self.items: asyncio.Queue[Any] | None = asyncio.Queue() if generator else None
        self.worker: WorkerHandle | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.abandoned = False
        self.queued_at = time.monotonic()

    def message(self) -> bytes:
        return wire.packb(
            [wire.OP_CALL, self.call_id, self.key, self.payload, self.context, self.shm]
        )

    def fail(self, exc: BaseException) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.fut.done():
            self.fut.set_exception(exc)
            self.fut.exception()  # marked retrieved: an abandoned call has no reader
        if self.items is not None:
            self.items.put_nowait(END)

    def answered(self, message: list[Any]) -> None:
        """Its worker answered (OP_OK / OP_ERR): wake `run`."""
        if self.timer is not None:
            self.timer.cancel()
        if not self.fut.done():
            self.fut.set_result(message)
        if self.items is not None:
            self.items.put_nowait(END)

    def result(self, message: list[Any]) -> Any:
        """The value of an OP_OK, or the exception an OP_ERR stands for, raised."""
        if message[0] == wire.OP_OK:
            try:
                buffers = message[3]
                if isinstance(buffers, OSError):
                    raise buffers
                return wire.loads(message[2], buffers)
            except (Exception, SystemExit) as e:
                raise SerializationError(
                    f"task {self.call.task_name!r}: its result could not be unpickled in the "
                    f"parent: {type(e).__name__}: {e}"
                ) from e
        raise remote_error(self.call, message)

    def item(self, got: list[Any]) -> Any:
        """One yielded item `[data, buffers]`, unpickled (raises `SerializationError`).

        Empties `got`: in the I/O thread, the job holding it may outlive the call for a
        while (until that thread runs again), and with it the item's shared memory."""
        try:
            data, buffers = got
            got.clear()
            if isinstance(buffers, OSError):
                raise buffers
            return wire.loads(data, buffers)
        except Exception as e:
            raise SerializationError(
                f"task {self.call.task_name!r}: a yielded item could not be unpickled in the "
                f"parent: {type(e).__name__}: {e}"
            ) from e

    def take_segment(self, shm: list[Any]) -> list[memoryview] | OSError:
        """Map (and unlink: it is ours now) a result segment as its message arrives, so
        that it is unlinked even if nobody reads the result."""
        self.segments += 1
        try:
            return wire.shm_open(*shm, unlink=True)
        except OSError as e:
            return e


def remote_error(call: Call, message: list[Any]) -> BaseException:
    """The exception to raise in the parent for an OP_ERR, chained to the remote traceback."""
    _, _, where, exc_data, type_name, text, tb, _ = message
    name = call.task_name
    remote = wire.RemoteTraceback(tb)
    if where == wire.WHERE_CALL:
        problem = "it cannot be pickled"
        if exc_data is not None:
            try:
                exc = wire.loads(exc_data)
            except Exception as e:
                problem = f"unpickling it failed: {type(e).__name__}: {e}"
            else:
                if isinstance(exc, Exception):
                    exc.__cause__ = remote
                    return exc  # the task's own exception: Retries may match its type
                failed = TaskFailed(name, tb)  # SystemExit, KeyboardInterrupt: not ours to raise
                failed.__cause__ = remote
                return failed
        error = SerializationError(
            f"task {name!r} raised {type_name}: {text}; but the exception cannot be sent back "
            f"to the parent ({problem}). Define the exception class at module level and pass "
            "all its __init__ arguments to super().__init__()."
        )
    elif where == wire.WHERE_ARGS:
        error = SerializationError(
            f"task {name!r}: the worker could not unpickle its arguments: {type_name}: {text}. "
            "Classes of arguments must be importable by the worker: define them at module "
            "level in a module (not __main__), or list that module in preload=."
        )
    elif where == wire.WHERE_FUNCTION:
        error = SerializationError(
            f"task {name!r}: the worker could not load {wire.type_name(call.spec.fn)}: "
            f"{type_name}: {text}. Define the function at module level in an importable "
            "module, or list that module in preload=."
        )
    else:  # result or item
        error = SerializationError(f"task {name!r}: {text}. Return plain, picklable data.")
    error.__cause__ = remote
    return error


def emit_log(fields: dict[str, Any]) -> None:
    """Hand a worker's log record to this process's logger of the same name."""
    record = logging.makeLogRecord(fields)
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


def report_progress(calls: Iterable[PendingCall], message: list[Any]) -> None:
    """An OP_PROGRESS: hand it to the parent's context of that call, which saves it."""
    _, call_id, done, total, note = message
    for p in calls:
        if p.call_id == call_id:
            if p.call.context is not None:
                with contextlib.suppress(TypeError):  # checked in the worker already
                    p.call.context.progress(done, total, note)
            return


async def answer_add_task(p: PendingCall | None, request_id: int, payload: bytes) -> bytes:
    """Run a worker's `context.add_task(...)` (for call `p`) here; the OP_REPLY to send."""
    from ...context import AsyncTask

    ok = True
    value: Any = None
    try:
        task_name, args, kwargs = wire.loads(payload)
        if p is None or p.call.context is None:
            raise RuntimeError("the call that asked has no task context any more")
        # The base-class coroutine: a SyncTask's own add_task would block the loop.
        task = await AsyncTask.add_task(p.call.context, task_name, *args, **kwargs)
        if task is not None:
            value = (str(task.uuid), task.task_name, task.status, task.priority)
            value += (task.args, task.kwargs, task.returning, task.traceback, task.retry)
            value += (task.created_at.timestamp(), task.updated_at.timestamp())
    except Exception as e:
        ok, value = False, e
    try:
        data = wire.dumps(value)
    except Exception as e:
        ok = False
        data = wire.dumps(SerializationError(f"the answer to add_task cannot be pickled: {e}"))
    return wire.packb([wire.OP_REPLY, request_id, ok, data])
