"""The paths users write, each beside its baseline in the same run (see run.py).

- a gather of waited `add_task` of an inline coroutine, against `asyncio.gather` of the
  same coroutines, the app's own fire-and-forget + `wait_idle()`, and TaskIQ's
  `InMemoryBroker` (`await t.kiq()` then `wait_result`);
- the sync facade (`qtasks_mp.QueueTasks`) called from the main thread, one waited
  `add_task` after another to a process worker, against
  `ProcessPoolExecutor.submit(...).result()`; its floor is a thread echoing through a
  pipe to a blocking child; then both called by 4 plain threads at once (a threaded
  web server's views), as rates;
- a gather of waited `add_task` of process no-ops, from an event loop in a background
  thread, against `ProcessPoolExecutor` and `multiprocessing.Pool`; its floor is a plain
  asyncio echo over socket pairs to blocking children;
- 40 CPU tasks of ~50 ms submitted at once as a gather of waited `add_task`, against
  `ProcessPoolExecutor`: CPU efficiency = serial time / (workers x makespan).

Every contender is started once and kept; the rounds alternate them (A, B, C, A, B, C...).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import multiprocessing
import socket
import statistics
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from time import perf_counter
from typing import Any, TypeVar

from cpu_work import calibrate, spin, timed, timed_spin  # next to this file

import qtasks_mp
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.executors.process import ProcessExecutor

T = TypeVar("T")
Measure = Callable[[int], float]  # runs n calls; a rate (/s), a p50 (s) or an efficiency

WORKERS = 2


def alternate(contenders: Sequence[Measure], n: int, rounds: int) -> list[float]:
    """Median of each contender over `rounds` alternating runs, after one warm-up each."""
    for measure in contenders:
        measure(n)
    results: list[list[float]] = [[] for _ in contenders]
    for _ in range(rounds):
        for measure, out in zip(contenders, results, strict=True):
            gc.collect()  # no contender pays for another's garbage
            out.append(measure(n))
    return [statistics.median(r) for r in results]


def rate_of(run_n: Callable[[int], object]) -> Measure:
    def measure(n: int) -> float:
        start = perf_counter()
        run_n(n)
        return n / (perf_counter() - start)

    return measure


def p50_of(once: Callable[[int], object]) -> Measure:
    def measure(n: int) -> float:
        samples = []
        for i in range(n):
            start = perf_counter()
            once(i)
            samples.append(perf_counter() - start)
        return statistics.median(samples)

    return measure


class LoopThread:
    """An event loop in a background thread; `run(coro)` from any other thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


# ---------------------------------------------------------------- functions the tasks run


async def anoop(x: int) -> int:
    return x


def inc(x: int) -> int:
    return x + 1


def noop() -> None:
    return None


# ---------------------------------------------------------------- floors


def _echo_child(conn: Connection) -> None:
    """A blocking child: every message back as it came."""
    try:
        while True:
            conn.send_bytes(conn.recv_bytes())
    except EOFError:
        pass


def _socket_echo_child(sock: socket.socket) -> None:
    """Each 8-byte message back on its own, as a worker answers each call (reads are
    buffered; echoing whole reads at once would measure bulk bytes, not messages)."""
    reader = sock.makefile("rb")
    try:
        while len(message := reader.read(8)) == 8:
            sock.sendall(message)
    except OSError:
        pass


class _Echo(asyncio.Protocol):
    """Counts the 8-byte messages that come back; `done` when `expected` are back."""

    def __init__(self) -> None:
        self.got = 0
        self.expected = 0
        self.done: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.done is not None and self.got >= self.expected and not self.done.done():
            self.done.set_result(None)


