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

Many threads (a threaded web server's views) may want more parked workers than
there are. A thread that finds all of them held by other threads, for a function
whose direct calls are known to be quick (`QUICK_S`, a moving average per function),
while a held worker is expected back within `WAIT_S` (`_may_wait`), waits for one to
be put back (`take`): the worker goes from the thread that puts it
back to the thread waiting longest, with one thread wake-up and no loop turn. It
waits at most `WAIT_S`, and stops waiting when the loop's own calls wait for a worker
(they come first); either way it then takes the loop's way. A function not known to be
quick never waits: its callers' calls queue in the loop, where the autoscaler sees them.

What the caller decides alone is the happy ending: a plain OP_OK for its call, with
nothing else said by the worker.

Anything else hands the worker back to the loop with the call in flight (`adopt`),
and the call goes on as if the loop had sent it: a message other than the answer
(log, progress, nested add_task), the answer's buffers in shared memory, a worker
asking to retire, EOF (the worker died: `WorkerCrashed`), the task's own `timeout`
(`TaskTimeout`: the loop kills the worker), the caller's timeout (the caller gets
None), `app.cancel()` (the loop signals the worker, whose EOF hands it back), the
pool closing. An OP_ERR goes to the loop too (`Retries` may put the task back), but
the worker stays parked. The caller then waits for the outcome the normal way. A
KeyboardInterrupt in the caller's thread once the call is posted hands it back too,
and kills the worker: whether its answer was read off the socket (and lost with the
interrupt) cannot be known, so the call ends WorkerCrashed rather than never.

Ownership. A free parked worker is the lock's; a held one is its thread's (`held[h]`
is the thread's `Hold` for its call): the thread alone reads and writes its socket (a
duplicate of its descriptor), its unpacker and its `known` function keys, until it
puts it back (or hands it to a waiting thread, under the lock: `ParkedWorkers.give`).
An interrupt between any two of the thread's steps is finished by `_end`, run again.
The loop recalls free parked workers when its own calls wait for a worker
(`recall_free`), at close, and when a worker is retired; a held one comes back when
its thread is done. Who decides
a call's ending is settled under the lock: the thread ("ok"), or the loop (a cancel
asked before that).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ... import wire
from ...handoff import WAKE_S
from ...registries import TaskSpec
from ...task import TaskRecord
from .handle import WorkerHandle
from .offload import encode_args
from .parked import DirectCall, Hold, ParkedWorkers

if TYPE_CHECKING:
    from ...dispatcher import Taken

#: A thread that finds every parked worker held by others waits for one at most this
#: long (`DirectCalls.take`), and only for a function whose direct calls take under
#: `QUICK_S` (a moving average, per function).
WAIT_S = 0.005
QUICK_S = 0.001

INF = float("inf")

#: What `DirectCalls.call` returns when the caller should wait the normal way.
WAIT = "wait"
#: ... when the caller's own timeout ran out (the call goes on; the caller gets None).
LATE = "late"


