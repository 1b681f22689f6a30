"""Which worker runs which call, and when. Everything here runs in the pool's loop."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ... import wire
from ...errors import SerializationError, TaskCancelError, TaskTimeout
from ...lending import running_call
from ...registries import Kind, TaskSpec
from .calls import PendingCall, answer_add_task, emit_log, report_progress
from .handle import WorkerHandle, WorkerState

if TYPE_CHECKING:
    from ..base import Call
    from .pool import ProcessExecutor
    from .roster import Roster

log = logging.getLogger("qtasks_mp.process")

_LONG_CALL_S = 0.005  # calls slower than this are sent one at a time
_QUEUED_S = 0.008  # quicker ones: about this much work may queue behind a worker's call
_MAX_DEPTH = 128
READY = WorkerState.READY


def _depth(service_s: float | None, unknown: int) -> int:
    """Calls a worker may hold at once, for calls that take `service_s` (None: unknown).

    Quick calls are pipelined deep: each write to a worker then carries many calls. A
    write that wakes an idle worker costs the loop 10-20 us on a virtual machine (the
    wake-up crosses CPUs), more than a no-op call's whole share of the parent's work;
    at 16 deep a gather of no-ops wrote 0.15-0.19 times per call, at 128 0.05. The
    depth is bounded by the work that may wait behind one slow call (`_QUEUED_S`)."""
    if service_s is None:
        return unknown
    if service_s >= _LONG_CALL_S:
        return 1
    return max(2, min(_MAX_DEPTH, int(_QUEUED_S / service_s)))


class Scheduler:
    """The calls of one pool: those no worker has room for yet (`pending`), which
    worker gets each (the ready one holding fewest, up to `depth`), each running call's
    timeout clock, and each answer back to its `PendingCall`.

    Functions are encoded once (`key`) and sent to each worker once, before its first
    call that needs them.
    """

    def __init__(self, pool: ProcessExecutor) -> None:
        self.pool = pool
        self.pending: deque[PendingCall] = deque()
        self._service_s: float | None = None  # moving average of call run time
        # Calls a worker may hold at once now (see `pipeline_depth`): asked for on
        # every call (`ProcessExecutor.slots`), so kept, and set with `service_s`.
        self.depth = _depth(None, unknown=2) if pool.pipeline_depth is None else pool.pipeline_depth
        self._service_by_key: dict[int, float] = {}  # ... per function (`depth_for`)
        # `depth_for` of each function timed so far, kept as its times come (asked for
        # several times per call); a fixed `pipeline_depth` is every function's depth.
        self._depths: dict[int, int] = {}
        self._untimed = 1 if pool.pipeline_depth is None else pool.pipeline_depth
        self._keys: dict[TaskSpec, int] = {}
        self._functions: dict[int, bytes] = {}  # key -> encoded OP_FUNC message
        self.answers: set[asyncio.Task[None]] = set()  # workers' add_task being run here

    @property
    def roster(self) -> Roster:
        roster = self.pool.roster
        assert roster is not None, "the pool is not started"
        return roster

    @property
    def service_s(self) -> float | None:
        """The moving average of call run time (None: no call has answered yet)."""
        return self._service_s

    @service_s.setter
    def service_s(self, value: float | None) -> None:
        self._service_s = value
        if self.pool.pipeline_depth is None:
            self.depth = _depth(value, unknown=2)

    def depth_for(self, key: int) -> int:
        """Calls a worker may hold when the next one is of function `key`: as `depth`,
        but from that function's own run times, and 1 until one of its calls has
        answered. A batch of a function never seen before is sent one call per worker,
        so a long call never waits behind another while a worker idles; the pool's
        average would pipeline a new long function as deep as the quick ones before it.
        """
        return self._depths.get(key, self._untimed)

    def key(self, spec: TaskSpec) -> int:
        """`spec`'s function's key; encoded once, for every worker to come."""
        key = self._keys.get(spec)
        if key is not None:
            return key
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

    # ---------------------------------------------------------------- to the workers

    def submit(self, p: PendingCall) -> None:
        """Send `p` to the ready worker holding fewest calls, or queue it."""
        best: WorkerHandle | None = None
        depths, untimed = self._depths, self._untimed  # (`depth_for`, inlined)
        fewest = depths.get(p.key, untimed)  # a worker holding this many has no room
        for h in self.roster.workers:
            held = len(h.calls)
            if (
                held < fewest
                and h.takes_calls
                and (not held or held < depths.get(h.calls[0].key, untimed))  # `_behind`
            ):
                best, fewest = h, held
                if not held:
                    break
        if best is None:
            if not self.pending:
                self.pool.calls_wait()
            self.pending.append(p)
        else:
            self._send(best, p)

    def _send(self, h: WorkerHandle, p: PendingCall) -> None:
        data = p.message()
        if p.key not in h.known:
            h.known.add(p.key)
            data = self._functions[p.key] + data
        h.write(data, now=not h.calls)
        h.calls.append(p)
        p.worker = h
        h.sent += 1
        if len(h.calls) == 1:
            self._arm(h, p)
        limit = self.pool.max_tasks_per_worker
        if limit is not None and h.sent >= limit:
            self.pool.recycles += 1
            self.roster.retire(h, replace=True)

    def feed(self, h: WorkerHandle) -> None:
        """Give waiting calls to `h` while it has room."""
        pending = self.pending
        while (
            pending
            and h.takes_calls
            and len(h.calls) < self.depth_for(pending[0].key)
            and (not h.calls or len(h.calls) < self._behind(h))
        ):
            p = pending.popleft()
            if not p.abandoned:
                self._send(h, p)

    def _behind(self, h: WorkerHandle) -> int:
        """Calls `h` may hold while it runs its first: as deep as that call's function
        may be pipelined. Quick calls never queue deep behind a long one (or one whose
        length is not known yet) while another worker could take them."""
        return self.depth_for(h.calls[0].key)

    def _drain(self) -> None:
        for h in self.roster.ready:
            if not self.pending:
                return
            self.feed(h)

    def _arm(self, h: WorkerHandle, p: PendingCall) -> None:
        """`p` starts running now on `h`: start its timeout clock."""
        loop = h.loop  # (not get_running_loop(): a getpid() syscall each on Python 3.11)
        p.started = loop.time()
        timeout = p.call.timeout
        if timeout is not None:
            p.timer = loop.call_later(timeout, self._on_timeout, p)

    def abandon(self, p: PendingCall) -> None:
        """Nobody waits for `p` any more (cancelled, or its stream failed)."""
        p.abandoned = True
        if p.timer is not None:
            p.timer.cancel()
        h = p.worker
        if h is None:
            if p in self.pending:
                self.pending.remove(p)
        elif h.calls and h.calls[0] is p and h.state in (READY, WorkerState.RETIRING):
            self.roster.doom(h, asyncio.CancelledError())  # the only way to stop running code

    def cancel(self, call: Call) -> bool:
        """`app.cancel()` of `call`: its `run` ends now with `TaskCancelError`. Not yet
        sent: dropped. Running (its worker's `calls[0]`): the worker is killed and
        replaced, the calls pipelined behind it go to other workers. Pipelined behind
        another call: abandoned (the worker may already have started it, so it cannot
        be skipped safely; it is a short call, or it would not be pipelined) and its
        answer ignored. A linear search: cancels are rare, and the hot path pays nothing."""
        for p in self.pending:
            if p.call is call:
                self.pending.remove(p)
                p.abandoned = True
                p.fail(TaskCancelError("cancelled: by app.cancel() before it started"))
                return True
        for h in self.roster.workers:
            for i, p in enumerate(h.calls):
                if p.call is not call:
                    continue
                if i == 0 and h.state in (READY, WorkerState.RETIRING):
                    self.pool.cancels += 1
                    self.roster.doom(
                        h,
                        TaskCancelError(
                            f"cancelled: by app.cancel(); its worker process (pid {h.pid}) "
                            "was killed and replaced"
                        ),
                    )
                else:
                    p.abandoned = True
                    p.fail(TaskCancelError("cancelled: by app.cancel(); its answer is ignored"))
                return True
        return False

    def _on_timeout(self, p: PendingCall) -> None:
        h = p.worker
        if h is None or not h.calls or h.calls[0] is not p or p.call.timeout is None:
            return
        self.pool.timeouts += 1
        exc = TaskTimeout(
            p.call.task_name,
            p.call.timeout,
            f"its worker process (pid {h.pid}) was killed and replaced",
        )
        log.warning("%s", exc)
        self.roster.doom(h, exc)

    def lose(self, h: WorkerHandle, exc: BaseException) -> None:
        """`h` will answer nothing more: fail its running call, requeue the others."""
        calls = h.release_calls()
        if not calls:
            return
        calls[0].fail(exc)
        self.pending.extendleft(p for p in reversed(calls[1:]) if not p.abandoned)
        self._drain()

    def fail_waiting(self, error: BaseException) -> None:
        """Fail every call no worker holds yet."""
        while self.pending:
            self.pending.popleft().fail(error)

    def lend(self, h: WorkerHandle) -> None:
        """`h`'s running call waits for a nested task (`add_task(..., timeout=)`): its
        slot is lent to the pool until then.

        Without this, calls waiting for tasks that only this pool can run would hold
        every worker: with one worker the nested call times out, N of them on N
        workers deadlock. So: the calls pipelined behind it go to other workers (it is
        told to skip them), it gets no new one, and the pool may run one more worker
        than `max_workers` per lent slot (`Roster.surplus`)."""
        if not self.roster.lend(h):
            return
        behind = list(itertools.islice(h.calls, 1, None))
        if behind:
            while len(h.calls) > 1:
                h.calls.pop()
            h.write(wire.packb([wire.OP_SKIP, [p.call_id for p in behind]]), now=True)
            for p in behind:
                p.worker = None
            self.pending.extendleft(p for p in reversed(behind) if not p.abandoned)
        self.roster.grow_for_lent()
        self._drain()
        self.pool.room_changed()

    def answer(self, h: WorkerHandle, message: list[Any]) -> None:
        """An OP_ADD: run the worker's `context.add_task(...)` here, in a task of its own."""
        task = asyncio.get_running_loop().create_task(self._answer(h, message))
        self.answers.add(task)
        task.add_done_callback(self.answers.discard)

    async def _answer(self, h: WorkerHandle, message: list[Any]) -> None:
        # Not a wait of whatever call ran where this task's context was copied from (a
        # worker launched from an inline task's `app.cancel`): this pool lends its own.
        running_call.set(None)
        _, call_id, request_id, payload, waits = message
        p = next((p for p in h.calls if p.call_id == call_id), None)
        if waits:  # the worker waits for a task this pool may have to run
            self.lend(h)
        try:
            reply = await answer_add_task(p, request_id, payload)
        finally:
            if waits:
                self.give_back(h)
        if h.alive:
            h.write(reply, now=True)

    def give_back(self, h: WorkerHandle) -> None:
        """The nested wait of `h`'s running call ended: its slot is its own again."""
        if self.pool.roster is None or not self.pool.roster.give_back(h):
            return
        self.roster.shed_surplus()
        if self.pending:
            self.feed(h)

    # ---------------------------------------------------------------- from the workers

    def on_message(self, h: WorkerHandle, message: list[Any]) -> None:
        """One message from worker `h`."""
        if not h.alive:
            return  # killed: what it still says is void
        op = message[0]
        if op == wire.OP_OK or op == wire.OP_ERR:
            self.answered(h, message)
        elif op == wire.OP_ITEM:
            self.item(h, message)
        elif op == wire.OP_LOG:
            emit_log(message[1])
        elif op == wire.OP_ADD:
            self.answer(h, message)
        elif op == wire.OP_PROGRESS:
            report_progress(h.calls, message)
        elif op == wire.OP_READY:
            self.roster.on_ready(h)
            self.feed(h)
            self.pool.room_changed()
        elif op == wire.OP_FATAL:
            h.fatal = message[1]

    def answered(self, h: WorkerHandle, message: list[Any]) -> None:
        """An OP_OK or OP_ERR: the answer to `h`'s running call."""
        p = h.calls.popleft()  # FIFO: the worker answers in the order it received
        ran = h.loop.time() - p.started
        previous = self.service_s
        self.service_s = ran if previous is None else 0.8 * previous + 0.2 * ran
        by_key = self._service_by_key
        previous = by_key.get(p.key)
        by_key[p.key] = mean = ran if previous is None else 0.8 * previous + 0.2 * ran
        if self.pool.pipeline_depth is None:
            self._depths[p.key] = _depth(mean, unknown=1)
        if message[0] == wire.OP_OK and message[3] is not None:
            message[3] = p.take_segment(message[3])
        h.done += 1
        self.pool.calls_done += 1
        if not h.calls:
            h.idle_since = time.monotonic()
        p.answered(message)
        if message[-1] and h.state is READY:  # past max_memory_per_worker
            self.pool.recycles += 1
            self.roster.retire(h, replace=True)
        if h.calls:
            self._arm(h, h.calls[0])
        elif h.takes_calls and self.roster.surplus() > 0:  # started for a lent slot
            self.roster.retire(h, replace=False)
        if self.pending:
            self.feed(h)
        elif not h.calls:  # hook: idle, nothing waits; a sync caller may want it
            self.pool.direct.idle(h)

    def ack(self, p: PendingCall) -> None:
        """One item of `p`'s generator was handled: its worker may send one more."""
        h = p.worker
        if h is not None and h.alive and h.calls and h.calls[0] is p:
            h.write(wire.packb([wire.OP_ACK, p.call_id, 1]), now=True)

    def item(self, h: WorkerHandle, message: list[Any]) -> None:
        """An OP_ITEM: one item yielded by `h`'s running call."""
        p = h.calls[0]
        buffers = None if message[3] is None else p.take_segment(message[3])
        if p.items is not None and not p.abandoned:
            p.items.put_nowait([message[2], buffers])
