"""Direct calls: a sync caller's thread talks to a parked worker itself.

A sync caller (`qtasks_mp.QueueTasks.add_task(..., timeout=)` from a plain thread)
waits anyway. Handing its call to the app's loop and the answer back costs two
cross-thread wake-ups on top of the worker's round trip, and took longer than the
round trip itself. So the pool lends idle workers to such callers:

    loop                                   caller thread
    ----                                   -------------
    park(h): stop reading h's socket  ──>  take(): h, under one lock
                                           OP_CALL sent on h's socket
    flush (posted if no flush timer  <──── accept left in `steps`
      is armed, else by the timer):        blocking read of the answer
      accept: store, waiters, the chain    OP_OK: decided "ok" (lock); h back
      ... and the ending: run() returns <─ the ending left in `steps`
                                           the finished Task returned

This module is the caller thread's side: take a parked worker, send the call, read
the answer. The loop's side is `parked.py`: parking and recalling workers, adopting a
call handed back, and every step a thread leaves the loop (what it does, and when the
loop runs it: the flush timer).

What the caller decides alone is the happy ending: a plain OP_OK for its call, with
nothing else said by the worker.

Anything else hands the worker back to the loop with the call in flight (`adopt`),
and the call goes on as if the loop had sent it: a message other than the answer
(log, progress, nested add_task), the answer's buffers in shared memory, a worker
asking to retire, EOF (the worker died: `WorkerCrashed`), the task's own `timeout`
(`TaskTimeout`: the loop kills the worker), the caller's timeout (the caller gets
None), `app.cancel()` (the loop signals the worker, whose EOF hands it back), the
pool closing. An OP_ERR goes to the loop too (`Retries` may put the task back), but
the worker stays parked. The caller then waits for the outcome the normal way.

Ownership. A free parked worker is the lock's; a held one is its thread's: the
thread alone reads and writes its socket (a duplicate of its descriptor), its
unpacker and its `known` function keys, until it puts it back. The loop recalls free
parked workers when its own calls wait for a worker (`recall_free`), at close, and
when a worker is retired; a held one comes back when its thread is done. Who decides
a call's ending is settled under the lock: the thread ("ok"), or the loop (a cancel
asked before that).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ... import wire
from ...registries import TaskSpec
from ...task import TaskRecord
from .handle import WorkerHandle
from .offload import encode_args
from .parked import DirectCall, ParkedWorkers

if TYPE_CHECKING:
    from ...dispatcher import Taken

#: What `DirectCalls.call` returns when the caller should wait the normal way.
WAIT = "wait"
#: ... when the caller's own timeout ran out (the call goes on; the caller gets None).
LATE = "late"


class DirectCalls(ParkedWorkers):
    """The parked workers of one pool, and the calls threads make on them: the
    threads' side here, the loop's in `ParkedWorkers`."""

    def available(self) -> bool:
        """(Any thread.) Whether a parked worker is free now (`take` may still find
        none: another thread may be quicker). If not, the pool is asked to park one."""
        if self.pool.max_tasks_per_worker is not None:
            return False  # recycling counts calls sent by the loop
        if self.pool.scheduler.pending:
            return False  # the loop's calls wait for a worker: they come first
        if self.free:
            return True
        self.ask_to_park()
        return False

    def take(self) -> WorkerHandle | None:
        """A free parked worker, now held by this thread; None if none is free."""
        with self.lock:
            if not self.open or not self.free:
                return None
            h = self.free.pop()
            self.held.add(h)
            return h

    def put_back(self, h: WorkerHandle) -> None:
        """`h` goes back unused (or after an answer this thread took)."""
        with contextlib.suppress(OSError):
            self.socks[h].setblocking(False)  # the transport's descriptor, shared
        with self.lock:
            self.held.discard(h)
            # The loop's calls wait for a worker (`pending`; see `ProcessExecutor.
            # calls_wait`, which recalls only free ones): it gets this one.
            to_loop = not self.open or bool(self.pool.scheduler.pending)
            if not to_loop:
                self.free.append(h)
        if to_loop:
            self.post_given_back(h)

    def call(
        self,
        h: WorkerHandle,
        spec: TaskSpec,
        record: TaskRecord,
        wait_s: float,
        accept: Callable[[], Taken | None],
    ) -> tuple[str, Any] | None:
        """Run `record` on `h` (held by this thread), waiting at most `wait_s`.

        `accept` is the loop's side of the call (store, waiters, the chain), run in
        the loop: posted once the call is sent, so that the loop's work overlaps the
        worker's. None: not sent (the function was never sent to any worker, or the
        arguments hold large buffers), `h` put back, nothing posted. ("ok", value),
        (WAIT, None) or (LATE, None) otherwise (see the module doc)."""
        pool = self.pool
        key = pool.function_key(spec)
        try:
            payload, buffers = (
                (b"", None) if key is None else encode_args(spec.name, record.args, record.kwargs)
            )
        except Exception:  # the normal path fails the task, as it always has
            buffers = None
            key = None
        if key is None or buffers is not None:
            self.put_back(h)
            return None
        d = DirectCall(record, h, next(pool.call_ids), key)
        ctx = [spec.name, str(record.uuid), record.retry + 1] if spec.pass_context else None
        data = wire.packb([wire.OP_CALL, d.call_id, key, payload, ctx, None])
        if key not in h.known:
            h.known.add(key)
            data = pool.function_message(key) + data
        self.calls[record.key] = d
        now = d.sent_at = time.monotonic()
        deadline = now + wait_s
        hard_deadline = deadline if spec.timeout is None else now + spec.timeout
        sock = self.socks[h]
        # Before the send: from then on its id may get out (through the task's
        # context), and any thread's next call into the loop posts what is in `steps`.
        self.post_accept(d, accept)
        sent = False
        try:
            try:
                sock.settimeout(None)
                sock.sendall(data)
            except OSError:  # it died: its EOF tells the loop
                pass
            else:
                sent = True
            self.flush_unless_timed()
            message = self._receive(h, min(deadline, hard_deadline)) if sent else None
        except BaseException:  # KeyboardInterrupt in the blocking I/O: to the loop
            if not sent:  # a message cut short: the worker cannot read on; it dies,
                h.signal(kill=True)  # and the call ends WorkerCrashed
            self._hand_back(d, h, [])
            raise
        if (
            message is not None
            and message[1] == d.call_id
            and message[-1] is False  # not asking to retire
            and ((message[0] == wire.OP_OK and message[3] is None) or message[0] == wire.OP_ERR)
        ):
            ok = message[0] == wire.OP_OK
            value: Any = None
            if ok:
                try:
                    value = wire.loads(message[2])
                except Exception:
                    ok = False  # the loop raises the error, as ever
            with self.lock:
                if not d.cancelled:
                    d.decided = "ok" if ok else "loop"
                    self.done += 1
            if d.decided is not None:
                d.value = value
                self.put_back(h)
                self.post_answered(d, None if ok else message)
                return ("ok", value) if ok else (WAIT, None)
        # Anything else: the worker and the call go back to the loop, now.
        self._hand_back(d, h, [] if message is None else [message])
        late = message is None and time.monotonic() >= deadline and deadline <= hard_deadline
        return (LATE, None) if late else (WAIT, None)

    def _hand_back(self, d: DirectCall, h: WorkerHandle, leftovers: list[list[Any]]) -> None:
        """(The holding thread.) `h` and its call in flight go back to the loop."""
        with contextlib.suppress(OSError):
            self.socks[h].setblocking(False)  # the transport's descriptor, shared
        with self.lock:
            d.decided = "loop"
            self.held.discard(h)
            self.returning.add(h)
        self.post_handed_back(d, leftovers)

    def _receive(self, h: WorkerHandle, end: float) -> list[Any] | None:
        """The next message from `h`; None if `end` (a time.monotonic()) came first, or
        the socket failed or ended (EOF)."""
        sock, unpacker, view = self.socks[h], h.unpacker, h.view
        try:
            while True:
                for message in unpacker:
                    return message  # type: ignore[no-any-return]
                left = end - time.monotonic()
                if left <= 0:
                    return None
                sock.settimeout(left)
                n = sock.recv_into(view)
                if not n:
                    return None
                unpacker.feed(view[:n])
        except OSError:  # TimeoutError included
            return None