class DirectCalls(ParkedWorkers):
    """The parked workers of one pool, and the calls threads make on them: the
    threads' side here, the loop's in `ParkedWorkers`."""

    # (Per pool; the tests wait longer, or call every function quick.)
    wait_s = WAIT_S
    quick_s = QUICK_S

    def available(self, spec: TaskSpec) -> bool:
        """(Any thread.) Whether a parked worker is free now, or is held by another
        thread for a call of a quick function that will put it back soon (`take` may
        still find none). If none is free and this caller will not wait, the pool is
        asked to park one."""
        pool = self.pool
        if pool.max_tasks_per_worker is not None:
            return False  # recycling counts calls sent by the loop
        if pool.scheduler.pending:
            return False  # the loop's calls wait for a worker: they come first
        if self.free:
            return True
        if self._may_wait(spec):
            return True  # `take` waits for one (and asks for one to be parked)
        self._ask()
        return False

    def _may_wait(self, spec: TaskSpec) -> bool:
        """Whether a caller of `spec` finding no free parked worker may wait for a held
        one: `spec` is quick, and a held worker is expected back within `wait_s` (its
        call's expected end, from its function's direct calls, is that close; a worker
        just taken, not sent a call yet, counts). Not for a worker running a slow call,
        nor for one whose quick call is late by more than `wait_s`."""
        if not self._quick(spec):
            return False
        now, wait_s, due = time.monotonic(), self.wait_s, self.due
        return any(now - wait_s <= due.get(h, now) <= now + wait_s for h in list(self.held))

    def _ask(self) -> None:
        """Ask the pool to park a worker, if it has one to park (a read of the workers'
        states from this thread: a hint)."""
        roster = self.pool.roster
        if roster is not None and any(h.takes_calls for h in roster.workers):
            self.ask_to_park()

    def _quick(self, spec: TaskSpec) -> bool:
        """Whether `spec`'s direct calls are known to take under `quick_s`."""
        key = self.pool.function_key(spec)
        took = None if key is None else self.took.get(key)
        return took is not None and took < self.quick_s

    def take(self, spec: TaskSpec, timeout: float, hold: Hold) -> WorkerHandle | None:
        """A free parked worker, now held by `hold`; None if none is free.

        When every parked worker is held by other threads, `spec` is quick and a held
        worker is expected back soon (`_may_wait`), this thread waits for one to be put
        back, first come first served, at most `wait_s` (or `timeout`): one thread's
        wake-up costs less than the loop's way, two cross-thread hops and the loop's
        turns. The loop's own calls still come first (`_put_back`), and a thread that
        waited in vain takes the loop's way."""
        with self.lock:
            if not self.open:
                return None
            free = self.free
            if free:  # (claimed before it leaves `free`: see `Hold`)
                h = free[-1]
                hold.handle = h
                self.held[h] = hold
                del free[-1]
                return h
            if self.pool.scheduler.pending or not self._may_wait(spec):
                return None
            hold.lock = threading.Lock()
            hold.lock.acquire()
            self.waiting.append(hold)
        # Asked now, not before: a worker the loop parks goes to the first in `waiting`,
        # and one parked before this hold was in it would not be ours.
        self._ask()
        hold.lock.acquire(timeout=min(self.wait_s, timeout))
        return self._leave(hold)

    def _leave(self, hold: Hold) -> WorkerHandle | None:
        """Stop waiting: the worker handed to `hold`, if any; none is handed to it after."""
        with self.lock:
            if hold in self.waiting:
                self.waiting.remove(hold)  # the wait ran out (or was cut short)
            h = hold.handle
            return h if h is not None and self.held.get(h) is hold else None

    def _put_back(self, hold: Hold) -> None:
        """The worker `hold` holds goes back unused (or after an answer this thread
        took): to the thread waiting longest for one, or free; to the loop if its calls
        wait for a worker or the pool closes. Run again after an interrupt, it finishes
        what is left (see `Hold`)."""
        h = hold.handle
        if h is not None and self.held.get(h) is hold:
            try:
                if h not in self.free:  # (else another thread may take it now)
                    self._let_go(h)
            finally:
                with self.lock:
                    if self.held.get(h) is not hold:
                        pass  # (put back already)
                    elif (
                        hold.giving_back
                        or not self.open
                        or self.pool.scheduler.pending
                        or not h.alive
                    ):
                        # The loop's calls wait for a worker (`pending`; see
                        # `ProcessExecutor.calls_wait`, which recalls only free ones), or
                        # it is being killed (lent again, it would fail the next call);
                        # once decided (`giving_back`), even if that no longer holds.
                        hold.giving_back = True
                        del self.held[h]
                        self.release_waiting()
                    elif h in self.free:
                        del self.held[h]  # (claimed in `take`, or in `give`, not taken)
                    else:
                        self.give(h)
        if hold.giving_back:
            assert h is not None
            self.post_given_back(h)

    def _let_go(self, h: WorkerHandle) -> None:
        """(The holding thread, giving `h` up.) No call of this thread's is due on it;
        its descriptor, shared with the loop's transport, non-blocking again."""
        self.due.pop(h, None)
        with contextlib.suppress(OSError):
            self.socks[h].setblocking(False)

    def call(
        self,
        spec: TaskSpec,
        record: TaskRecord,
        wait_s: float,
        accept: Callable[[], Taken | None],
    ) -> tuple[str, Any] | None:
        """Run `record` on a parked worker taken for it (`take`), waiting at most `wait_s`.

        `accept` is the loop's side of the call (store, waiters, the chain), run in
        the loop: posted just before the call is sent, so that the loop's work overlaps
        the worker's. None: no worker, or not sent (the function was never sent to any
        worker, or the arguments hold large buffers); nothing posted then. ("ok",
        value), (WAIT, None) or (LATE, None) otherwise (see the module doc).

        An exception (KeyboardInterrupt) anywhere leaves no worker held and no call
        without an ending (`_end`, run again from where the thread was): before the
        accept is posted, the worker is put back and nothing was accepted; after it and
        before the answer is settled, the worker and the call go back to the loop, and
        the worker is killed, for whether its answer was read (and lost with the
        exception) cannot be known: the call ends WorkerCrashed, which `Retries` may
        run again."""
        hold = Hold()
        try:
            h = self.take(spec, wait_s, hold)
            if h is None:
                return None
            prepared = self._prepare(h, spec, record)
            if prepared is None:
                self._put_back(hold)  # (not sent: the normal path takes the call)
                return None
            d, data = prepared
            self.calls[record.key] = hold.d = d  # (`_end` reads one as the other)
            now = d.sent_at = time.monotonic()
            self.due[h] = now + self.took.get(d.key, INF)  # expected back then (`_may_wait`)
            deadline = now + wait_s
            hard_deadline = deadline if spec.timeout is None else now + spec.timeout
            # Before the send: from then on its id may get out (through the task's
            # context), and any thread's next call into the loop posts what is in `steps`.
            self.post_accept(d, accept)
            hold.posted = True  # (not yet, after an interrupt: `run` finds no direct call)
            message = self._exchange(h, d, data, min(deadline, hard_deadline))
            self._decide(d, message, now)
            self._end(hold)
        except BaseException:
            while True:
                try:
                    self._end(hold, interrupted=True)
                    break
                except KeyboardInterrupt:  # (pressed again: finish first)
                    continue
            raise
        if d.decided == "ok":
            return ("ok", d.value)
        late = (
            d.decided == "loop"
            and message is None
            and time.monotonic() >= deadline
            and deadline <= hard_deadline
        )
        return (LATE, None) if late else (WAIT, None)

    def _exchange(
        self, h: WorkerHandle, d: DirectCall, data: bytes, end: float
    ) -> list[Any] | None:
        """Send `d`'s OP_CALL (with its function, the first time on `h`); the next
        message from `h`, or None (see `_receive`; a failed send: it died, its EOF
        tells the loop)."""
        sock = self.socks[h]
        try:
            if d.key not in h.known:
                data = self.pool.function_message(d.key) + data
                h.known.add(d.key)  # (a send cut short kills the worker)
            sock.settimeout(None)
            sock.sendall(data)
        except OSError:
            return None
        self.flush_unless_timed()
        return self._receive(h, end)

    def _decide(self, d: DirectCall, message: list[Any] | None, now: float) -> None:
        """Settle, under the lock, who ends `d` (`d.decided`): the thread, with a plain
        OP_OK ("ok", its value decoded) or an OP_ERR ("err": the loop raises it, and the
        worker stays parked); or the loop, with anything else ("loop"), or if the call was
        cancelled meanwhile. The message read, if any, is kept for the loop (`d.message`)."""
        answer = (
            message is not None
            and message[1] == d.call_id
            and message[-1] is False  # not asking to retire
            and ((message[0] == wire.OP_OK and message[3] is None) or message[0] == wire.OP_ERR)
        )
        d.message = message
        ok = False
        if answer:
            assert message is not None
            ok = message[0] == wire.OP_OK
            if ok:
                try:
                    d.value = wire.loads(message[2])
                except Exception:
                    ok = False  # the loop raises the error, as ever
        took = time.monotonic() - now
        with self.lock:
            if d.decided is None:
                d.decided = ("ok" if ok else "err") if answer and not d.cancelled else "loop"
                if d.decided != "loop":
                    self.done += 1
            if answer:
                before = self.took.get(d.key)
                self.took[d.key] = took if before is None else 0.8 * before + 0.2 * took

    def _end(self, hold: Hold, interrupted: bool = False) -> None:
        """Give up the worker `hold` holds and post its call's ending, as `_decide`
        settled it; idempotent, so that a thread interrupted anywhere (in here too) runs
        it again and finishes what is left (`interrupted`: the call may be undecided)."""
        d = hold.d
        if d is not None and not hold.posted and self.calls.pop(d.record.key, None) is not None:
            # Nothing accepted (a queued accept finds no direct call: `run` sends it),
            # and a run again after another interrupt must see that. (Gone from `calls`
            # but not posted: the loop took it from the accept queued just before the
            # interrupt, and it stands as posted.)
            hold.d = d = None
        if d is None:
            self._leave(hold)
            self._put_back(hold)
            return
        if d.decided is None:
            assert interrupted
            d.handle.killed_because = "as its caller was interrupted (Ctrl-C) during the call"
            d.handle.signal(kill=True)  # (its answer may be read and lost: see `call`)
            with self.lock:
                if d.decided is None:
                    d.decided = "loop"
        message = d.message
        if d.decided == "loop":
            self._hand_back(hold)
            self.post_handed_back(d, [] if message is None else [message])
        else:
            self._put_back(hold)
            self.post_answered(d, None if d.decided == "ok" else message)

    def _prepare(
        self, h: WorkerHandle, spec: TaskSpec, record: TaskRecord
    ) -> tuple[DirectCall, bytes] | None:
        """The direct call of `record` on `h` and its OP_CALL message; None if it must
        take the normal path (its function never sent to a worker, large buffers)."""
        pool = self.pool
        key = pool.function_key(spec)
        try:
            payload, buffers = (
                (b"", None) if key is None else encode_args(spec.name, record.args, record.kwargs)
            )
        except Exception:  # the normal path fails the task, as it always has
            return None
        if key is None or buffers is not None:
            return None
        d = DirectCall(record, h, next(pool.call_ids), key)
        ctx = [spec.name, str(record.uuid), record.retry + 1] if spec.pass_context else None
        return d, wire.packb([wire.OP_CALL, d.call_id, key, payload, ctx, None])

    def _hand_back(self, hold: Hold) -> None:
        """(The holding thread.) Its worker goes back to the loop, with a call in flight
        (the loop adopts it: `post_handed_back`). Idempotent, as `_put_back`."""
        h = hold.handle
        if h is not None and self.held.get(h) is hold:
            try:
                self._let_go(h)
            finally:
                with self.lock:
                    if self.held.get(h) is hold:
                        self.returning.add(h)
                        del self.held[h]

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
                sock.settimeout(min(left, WAKE_S))
                try:
                    n = sock.recv_into(view)
                except TimeoutError:  # a slice ended: Python runs a signal handler now
                    continue  # (Ctrl-C delivered to another thread: see handoff.WAKE_S)
                if not n:
                    return None
                unpacker.feed(view[:n])
        except OSError:
            return None
