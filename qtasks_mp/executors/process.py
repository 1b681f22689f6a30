"""`ProcessExecutor`: a self-healing pool of worker processes for CPU-heavy tasks.

Data flow. Everything on the left runs in the dispatcher's event loop; each worker
is a process with one socket pair to the parent and a shared "alive" pipe.

    run(call) ─┬─> _Pending ──> pending (no worker has room) ──┐
               │                                               │ a worker frees up
               │        ┌──────────────────────────────────────┘
               │        v
               │   _Handle (asyncio.Protocol, one per worker)
               │     calls: deque of _Pending sent, in order; calls[0] is running
               │     │  OP_FUNC  key, function      (once per function and worker)
               │     │  OP_CALL  id, key, args      (pickle 5; cloudpickle fallback)
               │     v
               │   socket ════════════════════════> worker process (_worker.main)
               │     ^    /dev/shm/qtmp_* ═══════>    runs calls one by one, FIFO
               │     │       <═══════ (buffers >= 1 MiB, both ways; names in the messages)
               │     │  OP_OK / OP_ERR  result or exception + traceback text
               │     │  OP_ITEM         one item of a generator, as produced
               │     │  OP_LOG          a log record, re-emitted here
               │     │  OP_ADD          task context's add_task -> OP_REPLY
               │     │
               └─ await p.fut <── the result, or WorkerCrashed / TaskTimeout

    process sentinel ──> _on_exit ─┐
    socket EOF ──> connection_lost ┴─> _finalize: fail calls[0] (WorkerCrashed),
                                       give calls[1:] to other workers, replace

Concurrency hazards, and the answers:

- Which call did a dead worker die in? A worker runs what it received in order, so
  the oldest unanswered call, `calls[0]`, is the one that was running; the others
  were received but not started and go to another worker. (A worker killed in the
  microseconds between answering one call and starting the next is blamed for the
  next one; it is retried elsewhere only if the Retries middleware says so.)
- A dead worker's last answers may still sit in the socket when its sentinel fires:
  `_finalize` waits for both the sentinel and EOF, so no finished call is lost.
- A call's timeout clock starts when it becomes `calls[0]`, not when it was sent.
  When it fires, the call fails at once; the worker gets SIGTERM, then SIGKILL after
  `kill_grace_s`; anything else it held goes elsewhere; a replacement starts.
- A worker killed for a timeout may still answer: its messages are ignored.
- Workers die with the parent: each worker blocks in a thread on the read end of a
  pipe whose only write end is in the parent (see `_worker.py`).
- Shared-memory segments are unlinked exactly once. The parent makes and owns an
  argument segment: `run` unlinks it when the call ends, however it ends. A worker
  makes a result (or item) segment; the parent unlinks it as the message arrives,
  before unpickling. If the worker dies first, or is killed and its messages are
  ignored, `_sweep` unlinks what it made once it is gone (names are predictable).
- Pipelining: a worker holds up to `depth` calls (adapted to call length unless
  `pipeline_depth` fixes it), so tiny calls never wait
  for a round trip; the price is that a quick call can wait behind a slow one on the
  same worker. New calls go to the worker holding the fewest.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import itertools
import logging
import multiprocessing
import multiprocessing.spawn
import pickle
import socket
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import psutil

from .. import wire
from ..autoscale import Autoscaler, Policy, PoolLoad, ScalingPolicy, WorkerSample
from ..errors import (
    AppNotRunning,
    QTasksError,
    SerializationError,
    TaskFailed,
    TaskTimeout,
    WorkerCrashed,
)
from ..registries import AsyncTask, Kind, TaskSpec
from . import _worker
from .base import Call, Executor

log = logging.getLogger("qtasks_mp.process")

_STARTING, _READY, _RETIRING, _DOOMED, _GONE = "starting", "ready", "retiring", "doomed", "gone"
_LIVE = (_STARTING, _READY)  # states that count towards `slots`
_END: Any = object()  # end of a generator's items
_SHORT_CALL_S = 0.0005  # calls quicker than this are pipelined deep
_LONG_CALL_S = 0.005  # calls slower than this are sent one at a time
_READ_SIZE = 256 * 1024  # bytes read from a worker at most per loop turn


class _Pending:
    """One call between `run` and its answer."""

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
    ) -> None:
        self.call = call
        self.call_id = call_id
        self.key = key
        self.payload = payload
        self.shm = shm  # [name, lengths] of the arguments' segment: ours to unlink
        self.segments = 0  # result segments of its current worker received so far
        self.started = 0.0  # loop time it became its worker's running call
        self.context = context
        self.fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        generator = call.spec.kind is Kind.GENERATOR
        self.items: asyncio.Queue[Any] | None = asyncio.Queue() if generator else None
        self.worker: _Handle | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.abandoned = False
        self.queued_at = time.monotonic()

    def fail(self, exc: BaseException) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if not self.fut.done():
            self.fut.set_exception(exc)
            self.fut.exception()  # marked retrieved: an abandoned call has no reader
        if self.items is not None:
            self.items.put_nowait(_END)


class _Handle(asyncio.BufferedProtocol):
    """The parent's side of one worker: its process, its socket, the calls it holds.

    A buffered protocol: the loop reads into one reused buffer. The plain protocol's
    `recv(256 KiB)` allocates a fresh buffer per read, which can cost an mmap: in a
    bare asyncio echo test it was a quarter of the round trip (40 µs, 29 µs without).
    """

    def __init__(self, pool: ProcessExecutor, proc: Any) -> None:
        self.pool = pool
        self.proc = proc
        self.pid: int = proc.pid
        self.state = _STARTING
        self.calls: deque[_Pending] = deque()
        self.known: set[int] = set()  # function keys this worker has been sent
        self.sent = 0
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
        self.launched_at = time.monotonic()  # set again, earlier, by `_launch`
        self.idle_since = self.launched_at  # when it last held no call

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.unpacker.feed(self.view[:nbytes])
        for message in self.unpacker:
            self.pool._on_message(self, message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.pool._maybe_finalize(self)

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


class ProcessExecutor(Executor):
    """Runs plain functions and generators in `max_workers` processes (default: CPU count).

    - `start_method`: "forkserver" on Linux, "spawn" elsewhere; the forkserver preloads
      `qtasks_mp` and the modules named in `preload` (each worker imports them too).
    - `max_tasks_per_worker`, `max_memory_per_worker` (bytes of RSS, checked after each
      call): past either, a worker finishes what it holds and is replaced.
    - `autoscale` (default on): the pool starts with `min_workers` and an `Autoscaler`
      grows it up to `max_workers` while calls wait, and retires workers idle for
      `idle_timeout` seconds, keeping `memory_reserve` bytes of memory available (see
      `qtasks_mp.autoscale` and docs/autoscaling.md). Pass a policy object (anything
      with `decide(sample)`) instead of True to replace the default `ScalingPolicy`.
      With `autoscale=False` the pool keeps `max_workers` workers. While autoscaling,
      `slots` is `max_workers` x depth, so calls the pool cannot run yet wait in it,
      where the autoscaler sees them.
    - `pipeline_depth`: calls a worker may hold at once; `slots` is workers x depth.
      None (the default) adapts it to how long calls take: sub-millisecond calls are
      pipelined 16 deep so they never wait on a round trip; calls of 5 ms or more are
      sent one at a time, so no call waits behind a slow one while another worker idles;
      in between, 2.

    A worker that dies fails only the call it was running, with `WorkerCrashed`; the
    `Retries` middleware retries that like any error when the task sets `retry=` (the
    default is no retry). A call past `timeout` fails with `TaskTimeout` and its worker
    is killed and replaced. Constructing this starts nothing: `start()` does.
    """

    name = "process"
    eager = True
    kinds = frozenset({Kind.FUNCTION, Kind.GENERATOR})
    kill_grace_s = 0.5  # between SIGTERM and SIGKILL of a worker that overran
    start_timeout_s = 60.0  # for the first workers to report ready in `start()`

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        start_method: str | None = None,
        preload: Sequence[str] = (),
        max_tasks_per_worker: int | None = None,
        max_memory_per_worker: int | None = None,
        pipeline_depth: int | None = None,
        min_workers: int = 1,
        autoscale: bool | Policy = True,
        idle_timeout: float = 10.0,
        memory_reserve: int = 512 << 20,
        autoscale_interval_s: float = 0.1,
    ) -> None:
        super().__init__()
        methods = multiprocessing.get_all_start_methods()
        if start_method is None:
            start_method = "forkserver" if sys.platform.startswith("linux") else "spawn"
        if start_method not in methods:
            raise ValueError(f"start_method {start_method!r} is not one of {methods}")
        for label, value in [
            ("max_workers", max_workers),
            ("max_tasks_per_worker", max_tasks_per_worker),
            ("max_memory_per_worker", max_memory_per_worker),
            ("pipeline_depth", pipeline_depth),
        ]:
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{label} must be a whole number >= 1, got {value!r}")
        self.max_workers: int = max_workers or multiprocessing.cpu_count()
        if not isinstance(min_workers, int) or not 0 <= min_workers <= self.max_workers:
            raise ValueError(
                f"min_workers must be a whole number from 0 to max_workers "
                f"({self.max_workers}), got {min_workers!r}"
            )
        self.min_workers = min_workers
        self.policy: Policy | None = None
        if autoscale is True:
            self.policy = ScalingPolicy(
                min_workers=min_workers,
                max_workers=self.max_workers,
                idle_timeout=idle_timeout,
                memory_reserve=memory_reserve,
            )
        elif autoscale is not False:
            self.policy = autoscale
        self.autoscale_interval_s = autoscale_interval_s
        self._autoscaler: Autoscaler | None = None
        self._startup_s: float | None = None  # moving average, for the autoscaler
        self.start_method = start_method
        self.preload = list(preload)
        self.max_tasks_per_worker = max_tasks_per_worker
        self.max_memory_per_worker = max_memory_per_worker
        self.pipeline_depth = pipeline_depth
        self._service_s: float | None = None  # moving average of call run time
        self._running = False
        self._workers: list[_Handle] = []
        self._ready: list[_Handle] = []  # workers that take calls
        self._n_live = 0  # workers starting or ready, plus processes being launched
        self._pending: deque[_Pending] = deque()
        self._keys: dict[TaskSpec, int] = {}
        self._functions: dict[int, bytes] = {}  # key -> encoded OP_FUNC message
        self._next_id = 0
        self._inflight = 0
        self._quiet: asyncio.Event | None = None
        self._all_gone: asyncio.Event | None = None
        self._closing: asyncio.Event | None = None
        self._full: asyncio.Event | None = None  # set while every worker wanted is ready
        self._spawners: set[asyncio.Task[None]] = set()
        self._answers: set[asyncio.Task[None]] = set()
        self._failed_starts = 0
        self._alive: tuple[Connection, Connection] | None = None
        self._ctx: Any = None
        self.calls_done = 0
        self.crashes = 0
        self.timeouts = 0
        self.recycles = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def slots(self) -> int:
        if self.policy is not None and self._running:  # calls wait here, seen as backlog
            return self.max_workers * self.depth
        return self._n_live * self.depth

    @property
    def _wanted(self) -> int:
        """How many ready workers `wait_ready` waits for."""
        return self._n_live if self.policy is not None else self.max_workers

    @property
    def depth(self) -> int:
        """Calls a worker may hold at once now (see `pipeline_depth`)."""
        if self.pipeline_depth is not None:
            return self.pipeline_depth
        service = self._service_s
        if service is None:
            return 2
        if service < _SHORT_CALL_S:
            return 16
        return 1 if service >= _LONG_CALL_S else 2

    async def start(self) -> None:
        if self._running:
            return
        if self.start_method == "fork" and threading.active_count() > 1:
            # A forked child gets only the forking thread: locks other threads held
            # (logging's, an allocator's, a driver's) stay locked in it forever.
            raise QTasksError(
                f"process executor {self.name!r}: start_method='fork' in a process that "
                f"runs {threading.active_count()} threads can deadlock its workers; use "
                "'forkserver' (the default on Linux) or 'spawn'"
            )
        ctx = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            # Takes effect only if the forkserver is not running yet (it is per program).
            ctx.set_forkserver_preload(["qtasks_mp.executors._worker", *self.preload])
        self._ctx = ctx
        self._alive = ctx.Pipe(duplex=False)
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._all_gone = asyncio.Event()
        self._closing = asyncio.Event()
        self._full = asyncio.Event()
        self._running = True
        self._failed_starts = 0
        _open_pools.add(self)
        first = self.max_workers if self.policy is None else self.min_workers
        try:
            self._n_live += first
            handles = await self._launch(first)
            if handles:
                await asyncio.wait([h.ready for h in handles], timeout=self.start_timeout_s)
            for h in handles:
                if not h.ready.done():
                    raise QTasksError(
                        f"process executor {self.name!r}: worker {h.pid} did not start within "
                        f"{self.start_timeout_s:g}s"
                    )
                h.ready.result()
        except BaseException:
            await self.aclose(cancel_pending=True)
            raise
        if self.policy is not None:
            self._autoscaler = Autoscaler(self, self.policy, interval_s=self.autoscale_interval_s)
            self._autoscaler.start()
        log.debug(
            "process executor %r: %d workers (%s)", self.name, len(handles), self.start_method
        )

    async def _launch(self, n: int) -> list[_Handle]:
        """Start `n` worker processes; `_n_live` already counts them."""
        loop = asyncio.get_running_loop()
        assert self._alive is not None
        levels = {
            "": logging.getLogger().getEffectiveLevel(),
            "qtasks_mp": logging.getLogger("qtasks_mp").getEffectiveLevel(),
        }
        launched_at = time.monotonic()
        pairs = [socket.socketpair() for _ in range(n)]
        procs = [
            self._ctx.Process(
                target=_worker.main,
                args=(child, self._alive[0], self.preload, levels, self.max_memory_per_worker),
                name=f"qtasks_mp-{self.name}",
            )
            for _, child in pairs
        ]
        try:
            # Process.start() blocks (forkserver: a few ms; its first start, or spawn: more).
            await loop.run_in_executor(None, _start_all, procs)
        except BaseException:
            self._n_live -= n
            for parent, _ in pairs:
                parent.close()
            raise
        finally:
            for _, child in pairs:
                child.close()  # the worker has its own copy; ours would hide its EOF
        handles = []
        for (parent, _), proc in zip(pairs, procs, strict=True):
            # The count in `_n_live` now stands for this handle (state "starting").
            h = _Handle(self, proc)
            h.launched_at = launched_at
            await loop.connect_accepted_socket(functools.partial(_same, h), parent)
            loop.add_reader(proc.sentinel, self._on_exit, h)
            self._workers.append(h)
            if self._all_gone is not None:
                self._all_gone.clear()  # set when the last one went; not true any more
            if not self._running:  # closed while we were starting it
                h.write(wire.packb([wire.OP_STOP]))
                self._set_state(h, _RETIRING)
            handles.append(h)
        return handles

    def _replace(self, delay_s: float = 0.0) -> None:
        """Start one worker in the background, after `delay_s`."""
        if not self._running:
            return
        self._n_live += 1
        task = asyncio.get_running_loop().create_task(self._launch_later(delay_s))
        self._spawners.add(task)
        task.add_done_callback(self._spawners.discard)

    async def _launch_later(self, delay_s: float) -> None:
        if delay_s and self._closing is not None:  # back off: workers die while starting
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay_s)
        if not self._running:
            self._n_live -= 1
            return
        try:
            await self._launch(1)
        except Exception:
            log.exception("process executor %r: could not start a worker", self.name)
            self._replace(min(5.0, max(0.1, delay_s * 2)))

    async def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Wait until `max_workers` workers (autoscaling: every worker it has started)
        are ready to take calls (after `start()`, or after replacing workers that died
        or retired). False if `timeout_s` ran out."""
        if self._full is None:
            raise AppNotRunning(f"the process executor {self.name!r} is not started")
        try:
            await asyncio.wait_for(self._full.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    async def aclose(self, cancel_pending: bool = False) -> None:
        """Stop the workers. Without `cancel_pending`, calls accepted so far finish first;
        with it, calls not finished fail with `CancelledError` and their workers are killed.
        Returns when every worker process has exited and its socket is closed."""
        if self._quiet is None or self._all_gone is None:
            return
        if self._autoscaler is not None:
            await self._autoscaler.stop()  # it must not grow a pool that is closing
        if not cancel_pending and self._running:
            await self._quiet.wait()
        self._running = False
        assert self._closing is not None
        self._closing.set()
        _open_pools.discard(self)
        if self._spawners:
            await asyncio.wait(list(self._spawners))
        while self._pending:
            self._pending.popleft().fail(asyncio.CancelledError())
        for h in list(self._workers):
            if h.calls:
                self._doom(h, asyncio.CancelledError())
            elif h.state in _LIVE:
                h.write(wire.packb([wire.OP_STOP]))
                self._set_state(h, _RETIRING)
        if self._workers:
            try:
                await asyncio.wait_for(self._all_gone.wait(), self.kill_grace_s * 4)
            except asyncio.TimeoutError:
                for h in self._workers:
                    with contextlib.suppress(ValueError, OSError):
                        h.proc.kill()
                await self._all_gone.wait()  # SIGKILL cannot be ignored
        for task in list(self._answers):
            task.cancel()
        if self._alive is not None:
            for end in self._alive:
                end.close()
            self._alive = None
        self._quiet = self._all_gone = self._closing = self._full = None

    # ------------------------------------------------------------------ calls

    async def run(self, call: Call) -> Any:
        if not self._running:
            raise AppNotRunning(
                f"task {call.task_name!r}: the process executor {self.name!r} is not started"
            )
        key = self._keys.get(call.spec)
        if key is None:
            key = self._register(call.spec)
        context = call.context
        args = call.args
        ctx: list[Any] | None = None
        if context is not None:
            # The context holds the app; the worker gets a stand-in that asks us instead.
            args = args[1:]
            ctx = [context.task_name, str(context.uuid), context.attempt]
        payload, shm = _encode_args(call.task_name, args, call.kwargs)
        self._next_id += 1
        p = _Pending(call, self._next_id, key, payload, shm, ctx)
        self._inflight += 1
        assert self._quiet is not None
        self._quiet.clear()
        try:
            self._submit(p)
            if p.items is None:
                message = await p.fut
                return self._result(p, message)
            return await self._stream(p)
        except asyncio.CancelledError:
            self._abandon(p)
            raise
        finally:
            if shm is not None:
                # Exactly once, however the call ended. A worker still running it (it
                # was cancelled) keeps its mapping; one yet to start it fails to open it.
                wire.shm_unlink(shm[0])
            self._inflight -= 1
            if not self._inflight and self._quiet is not None:
                self._quiet.set()

    async def _stream(self, p: _Pending) -> list[Any]:
        """Collect a generator's items as they arrive; the handler runs here, per item."""
        assert p.items is not None
        out = []
        while True:
            got = await p.items.get()
            if got is _END:
                break
            try:
                data, buffers = got
                if isinstance(buffers, OSError):
                    raise buffers
                item = wire.loads(data, buffers)
            except Exception as e:
                self._abandon(p)
                raise SerializationError(
                    f"task {p.call.task_name!r}: a yielded item could not be unpickled in the "
                    f"parent: {type(e).__name__}: {e}"
                ) from e
            try:
                out.append(await p.call.handle_item(item))
            except BaseException:
                self._abandon(p)
                raise
        self._result(p, p.fut.result())
        return out

    def _register(self, spec: TaskSpec) -> int:
        """Give `spec`'s function a key and encode it once, for every worker to come."""
        try:
            ref, blob = wire.dumps_function(spec.fn)
        except Exception as e:
            raise SerializationError(
                f"task {spec.name!r}: its function {wire.type_name(spec.fn)} cannot be pickled "
                f"for a worker process: {type(e).__name__}: {e}. Define it at module level."
            ) from e
        key = len(self._functions) + 1
        self._functions[key] = wire.packb(
            [wire.OP_FUNC, key, ref, blob, spec.kind is Kind.GENERATOR]
        )
        self._keys[spec] = key
        return key

    def _submit(self, p: _Pending) -> None:
        best: _Handle | None = None
        depth = self.depth
        for h in self._ready:
            held = len(h.calls)
            if held == 0:
                best = h
                break
            if held < depth and (best is None or held < len(best.calls)):
                best = h
        if best is None:
            if not self._pending and self._autoscaler is not None:
                self._autoscaler.nudge()  # calls start to wait: sample now
            self._pending.append(p)
        else:
            self._send(best, p)

    def _send(self, h: _Handle, p: _Pending) -> None:
        data = wire.packb([wire.OP_CALL, p.call_id, p.key, p.payload, p.context, p.shm])
        if p.key not in h.known:
            h.known.add(p.key)
            data = self._functions[p.key] + data
        h.write(data, now=not h.calls)
        h.calls.append(p)
        p.worker = h
        h.sent += 1
        if len(h.calls) == 1:
            self._arm(p)
        limit = self.max_tasks_per_worker
        if limit is not None and h.sent >= limit:
            self.recycles += 1
            self._retire(h)

    def _feed(self, h: _Handle) -> None:
        """Give waiting calls to `h` while it has room."""
        pending = self._pending
        depth = self.depth
        while pending and h.state is _READY and len(h.calls) < depth:
            p = pending.popleft()
            if not p.abandoned:
                self._send(h, p)

    def _drain(self) -> None:
        for h in list(self._ready):
            if not self._pending:
                return
            self._feed(h)

    def _arm(self, p: _Pending) -> None:
        """`p` starts running now: start its timeout clock."""
        loop = asyncio.get_running_loop()
        p.started = loop.time()
        timeout = p.call.timeout
        if timeout is not None:
            p.timer = loop.call_later(timeout, self._on_timeout, p)

    def _abandon(self, p: _Pending) -> None:
        """Nobody waits for `p` any more (cancelled, or its stream failed)."""
        p.abandoned = True
        if p.timer is not None:
            p.timer.cancel()
        h = p.worker
        if h is None:
            with contextlib.suppress(ValueError):
                self._pending.remove(p)
        elif h.calls and h.calls[0] is p and h.state in (_READY, _RETIRING):
            self._doom(h, asyncio.CancelledError())  # the only way to stop running code

    # ------------------------------------------------------------------ answers

    def _result(self, p: _Pending, message: list[Any]) -> Any:
        if message[0] == wire.OP_OK:
            try:
                buffers = message[3]
                if isinstance(buffers, OSError):
                    raise buffers
                return wire.loads(message[2], buffers)
            except (Exception, SystemExit) as e:
                raise SerializationError(
                    f"task {p.call.task_name!r}: its result could not be unpickled in the "
                    f"parent: {type(e).__name__}: {e}"
                ) from e
        raise _error(p.call, message)

    def _on_message(self, h: _Handle, message: list[Any]) -> None:
        if h.state is _DOOMED or h.state is _GONE:
            return  # killed: what it still says is void
        op = message[0]
        if op == wire.OP_OK or op == wire.OP_ERR:
            p = h.calls.popleft()  # FIFO: the worker answers in the order it received
            ran = asyncio.get_running_loop().time() - p.started
            previous = self._service_s
            self._service_s = ran if previous is None else 0.8 * previous + 0.2 * ran
            if op == wire.OP_OK and message[3] is not None:
                message[3] = _take(p, message[3])
            if p.timer is not None:
                p.timer.cancel()
            h.done += 1
            self.calls_done += 1
            if not h.calls:
                h.idle_since = time.monotonic()
            if not p.fut.done():
                p.fut.set_result(message)
            if p.items is not None:
                p.items.put_nowait(_END)
            if message[-1] and h.state is _READY:  # past max_memory_per_worker
                self.recycles += 1
                self._retire(h)
            if h.calls:
                self._arm(h.calls[0])
            if self._pending and h.state is _READY:
                self._feed(h)
        elif op == wire.OP_ITEM:
            p = h.calls[0]
            buffers = None if message[3] is None else _take(p, message[3])
            if p.items is not None and not p.abandoned:
                p.items.put_nowait((message[2], buffers))
        elif op == wire.OP_LOG:
            _emit(message[1])
        elif op == wire.OP_ADD:
            task = asyncio.get_running_loop().create_task(self._answer(h, message))
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)
        elif op == wire.OP_READY:
            h.idle_since = time.monotonic()
            startup = h.idle_since - h.launched_at
            previous = self._startup_s
            self._startup_s = startup if previous is None else 0.8 * previous + 0.2 * startup
            self._set_state(h, _READY)
            self._failed_starts = 0
            if not h.ready.done():
                h.ready.set_result(None)
            self._feed(h)
            self.wakeup()
        elif op == wire.OP_FATAL:
            h.fatal = message[1]

    async def _answer(self, h: _Handle, message: list[Any]) -> None:
        """Run a worker's `context.add_task(...)` here and send back the `Task`."""
        _, call_id, request_id, payload = message
        p = next((p for p in h.calls if p.call_id == call_id), None)
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
        if h.state is not _DOOMED and h.state is not _GONE:
            h.write(wire.packb([wire.OP_REPLY, request_id, ok, data]), now=True)

    # ------------------------------------------------------------------ worker states

    def _set_state(self, h: _Handle, state: str) -> None:
        if h.state is _READY:
            self._ready.remove(h)
        if h.state in _LIVE:
            self._n_live -= 1
        h.state = state
        if state is _READY:
            self._ready.append(h)
        if state in _LIVE:
            self._n_live += 1
        self._check_full()

    def _check_full(self) -> None:
        if self._full is not None:
            if len(self._ready) >= self._wanted:
                self._full.set()
            else:
                self._full.clear()

    # ------------------------------------------------------------------ autoscaling

    @property
    def autoscaler(self) -> Autoscaler | None:
        """The autoscaler while the pool runs (None before `start()` or without
        autoscale); append to its `on_decision` to hear of each decision."""
        return self._autoscaler

    def load(self) -> PoolLoad:
        """The pool now, for the autoscaler. A worker still being launched has no
        process yet: it is reported as starting, with a pid <= 0."""
        now = time.monotonic()
        waiting = [p.queued_at for p in self._pending if not p.abandoned]
        workers = []
        for h in self._workers:
            if h.state not in _LIVE:
                continue
            waiting += [p.queued_at for p in itertools.islice(h.calls, 1, None)]
            starting = h.state is _STARTING
            idle_s = 0.0 if h.calls or starting else now - h.idle_since
            workers.append(WorkerSample(h.pid, bool(h.calls), idle_s, starting))
        launching = self._n_live - len(workers)
        workers += [WorkerSample(-n, starting=True) for n in range(launching)]
        return PoolLoad(
            backlog=len(waiting),
            oldest_wait_s=now - min(waiting) if waiting else 0.0,
            workers=tuple(workers),
            full=self.active >= self.slots,
            mean_call_s=self._service_s,
            startup_s=self._startup_s,
        )

    def grow(self, n: int) -> int:
        """Start up to `n` more workers in the background, never past `max_workers`."""
        n = max(0, min(n, self.max_workers - self._n_live)) if self._running else 0
        for _ in range(n):
            self._replace()
        self._check_full()
        return n

    def retire(self, pid: int) -> bool:
        """Stop the ready worker `pid` for good if it holds no call; False otherwise."""
        h = next((h for h in self._ready if h.pid == pid), None)
        if h is None or h.calls:
            return False
        self._set_state(h, _RETIRING)  # out of `_ready`: it gets no new call
        h.write(wire.packb([wire.OP_STOP]))
        return True

    def _retire(self, h: _Handle) -> None:
        """Replace `h` gracefully: it finishes what it holds, then exits."""
        self._set_state(h, _RETIRING)
        h.write(wire.packb([wire.OP_STOP]))
        self._replace()

    def _doom(self, h: _Handle, exc: BaseException) -> None:
        """Kill `h` now: its running call fails with `exc`, the rest go elsewhere."""
        replace = h.state in _LIVE
        self._set_state(h, _DOOMED)
        self._lose(h, exc)
        if not h.exited:
            with contextlib.suppress(ValueError, OSError):
                h.proc.terminate()
            asyncio.get_running_loop().call_later(self.kill_grace_s, self._kill, h)
        if replace:
            self._replace()

    def _kill(self, h: _Handle) -> None:
        if not h.exited and h.state is not _GONE:
            with contextlib.suppress(ValueError, OSError):
                h.proc.kill()

    def _lose(self, h: _Handle, exc: BaseException) -> None:
        """`h` will answer nothing more: fail its running call, requeue the others."""
        calls = list(h.calls)
        h.calls.clear()
        if not calls:
            return
        # What it sends from now on is ignored: once it is dead, `_sweep` unlinks the
        # segments it made for these calls. (Any of them: calls[0] may have finished
        # and the next started, its answer still unread.)
        h.orphans += [(p.call_id, p.segments) for p in calls]
        calls[0].fail(exc)
        for p in reversed(calls[1:]):  # received, never started: not their fault
            p.worker = None
            p.segments = 0
            if not p.abandoned:
                self._pending.appendleft(p)
        self._drain()

    def _on_timeout(self, p: _Pending) -> None:
        h = p.worker
        if h is None or not h.calls or h.calls[0] is not p or p.call.timeout is None:
            return
        self.timeouts += 1
        exc = TaskTimeout(
            p.call.task_name,
            p.call.timeout,
            f"its worker process (pid {h.pid}) was killed and replaced",
        )
        log.warning("%s", exc)
        self._doom(h, exc)

    def _on_exit(self, h: _Handle) -> None:
        """The worker's process sentinel fired: it exited."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(h.proc.sentinel)
        h.exited = True
        h.exitcode = h.proc.exitcode
        if not h.eof:
            # Answers sent just before it died may still be in the socket: wait for
            # EOF. (A grandchild holding the socket open would delay EOF forever.)
            loop.call_later(1.0, self._finalize, h)
        self._maybe_finalize(h)

    def _maybe_finalize(self, h: _Handle) -> None:
        if h.eof and h.exited:
            self._finalize(h)

    def _finalize(self, h: _Handle) -> None:
        """The worker is gone and has said all it will: account for what it held."""
        if h.state is _GONE:
            return
        prior = h.state
        self._set_state(h, _GONE)
        if h.transport is not None:
            h.transport.close()
        with contextlib.suppress(ValueError):
            h.proc.close()
        self._workers.remove(h)
        code = h.exitcode
        crashed = prior is not _DOOMED and bool(h.calls)  # a doomed one's were dealt with
        if crashed:
            self.crashes += 1
            head = h.calls[0]
            log.error("worker %d running task %r died (exit code %s)", h.pid, head.call, code)
            self._lose(h, WorkerCrashed(head.call.task_name, code))
        self._sweep(h)
        if not self._workers and self._all_gone is not None:
            self._all_gone.set()
        if prior is _DOOMED:
            return
        if not crashed and prior is _READY and self._running:
            self.crashes += 1
            log.warning("idle worker %d died (exit code %s)", h.pid, code)
        if prior is _STARTING:
            self._start_failed(h)
        elif prior is _READY:
            self._replace()
        self.wakeup()

    def _sweep(self, h: _Handle) -> None:
        """Unlink the result segments a dead worker made and we never received.

        A worker numbers a call's segments _0, _1, ... and makes each only after the
        last was sent; we received them in order. So they are the names from the first
        we did not receive, up to the first that does not exist."""
        for call_id, n in h.orphans:
            while wire.shm_unlink(wire.result_segment(h.pid, call_id, n)):
                n += 1
        h.orphans.clear()

    def _start_failed(self, h: _Handle) -> None:
        error = QTasksError(
            f"process executor {self.name!r}: worker {h.pid} died while starting "
            f"(exit code {h.exitcode})"
        )
        if h.fatal:
            error.__cause__ = wire.RemoteTraceback(h.fatal)
        if not h.ready.done():
            h.ready.set_exception(error)
            h.ready.exception()
        if not self._running:
            return
        self._failed_starts += 1
        if self._failed_starts >= 3:  # workers cannot start: do not let calls wait forever
            log.error("%s", error)
            while self._pending:
                self._pending.popleft().fail(error)
        self._replace(min(5.0, 0.05 * 2**self._failed_starts))

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        workers = {}
        for h in self._workers:
            try:
                rss = psutil.Process(h.pid).memory_info().rss
            except psutil.Error:
                rss = None
            workers[h.pid] = {"state": h.state, "held": len(h.calls), "done": h.done, "rss": rss}
        return {
            **super().stats(),
            "start_method": self.start_method,
            "min_workers": self.min_workers if self.policy is not None else self.max_workers,
            "max_workers": self.max_workers,
            "workers": self._n_live,  # ready, or starting to replace one that left
            "starting": self._n_live - len(self._ready),
            "busy": sum(1 for h in self._workers if h.calls),
            "pids": [h.pid for h in self._workers if h.state in _LIVE],
            "queued": len(self._pending) + sum(max(0, len(h.calls) - 1) for h in self._workers),
            "per_worker": workers,
            "calls_done": self.calls_done,
            "crashes": self.crashes,
            "timeouts": self.timeouts,
            "recycles": self.recycles,
            "startup_s": self._startup_s,
            "autoscale": None if self._autoscaler is None else self._autoscaler.stats(),
        }


def _error(call: Call, message: list[Any]) -> BaseException:
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


_arg_segments = itertools.count(1)  # numbers the names of argument segments


def _encode_args(
    task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[bytes, list[Any] | None]:
    """A call's payload, and `[name, lengths]` of the segment holding its large buffers."""
    buffers: list[pickle.PickleBuffer] | None = [] if wire.SHM else None
    try:
        payload = wire.dumps_args(args, kwargs, buffers)
        if not buffers:
            return payload, None
        try:
            return payload, wire.shm_create(wire.args_segment(next(_arg_segments)), buffers)
        except OSError as e:  # no room in /dev/shm: the slow way, through the socket
            log.warning(
                "task %r: shared memory for its arguments failed (%s): sent through the socket",
                task_name,
                e,
            )
            return wire.dumps_args(args, kwargs), None
    except ValueError as e:
        raise SerializationError(
            f"task {task_name!r}: {e}. Pass data a worker process can unpickle "
            "(plain values, or classes defined at module level)."
        ) from e.__cause__


