"""Direct calls: a sync caller's waited add_task goes to a parked process worker itself
(qtasks_mp/executors/process/direct.py). Real processes, plain threads; each unusual
ending must come out as on the normal path."""

from __future__ import annotations

import asyncio
import json
import linecache
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import directfuncs
import psutil
import pytest
from polling import wait_until

from qtasks_mp import QueueTasks
from qtasks_mp.asyncio import QueueTasks as AsyncQueueTasks
from qtasks_mp.errors import QTasksError
from qtasks_mp.executors.process import ProcessExecutor

WORKERS = 2


def pool_stats(app: QueueTasks) -> dict[str, Any]:
    stats: dict[str, Any] = app.stats()["executors"]["process"]
    return stats


def make_app(name: str, workers: int = WORKERS, **options: Any) -> QueueTasks:
    app = QueueTasks(
        name, executors={"process": ProcessExecutor(max_workers=workers, autoscale=False)}
    )
    app.config.shutdown_timeout = options.pop("shutdown_timeout", 5.0)
    for fn in (directfuncs.add, directfuncs.fail, directfuncs.chatty, directfuncs.wait_for):
        app.task(executor="process")(fn)
    app.task(name="fail_retried", executor="process", retry=1)(directfuncs.fail)
    app.task(name="timed", executor="process", timeout=0.5)(directfuncs.block)
    app.task(executor="process")(directfuncs.die)
    app.task(executor="process")(directfuncs.forks)
    app.task(executor="process", echo=True)(directfuncs.report)
    app.task(executor="process", echo=True)(directfuncs.nested)
    app.task(executor="process", echo=True)(directfuncs.announce_and_wait)
    return app


@pytest.fixture
def app() -> Iterator[QueueTasks]:
    app = make_app("direct")
    try:
        app.start()
        yield app
    finally:
        app.stop()


def warm(app: QueueTasks, task_name: str = "add", *args: Any) -> None:
    """Calls until one went direct: the first call of a function is encoded by the
    loop, and a caller that finds no parked worker asks the pool to park one."""
    args = args or ((1, 2) if task_name == "add" else ())
    before = pool_stats(app)["direct_calls"]
    for _ in range(50):
        assert app.add_task(task_name, *args, timeout=30) is not None
        if pool_stats(app)["direct_calls"] > before:
            return
    raise AssertionError("no call went direct")


def settled(app: QueueTasks) -> None:
    """Nothing unfinished, and the pool back at full strength."""
    assert app.wait_idle(timeout=30)
    assert app.stats()["unfinished"] == 0
    pool = app.executors["process"]
    assert isinstance(pool, ProcessExecutor)
    assert app.core.call_from_thread(pool.wait_ready(30))
    assert pool_stats(app)["workers"] == pool_stats(app)["max_workers"]


def test_sequential_calls_go_direct_and_are_recorded(app: QueueTasks) -> None:
    warm(app)
    before = pool_stats(app)["direct_calls"]
    for i in range(200):
        task = app.add_task("add", i, 1, timeout=30)
        assert task is not None and task.status == "success" and task.returning == i + 1
        got = app.get(task.uuid)  # right after: the loop has recorded the same ending
        assert got is not None and got.status == "success" and got.returning == i + 1
    assert pool_stats(app)["direct_calls"] - before >= 100
    settled(app)
    assert app.stats()["tasks"]["add"]["ok"] >= 201  # the chain's Timing saw every call


def test_the_end_is_recorded_with_no_later_call_from_the_caller(app: QueueTasks) -> None:
    warm(app)
    before = pool_stats(app)["direct_calls"]
    task = app.add_task("add", 20, 22, timeout=30)
    assert task is not None and task.returning == 42
    assert pool_stats(app)["direct_calls"] == before + 1
    # Not through the sync facade (which posts what direct calls left first): the
    # loop's own timer records the end.
    done = app.core.call_from_thread(app.core.wait(task.uuid, 10))
    assert done is not None and done.status == "success" and done.returning == 42


def test_get_in_the_loop_right_after_a_direct_call_finds_the_task(app: QueueTasks) -> None:
    """A direct call leaves its bookkeeping to the loop (the store's put included). The
    loop is held in a callback while the call is made, so none of it can run; then,
    still in that callback, `app.get(uuid)` starts: it must have the loop record what
    the call left, and find the task, not answer None."""
    warm(app)
    loop = app.core.loop
    assert loop is not None
    before = pool_stats(app)["direct_calls"]
    held, release = threading.Event(), threading.Event()
    uuids: list[Any] = []
    outcome: list[tuple[str, Any]] = []

    def hold_the_loop() -> None:
        held.set()
        assert release.wait(30)
        get = app.core.get(uuids[0])
        try:
            get.send(None)  # runs until it first lets the loop go on
        except StopIteration as done:
            outcome.append(("answered in the callback", done.value))
        else:
            outcome.append(("let the loop record first", asyncio.ensure_future(get)))

    loop.call_soon_threadsafe(hold_the_loop)
    assert held.wait(30)
    task = app.add_task("add", 20, 22, timeout=30)  # to its worker with the loop held
    assert task is not None and task.returning == 42
    assert pool_stats(app)["direct_calls"] == before + 1
    uuids.append(task.uuid)
    release.set()
    how, value = wait_until(lambda: outcome, 30, "the held callback")[0]
    assert how == "let the loop record first", value

    async def result() -> Any:
        return await value

    got = app.core.call_from_thread(result())
    assert got is not None and got.uuid == task.uuid and got.status == "success"
    assert got.returning == 42


