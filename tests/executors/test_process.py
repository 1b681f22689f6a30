"""ProcessExecutor on a healthy pool: results, errors users cause, generators, the task
context, logging, recycling, stats and a clean shutdown. Crashes and timeouts are in
test_process_crashes.py (they get a pool of their own)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import procfuncs
import psutil
import pytest
import pytest_asyncio
from proc_support import (
    assert_roster_counts,
    fifo,
    gone,
    grandchildren,
    make_call,
    read_fifo,
    write_fifo,
)

from qtasks_mp import SerializationError, TaskStatus
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.executors.process import ProcessExecutor
from qtasks_mp.stores.sqlite import SQLiteStore
from qtasks_mp.wire import RemoteTraceback

pytestmark = pytest.mark.asyncio(loop_scope="module")

seen_items: list[Any] = []


async def record_item(item: Any) -> str:
    seen_items.append(item)
    if item == "first":  # the worker waits until we have seen it
        await write_fifo(record_item.fifo, "second")  # type: ignore[attr-defined]
    return f"handled {item}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app() -> AsyncIterator[QueueTasks]:
    """One healthy app with a 2-worker process pool, shared by this module."""
    application = QueueTasks(
        "proc", executors={"process": ProcessExecutor(max_workers=2, autoscale=False)}
    )
    application.config.shutdown_timeout = 2.0
    for fn in (procfuncs.add, procfuncs.fail, procfuncs.take, procfuncs.raise_needs_two_args):
        application.task(executor="process")(fn)
    application.task(executor="process", generate_handler=record_item)(procfuncs.yield_then_wait)
    application.task(executor="process", echo=True)(procfuncs.spawn_child)
    application.task(executor="process", echo=True)(procfuncs.nested_wait)
    application.task(name="add_in_thread")(lambda a, b: a + b)
    async with application:
        yield application


@pytest.fixture
def pool(app: QueueTasks) -> ProcessExecutor:
    executor = app.executors["process"]
    assert isinstance(executor, ProcessExecutor)
    return executor


async def test_constructing_starts_no_process() -> None:
    before = psutil.Process().children(recursive=True)
    executor = ProcessExecutor(max_workers=3, autoscale=False)
    assert executor.slots == 0
    assert psutil.Process().children(recursive=True) == before


async def test_a_worker_imports_only_the_wire_format_and_the_context() -> None:
    executor = ProcessExecutor(max_workers=1, autoscale=False)  # a fresh worker
    await executor.start()
    try:
        loaded = await executor.run(make_call(procfuncs.our_modules))
    finally:
        await executor.aclose()
    assert set(loaded) == {
        "qtasks_mp",  # the packages on the way: their __init__ import nothing
        "qtasks_mp.executors",
        "qtasks_mp.executors.process",
        "qtasks_mp.executors.process.forkserver",  # a worker is a fork of it
        "qtasks_mp.executors.process.worker",
        "qtasks_mp.wire",
        "qtasks_mp.context",
    }


async def test_add_task_returns_the_result_through_the_app(app: QueueTasks) -> None:
    task = await app.add_task("add", 2, 3, timeout=5)
    assert task is not None and task.status == TaskStatus.SUCCESS
    assert task.returning == 5


async def test_slots_are_workers_times_pipeline_depth(pool: ProcessExecutor) -> None:
    assert pool.slots == 2 * pool.depth
    stats = pool.stats()
    assert stats["workers"] == 2 and len(stats["pids"]) == 2


async def test_depth_adapts_to_call_length_unless_fixed() -> None:
    adaptive = ProcessExecutor(max_workers=1, autoscale=False)
    fixed = ProcessExecutor(max_workers=1, autoscale=False, pipeline_depth=3)
    await adaptive.start()
    await fixed.start()
    try:
        assert adaptive.depth == 2  # nothing measured yet
        for _ in range(20):
            await adaptive.run(make_call(procfuncs.noop))
            await fixed.run(make_call(procfuncs.noop))
        # 16 or more when a no-op's round trip is under 0.5 ms, 2 on a machine too busy
        # (the mapping itself is checked with the measurement injected, below)
        assert adaptive.depth >= 2
        assert fixed.depth == 3
        for _ in range(3):
            await adaptive.run(make_call(procfuncs.cpu, 30))
        assert adaptive.depth == 1  # long calls: one at a time
    finally:
        await adaptive.aclose()
        await fixed.aclose()


@pytest.mark.parametrize(
    ("measured_s", "depth"),
    [(None, 2), (0.00002, 128), (0.0001, 80), (0.0005, 16), (0.001, 8), (0.004, 2), (0.006, 1)],
)
async def test_depth_by_measured_call_length(measured_s: float | None, depth: int) -> None:
    pool = ProcessExecutor(max_workers=1, autoscale=False)
    pool.scheduler.service_s = measured_s  # the moving average of call time, injected
    assert pool.depth == depth


async def timed_noop_pool(service_s: float) -> ProcessExecutor:
    """A started pool of two workers that has timed the no-op (quick: pipelined deep),
    with its average call time then set to `service_s`, whatever this machine measured."""
    pool = ProcessExecutor(max_workers=2, autoscale=False)
    await pool.start()
    for _ in range(20):
        await pool.run(make_call(procfuncs.noop))
    pool.scheduler.service_s = service_s
    return pool


async def test_a_function_not_yet_timed_is_sent_one_call_per_worker() -> None:
    """A pool that learned a no-op is quick still sends a new function's calls one per
    worker until one of them has answered: a batch of long calls must not queue behind
    each other on one worker while another idles (the pool's average says "quick")."""
    pool = await timed_noop_pool(0.0001)
    try:
        assert pool.depth == 80
        runs = [
            asyncio.ensure_future(pool.run(make_call(procfuncs.block_forever))) for _ in range(6)
        ]
        await asyncio.sleep(0)  # every run() has submitted its call
        assert pool.roster is not None
        held = sorted(len(h.calls) for h in pool.roster.workers)
        assert held == [1, 1], held
        assert len(pool.scheduler.pending) == 4
    finally:
        await pool.aclose(cancel_pending=True)
    results = await asyncio.gather(*runs, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results


async def test_quick_calls_never_queue_behind_a_long_one_while_a_worker_could_take_them() -> None:
    """No-ops (pipelined up to 128 deep) are not sent behind a call whose function is
    not known to be quick: the worker running it holds it alone, the other worker takes
    them all. (They were queued behind it, where a blocked call kept them forever.)"""
    pool = await timed_noop_pool(0.00002)
    try:
        assert pool.depth == 128
        blocked = asyncio.ensure_future(pool.run(make_call(procfuncs.block_forever)))
        await asyncio.sleep(0)  # it was sent, to a worker holding nothing
        quick = [asyncio.ensure_future(pool.run(make_call(procfuncs.noop))) for _ in range(60)]
        await asyncio.sleep(0)  # every run() has submitted its call
        assert pool.roster is not None
        running_it = [
            h
            for h in pool.roster.workers
            if any(p.call.spec.fn is procfuncs.block_forever for p in h.calls)
        ]
        assert len(running_it) == 1 and len(running_it[0].calls) == 1
        assert await asyncio.wait_for(asyncio.gather(*quick), 10) == [None] * 60
    finally:
        await pool.aclose(cancel_pending=True)
    with pytest.raises(asyncio.CancelledError):
        await blocked


async def test_with_a_shared_store_slots_count_at_most_16_calls_per_worker(
    tmp_path: Path,
) -> None:
    """Tasks taken from a store other machines share are leased: the pool's slots (how
    many the dispatcher takes for it) stay at 16 a worker, even when quick calls are
    pipelined 128 deep: a leased task is one another machine's idle worker cannot take,
    and that a crash or a stop here puts back with one attempt used."""
    pool = ProcessExecutor(max_workers=2, autoscale=False)
    app = QueueTasks(
        "leases", store=SQLiteStore(tmp_path / "tasks.db"), executors={"process": pool}
    )
    async with app:
        pool.scheduler.service_s = 0.00002  # quick calls
        assert pool.depth == 128
        assert pool.slots == 2 * 16
    alone = ProcessExecutor(max_workers=2, autoscale=False)
    memory = QueueTasks("memory", executors={"process": alone})
    async with memory:
        alone.scheduler.service_s = 0.00002
        assert alone.slots == 2 * 128  # a store of this process only: no lease to hold


async def test_function_is_pickled_once_and_sent_once_per_worker(pool: ProcessExecutor) -> None:
    fn = procfuncs.PicklesOnce()
    calls = [make_call(fn) for _ in range(20)]
    counts = await asyncio.gather(*(pool.run(c) for c in calls))
    assert procfuncs.PicklesOnce.pickled == 1  # encoded once in the parent, cached by key
    assert set(counts) <= {1}  # each worker unpickled it once, however many calls it ran


async def test_remote_traceback_reaches_task_traceback(app: QueueTasks) -> None:
    task = await app.add_task("fail", "bad input", timeout=5)
    assert task is not None and task.status == TaskStatus.ERROR
    tb = task.traceback or ""
    assert "procfuncs.py" in tb and "in fail" in tb  # the worker's frames
    assert "The above exception was the direct cause" in tb
    assert tb.rstrip().endswith("ValueError: bad input")


async def test_remote_exception_keeps_its_type_and_chains_the_traceback(
    pool: ProcessExecutor,
) -> None:
    with pytest.raises(ValueError, match=r"^nope$") as info:
        await pool.run(make_call(procfuncs.fail, "nope"))
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "raise ValueError(message)" in cause.text


async def test_lambda_argument_travels_by_cloudpickle(pool: ProcessExecutor) -> None:
    assert await pool.run(make_call(procfuncs.take, lambda: 1)) == "function"


async def test_unpicklable_argument_names_task_and_type(app: QueueTasks) -> None:
    task = await app.add_task("take", threading.Lock(), timeout=5)
    assert task is not None and task.status == TaskStatus.ERROR
    last = (task.traceback or "").rstrip().splitlines()[-1]
    assert "SerializationError" in last and "'take'" in last and "_thread.lock" in last
    assert (await app.add_task("add", 1, 1, timeout=5)).returning == 2  # type: ignore[union-attr]


async def test_unpicklable_result_names_task_and_type(pool: ProcessExecutor) -> None:
    with pytest.raises(SerializationError, match=r"'return_lock'.*_thread\.lock") as info:
        await pool.run(make_call(return_lock))
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert await pool.run(make_call(procfuncs.add, 1, 2)) == 3


def return_lock() -> Any:
    return threading.Lock()


async def test_exception_that_cannot_be_unpickled(app: QueueTasks) -> None:
    task = await app.add_task("raise_needs_two_args", timeout=5)
    assert task is not None and task.status == TaskStatus.ERROR
    tb = task.traceback or ""
    assert "procfuncs.NeedsTwoArgs" in tb and "'raise_needs_two_args'" in tb
    assert "SerializationError" in tb and "raise NeedsTwoArgs" in tb  # the remote frames too


async def test_class_from_main_is_a_clear_error(pool: ProcessExecutor) -> None:
    main = sys.modules["__main__"]
    cls = type("PointInMain", (), {"__module__": "__main__"})
    main.PointInMain = cls  # type: ignore[attr-defined]  # pickled by name, as a script's would be
    try:
        with pytest.raises(SerializationError, match=r"'take'.*PointInMain.*__main__"):
            await pool.run(make_call(procfuncs.take, cls()))
    finally:
        del main.PointInMain  # type: ignore[attr-defined]
    assert await pool.run(make_call(procfuncs.add, 1, 2)) == 3


async def test_function_from_main_travels_by_value(pool: ProcessExecutor) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec("def triple(x):\n    return 3 * x\n", namespace)
    assert namespace["triple"].__module__ == "__main__"
    assert await pool.run(make_call(namespace["triple"], 7)) == 21


async def test_generator_items_are_streamed_to_the_handler(app: QueueTasks, tmp_path: Path) -> None:
    # The generator blocks after its first item until the handler has run for it:
    # this finishes only if items arrive while the generator is still running.
    seen_items.clear()
    path = fifo(tmp_path)
    record_item.fifo = path  # type: ignore[attr-defined]
    task = await app.add_task("yield_then_wait", path, timeout=8)
    assert task is not None and task.status == TaskStatus.SUCCESS, task
    assert task.returning == ["handled first", "handled second"]
    assert seen_items == ["first", "second"]


async def test_echo_context_adds_a_nested_task(app: QueueTasks) -> None:
    task = await app.add_task("spawn_child", 4, 5, timeout=8)
    assert task is not None and task.status == TaskStatus.SUCCESS, task
    status, returning, name, uuid, own_name = task.returning
    assert (status, returning, name, own_name) == ("success", 9, "add_in_thread", "spawn_child")
    nested = await app.get(uuid)
    assert nested is not None and nested.returning == 9


async def test_nested_waits_on_the_same_pool_never_deadlock(
    app: QueueTasks, pool: ProcessExecutor
) -> None:
    # Two calls on the two workers, each waiting for a task only this pool can run. A
    # waiting worker lends its slot: the pool runs the nested tasks on a worker it
    # starts for the time being, then goes back to its size.
    assert await pool.wait_ready(10)
    started = time.monotonic()
    outer = [app.add_task("nested_wait", i, 20, timeout=30) for i in range(2)]
    done = await asyncio.wait_for(asyncio.gather(*outer), 15)  # a deadlock: 20 s
    assert [t.returning if t else None for t in done] == [["success", 1], ["success", 2]]
    assert time.monotonic() - started < 10
    for _ in range(1000):  # bounded (10 s): the extra workers are retired once idle
        if pool.stats()["workers"] == 2 and await pool.wait_ready(0.01):
            break
        await asyncio.sleep(0.01)
    assert pool.stats()["workers"] == 2
    assert_roster_counts(pool)
    assert pool.roster is not None and (pool.roster.live, pool.roster.lent) == (2, 0)


async def test_a_lone_waiting_worker_lends_its_slot_and_hands_on_what_it_holds(
    tmp_path: Path,
) -> None:
    # One worker, pipelining 2 deep: a call is sent to it behind the one that is about
    # to wait. It must run on the worker started for the lent slot (not wait behind, not
    # run twice), and the lone worker must still answer right afterwards.
    executor = ProcessExecutor(max_workers=1, autoscale=False, pipeline_depth=2)
    lend = QueueTasks("lend", executors={"process": executor})
    lend.config.shutdown_timeout = 2.0
    lend.task(executor="process")(procfuncs.add)
    lend.task(executor="process")(procfuncs.pid)
    lend.task(executor="process", echo=True)(procfuncs.nested_wait_after)
    async with lend:
        [lone] = executor.stats()["pids"]
        path = fifo(tmp_path)
        outer = asyncio.ensure_future(lend.add_task("nested_wait_after", path, 5, 20, timeout=30))
        behind = asyncio.ensure_future(lend.add_task("pid", timeout=30))
        for _ in range(1000):  # bounded (10 s): until `pid` is held behind it
            if executor.stats()["queued"] == 1:
                break
            await asyncio.sleep(0.01)
        assert executor.stats()["per_worker"][lone]["held"] == 2
        assert_roster_counts(executor)
        await write_fifo(path, "go")
        done, ran = await asyncio.wait_for(asyncio.gather(outer, behind), 15)
        assert done is not None and done.returning == ["success", 6]
        assert ran is not None and ran.status == TaskStatus.SUCCESS
        assert ran.returning != lone  # moved to the worker started for the lent slot
        sums = [await lend.add_task("add", i, i, timeout=10) for i in range(6)]
        assert [t.returning for t in sums if t] == [0, 2, 4, 6, 8, 10]
        for _ in range(1000):  # bounded (10 s): back to one worker
            if executor.stats()["workers"] == 1:
                break
            await asyncio.sleep(0.01)
        assert executor.stats()["workers"] == 1
        assert_roster_counts(executor)
        assert executor.roster is not None and (executor.roster.live, executor.roster.lent) == (
            1,
            0,
        )


async def test_worker_log_records_reach_parent_logging(
    pool: ProcessExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="procfuncs"):
        pid = await pool.run(make_call(procfuncs.log_something, "hello"))
    records = [r for r in caplog.records if r.name == "procfuncs"]
    assert [r.getMessage() for r in records] == ["from the worker: hello"]
    assert records[0].process == pid and pid in pool.stats()["pids"]


async def test_stats_report_the_pool(pool: ProcessExecutor) -> None:
    done = pool.calls_done
    await pool.run(make_call(procfuncs.add, 1, 2))
    stats = pool.stats()
    assert stats["calls_done"] == done + 1
    assert stats["busy"] == 0 and stats["queued"] == 0
    assert sorted(stats["per_worker"]) == sorted(stats["pids"])
    assert all(w["rss"] > 0 for w in stats["per_worker"].values())
    assert {"crashes", "timeouts", "recycles", "workers"} <= set(stats)


async def test_recycles_a_worker_after_max_tasks() -> None:
    executor = ProcessExecutor(max_workers=1, autoscale=False, max_tasks_per_worker=3)
    await executor.start()
    try:
        pids = [await executor.run(make_call(procfuncs.pid)) for _ in range(7)]
    finally:
        await executor.aclose()
    assert [pids.count(p) for p in dict.fromkeys(pids)] == [3, 3, 1]
    assert executor.recycles == 2 and executor.crashes == 0
    assert gone(pids)


async def test_recycles_a_worker_past_max_memory() -> None:
    probe = ProcessExecutor(max_workers=1, autoscale=False)
    await probe.start()
    (rss,) = [w["rss"] for w in probe.stats()["per_worker"].values()]
    await probe.aclose()
    executor = ProcessExecutor(
        max_workers=1, autoscale=False, max_memory_per_worker=rss + (48 << 20)
    )
    await executor.start()
    try:
        first = await executor.run(make_call(procfuncs.hoard, 8))
        assert await executor.run(make_call(procfuncs.pid)) == first  # still under the limit
        assert await executor.run(make_call(procfuncs.hoard, 64)) == first  # now past it
        after = await executor.run(make_call(procfuncs.pid))
    finally:
        await executor.aclose()
    assert after != first
    assert executor.recycles == 1 and executor.crashes == 0
    assert gone([first])


async def test_aclose_leaves_no_process_and_no_fd_behind() -> None:
    executor = ProcessExecutor(max_workers=2, autoscale=False)
    await executor.start()  # (the forkserver, shared by the program, may start here)
    await executor.aclose()
    fds, workers = open_fds(), grandchildren()
    executor = ProcessExecutor(max_workers=2, autoscale=False)
    await executor.start()
    pids = executor.stats()["pids"]
    assert await executor.run(make_call(procfuncs.add, 1, 2)) == 3
    await executor.aclose()
    assert gone(pids)
    assert grandchildren() == workers and not set(pids) & grandchildren()
    now = open_fds()
    # (what differs, and the threads that could have opened one just now, if it fails)
    new = {fd: what for fd, what in now.items() if fds.get(fd) != what}
    assert len(now) == len(fds), (new, [t.name for t in threading.enumerate()])


def open_fds() -> dict[int, str]:
    """This process's open descriptors and what each is (a path, `socket:[inode]`...)."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


async def test_aclose_waits_for_accepted_calls_unless_cancelling(tmp_path: Path) -> None:
    executor = ProcessExecutor(max_workers=1, autoscale=False)
    await executor.start()
    result = asyncio.ensure_future(executor.run(make_call(procfuncs.cpu, 50)))
    await asyncio.sleep(0)  # let run() hand the call over
    await executor.aclose()
    assert result.done() and result.result() > 0
    executor = ProcessExecutor(max_workers=1, autoscale=False)
    await executor.start()
    path = fifo(tmp_path)
    blocked = asyncio.ensure_future(executor.run(make_call(procfuncs.report_pid_and_block, path)))
    pid = int(await read_fifo(path))
    await executor.aclose(cancel_pending=True)
    assert blocked.cancelled()
    assert gone([pid])


async def test_spawn_start_method_runs_module_and_main_functions() -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec("def double(x):\n    return 2 * x\n", namespace)
    executor = ProcessExecutor(max_workers=1, autoscale=False, start_method="spawn")
    await executor.start()
    try:
        assert await executor.run(make_call(procfuncs.add, 2, 2)) == 4
        assert await executor.run(make_call(namespace["double"], 21)) == 42
    finally:
        await executor.aclose()


async def test_plain_fork_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"'fork'.*deadlock.*'forkserver'"):
        ProcessExecutor(max_workers=1, start_method="fork", autoscale=False)


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_workers_never_run_the_main_module_again(tmp_path: Path, start_method: str) -> None:
    # A script with no `if __name__ == "__main__":` guard: every run of its module
    # adds a line to `runs`. Its workers must not add one (they would start a second
    # pool each, as multiprocessing's spawn and forkserver methods would make them).
    runs = tmp_path / "runs"
    script = tmp_path / "no_guard.py"
    here = os.path.dirname(procfuncs.__file__)
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, os, sys
            with open({str(runs)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            sys.path.insert(0, {here!r})
            import procfuncs
            from proc_support import make_call
            from qtasks_mp.executors.process import ProcessExecutor

            async def main():
                pool = ProcessExecutor(2, autoscale=False, start_method={start_method!r})
                await pool.start()
                pids = await asyncio.gather(*(pool.run(make_call(procfuncs.pid)) for _ in range(4)))
                await pool.aclose()
                print(len(set(pids)))

            asyncio.run(main())
            """
        )
    )
    command = [sys.executable, str(script)]
    out = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() in (["1"], ["2"])  # the calls ran in workers
    assert len(runs.read_text().split()) == 1  # the script itself, once


async def test_the_start_line_gives_the_pools_size_in_workers() -> None:
    """Not its slots (workers x pipeline depth): 'process(4)' on 2 CPUs read as 4 workers."""
    assert ProcessExecutor(max_workers=2, autoscale=False).size_label() == "2 workers"
    assert ProcessExecutor(max_workers=3).size_label() == "1-3 workers"  # autoscaled from 1
