"""`ProcessExecutor`: a self-healing pool of worker processes for CPU-heavy tasks.

    pool.py        ProcessExecutor: the Executor interface, lifecycle, autoscaler hooks
    schedule.py    Scheduler: which worker runs which call, pipelining, timeouts, the
                   workers' messages, nested add_task (and lending a waiting slot)
    roster.py      Roster: the workers' lives (launch, ready, retire, kill, exit, replace)
    handle.py      WorkerHandle: one worker's socket, pid and held calls; WorkerState
    calls.py       PendingCall: one call in flight; what its answer means
    offload.py     Offload: large buffers copied, unpickled and unlinked off the loop
    direct.py      DirectCalls: idle workers parked for sync callers' threads, which
                   send a call and read its answer themselves (the thread's side)
    parked.py      ParkedWorkers: the loop's side of direct calls: parking, recalling,
                   adopting a call handed back, the steps threads leave the loop
    launch.py      ForkServer: the parent's side of the pool's fork server
    forkserver.py  the fork server's main: forks (or spawns) workers, reports exits
    worker.py      the worker's main (imports only `wire` and `context` of qtasks_mp)

Data flow. Everything on the left runs in the dispatcher's event loop; each worker
is a process with one socket pair to the parent and a shared "alive" pipe.

    run(call) ─┬─> PendingCall ──> pending (no worker has room) ──┐
               │                                                  │ a worker frees up
               │        ┌─────────────────────────────────────────┘
               │        v
               │   WorkerHandle (asyncio.Protocol, one per worker, kept by the Roster)
               │     calls: deque of PendingCall sent, in order; calls[0] is running
               │     │  OP_FUNC  key, function      (once per function and worker)
               │     │  OP_CALL  id, key, args      (pickle 5; cloudpickle fallback)
               │     v
               │   socket ════════════════════════> worker process (worker.main)
               │     ^    /dev/shm/qtmp_* ═══════>    runs calls one by one, FIFO
               │     │       <═══════ (buffers >= 1 MiB, both ways; names in the messages)
               │     │  OP_OK / OP_ERR  result or exception + traceback text
               │     │  OP_ITEM         one item of a generator, as produced;
               │     │                  at most ITEM_WINDOW not yet handled (OP_ACK)
               │     │  OP_LOG          a log record, re-emitted here
               │     │  OP_ADD          task context's add_task -> OP_REPLY
               │     │                  (waiting for it: OP_SKIP, slot lent, see below)
               │     │  OP_PROGRESS     self.progress(...): the latest, at most 10/s a call
               │     │
               └─ await p.fut <── the result, or WorkerCrashed / TaskTimeout

    process exit ──> WorkerHandle.on_exit ─┐
    socket EOF ──> connection_lost ────────┴─> Roster.finalize: fail calls[0]
                                   (WorkerCrashed), give calls[1:] to other workers, replace

Concurrency hazards, and the answers:

- Which call did a dead worker die in? A worker runs what it received in order, so
  the oldest unanswered call, `calls[0]`, is the one that was running; the others
  were received but not started and go to another worker. (A worker killed in the
  microseconds between answering one call and starting the next is blamed for the
  next one; it is retried elsewhere only if the Retries middleware says so.)
- A dead worker's last answers may still sit in the socket when its exit is seen:
  `finalize` waits for both the exit and EOF, so no finished call is lost.
- A call's timeout clock starts when it becomes `calls[0]`, not when it was sent.
  When it fires, the call fails at once; the worker gets SIGTERM, then SIGKILL after
  `kill_grace_s`; anything else it held goes elsewhere; a replacement starts.
- A worker killed for a timeout (DOOMED) may still answer: its messages are ignored.
- Workers die with the parent: each worker blocks in a thread on the read end of a
  pipe whose only write end is in the parent (see `worker.py`).
- Shared-memory segments are unlinked exactly once. The parent makes and owns an
  argument segment: `run` unlinks it when the call ends, however it ends. A worker
  makes a result (or item) segment; the parent unlinks it as the message arrives,
  before unpickling. If the worker dies first, or is killed and its messages are
  ignored, `WorkerHandle.sweep` unlinks what it made once it is gone (names are
  predictable).
- Pipelining: a worker holds up to `depth` calls (adapted to call length unless
  `pipeline_depth` fixes it), so tiny calls never wait for a round trip; the price is
  that a quick call can wait behind a slow one on the same worker. New calls go to
  the worker holding the fewest.
- Generator items are flow-controlled: a worker may have `wire.ITEM_WINDOW` items
  sent that the `generate_handler` has not handled yet; the parent acks each one
  after its handler returns (OP_ACK), and the worker waits for credit before it makes
  the next item's segment. A slow handler cannot make items pile up in memory.
- Nested waits: a call whose task context waits for a nested task (`add_task(...,
  timeout=)`, OP_ADD with `waits`) lends its worker's slot to the pool: calls
  pipelined behind it are taken back (OP_SKIP: the worker drops them when their turn
  comes; they were sent before the skip, so it has read them by then), it gets no new
  call, and the pool may run one worker beyond `max_workers` per lent slot. Otherwise
  N such calls on N workers wait for nested tasks only they could run: deadlock.
- The pool's size is never counted by hand: it is the number of handles whose state
  is STARTING or READY. A handle exists from the moment a worker is wanted, before
  its process starts, so a worker being launched counts too.

This package's `__init__` imports nothing: a worker imports `worker.py` through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pool import ProcessExecutor

__all__ = ["ProcessExecutor"]


def __getattr__(name: str) -> Any:
    if name == "ProcessExecutor":  # the pool only for the parent; a worker never loads it
        from .pool import ProcessExecutor

        return ProcessExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
