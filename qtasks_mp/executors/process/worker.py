"""The main loop of a process worker (runs in the child; see the package docstring).

One thread runs calls, one at a time, in the order they arrived. A second thread
only watches the parent: it blocks reading a pipe whose write end lives in the
parent alone, and ends the worker when that read fails (the parent died or closed
the pool), even while the main thread is deep in a call.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any
from uuid import UUID

import msgpack

from ... import wire
from ...context import TaskInfo, check_progress

#: How long a worker waits for its next message without sleeping (see `_Conn._poll`).
_SPIN_S = 100e-6
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)  # 0 (not Linux): recv_into blocks, no spin
_yield = getattr(os, "sched_yield", lambda: None)

try:  # RSS of this process, cheaply: /proc/self/statm (Linux), else psutil
    _PAGE = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm", "rb") as _probe:
        _probe.read()

    def _rss() -> int:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE

except (OSError, ValueError, AttributeError):  # pragma: no cover - not Linux
    import psutil

    def _rss() -> int:
        return int(psutil.Process().memory_info().rss)


class _Conn:
    """The socket to the parent: blocking, message at a time; `send` is thread-safe."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.unpacker = wire.unpacker()
        self.lock = threading.Lock()
        # recv_into a reused buffer: recv(n) would allocate n bytes per message.
        self.buffer = bytearray(1 << 16)
        self.view = memoryview(self.buffer)
        self.taken_from_read = 0  # messages unpacked from the latest read so far

    def recv(self) -> list[Any]:
        while True:
            try:
                message: list[Any] = self.unpacker.unpack()
                self.taken_from_read += 1
                return message
            except msgpack.OutOfData:
                pass
            # The last read brought one message: a caller that awaits each result.
            n = self._poll() if self.taken_from_read == 1 else None
            if n is None:
                n = self.sock.recv_into(self.buffer)
            if not n:
                raise EOFError
            self.taken_from_read = 0
            self.unpacker.feed(self.view[:n])

    def _poll(self) -> int | None:
        """Read without sleeping for up to `_SPIN_S`; None if nothing came.

        The next call of a caller that awaits each result arrives tens of microseconds
        after our answer; a worker that slept in the meantime has to be woken (on a
        virtual machine its CPU too), which costs more than this short wait. Only after
        a read that brought a single message: calls sent in batches (a busy app) need
        the CPU for the parent, not for a worker waiting on it. Between reads it yields
        its CPU to any thread that can run: on two cores a worker spinning beside the
        parent's two threads (a sync caller and the app's loop) took a core they needed,
        and a sync caller's round trip to a worker went from ~320 µs to ~210 µs here
        with the yield.
        """
        end = time.perf_counter() + _SPIN_S
        recv_into, buffer = self.sock.recv_into, self.buffer
        while True:
            try:
                return recv_into(buffer, 0, _DONTWAIT)
            except BlockingIOError:
                if time.perf_counter() > end:
                    return None
                _yield()  # a parent (or another worker) that can run gets the CPU first

    def send(self, message: list[Any]) -> None:
        data = wire.packb(message)
        with self.lock:
            self.sock.sendall(data)


_FORMATTER = logging.Formatter()


class _LogForwarder(logging.Handler):
    """Sends each record to the parent, which hands it to its own logger of that name."""

    def __init__(self, conn: _Conn) -> None:
        super().__init__()
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {
                "name": record.name,
                "levelno": record.levelno,
                "levelname": record.levelname,
                "msg": record.getMessage(),
                "pathname": record.pathname,
                "filename": record.filename,
                "module": record.module,
                "lineno": record.lineno,
                "funcName": record.funcName,
                "created": record.created,
                "msecs": record.msecs,
                "process": record.process,
                "processName": record.processName,
                "thread": record.thread,
                "threadName": record.threadName,
                "worker_pid": os.getpid(),
            }
            if record.exc_info:
                fields["exc_text"] = _FORMATTER.formatException(record.exc_info)
            self.conn.send([wire.OP_LOG, fields])
        except Exception:
            self.handleError(record)