def test_an_error_is_the_loops_to_decide(app: QueueTasks) -> None:
    warm(app, "fail", "first")
    before = pool_stats(app)["direct_calls"]
    task = app.add_task("fail", "boom", timeout=30)
    assert task is not None and task.status == "error" and "ValueError: boom" in task.traceback
    assert pool_stats(app)["direct_calls"] > before  # its answer was read by this thread
    retried = app.add_task("fail_retried", "again", timeout=30)  # Retries puts it back
    assert retried is not None and retried.status == "error" and retried.retry == 1
    settled(app)


def test_a_log_record_from_the_worker_hands_the_call_to_the_loop(
    app: QueueTasks, caplog: pytest.LogCaptureFixture
) -> None:
    assert app.add_task("chatty", 0, timeout=30) is not None  # its function encoded
    warm(app)  # a worker parked
    before = pool_stats(app)["direct_handed_back"]
    task = app.add_task("chatty", 5, timeout=30)
    assert task is not None and task.status == "success" and task.returning == 5
    assert pool_stats(app)["direct_handed_back"] > before
    assert "chatty 5" in caplog.text
    settled(app)


def test_progress_and_a_nested_add_task_go_through_the_loop(app: QueueTasks) -> None:
    for name, arg in (("report", 1), ("nested", 1)):  # their functions encoded
        assert app.add_task(name, arg, timeout=30) is not None
    warm(app)
    before = pool_stats(app)["direct_handed_back"]
    task = app.add_task("report", 3, timeout=30)
    assert task is not None and task.status == "success" and task.returning == 3
    warm(app)  # the worker it ran on went back to the loop
    nested = app.add_task("nested", 41, timeout=30)
    assert nested is not None and nested.status == "success" and nested.returning == 42
    assert pool_stats(app)["direct_handed_back"] >= before + 2
    settled(app)


def test_a_worker_that_dies_fails_its_call_and_the_pool_heals(app: QueueTasks) -> None:
    warm(app)
    warm(app, "forks")  # a call that forks in the worker still comes back directly
    assert app.add_task("die", timeout=30) is not None  # its function encoded
    settled(app)
    warm(app)
    crashes = pool_stats(app)["crashes"]
    task = app.add_task("die", timeout=30)
    assert task is not None and task.status == "error" and "WorkerCrashed" in task.traceback
    assert pool_stats(app)["crashes"] == crashes + 1
    settled(app)
    warm(app)  # and direct calls go on


def test_the_tasks_own_timeout_kills_and_replaces_the_worker(app: QueueTasks) -> None:
    assert app.add_task("timed", timeout=30) is not None  # its function encoded
    settled(app)
    warm(app)
    timeouts = pool_stats(app)["timeouts"]
    handed_back = pool_stats(app)["direct_handed_back"]
    task = app.add_task("timed", timeout=30)
    assert task is not None and task.status == "error" and "TaskTimeout" in task.traceback
    assert pool_stats(app)["timeouts"] == timeouts + 1
    assert pool_stats(app)["direct_handed_back"] == handed_back + 1
    settled(app)


def test_the_callers_timeout_returns_none_and_the_call_goes_on(
    app: QueueTasks, tmp_path: Path
) -> None:
    warm(app, "wait_for", *_open_pipes(tmp_path, "w"))
    started, release = _pipes(tmp_path, "x")
    caller, got, _ = _start_caller(
        lambda: app.add_task("wait_for", started, release, timeout=0.2), started
    )
    caller.join(30)
    assert got == [None]
    assert app.stats()["unfinished"] == 1
    with open(release, "w") as f:
        f.write("late")
    settled(app)
    assert app.stats()["tasks"]["wait_for"]["ok"] >= 2


def test_cancel_from_another_thread_kills_the_worker(app: QueueTasks, tmp_path: Path) -> None:
    warm(app, "announce_and_wait", *_open_pipes(tmp_path, "w"))
    started, release = _pipes(tmp_path, "x")
    caller, got, uuid = _start_caller(
        lambda: app.add_task("announce_and_wait", started, release, timeout=30), started
    )
    assert app.cancel(uuid) is True
    caller.join(30)
    assert len(got) == 1 and got[0] is not None and got[0].status == "cancel"
    got_now = app.get(uuid)
    assert got_now is not None and got_now.status == "cancel"
    assert pool_stats(app)["cancels"] == 1
    settled(app)