class AsyncEchoFloor:
    """n messages spread over `WORKERS` blocking children through socket pairs, all sent
    at once from an asyncio loop, until every echo is back: the floor of a gather of
    process calls for any design that talks to workers over sockets from asyncio."""

    def __init__(self, lt: LoopThread) -> None:
        self.lt = lt
        ctx = multiprocessing.get_context("forkserver")
        self.children = []
        self.protocols: list[tuple[asyncio.Transport, _Echo]] = []
        for _ in range(WORKERS):
            mine, theirs = socket.socketpair()
            child = ctx.Process(target=_socket_echo_child, args=(theirs,), daemon=True)
            child.start()
            theirs.close()
            self.children.append(child)
            self.protocols.append(lt.run(self._connect(mine)))

    async def _connect(self, sock: socket.socket) -> tuple[asyncio.Transport, _Echo]:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.connect_accepted_socket(_Echo, sock)
        return transport, protocol

    async def _burst(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        waits = []
        for i, (transport, protocol) in enumerate(self.protocols):
            share = n // WORKERS + (i < n % WORKERS)
            protocol.got = 0
            protocol.expected = 8 * share
            protocol.done = loop.create_future()
            for _ in range(share):
                transport.write(b"12345678")
            waits.append(protocol.done)
        await asyncio.gather(*waits)

    def burst(self, n: int) -> None:
        self.lt.run(self._burst(n))

    def close(self) -> None:
        for transport, _ in self.protocols:
            self.lt.loop.call_soon_threadsafe(transport.close)
        for child in self.children:
            child.join(5)


class PipeEchoFloor:
    """A plain thread sending a message through a pipe to a blocking child and waiting
    for it back: the floor of a sync caller's round trip to a worker process."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self.conn, theirs = ctx.Pipe()
        self.child = ctx.Process(target=_echo_child, args=(theirs,), daemon=True)
        self.child.start()
        theirs.close()

    def once(self, i: int) -> None:
        self.conn.send_bytes(b"12345678")
        self.conn.recv_bytes()

    def close(self) -> None:
        self.conn.close()
        self.child.join(5)


# ---------------------------------------------------------------- the rows


@dataclass
class Sizes:
    gather: int  # inline coroutines in one gather
    sync_trips: int  # sequential sync add_task
    process_gather: int  # process no-ops in one gather
    cpu_tasks: int
    cpu_s: float  # seconds of one CPU task
    rounds: int

    @classmethod
    def make(cls, quick: bool) -> Sizes:
        if quick:  # a smoke run: every contender once, after its warm-up
            return cls(1_000, 100, 1_000, 4, 0.01, 1)
        return cls(50_000, 2_000, 20_000, 40, 0.05, 5)


def inline_gather(s: Sizes) -> list[float]:
    """Rates of: the app's gather of waited add_task, asyncio.gather of the same
    coroutines, the app's fire-and-forget + wait_idle, TaskIQ's gather (if installed)."""
    app = QueueTasks()
    app.config.logs_default_level = 30
    app.task(name="noop")(anoop)

    async def app_gather(n: int) -> None:
        done = await asyncio.gather(*(app.add_task("noop", i, timeout=60) for i in range(n)))
        assert done[-1] is not None and done[-1].returning == n - 1, done[-1]

    async def plain_gather(n: int) -> None:
        await asyncio.gather(*(anoop(i) for i in range(n)))

    async def fire_and_forget(n: int) -> None:
        for i in range(n):
            await app.add_task("noop", i)
        await app.wait_idle()

    benches: list[Callable[[int], Coroutine[Any, Any, None]]] = [
        app_gather,
        plain_gather,
        fire_and_forget,
    ]
    try:
        from taskiq import InMemoryBroker
    except ImportError:
        print("(taskiq not installed: no TaskIQ row)")
    else:

        async def taskiq_gather(n: int) -> None:
            broker = InMemoryBroker(max_stored_results=-1)
            task = broker.task(anoop)
            await broker.startup()

            async def one(i: int) -> Any:
                sent = await task.kiq(i)
                return await sent.wait_result(timeout=60)

            done = await asyncio.gather(*(one(i) for i in range(n)))
            assert done[-1].return_value == n - 1
            await broker.shutdown()

        benches.append(taskiq_gather)

    lt = LoopThread()
    try:
        lt.run(app.start())
        measures = [rate_of(lambda n, b=b: lt.run(b(n))) for b in benches]  # type: ignore[misc]
        out = alternate(measures, s.gather, s.rounds)
        lt.run(app.stop())
    finally:
        lt.close()
    return out


#: Plain threads calling the sync facade at once (a threaded web server's views).
THREADS = 4


def in_threads(once: Callable[[int], object]) -> Callable[[int], None]:
    """`n` calls of `once` made by THREADS plain threads at once, each in turn."""

    def run_n(n: int) -> None:
        each = n // THREADS
        threads = [
            threading.Thread(target=lambda k=k: [once(k * each + i) for i in range(each)])
            for k in range(THREADS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return run_n


def sync_round_trip(s: Sizes) -> list[float]:
    """p50 of: the sync facade's waited add_task to a process worker, from the main
    thread; ProcessPoolExecutor.submit().result(); the pipe echo floor. Then the rates
    of the first two called by THREADS plain threads at once."""
    app = qtasks_mp.QueueTasks(
        "bench-sync",
        executors={"process": ProcessExecutor(max_workers=WORKERS, autoscale=False)},
    )
    app.config.logs_default_level = 30
    app.task(executor="process")(inc)

    def app_once(i: int) -> None:
        task = app.add_task("inc", i, timeout=10)
        assert task is not None and task.returning == i + 1, task

    floor = PipeEchoFloor()
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:

        def pool_once(i: int) -> None:
            assert pool.submit(inc, i).result() == i + 1

        try:
            app.start()
            out = alternate(
                [
                    p50_of(app_once),
                    p50_of(pool_once),
                    p50_of(floor.once),
                    rate_of(in_threads(app_once)),
                    rate_of(in_threads(pool_once)),
                ],
                s.sync_trips,
                s.rounds,
            )
        finally:
            app.stop()
            floor.close()
    return out


def process_gather(s: Sizes) -> list[float]:
    """Rates of: a gather of waited add_task of process no-ops (the app's loop in a
    background thread), ProcessPoolExecutor submit + result, multiprocessing.Pool
    apply_async, the asyncio echo floor."""
    app = QueueTasks(
        "bench-gather",
        executors={"process": ProcessExecutor(max_workers=WORKERS, autoscale=False)},
    )
    app.config.logs_default_level = 30
    app.task(executor="process")(noop)

    async def app_gather(n: int) -> None:
        done = await asyncio.gather(*(app.add_task("noop", timeout=60) for _ in range(n)))
        assert all(t is not None and t.status == "success" for t in done)

    def submit_all(submit: Callable[[], Callable[[], Any]], n: int) -> None:
        for wait in [submit() for _ in range(n)]:
            wait()

    lt = LoopThread()
    floor = AsyncEchoFloor(lt)
    with (
        concurrent.futures.ProcessPoolExecutor(WORKERS) as pool,
        multiprocessing.Pool(WORKERS) as mp_pool,
    ):
        try:
            lt.run(app.start())
            out = alternate(
                [
                    rate_of(lambda n: lt.run(app_gather(n))),
                    rate_of(lambda n: submit_all(lambda: pool.submit(noop).result, n)),
                    rate_of(lambda n: submit_all(lambda: mp_pool.apply_async(noop).get, n)),
                    rate_of(floor.burst),
                ],
                s.process_gather,
                s.rounds,
            )
            lt.run(app.stop())
        finally:
            floor.close()
            lt.close()
    return out


def cpu_batch(s: Sizes) -> list[float]:
    """CPU efficiency of `cpu_tasks` tasks of ~`cpu_s` submitted at once: a gather of
    waited add_task, and ProcessPoolExecutor; a fresh app each round (the pipeline
    depth starts where it starts for a function never seen before).

    Returns the medians of: each contender's efficiency (the serial time measured
    before, over workers x makespan), then each one's busy fraction (the calls' own
    times, measured in the workers, over workers x makespan: the share of the workers'
    time spent in calls, which a change of the machine's speed between the serial
    measure and a batch does not move)."""
    spin_n = calibrate(s.cpu_s)
    serial = s.cpu_tasks * statistics.median(timed(spin, spin_n) for _ in range(3))
    busy: list[list[float]] = [[], []]

    def efficiency(makespan: float, call_times: Sequence[float], who: int) -> float:
        busy[who].append(sum(call_times) / (WORKERS * makespan))
        return serial / (WORKERS * makespan)

    async def app_batch() -> float:
        app = QueueTasks(
            "bench-cpu",
            executors={"process": ProcessExecutor(max_workers=WORKERS, autoscale=False)},
        )
        app.config.logs_default_level = 30
        app.task(name="spin", executor="process")(timed_spin)
        async with app:
            start = perf_counter()
            done = await asyncio.gather(
                *(app.add_task("spin", spin_n, timeout=600) for _ in range(s.cpu_tasks))
            )
            makespan = perf_counter() - start
        assert all(t is not None and t.status == "success" for t in done)
        return efficiency(makespan, [t.returning for t in done if t is not None], 0)

    def stdlib_batch(pool: concurrent.futures.ProcessPoolExecutor) -> float:
        pool.submit(noop).result()  # started, as the app's workers are
        start = perf_counter()
        futures = [pool.submit(timed_spin, spin_n) for _ in range(s.cpu_tasks)]
        call_times = [fut.result() for fut in futures]
        return efficiency(perf_counter() - start, call_times, 1)

    def stdlib(n: int) -> float:
        with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
            return stdlib_batch(pool)

    out = alternate([lambda n: asyncio.run(app_batch()), stdlib], s.cpu_tasks, s.rounds)
    return out + [statistics.median(b[1:]) for b in busy]  # (b[0]: the warm-up round)