class WorkerTask(TaskInfo):
    """The task context inside a worker: `add_task` asks the parent's dispatcher.

    It blocks until the parent answers and returns a `Task` snapshot (not attached
    to an app: `wait_result()` is not available here; pass `timeout=` to wait).
    """

    __slots__ = ("_call_id", "_ended", "_latest", "_lock", "_next_send", "_timer", "_worker")

    def __init__(self, worker: _Worker, call_id: int, task_name: str, uuid: str, attempt: int):
        super().__init__(task_name, UUID(uuid), attempt)
        self._worker = worker
        self._call_id = call_id
        # progress: the latest value not sent yet, when the next message may go, the
        # timer that sends it then, and a lock so that a timer's send and the call's end
        # do not cross (the last value must go before the answer)
        self._latest: tuple[Any, Any, Any] | None = None
        self._next_send = 0.0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._ended = False

    def progress(self, done: float, total: float | None = None, note: str | None = None) -> None:
        """As `AsyncTask.progress`. One message at most every `wire.PROGRESS_EVERY_S`:
        a call within that time only keeps its value, which a timer sends at the end of
        the interval (the latest value wins); the last one goes before the answer."""
        if type(done) not in (int, float) or not (
            (total is None or type(total) in (int, float)) and (note is None or type(note) is str)
        ):
            check_progress(self.task_name, done, total, note)
        self._latest = (done, total, note)
        if self._timer is not None:
            return  # a send is on its way; it takes the latest value
        wait = self._next_send - time.monotonic()
        if wait <= 0:
            self._send()
        else:
            timer = self._timer = threading.Timer(wait, self._send)
            timer.daemon = True
            timer.start()

    def _send(self) -> None:
        with self._lock:
            self._timer = None
            latest, self._latest = self._latest, None
            if latest is None or self._ended:
                return
            self._next_send = time.monotonic() + wire.PROGRESS_EVERY_S
            self._worker.conn.send([wire.OP_PROGRESS, self._call_id, *latest])

    def end(self) -> None:
        """The call ends: its last progress not sent yet goes now, before the answer."""
        timer = self._timer
        if timer is not None:
            timer.cancel()
        self._send()
        self._ended = True

    def add_task(self, task_name: str, *args: Any, **kwargs: Any) -> Any:
        payload = wire.dumps((task_name, args, kwargs))
        waits = kwargs.get("timeout") is not None
        return self._worker.request(self._call_id, payload, waits)

    def __repr__(self) -> str:
        return f"<WorkerTask {self.task_name!r} {self.uuid} attempt={self.attempt}>"