def test_threads_and_the_loops_own_calls_together(app: QueueTasks) -> None:
    warm(app)
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def caller(base: int) -> None:
        try:
            for i in range(base, base + 60):
                task = app.add_task("add", i, 0, timeout=30)
                results[i] = None if task is None else (task.status, task.returning)
        except BaseException as e:  # reported below
            errors.append(e)

    async def from_the_loop() -> list[Any]:
        import asyncio

        return await asyncio.gather(
            *(app.core.add_task("add", 10_000 + i, 0, timeout=30) for i in range(200))
        )

    threads = [threading.Thread(target=caller, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    gathered = app.core.call_from_thread(from_the_loop())
    for t in threads:
        t.join(60)
    assert not errors
    assert results == {i: ("success", i) for k in range(4) for i in range(k * 1000, k * 1000 + 60)}
    assert [(t.status, t.returning) for t in gathered] == [
        ("success", 10_000 + i) for i in range(200)
    ]
    settled(app)
    stats = app.stats()
    assert stats["tasks"]["add"]["count"] == stats["tasks"]["add"]["ok"]  # none ran twice...
    assert stats["tasks"]["add"]["ok"] >= 440  # ... or was lost (warm-up included)
    assert pool_stats(app)["direct_calls"] > 1


def test_stop_while_a_thread_holds_a_worker(tmp_path: Path) -> None:
    app = make_app("direct-stop", shutdown_timeout=0.2)
    app.start()
    warm(app, "wait_for", *_open_pipes(tmp_path, "w"))
    pids = pool_stats(app)["pids"]
    started, release = _pipes(tmp_path, "x")
    caller, got, _ = _start_caller(lambda: _outcome(app, "wait_for", started, release), started)
    app.stop()  # the call outlives shutdown_timeout: cancelled, its worker killed
    caller.join(30)
    assert not caller.is_alive()
    assert len(got) == 1 and got[0] in ("cancel", "AppNotRunning")
    assert not any(psutil.pid_exists(pid) and _alive(pid) for pid in pids)


def test_large_arguments_keep_the_normal_path(app: QueueTasks) -> None:
    app.task(executor="process")(directfuncs.size)
    assert app.add_task("size", b"x", timeout=30) is not None  # its function encoded
    warm(app)
    before = pool_stats(app)
    task = app.add_task("size", b"x" * (2 << 20), timeout=30)  # into shared memory
    assert task is not None and task.status == "success" and task.returning == 2 << 20
    after = pool_stats(app)
    assert after["direct_calls"] == before["direct_calls"]
    assert after["offloaded"] > before["offloaded"]
    settled(app)


def test_a_durable_store_keeps_the_normal_path(tmp_path: Path) -> None:
    app = QueueTasks(
        "direct-sqlite",
        store=f"sqlite:///{tmp_path / 'tasks.db'}",
        executors={"process": ProcessExecutor(max_workers=WORKERS, autoscale=False)},
    )
    app.task(executor="process")(directfuncs.add)
    try:
        app.start()
        for i in range(5):
            task = app.add_task("add", i, 1, timeout=30)
            assert task is not None and task.returning == i + 1
        assert pool_stats(app)["direct_calls"] == 0
    finally:
        app.stop()


def test_the_async_facade_never_goes_direct() -> None:
    import asyncio

    async def main() -> int:
        app = AsyncQueueTasks(
            "direct-async",
            executors={"process": ProcessExecutor(max_workers=WORKERS, autoscale=False)},
        )
        app.task(executor="process")(directfuncs.add)
        async with app:
            for i in range(5):
                await app.add_task("add", i, 1, timeout=30)
            direct: int = app.executors["process"].stats()["direct_calls"]
            return direct

    assert asyncio.run(main()) == 0


def test_signals_while_a_caller_waits_do_not_stretch_its_timeout(
    app: QueueTasks, tmp_path: Path
) -> None:
    """A caller in the main thread, with a signal handled every 20 ms (as a profiler's
    timer would be): its `timeout=` runs out as ever. (A read with the socket's own
    timeout, SO_RCVTIMEO, tried in review, restarted whole at each signal and never
    ran out.)"""
    warm(app, "wait_for", *_open_pipes(tmp_path, "w"))
    before = pool_stats(app)["direct_calls"]
    started = str(tmp_path / "started")  # a file: no reader needed
    release = str(tmp_path / "release")
    os.mkfifo(release)  # the call blocks until the test writes it
    signals: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: signals.append(signum))
    stop = threading.Event()
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main  # (signals run there)

    def signaller() -> None:  # (not SIGALRM: pytest-timeout's)
        while not stop.wait(0.02):
            signal.pthread_kill(main, signal.SIGUSR1)

    sender = threading.Thread(target=signaller)
    sender.start()
    try:
        task = app.add_task("wait_for", started, release, timeout=0.3)
    finally:
        stop.set()
        sender.join(10)
        signal.signal(signal.SIGUSR1, previous)
    assert task is None  # the time ran out; the call goes on
    assert signals  # (they came while it waited)
    # It went to its worker directly, and was handed back to the loop at its timeout
    # (which the loop records once the call's acceptance has run).
    wait_until(lambda: pool_stats(app)["direct_handed_back"] == 1, 10, "the call handed back")
    assert pool_stats(app)["direct_calls"] == before
    _release(release)


# ------------------------------------------------- threads waiting for a held worker


@pytest.fixture
def one_worker(tmp_path: Path) -> Iterator[tuple[QueueTasks, ProcessExecutor]]:
    """An app with one process worker, lent to thread A (blocked in `wait_for` on a
    pipe the test holds) while the test starts thread B's quick `add`. B may wait for
    A's worker at most `wait_s` (set long here: a test chooses when A lets go)."""
    app = make_app("direct-one", workers=1)
    try:
        app.start()
        warm(app)
        warm(app, "wait_for", *_open_pipes(tmp_path, "w"))
        pool = app.executors["process"]
        assert isinstance(pool, ProcessExecutor)
        pool.direct.quick_s = 3600.0  # `add` counts as quick however loaded the machine
        yield app, pool
    finally:
        app.stop()


def _held_by_a(app: QueueTasks, pool: ProcessExecutor, tmp_path: Path) -> tuple[Any, ...]:
    """Thread A holds the only worker, blocked in `wait_for`: (thread, its result list,
    the pipe that releases it, direct calls counted before A's)."""
    before = pool_stats(app)["direct_calls"]
    started, release = _pipes(tmp_path, "a")
    caller, got, _ = _start_caller(lambda: _outcome(app, "wait_for", started, release), started)
    assert len(pool.direct.held) == 1 and not pool.direct.free
    return caller, got, release, before


def _b_adds(app: QueueTasks) -> tuple[threading.Thread, list[Any]]:
    """Thread B, started now: a quick `add(20, 22)`; the list its Task goes to."""
    got: list[Any] = []
    b = threading.Thread(target=lambda: got.append(app.add_task("add", 20, 22, timeout=30)))
    b.start()
    return b, got


def _release(release: str) -> None:
    """Let a `wait_for` blocked on the pipe `release` return."""
    with open(release, "w") as f:
        f.write("done")


def _both_done(
    a: threading.Thread, a_got: list[Any], b: threading.Thread, b_got: list[Any]
) -> None:
    """A and B joined: A's call succeeded, B's returned 42."""
    a.join(30)
    b.join(30)
    assert a_got == ["success"]
    assert len(b_got) == 1 and b_got[0] is not None and b_got[0].returning == 42


def test_a_thread_finding_the_worker_held_waits_for_it_and_goes_direct(
    one_worker: tuple[QueueTasks, ProcessExecutor], tmp_path: Path
) -> None:
    app, pool = one_worker
    pool.direct.wait_s = 30.0
    a, a_got, release, before = _held_by_a(app, pool, tmp_path)
    b, b_got = _b_adds(app)
    wait_until(lambda: len(pool.direct.waiting) == 1, 20, "B to wait for A's worker")
    _release(release)
    _both_done(a, a_got, b, b_got)
    assert pool_stats(app)["direct_calls"] == before + 2  # A's, then B's on the same worker
    assert pool_stats(app)["direct_handed_back"] == 0
    assert not pool.direct.waiting
    settled(app)


def test_a_thread_whose_wait_runs_out_takes_the_loops_way(
    one_worker: tuple[QueueTasks, ProcessExecutor], tmp_path: Path
) -> None:
    app, pool = one_worker
    pool.direct.wait_s = 0.05
    a, a_got, release, before = _held_by_a(app, pool, tmp_path)
    b, b_got = _b_adds(app)
    # B's call waits in the loop for the worker A holds (the loop then recalls it)
    wait_until(lambda: pool.scheduler.pending, 20, "B's call to reach the loop")
    assert not pool.direct.waiting
    _release(release)
    _both_done(a, a_got, b, b_got)
    assert pool_stats(app)["direct_calls"] == before + 1  # A's only
    settled(app)


def test_the_loops_own_calls_end_a_threads_wait(
    one_worker: tuple[QueueTasks, ProcessExecutor], tmp_path: Path
) -> None:
    app, pool = one_worker
    pool.direct.wait_s = 30.0
    a, a_got, release, before = _held_by_a(app, pool, tmp_path)
    b, b_got = _b_adds(app)
    wait_until(lambda: len(pool.direct.waiting) == 1, 20, "B to wait for A's worker")
    # A call from the loop waits for a worker: the loop's calls come first, so B stops
    # waiting for A's worker and takes the loop's way too.
    from_loop = asyncio.run_coroutine_threadsafe(
        app.core.add_task("add", 1, 1, timeout=30), app.core.loop
    )
    wait_until(lambda: not pool.direct.waiting, 20, "B to stop waiting once the loop's call waits")
    _release(release)
    _both_done(a, a_got, b, b_got)
    loop_task = from_loop.result(30)
    assert loop_task is not None and loop_task.returning == 2
    assert pool_stats(app)["direct_calls"] == before + 1  # A's only
    settled(app)


def test_a_function_not_known_quick_never_waits(
    one_worker: tuple[QueueTasks, ProcessExecutor], tmp_path: Path
) -> None:
    app, pool = one_worker
    pool.direct.wait_s = 30.0
    pool.direct.quick_s = 0.0  # nothing is quick
    a, a_got, release, before = _held_by_a(app, pool, tmp_path)
    b, b_got = _b_adds(app)
    wait_until(lambda: pool.scheduler.pending, 20, "B's call to reach the loop")
    assert not pool.direct.waiting
    _release(release)
    _both_done(a, a_got, b, b_got)
    assert pool_stats(app)["direct_calls"] == before + 1
    settled(app)


def test_no_wait_for_a_worker_held_by_a_slow_call(
    one_worker: tuple[QueueTasks, ProcessExecutor], tmp_path: Path
) -> None:
    """B's function is quick, but the only worker runs A's call of a function known to
    be slow: B takes the loop's way at once instead of waiting for it."""
    app, pool = one_worker
    pool.direct.wait_s = 30.0
    slow = pool.function_key(app.core.specs["wait_for"])
    assert slow is not None
    pool.direct.took[slow] = 3600.0  # A's call is expected back in an hour
    a, a_got, release, before = _held_by_a(app, pool, tmp_path)
    b, b_got = _b_adds(app)
    wait_until(lambda: pool.scheduler.pending, 10, "B's call to reach the loop")
    assert not pool.direct.waiting
    _release(release)
    _both_done(a, a_got, b, b_got)
    assert pool_stats(app)["direct_calls"] == before + 1
    settled(app)


def test_a_wait_cut_short_by_an_exception_leaves_no_worker_behind(
    one_worker: tuple[QueueTasks, ProcessExecutor], tmp_path: Path
) -> None:
    """The main thread waits for A's worker and a signal handler raises there (Ctrl-C):
    the wait ends, and the worker A puts back is free again, not handed to the wait
    that is gone (it would stay held, and stop() would wait for it for ever)."""
    app, pool = one_worker
    pool.direct.wait_s = 30.0
    a, a_got, release, _ = _held_by_a(app, pool, tmp_path)

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main

    def when_waiting() -> None:
        wait_until(lambda: pool.direct.waiting, 20, "the main thread to wait")
        signal.pthread_kill(main, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, interrupt)
    sender = threading.Thread(target=when_waiting)
    sender.start()
    try:
        with pytest.raises(Interrupted):
            app.add_task("add", 20, 22, timeout=30)
    finally:
        sender.join(30)
        signal.signal(signal.SIGUSR1, previous)
    assert not pool.direct.waiting
    _release(release)
    a.join(30)
    assert a_got == ["success"]
    wait_until(lambda: pool.direct.free, 10, "A's worker to be free again")
    assert not pool.direct.held
    task = app.add_task("add", 1, 2, timeout=30)
    assert task is not None and task.returning == 3
    settled(app)


def test_an_interrupt_just_after_the_answer_was_read_ends_the_call(
    app: QueueTasks, caplog: pytest.LogCaptureFixture
) -> None:
    """A KeyboardInterrupt can land after the thread has read the answer off the socket
    and before it is used: the answer is gone with it. The call must still end (its
    worker is killed: WorkerCrashed, saying why), not wait in the loop for an answer
    that was read; and the log does not call the kill a crash."""
    warm(app)
    pool = app.executors["process"]
    assert isinstance(pool, ProcessExecutor)
    receive = pool.direct._receive

    def read_then_interrupted(h: Any, end: float) -> Any:  # (a probe on this pool only)
        assert receive(h, end) is not None  # the answer, read
        raise KeyboardInterrupt

    pool.direct._receive = read_then_interrupted  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="qtasks_mp"):
        try:
            with pytest.raises(KeyboardInterrupt):
                app.add_task("add", 20, 22, timeout=30)
        finally:
            del pool.direct._receive
        assert app.wait_idle(timeout=20)
    assert not pool.direct.held
    assert app.stats()["tasks"]["add"]["failed"] == 1  # WorkerCrashed
    assert "killed, as its caller was interrupted (Ctrl-C) during the call" in caplog.text
    assert "died (exit code" not in caplog.text
    task = app.add_task("add", 1, 2, timeout=30)
    assert task is not None and task.returning == 3
    settled(app)


