"""The pool's workers, from launch to exit: starting, replacing, retiring, killing, and
accounting for each one's end. Everything here runs in the pool's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import psutil

from ... import wire
from ...autoscale import WorkerSample
from ...errors import QTasksError, WorkerCrashed
from .handle import WorkerHandle, WorkerState
from .launch import ForkServer

if TYPE_CHECKING:
    from .pool import ProcessExecutor

log = logging.getLogger("qtasks_mp.process")

READY, RETIRING, DOOMED, GONE = (
    WorkerState.READY,
    WorkerState.RETIRING,
    WorkerState.DOOMED,
    WorkerState.GONE,
)


class Roster:
    """Every worker handle of one running pool, whatever its state.

    A handle exists, in state STARTING, from the moment a worker is wanted, before its
    process is started. The roster is the one owner of the handles' states and lent
    marks (`set_state`, `lend`, `give_back`), so it keeps the pool's size (`live`) and
    the lent count as two numbers changed only there: `ProcessExecutor.slots` reads
    them several times per task.
    """

    def __init__(self, pool: ProcessExecutor) -> None:
        self.pool = pool
        self.workers: list[WorkerHandle] = []
        self.all_gone = asyncio.Event()
        self.closing = asyncio.Event()
        self.full = asyncio.Event()  # set while every worker wanted is ready
        self.spawners: set[asyncio.Task[None]] = set()
        self.failed_starts = 0
        self.server = ForkServer(self._on_exit, self._server_lost)
        self.live = 0  # workers starting or ready: the pool's size
        self.lent = 0  # live workers whose running call waits for a nested task

    def lend(self, h: WorkerHandle) -> bool:
        """One more nested wait in `h`'s running call; True if its slot was not lent yet."""
        h.lent += 1
        if h.lent > 1:
            return False
        self.lent += h.state.live
        return True

    def give_back(self, h: WorkerHandle) -> bool:
        """One nested wait of `h`'s running call ended; True if its slot is its own again."""
        h.lent -= 1
        if h.lent:
            return False
        self.lent -= h.state.live
        return True

    def surplus(self) -> int:
        """Workers beyond `max_workers` and the lent slots: retire them once idle."""
        return self.live - self.lent - self.pool.max_workers

    def grow_for_lent(self) -> None:
        """Start a worker for a lent slot, unless the pool has that many already."""
        if self.pool.running and self.live - self.lent < self.pool.max_workers:
            self.replace()

    def shed_surplus(self) -> None:
        for h in self.ready:
            if self.surplus() <= 0:
                return
            if not h.calls and not h.lent and self.pool.direct.recall(h):
                self.retire(h, replace=False)

    @property
    def ready(self) -> list[WorkerHandle]:
        return [h for h in self.workers if h.state is READY]

    def set_state(self, h: WorkerHandle, state: WorkerState) -> None:
        change = state.live - h.state.live
        h.state = state
        if change:
            self.live += change
            self.lent += change if h.lent else 0
        self.check_full()

    def check_full(self) -> None:
        if len(self.ready) >= self.pool.wanted:
            self.full.set()
        else:
            self.full.clear()

    # ---------------------------------------------------------------- starting

    def add(self, n: int) -> list[WorkerHandle]:
        """`n` new handles (STARTING, counted as live at once), for `launch`."""
        handles = [WorkerHandle(self.pool.scheduler.on_message) for _ in range(n)]
        for h in handles:
            h.on_gone = self.finalize
        self.workers += handles
        self.live += n  # STARTING counts
        self.all_gone.clear()
        self.check_full()
        return handles

    async def launch(self, handles: list[WorkerHandle]) -> None:
        """Start the processes of `handles`; if that fails they are dropped, and it raises."""
        loop = asyncio.get_running_loop()
        levels = {
            "": logging.getLogger().getEffectiveLevel(),
            "qtasks_mp": logging.getLogger("qtasks_mp").getEffectiveLevel(),
        }
        launched_at = time.monotonic()
        pairs = [socket.socketpair() for _ in handles]
        server, memory = self.server, self.pool.max_memory_per_worker
        try:
            # The first start, or after the server died.
            await server.ensure(self.pool.preload, spawn=self.pool.start_method == "spawn")
            pids = await asyncio.gather(
                *(server.launch(child, levels, memory) for _, child in pairs)
            )
        except BaseException:
            for parent, _ in pairs:
                parent.close()
            for h in handles:
                self.drop(h)
            raise
        finally:
            for _, child in pairs:
                child.close()  # the worker has its own copy; ours would hide its EOF
        for (parent, _), pid, h in zip(pairs, pids, handles, strict=True):
            h.pid, h.launched_at = pid, launched_at
            await loop.connect_accepted_socket(functools.partial(_same, h), parent)
            if not self.pool.running and h.state.live:  # closed while we were starting it
                h.stop()
                self.set_state(h, RETIRING)

    def drop(self, h: WorkerHandle) -> None:
        """Forget a handle whose process never started."""
        self.set_state(h, GONE)
        self.workers.remove(h)
        if not self.workers:
            self.all_gone.set()
        self.check_full()

    def replace(self, delay_s: float = 0.0) -> None:
        """Start one worker in the background, after `delay_s`."""
        if not self.pool.running:
            return
        (h,) = self.add(1)
        task = asyncio.get_running_loop().create_task(self._launch_later(h, delay_s))
        self.spawners.add(task)
        task.add_done_callback(self.spawners.discard)

    async def _launch_later(self, h: WorkerHandle, delay_s: float) -> None:
        if delay_s:  # back off: workers die while starting
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closing.wait(), delay_s)
        if not self.pool.running:
            self.drop(h)
            return
        try:
            await self.launch([h])
        except Exception:
            log.exception("process executor %r: could not start a worker", self.pool.name)
            self.replace(min(5.0, max(0.1, delay_s * 2)))

    def _on_exit(self, pid: int, exitcode: int | None) -> None:
        h = next((h for h in self.workers if h.pid == pid), None)
        if h is not None and not h.exited:
            if h.parked:  # its socket is not read while parked: no EOF would tell us
                self.pool.direct.recall(h)
            h.on_exit(exitcode)

    def _server_lost(self) -> None:
        """The fork server died: nobody will report its workers' exits. Kill them all
        (their calls fail as crashed or go elsewhere); a new server starts with the
        next worker."""
        if self.pool.running:
            log.error("process executor %r: its fork server died", self.pool.name)
        for h in list(self.workers):
            if not h.launched or h.exited:
                continue
            if h.state is not DOOMED:  # it must get no new call while its EOF is awaited
                if h.calls:
                    self.pool.crashes += 1
                self.doom(h, WorkerCrashed(h.calls[0].call.task_name if h.calls else "", None))
            h.signal(kill=True)
            h.on_exit(None)

    def on_ready(self, h: WorkerHandle) -> None:
        h.idle_since = time.monotonic()
        startup = h.idle_since - h.launched_at
        previous = self.pool.startup_s
        self.pool.startup_s = startup if previous is None else 0.8 * previous + 0.2 * startup
        self.failed_starts = 0
        if h.state is WorkerState.STARTING:
            self.set_state(h, READY)
        if not h.ready.done():
            h.ready.set_result(None)

    # ---------------------------------------------------------------- ending

    def retire(self, h: WorkerHandle, replace: bool) -> None:
        """`h` finishes what it holds, then exits; gets no new call."""
        self.set_state(h, RETIRING)
        h.stop()
        if replace:
            self.replace()

    def doom(self, h: WorkerHandle, exc: BaseException) -> None:
        """Kill `h` now: its running call fails with `exc`, the rest go elsewhere."""
        replace = h.state.live
        self.set_state(h, DOOMED)
        if h.parked:  # no direct call may take it now (a held one comes back by itself)
            self.pool.direct.recall(h)
        self.pool.scheduler.lose(h, exc)
        h.signal(kill=False)
        asyncio.get_running_loop().call_later(self.pool.kill_grace_s, h.signal, True)
        if replace:
            self.replace()

    def finalize(self, h: WorkerHandle) -> None:
        """The worker is gone and has said all it will: account for what it held."""
        if h.state is GONE:
            return
        prior = h.state
        self.set_state(h, GONE)
        self.pool.direct.forget(h)
        h.close()
        self.workers.remove(h)
        code = h.exitcode
        crashed = prior is not DOOMED and bool(h.calls)  # a doomed one's were dealt with
        if crashed:
            self.pool.crashes += 1
            head = h.calls[0]
            if h.killed_because is None:
                log.error("worker %d running task %r died (exit code %s)", h.pid, head.call, code)
            else:  # on purpose: what the user did, not a fault
                log.warning(
                    "worker %d running task %r killed, %s", h.pid, head.call, h.killed_because
                )
            error = WorkerCrashed(head.call.task_name, code, h.killed_because)
            self.pool.scheduler.lose(h, error)
        h.sweep()
        if not self.workers:
            self.all_gone.set()
        if prior is DOOMED:
            return
        if not crashed and prior is READY and self.pool.running:
            self.pool.crashes += 1
            log.warning("idle worker %d died (exit code %s)", h.pid, code)
        if prior is WorkerState.STARTING:
            self._start_failed(h)
        elif prior is READY:
            self.replace()
        self.pool.room_changed()

    def _start_failed(self, h: WorkerHandle) -> None:
        error = QTasksError(
            f"process executor {self.pool.name!r}: worker {h.pid} died while starting "
            f"(exit code {h.exitcode})"
        )
        if h.fatal:
            error.__cause__ = wire.RemoteTraceback(h.fatal)
        if not h.ready.done():
            h.ready.set_exception(error)
            h.ready.exception()
        if not self.pool.running:
            return
        self.failed_starts += 1
        if self.failed_starts >= 3:  # workers cannot start: do not let calls wait forever
            log.error("%s", error)
            self.pool.scheduler.fail_waiting(error)
        self.replace(min(5.0, 0.05 * 2**self.failed_starts))

    async def close(self) -> None:
        """Stop every worker (the pool has stopped running); return once all are gone."""
        self.closing.set()
        if self.spawners:
            await asyncio.wait(list(self.spawners))
        for h in list(self.workers):
            if h.calls:
                self.doom(h, asyncio.CancelledError())
            elif h.state.live:
                self.retire(h, replace=False)
        if self.workers:
            try:
                await asyncio.wait_for(self.all_gone.wait(), self.pool.kill_grace_s * 4)
            except asyncio.TimeoutError:
                for h in self.workers:
                    h.signal(kill=True)
                await self.all_gone.wait()  # SIGKILL cannot be ignored
        await self.server.close()

    def forget(self) -> None:
        """In a forked child (called at the fork): our copies of the workers' and the
        server's sockets and of the alive pipe become /dev/null, so nothing this process
        writes reaches them and the parent's death still ends them. The numbers stay
        valid, so the objects holding them close /dev/null later. Nothing here may touch
        the event loop: the child shares its epoll instance with the parent, and
        unregistering a descriptor there would unregister the parent's."""
        fds = self.server.forget()
        fds += [sock.fileno() for sock in self.pool.direct.socks.values()]  # direct.py's
        for h in self.workers:
            h.forget()
            if h.transport is not None:
                fds.append(h.transport.get_extra_info("socket").fileno())
        null = os.open(os.devnull, os.O_RDWR)
        try:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.dup2(null, fd, inheritable=False)
        finally:
            os.close(null)
        self.workers.clear()
        self.live = self.lent = 0

    # ---------------------------------------------------------------- reporting

    def samples(self, now: float, waiting: list[float]) -> list[WorkerSample]:
        """The live workers, for the autoscaler; adds to `waiting` when the calls they
        hold but have not started were queued. A worker being launched has no process
        yet: its pid is <= 0."""
        workers = []
        for h in self.workers:
            if not h.state.live:
                continue
            waiting += [p.queued_at for p in itertools.islice(h.calls, 1, None)]
            starting = h.state is WorkerState.STARTING
            idle_s = 0.0 if h.calls or starting else now - h.idle_since
            workers.append(WorkerSample(h.pid, bool(h.calls), idle_s, starting))
        return workers


def worker_stats(roster: Roster | None) -> dict[str, Any]:
    """The workers' part of the pool's `stats()` (no roster: the pool is not started)."""
    workers = [] if roster is None else roster.workers
    live = [h for h in workers if h.state.live]
    per_worker = {}
    for h in workers:
        if not h.launched:
            continue
        try:
            rss = psutil.Process(h.pid).memory_info().rss
        except psutil.Error:
            rss = None
        per_worker[h.pid] = {
            "state": h.state.value,
            "held": len(h.calls),
            "done": h.done,
            "rss": rss,
        }
    return {
        "workers": len(live),  # ready, or starting to replace one that left
        "starting": sum(h.state is WorkerState.STARTING for h in live),
        "busy": sum(1 for h in workers if h.calls),
        "pids": [h.pid for h in live if h.launched],
        "queued": sum(max(0, len(h.calls) - 1) for h in workers),  # held, not started
        "per_worker": per_worker,
    }


def _same(h: WorkerHandle) -> WorkerHandle:
    return h