def _take(p: _Pending, shm: list[Any]) -> list[memoryview] | OSError:
    """Map (and unlink: it is ours now) a result segment as its message arrives, so
    that it is unlinked even if nobody reads the result."""
    p.segments += 1
    try:
        return wire.shm_open(*shm, unlink=True)
    except OSError as e:
        return e


def _emit(fields: dict[str, Any]) -> None:
    """Hand a worker's log record to this process's logger of the same name."""
    record = logging.makeLogRecord(fields)
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


def _same(h: _Handle) -> _Handle:
    return h


def _start_all(procs: list[Any]) -> None:
    _install_main_filter()
    _launching.active = True
    try:
        for proc in procs:
            proc.start()
    finally:
        _launching.active = False


# Under spawn and forkserver, multiprocessing re-runs the parent's main module in every
# child (as `__mp_main__`) so that functions of `__main__` can be found by name. Our
# workers do not need it (functions of `__main__` travel by value, with cloudpickle),
# and a script that starts its app at module level, with no `if __name__ ==
# "__main__":` guard, would start it again in every worker. So, for the processes we
# launch (and only those: a thread-local flag), the main module is left out of the
# preparation data. The wrapper is installed once and passes everything else through.
_launching = threading.local()


def _install_main_filter() -> None:
    original = multiprocessing.spawn.get_preparation_data
    if getattr(original, "_qtasks_mp", False):
        return

    def get_preparation_data(name: str) -> dict[str, Any]:
        data: dict[str, Any] = original(name)
        if getattr(_launching, "active", False):
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    get_preparation_data._qtasks_mp = True  # type: ignore[attr-defined]
    multiprocessing.spawn.get_preparation_data = get_preparation_data


# A program that exits without closing its pools must not hang in multiprocessing's
# own atexit hook, which joins every child: kill our workers first. (atexit runs
# handlers last-registered first; multiprocessing registered its hook on import.)
_open_pools: weakref.WeakSet[ProcessExecutor] = weakref.WeakSet()


@atexit.register
def _kill_open_pools() -> None:
    for pool in list(_open_pools):
        for h in pool._workers:
            with contextlib.suppress(ValueError, OSError):
                h.proc.kill()