def test_a_thread_waiting_for_a_held_worker_gets_an_idle_one_parked(tmp_path: Path) -> None:
    """Two workers: one parked and held by thread A, the other idle with the loop.
    Thread B's quick call waits for a worker and asks the pool to park one: the idle
    one is parked and goes to B, which does not wait for A's."""
    app = make_app("direct-two")
    try:
        app.start()
        warm(app)
        warm(app, "wait_for", *_open_pipes(tmp_path, "w"))
        pool = app.executors["process"]
        assert isinstance(pool, ProcessExecutor) and pool.roster is not None
        pool.direct.quick_s = 3600.0
        pool.direct.wait_s = 30.0
        assert len(pool.direct.free) == 1
        assert sum(h.takes_calls for h in pool.roster.workers) == 1  # idle, the loop's
        a, a_got, release, before = _held_by_a(app, pool, tmp_path)
        b, b_got = _b_adds(app)
        wait_until(lambda: b_got, 10, "B's call, with A still holding its worker")
        assert b_got[0] is not None and b_got[0].returning == 42
        assert pool_stats(app)["direct_calls"] == before + 1  # B's, on the other worker
        assert not a_got  # A still waits
        _release(release)
        _both_done(a, a_got, b, b_got)
        settled(app)
    finally:
        app.stop()