class _Worker:
    def __init__(self, conn: _Conn, max_memory: int | None) -> None:
        self.conn = conn
        self.max_memory = max_memory
        self.functions: dict[int, tuple[Callable[..., Any], bool] | BaseException] = {}
        self.backlog: deque[list[Any]] = deque()  # read while waiting for an OP_REPLY
        self.requests = 0
        self.pid = os.getpid()
        self.segments = 0  # result segments made for the running call (names end _0, _1, ...)
        self.call_id = 0  # the running call
        self.credit = 0  # items the running generator may still send (see `wait_for_credit`)
        self.skipped: set[int] = set()  # calls received that another worker runs instead

    def serve(self) -> None:
        while True:
            message = self.backlog.popleft() if self.backlog else self.conn.recv()
            op = message[0]
            if op == wire.OP_CALL:
                if not self.skipped or message[1] not in self.skipped:
                    self.run(message)
                self.skipped.discard(message[1])
            elif self.took_control(message):  # (an OP_ACK here is for a call that ended)
                pass
            elif op == wire.OP_FUNC:
                self.define(message)
            elif op == wire.OP_STOP:
                return

    def define(self, message: list[Any]) -> None:
        _, key, ref, blob, is_generator = message
        try:
            if ref is not None:
                module, qualname, unwrap = ref
                fn: Any = importlib.import_module(module)
                for part in qualname.split("."):
                    fn = getattr(fn, part)
                if unwrap:
                    fn = fn.__wrapped__
            else:
                fn = wire.loads(blob)
            self.functions[key] = (fn, is_generator)
        except BaseException as e:  # reported with the first call that needs it
            self.functions[key] = e

    def run(self, message: list[Any]) -> None:
        _, call_id, key, payload, context, args_shm = message
        where = wire.WHERE_FUNCTION
        result: Any = None
        item: Any = None
        self.segments = 0
        self.call_id = call_id
        ctx: WorkerTask | None = None
        try:
            entry = self.functions[key]
            if isinstance(entry, BaseException):
                raise entry
            fn, is_generator = entry
            where = wire.WHERE_ARGS
            # The parent owns (and unlinks) the arguments' segment; the views keep it
            # mapped here for as long as the call holds on to them.
            buffers = wire.shm_open(*args_shm, unlink=False) if args_shm else None
            args, kwargs = wire.loads_args(payload, buffers)
            del buffers
            if context is not None:
                ctx = WorkerTask(self, call_id, *context)
                args = (ctx, *args)
            where = wire.WHERE_CALL
            if is_generator:
                self.credit = wire.ITEM_WINDOW
                for item in fn(*args, **kwargs):
                    while self.credit <= 0:  # before its segment is made
                        self.wait_for_credit()
                    self.credit -= 1
                    where = wire.WHERE_ITEM
                    data, shm = self.encode(call_id, item)
                    where = wire.WHERE_CALL
                    self.conn.send([wire.OP_ITEM, call_id, data, shm])
            else:
                result = fn(*args, **kwargs)
            where = wire.WHERE_RESULT
            data, shm = self.encode(call_id, result)
        except BaseException as e:
            if ctx is not None:
                ctx.end()
            self.send_error(call_id, where, e, result, item)
            return
        if ctx is not None:
            ctx.end()
        self.conn.send([wire.OP_OK, call_id, data, shm, self.retiring()])

    def encode(self, call_id: int, obj: Any) -> tuple[bytes, list[Any] | None]:
        """Pickle a result or an item; its large buffers go into a new segment.

        The parent unlinks the segment when the message arrives, or, if this process
        dies first, when it cleans up after it: it tries this call's names in order,
        `_<n>` from the first it has not received, until one does not exist. So the
        segments that exist for a call are always a run of consecutive numbers.
        """
        if not wire.SHM:
            return wire.dumps(obj), None
        buffers: list[pickle.PickleBuffer] = []
        data = wire.dumps(obj, buffers)
        if not buffers:
            return data, None
        name = wire.result_segment(self.pid, call_id, self.segments)
        try:
            shm = wire.shm_create(name, buffers)
        except OSError as e:  # no room in /dev/shm: the slow way, through the socket
            logging.getLogger("qtasks_mp.process").warning(
                "shared memory for %d bytes failed (%s): sent through the socket instead",
                sum(b.raw().nbytes for b in buffers),
                e,
            )
            return wire.dumps(obj), None
        self.segments += 1
        return data, shm

    def send_error(
        self, call_id: int, where: str, exc: BaseException, result: Any, item: Any
    ) -> None:
        text = str(exc)
        if where == wire.WHERE_RESULT:
            text = f"a result of type {wire.type_name(result)} cannot be pickled: {text}"
        elif where == wire.WHERE_ITEM:
            text = f"a yielded item of type {wire.type_name(item)} cannot be pickled: {text}"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            exc_data: bytes | None = wire.dumps(exc) if where == wire.WHERE_CALL else None
        except BaseException:  # sent as text only; the parent says so
            exc_data = None
        self.conn.send(
            [wire.OP_ERR, call_id, where, exc_data, wire.type_name(exc), text, tb, self.retiring()]
        )

    def retiring(self) -> bool:
        """Whether this worker asks to be replaced (it has grown past `max_memory`)."""
        return self.max_memory is not None and _rss() > self.max_memory

    def wait_for_credit(self) -> None:
        """Wait until the parent has handled an item of the running generator.

        Flow control: at most `wire.ITEM_WINDOW` items are sent and not yet handled by
        the `generate_handler` (each may hold a shared-memory segment), however slow
        the handler. What else arrives meanwhile waits in the backlog."""
        message = self.conn.recv()
        if not self.took_control(message):
            self.backlog.append(message)

    def took_control(self, message: list[Any]) -> bool:
        """Whether `message` was an OP_ACK (credit for the running call, or stale) or
        an OP_SKIP (calls to drop when their turn comes), now taken into account."""
        op = message[0]
        if op == wire.OP_ACK:
            if message[1] == self.call_id:
                self.credit += message[2]
            return True
        if op == wire.OP_SKIP:
            self.skipped.update(message[1])
            return True
        return False

    def request(self, call_id: int, payload: bytes, waits: bool) -> Any:
        """Send an `add_task` request and wait for its answer; buffer what else arrives.

        If it `waits` for the nested task to end, the parent lends this worker's slot
        to the pool meanwhile and takes back the calls sent to it after this one
        (OP_SKIP): they run elsewhere."""
        self.requests += 1
        request_id = self.requests
        self.conn.send([wire.OP_ADD, call_id, request_id, payload, waits])
        while True:
            message = self.conn.recv()
            if message[0] == wire.OP_REPLY and message[1] == request_id:
                break
            if not self.took_control(message):
                self.backlog.append(message)
        _, _, ok, data = message
        value = wire.loads(data)
        if not ok:
            raise value
        if value is None:
            return None
        return _task_snapshot(*value)