# ---------------------------------------------------------------- helpers


def _pipes(tmp_path: Path, tag: str) -> tuple[str, str]:
    started, release = str(tmp_path / f"started-{tag}"), str(tmp_path / f"release-{tag}")
    os.mkfifo(started)
    os.mkfifo(release)
    return started, release


def _open_pipes(tmp_path: Path, tag: str) -> tuple[str, str]:
    """Regular files: `wait_for` on them returns at once (for warming up)."""
    started, release = tmp_path / f"started-{tag}", tmp_path / f"release-{tag}"
    release.write_text("warm")
    return str(started), str(release)


def _start_caller(call: Callable[[], Any], started: str) -> tuple[threading.Thread, list[Any], str]:
    """Run `call` in a plain thread once its task is running: the thread, the list its
    result goes to, and what the task wrote to the `started` pipe."""
    got: list[Any] = []
    caller = threading.Thread(target=lambda: got.append(call()))
    caller.start()
    with open(started) as f:
        return caller, got, f.read()


def _outcome(app: QueueTasks, *args: Any) -> str:
    try:
        task = app.add_task(*args, timeout=30)
    except Exception as e:
        return type(e).__name__
    return "None" if task is None else str(task.status)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_an_autoscaled_pool_lends_its_workers_too() -> None:
    app = QueueTasks("direct-autoscale", executors={"process": ProcessExecutor(max_workers=2)})
    app.task(executor="process")(directfuncs.add)
    try:
        app.start()
        warm(app)
        for i in range(100):
            task = app.add_task("add", i, 1, timeout=30)
            assert task is not None and task.returning == i + 1
        assert app.wait_idle(timeout=30)
        assert app.stats()["tasks"]["add"]["ok"] == app.stats()["tasks"]["add"]["count"]
        assert pool_stats(app)["direct_calls"] >= 50
    finally:
        app.stop()


# ------------------------------------------------------------------ found in review


def test_a_result_in_shared_memory_is_handed_back_and_recorded(app: QueueTasks) -> None:
    app.task(executor="process")(directfuncs.big)
    assert app.add_task("big", timeout=30) is not None  # the loop encodes the function
    warm(app)
    before = pool_stats(app)["direct_handed_back"]
    task = app.add_task("big", timeout=30)
    assert task is not None and task.status == "success" and len(task.returning) == 2 << 20
    assert pool_stats(app)["direct_handed_back"] == before + 1  # its chain ran on in the loop
    settled(app)


def test_an_argument_that_cannot_be_pickled_takes_the_normal_path(app: QueueTasks) -> None:
    warm(app)
    task = app.add_task("add", threading.Lock(), 1, timeout=30)
    assert task is not None and task.status == "error" and "pickle" in str(task.traceback)
    pool = app.executors["process"]
    assert isinstance(pool, ProcessExecutor)
    assert not pool.direct.held  # the worker it took was put back
    warm(app)
    settled(app)


def test_a_parked_worker_that_dies_leaves_the_free_list_as_its_exit_is_seen(
    app: QueueTasks,
) -> None:
    warm(app)
    pool = app.executors["process"]
    assert isinstance(pool, ProcessExecutor)
    h = pool.direct.free[0]
    os.kill(h.pid, signal.SIGKILL)
    wait_until(lambda: h.exited, 10, "the loop to learn of the exit (from the fork server)")
    # Its socket is not read while parked (no EOF would say it): it must not be lent now.
    assert h not in pool.direct.free
    task = app.add_task("add", 1, 2, timeout=30)
    assert task is not None and task.status == "success"
    settled(app)


async def test_a_pool_whose_start_fails_raises_that_and_leaves_no_worker() -> None:
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}  # e.g. the session's pools
    # its workers cannot start: they import a module that does not exist
    pool = ProcessExecutor(max_workers=2, autoscale=False, preload=["no_such_module_here"])
    with pytest.raises(QTasksError, match="died while starting"):
        await pool.start()
    assert pool.roster is None and not pool.running

    def ours() -> list[psutil.Process]:
        return [
            p
            for p in me.children(recursive=True)
            if p.pid not in before
            and p.status() != psutil.STATUS_ZOMBIE
            and "resource_tracker" not in " ".join(p.cmdline())  # multiprocessing's, shared
        ]

    deadline = time.monotonic() + 10
    while ours():
        assert time.monotonic() < deadline, ours()
        await asyncio.sleep(0.02)