def _task_snapshot(*fields: Any) -> Any:
    from ...task import Task, TaskRecord  # imported late: keeps a bare worker light

    uuid, task_name, status, priority, args, kwargs, returning, tb, retry, created, updated = fields
    record = TaskRecord(UUID(uuid).int, task_name, "", priority, args, kwargs, created)
    record.status, record.returning, record.traceback = status, returning, tb
    record.retry, record.updated_at = retry, updated
    return Task(record, None)


def _watch_parent(alive: int) -> None:
    """Exit the process as soon as the parent's end of the `alive` pipe is gone (nobody
    ever writes to it: a read returns only at EOF)."""
    with contextlib.suppress(OSError):
        os.read(alive, 1)
    os._exit(0)


def spawned(config: dict[str, Any]) -> None:
    """Entry point of a worker started as a fresh interpreter (see `forkserver.WORKER_BOOT`)."""
    wire.use_resource_tracker(config["tracker"])
    sock = socket.socket(fileno=config["sock"])
    main(sock, config["alive"], config["preload"], config["levels"], config["max_memory"])


def main(
    sock: socket.socket,
    alive: int,
    preload: list[str],
    log_levels: dict[str, int],
    max_memory: int | None,
) -> None:
    """Entry point of a worker process (started by the pool's fork server)."""
    # Ctrl-C reaches the whole foreground process group: only the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Not for the processes a task starts: one holding our socket would hide our exit.
    sock.set_inheritable(False)
    os.set_inheritable(alive, False)
    threading.Thread(target=_watch_parent, args=(alive,), daemon=True).start()
    conn = _Conn(sock)
    try:
        for name in preload:
            importlib.import_module(name)
        root = logging.getLogger()
        root.handlers[:] = [_LogForwarder(conn)]
        for name, level in log_levels.items():
            logging.getLogger(name or None).setLevel(level)
        conn.send([wire.OP_READY, os.getpid()])
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send([wire.OP_FATAL, traceback.format_exc()])
        sys.exit(1)
    with contextlib.suppress(EOFError, OSError):  # EOF: the parent wants us gone
        _Worker(conn, max_memory).serve()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)  # skip interpreter teardown: nothing left to flush