INTERRUPTED = """
import json, os, signal, sys, threading, time
# Ctrl-C raises KeyboardInterrupt, as in a terminal: not inherited as ignored (a test run
# started in the background by a shell without job control ignores SIGINT).
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, sys.argv[1])
import directfuncs
from qtasks_mp import QueueTasks
from qtasks_mp.executors.process import ProcessExecutor

app = QueueTasks("kbint", executors={"process": ProcessExecutor(max_workers=2, autoscale=False)})
app.config.shutdown_timeout = 2.0
app.task(executor="process")(directfuncs.sleepy)
app.start()
pool = app.executors["process"]
for _ in range(50):  # until a call went direct
    app.add_task("sleepy", 0.0, timeout=30)
    if pool.stats()["direct_calls"]:
        break
main = threading.main_thread().ident

def press_ctrl_c():  # to the main thread, once its call is on its way to a worker
    deadline = time.monotonic() + 20
    while not any(hold.posted for hold in list(pool.direct.held.values())):
        if time.monotonic() > deadline:
            os._exit(3)  # (the call never went direct)
        time.sleep(0.005)
    signal.pthread_kill(main, signal.SIGINT)

threading.Thread(target=press_ctrl_c).start()
try:
    app.add_task("sleepy", 3.0, timeout=30)
    interrupted = False
except KeyboardInterrupt:
    interrupted = True
idle = app.wait_idle(timeout=20)
task = app.stats()
start = time.monotonic()
app.stop()
print(json.dumps([pool.stats()["direct_calls"] > 0, interrupted, idle, task["unfinished"],
                  time.monotonic() - start]))
"""


def test_ctrl_c_in_a_direct_call_hands_the_call_to_the_loop() -> None:
    """KeyboardInterrupt while the caller's thread waits for its worker: the call goes on
    in the loop (wait_idle returns), and stop() does not wait for a held worker."""
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED, str(Path(directfuncs.__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    went_direct, interrupted, idle, unfinished, stop_s, *dbg = json.loads(
        done.stdout.splitlines()[-1]
    )
    assert went_direct and interrupted, dbg
    assert idle and unfinished == 0
    assert stop_s < 5, stop_s  # bounded by shutdown_timeout, not a held worker


# ---------------------------------------------- Ctrl-C between any two steps of a call

#: The modules of a direct call's thread side (the hand-over to the loop after it:
#: tests/test_handoff.py).
_THREAD_SIDE = {"direct.py", "parked.py"}
#: Lines at which an exception raised by a trace function escapes the handlers a real
#: interrupt there would meet (CPython gives their first instruction no handler, or
#: the line is a `with` block's exit); a real interrupt lands after a call returns or
#: as a function starts, which the lines before and after stand for.
_NOT_A_POINT = ("try:", "with ", "finally:", "except", "else:")


class _InterruptAtLine:
    """`sys.settrace` for one call in this thread: raise KeyboardInterrupt at the `n`th
    line run in the thread side's modules (or at the first that starts with `text`),
    once, after running `before`. With `then`, Ctrl-C is pressed again: a second
    KeyboardInterrupt at the `then`th function entry or return in those modules after
    the first (`sys.setprofile`: a trace function that raises is unset), where a real
    interrupt lands."""

    def __init__(
        self,
        n: int = -1,
        text: str | None = None,
        before: Callable[[], object] = object,
        then: int = -1,
    ) -> None:
        self.n, self.text, self.before, self.seen, self.where = n, text, before, 0, ""
        self.direct = False  # the call reached `DirectCalls.call`
        self.then, self.events, self.again = then, 0, ""  # the second interrupt, if any

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        path = Path(frame.f_code.co_filename)
        ours = path.name in _THREAD_SIDE and "qtasks_mp" in path.parts
        if ours and path.name == "direct.py" and frame.f_code.co_name == "call":
            self.direct = True
        return self._line if ours else None

    def _line(self, frame: Any, event: str, arg: Any) -> Any:
        if event != "line":
            return self._line
        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
        if line.startswith(_NOT_A_POINT):
            return self._line
        self.seen += 1
        if self.seen - 1 == self.n or (self.text is not None and line.startswith(self.text)):
            self.where = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {line}"
            sys.settrace(None)
            self.before()
            if self.then >= 0:
                sys.setprofile(self._event)
            raise KeyboardInterrupt
        return self._line

    def _event(self, frame: Any, event: str, arg: Any) -> None:
        path = Path(frame.f_code.co_filename)
        if event not in ("call", "return") or path.name not in _THREAD_SIDE:
            return
        self.events += 1
        if self.events - 1 == self.then:
            sys.setprofile(None)
            self.again = f"{event} of {frame.f_code.co_name} ({path.name}:{frame.f_lineno})"
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("task_name", "args"),
    [("add", (1, 2)), ("fail", ("no",)), ("chatty", (5,))],
    ids=["answered", "OP_ERR", "handed-back"],
)
def test_an_interrupt_at_any_line_of_a_direct_call_leaves_it_ending(
    app: QueueTasks, task_name: str, args: tuple[Any, ...]
) -> None:
    """Ctrl-C in a script making quick sync calls lands anywhere in them. For each line
    a direct call runs, in turn, from taking a worker to posting its ending: a
    KeyboardInterrupt raised there leaves no worker held by nobody and no task
    unfinished (the app goes idle), and the next call goes direct again. Before, an
    interrupt just after a worker was taken, or before the answer was settled, left
    the worker held for ever (stop() hung on it) and the task unfinished."""
    pool = app.executors["process"]
    assert isinstance(pool, ProcessExecutor)
    direct = pool.direct
    counted = "direct_handed_back" if task_name == "chatty" else "direct_calls"
    in_call = 0  # interrupts inside `DirectCalls.call` (the rest: before it, in `available`)
    app.add_task(task_name, *args, timeout=30)  # (its function known to the loop)
    n = 0
    while True:
        warm(app)
        assert app.wait_idle(timeout=20)
        if n == 0:  # it goes direct, uninterrupted
            before = pool_stats(app)[counted]
            app.add_task(task_name, *args, timeout=30)
            assert pool_stats(app)[counted] == before + 1, counted
            warm(app)
        inject = _InterruptAtLine(n)
        sys.settrace(inject)
        try:
            app.add_task(task_name, *args, timeout=30)
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        what = f"interrupted at {inject.where} (line {n} of the call)"
        if not inject.where:  # the call ran to its end with no line left: all were tried
            assert inject.direct, "the call went the loop's way"
            break
        in_call += inject.direct
        assert app.wait_idle(timeout=20), what
        wait_until(lambda: not direct.held and not direct.returning, 20, what)
        n += 1
    assert in_call > 50  # (the lines were traced)
    warm(app)
    settled(app)


def test_ctrl_c_pressed_twice_anywhere_in_a_direct_call_leaves_it_ending(
    app: QueueTasks,
) -> None:
    """A second Ctrl-C can land while the first one's handler gives the worker up
    (`DirectCalls._end`, which `call` runs again until it ends). For each line of the
    call, a first interrupt, then a second at each function entry or return after it:
    no worker held by nobody or stuck on its way back, no task unfinished. Before, a
    second one in `_end`'s nothing-accepted branch made its run again take the call
    for posted: it killed a worker that was never sent the call and posted a hand-back
    that nothing took."""
    pool = app.executors["process"]
    assert isinstance(pool, ProcessExecutor)
    direct = pool.direct
    in_end = 0  # second interrupts that landed in `_end` or what it calls
    n = 0
    while True:
        m = 0
        while True:
            warm(app)
            inject = _InterruptAtLine(n, then=m)
            sys.settrace(inject)
            try:
                app.add_task("add", 1, 2, timeout=30)
            except KeyboardInterrupt:
                pass
            finally:
                sys.settrace(None)
                sys.setprofile(None)
            what = f"interrupted at {inject.where}, then at {inject.again or 'none'}"
            assert app.wait_idle(timeout=20), what
            wait_until(lambda: not direct.held and not direct.returning, 20, what)
            in_end += "_end" in inject.again or "_put_back" in inject.again
            if not inject.again:  # no entry or return left after the first: all tried
                break
            m += 1
        if not inject.where:
            break
        n += 1
    assert in_end > 20  # (the handler's runs were reached)
    warm(app)
    settled(app)


def test_an_interrupt_as_the_loop_takes_the_posted_call_still_ends_it(app: QueueTasks) -> None:
    """The loop may run a direct call's accept (and take the call from `calls`) between
    the thread posting it and marking it posted. An interrupt there must leave the call
    with an ending: before, the thread took it for not accepted and put the worker back,
    and the task stayed unfinished until stop()."""
    warm(app)
    pool = app.executors["process"]
    assert isinstance(pool, ProcessExecutor)
    direct = pool.direct
    loop = app.core.loop
    assert loop is not None

    def flush_in_loop() -> None:  # the loop's flush timer runs now
        flushed = threading.Event()
        loop.call_soon_threadsafe(lambda: (direct.flush(), flushed.set()))
        assert flushed.wait(20)

    mark = "hold.posted = True"
    inject = _InterruptAtLine(text=mark, before=flush_in_loop)
    sys.settrace(inject)
    try:
        with pytest.raises(KeyboardInterrupt):
            app.add_task("add", 5, 6, timeout=30)
    finally:
        sys.settrace(None)
    assert inject.where, f"no line {mark!r} in direct.py"
    assert app.wait_idle(timeout=20)
    wait_until(lambda: not direct.held and not direct.returning, 20, "the worker back")
    warm(app)
    settled(app)
