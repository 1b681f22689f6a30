"""Cancel and requeue with real parts: per executor (process workers killed, inline
coroutines cancelled, threads left to run, Dask futures cancelled), per state (queued,
running, retrying with an ETA, ended), racing with completion, from another process
(the CLI) on a SQLite file, and requeue after a worker was SIGKILLed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import contract_funcs as f
import pytest
from contract_support import pid_gone, wait_for_file
from polling import until

from qtasks_mp import ArgumentValueError, ProcessExecutor, SyncTask, TaskNotFound
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.task import Task


def make_app(store: str | None = None, workers: int = 2) -> QueueTasks:
    app = QueueTasks(
        "cancel-test",
        store=store,
        executors={"process": ProcessExecutor(workers, autoscale=False)},
    )
    app.config.shutdown_timeout = 2.0
    return app


def files(tmp_path: Path, name: str) -> tuple[str, str, str]:
    return tuple(str(tmp_path / f"{name}.{part}") for part in ("started", "release", "done"))  # type: ignore[return-value]


def touch(path: Path) -> None:
    path.touch()


async def status_of(app: QueueTasks, task: Task | None) -> str:
    assert task is not None
    got = await app.get(task.uuid)
    assert got is not None
    return str(got.status)


# ------------------------------------------------------------------ running, per executor


async def test_a_running_process_task_is_killed_and_its_worker_replaced(tmp_path: Path) -> None:
    app = make_app()
    app.task(name="block", executor="process")(f.block_until)
    async with app:
        pool = app.executors["process"]
        assert isinstance(pool, ProcessExecutor)
        doomed = await app.add_task("block", *files(tmp_path, "doomed"))
        other = await app.add_task("block", *files(tmp_path, "other"))
        assert doomed is not None and other is not None
        doomed_pid = int(await wait_for_file(tmp_path / "doomed.started"))
        other_pid = int(await wait_for_file(tmp_path / "other.started"))
        waiter = asyncio.ensure_future(app.wait(doomed.uuid, 30))

        assert await app.cancel(doomed) is True
        ended = await waiter
        assert ended is not None and ended.status == "cancel" and ended.returning is None
        assert ended.traceback is not None and f"pid {doomed_pid}" in ended.traceback
        assert pid_gone(doomed_pid)
        assert await pool.wait_ready(30)  # back to size: a replacement is ready
        assert doomed_pid not in pool.stats()["pids"] and len(pool.stats()["pids"]) == 2
        assert pool.stats()["cancels"] == 1 and pool.stats()["crashes"] == 0

        # The other call, on the other worker, was not disturbed.
        touch(tmp_path / "other.release")
        done = await app.wait(other.uuid, 30)
        assert done is not None and (done.status, done.returning) == ("success", "released")
        assert other_pid in pool.stats()["pids"]
        assert await app.cancel(doomed) is False  # ended: nothing to do
        assert not (tmp_path / "doomed.done").exists()


async def test_an_inline_coroutine_gets_cancelled_error(tmp_path: Path) -> None:
    app = make_app()
    app.task(name="block")(f.block_until_async)
    async with app:
        task = await app.add_task("block", *files(tmp_path, "a"))
        await wait_for_file(tmp_path / "a.started")
        assert await app.cancel(task) is True
        assert (tmp_path / "a.done").read_text() == "cancelled"  # CancelledError inside it
        assert await status_of(app, task) == "cancel"
        # The lane's worker coroutine lives on, not left cancelled: the next task runs.
        touch(tmp_path / "b.release")
        done = await app.add_task("block", *files(tmp_path, "b"), timeout=10)
        assert done is not None and done.status == "success"


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize("then", ["swallow", "raise", "retry"])
async def test_a_cancelled_coroutine_ends_cancel_whatever_it_does_then(
    tmp_path: Path, store: str, then: str
) -> None:
    """Swallowing the CancelledError and returning, re-raising it (with a durable store,
    an interruption would be put back and run again), or failing into a retry: the task
    ends `cancel` once, its result discarded, never run again."""
    app = make_app(None if store == "memory" else str(tmp_path / "tasks.db"))
    runs: list[int] = []
    started = asyncio.Event()

    @app.task(retry=3)
    async def stubborn() -> str:
        runs.append(1)
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if then == "swallow":
                return "a result nobody gets"
            if then == "retry":
                raise ConnectionError("failing on the way out") from None
            raise
        return "never"

    async with app:
        task = await app.add_task("stubborn")
        assert task is not None
        await started.wait()
        assert await app.cancel(task) is True
        assert await app.wait_idle(10)
        got = await app.get(task.uuid)
        assert got is not None and (got.status, got.returning, got.retry) == ("cancel", None, 0)
        assert got.traceback == "cancelled: by app.cancel() while it was running"
        assert runs == [1]


async def test_a_thread_task_ends_at_once_and_its_context_says_cancelled() -> None:
    app = make_app()
    may_look = threading.Event()
    saw: list[bool] = []
    finished = threading.Event()

    @app.task(executor="thread", echo=True)
    def stubborn(self: SyncTask) -> str:
        may_look.wait(10)
        saw.append(self.cancelled)
        finished.set()
        return "a result nobody gets"

    async with app:
        task = await app.add_task("stubborn")
        assert task is not None
        await until(lambda: app.executors["thread"].active > 0, 30, "the call to run in its thread")
        assert await app.cancel(task) is True  # at once, while the function still runs
        assert not finished.is_set()
        assert await status_of(app, task) == "cancel"
        may_look.set()
        assert await asyncio.to_thread(finished.wait, 10)
        assert saw == [True]
        got = await app.get(task.uuid)
        assert got is not None and got.status == "cancel" and got.returning is None


async def test_a_dask_future_is_cancelled(tmp_path: Path, dask_cluster: Any) -> None:
    from qtasks_mp.executors.dask import DaskExecutor

    app = QueueTasks(
        "dask-cancel", executors={"dask": DaskExecutor(dask_cluster.scheduler_address)}
    )
    app.config.shutdown_timeout = 5.0
    app.task(name="block", executor="dask")(f.block_until)
    async with app:
        task = await app.add_task("block", *files(tmp_path, "d"))
        await wait_for_file(tmp_path / "d.started", 30)
        assert await app.cancel(task) is True
        got = await app.get(task.uuid)  # type: ignore[union-attr]
        assert got is not None and got.status == "cancel"
        assert got.traceback is not None and "Dask future was cancelled" in got.traceback
        touch(tmp_path / "d.release")  # the Dask thread ran on; let it end


async def test_self_cancel_from_inside_a_task_is_never_retried() -> None:
    app = make_app()
    app.task(name="process_cancel", executor="process", echo=True, retry=3)(f.cancel_self)
    app.task(name="thread_cancel", executor="thread", echo=True, retry=3)(f.cancel_self)

    @app.task(echo=True, retry=3)
    async def inline_cancel(self: Any, reason: str) -> None:
        self.ctx.cancel(reason)

    async with app:
        for name in ("process_cancel", "thread_cancel", "inline_cancel"):
            done = await app.add_task(name, f"{name}: nothing to do", timeout=30)
            assert done is not None
            assert (done.status, done.retry, done.traceback) == (
                "cancel",
                0,
                f"{name}: nothing to do",
            )


# ------------------------------------------------------------------ per state


async def test_a_queued_task_never_starts(tmp_path: Path) -> None:
    app = make_app(workers=1)
    app.task(name="block", executor="process")(f.block_until)
    async with app:
        first = await app.add_task("block", *files(tmp_path, "first"))
        await wait_for_file(tmp_path / "first.started")
        queued = await app.add_task("block", *files(tmp_path, "queued"))
        waiter = asyncio.ensure_future(app.wait(queued.uuid, 30))  # type: ignore[union-attr]
        assert await app.cancel(queued.uuid) is True  # type: ignore[union-attr]
        ended = await waiter
        assert ended is not None and ended.status == "cancel"
        touch(tmp_path / "first.release")
        touch(tmp_path / "queued.release")
        assert await app.wait_idle(30)
        assert await status_of(app, first) == "success"
        assert not (tmp_path / "queued.started").exists()


async def test_a_retry_waiting_for_its_eta_is_cancelled_and_never_runs() -> None:
    app = make_app()
    runs: list[int] = []

    @app.task(retry=3, retry_backoff=60.0)
    async def flaky() -> None:
        runs.append(1)
        raise ConnectionError("down")

    async with app:
        task = await app.add_task("flaky")
        assert task is not None
        while True:  # its first attempt failed and it waits (60 s) for the next
            got = await app.get(task.uuid)
            if got is not None and got.retry == 1:
                break
            await asyncio.sleep(0.01)
        assert got.status == "new"
        assert await app.cancel(task) is True
        assert await app.wait_idle(10)
        ended = await app.get(task.uuid)
        assert ended is not None and (ended.status, ended.retry) == ("cancel", 1)
        assert runs == [1]


async def test_an_ended_task_unknown_ids_and_bad_ids() -> None:
    app = make_app()

    @app.task
    async def quick() -> int:
        return 1

    async with app:
        done = await app.add_task("quick", timeout=5)
        assert done is not None
        assert await app.cancel(done) is False
        assert await status_of(app, done) == "success"
        with pytest.raises(TaskNotFound, match=r"app\.cancel: no task"):
            await app.cancel("00000000-0000-4000-8000-000000000000")
        with pytest.raises(ArgumentValueError, match="not a UUID"):
            await app.cancel("order-42")
        with pytest.raises(ArgumentValueError, match="only a task that ended error or cancel"):
            await app.requeue(done)
        with pytest.raises(TaskNotFound, match=r"app\.requeue: no task"):
            await app.requeue("00000000-0000-4000-8000-000000000000")


async def test_a_waiting_caller_gets_the_cancelled_task(tmp_path: Path) -> None:
    app = make_app()
    app.task(name="block", executor="process")(f.block_until)
    async with app:
        # add_task(timeout=) on an idle lane runs the call in the caller's own task.
        caller = asyncio.ensure_future(app.add_task("block", *files(tmp_path, "w"), timeout=30))
        pid = int(await wait_for_file(tmp_path / "w.started"))
        [running] = [t for t in await running_tasks(app)]
        assert await app.cancel(running) is True
        got = await caller
        assert got is not None and got.status == "cancel"
        assert pid_gone(pid)


async def running_tasks(app: QueueTasks) -> list[Any]:
    dispatcher = app._runtime.dispatcher
    assert dispatcher is not None
    return [call.record.uuid for call, _ in dispatcher._running.values()]


# ------------------------------------------------------------------ racing with completion


async def test_cancel_racing_with_completion_ends_each_task_once() -> None:
    """Each task's gate opens in the same loop turn as its cancel, in both orders: the
    task ends exactly once, cancel() says which way it went, and every waiter wakes."""
    app = make_app()
    gates: dict[int, asyncio.Event] = {}

    @app.task
    async def gated(i: int) -> int:
        await gates[i].wait()
        return i

    async with app:
        tasks = []
        for i in range(200):
            gates[i] = asyncio.Event()
            tasks.append(await app.add_task("gated", i))
        waits = [asyncio.ensure_future(app.wait(t.uuid, 30)) for t in tasks if t is not None]
        await until(lambda: app.executors["inline"].active == 10, 30, "ten to run, the rest queued")
        answers = []
        for i, task in enumerate(tasks):
            assert task is not None
            if i % 2:
                gates[i].set()  # it may complete first...
                answers.append(await app.cancel(task))
            else:
                answer = asyncio.ensure_future(app.cancel(task))
                gates[i].set()  # ...or the cancel is on its way first
                answers.append(await answer)
        ended = await asyncio.gather(*waits)
        assert all(t is not None for t in ended)
        for task, answer, woke in zip(tasks, answers, ended, strict=True):
            stored = await app.get(task.uuid)  # type: ignore[union-attr]
            assert stored is not None and woke is not None
            assert stored.status == woke.status == ("cancel" if answer else "success")
            assert stored.returning == (None if answer else woke.returning)
        assert await app.wait_idle(10)
        assert app.stats()["unfinished"] == 0


async def test_cancel_racing_with_quick_process_calls() -> None:
    app = make_app()
    app.task(name="add", executor="process")(f.add)
    async with app:
        tasks = [await app.add_task("add", i, 1) for i in range(300)]
        answers = [await app.cancel(t) for t in tasks[::3]]
        assert await app.wait_idle(60)
        for task, answer in zip(tasks[::3], answers, strict=True):
            assert task is not None
            assert await status_of(app, task) == ("cancel" if answer else "success")
        statuses = [await status_of(app, t) for t in tasks]
        assert set(statuses) <= {"success", "cancel"}
        assert statuses.count("cancel") == sum(answers)


# ------------------------------------------------------------------ other processes


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qtasks_mp", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_cancel_from_the_cli_stops_a_task_running_in_this_process(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "tasks.db")
    app = make_app(db)
    app.task(name="block", executor="process")(f.block_until)
    async with app:
        task = await app.add_task("block", *files(tmp_path, "x"))
        assert task is not None
        pid = int(await wait_for_file(tmp_path / "x.started"))
        waiter = asyncio.ensure_future(app.wait(task.uuid, 60))
        out = await asyncio.to_thread(cli, "cancel", str(task.uuid), "--store", db)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"{task.uuid}  cancelled"
        ended = await waiter
        assert ended is not None and ended.status == "cancel"
        assert pid_gone(pid)
        again = await asyncio.to_thread(cli, "cancel", str(task.uuid), "--store", db)
        assert "not cancelled: it had ended cancel" in again.stdout
        unknown = await asyncio.to_thread(
            cli, "cancel", "00000000-0000-4000-8000-000000000000", "--store", db
        )
        assert unknown.returncode == 1 and "no task" in unknown.stderr


async def test_requeue_after_a_crash_runs_the_task_again_with_its_history(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "tasks.db")
    app = make_app(db)
    app.task(name="die_once", executor="process")(f.die_once)
    async with app:
        counter, started = str(tmp_path / "counter"), str(tmp_path / "started")
        task = await app.add_task("die_once", counter, started)
        assert task is not None
        os.kill(int(await wait_for_file(Path(started))), signal.SIGKILL)
        crashed = await app.wait(task.uuid, 30)
        assert crashed is not None and crashed.status == "error"
        assert crashed.traceback is not None and "SIGKILL" in crashed.traceback

        out = await asyncio.to_thread(cli, "requeue", "--status", "error", "--store", db)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("requeued 1 tasks")
        # The other process's write wakes this dispatcher; the same uuid runs again.
        await until(lambda: app.wait(task.uuid, 0), 30, "the task to end")  # type: ignore[union-attr]
        got = await app.get(task.uuid)
        assert got is not None and (got.returning, got.retry) == ("attempt 2", 0)
        assert len(got.history) == 1 and got.history[0]["status"] == "error"
        assert "SIGKILL" in got.history[0]["traceback"]
        listed = await asyncio.to_thread(cli, "tasks", "--store", db)
        assert "earlier run 1: error after 1 attempt(s)" in listed.stdout


def test_the_sync_facade_cancels_and_requeues() -> None:
    from qtasks_mp import QueueTasks as SyncQueueTasks

    app = SyncQueueTasks("sync-cancel")
    release = threading.Event()
    calls: list[int] = []

    @app.task(executor="thread", echo=True)
    def job(self: SyncTask) -> str:
        calls.append(self.attempt)
        release.wait(10)
        return "done"

    with app:
        first = app.add_task("job")
        assert first is not None
        while not calls:
            threading.Event().wait(0.005)
        assert first.cancel() is True  # Task.cancel(): the blocking form
        assert app.cancel(first.uuid) is False  # ended already
        release.set()
        again = app.requeue(str(first.uuid))
        assert again.status == "new" and [h["status"] for h in again.history] == ["cancel"]
        done = again.wait_result(10)
        assert done is not None and (done.status, done.returning) == ("success", "done")


async def test_metrics_count_a_cancelled_run_as_cancel_not_error(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from qtasks_mp.metrics import TaskMetrics

    app = QueueTasks(
        "metrics-cancel",
        middlewares=[TaskMetrics()],
        executors={"process": ProcessExecutor(1, autoscale=False)},
    )
    app.config.shutdown_timeout = 2.0
    app.task(name="block", executor="process")(f.block_until)
    async with app:
        task = await app.add_task("block", *files(tmp_path, "m"))
        await wait_for_file(tmp_path / "m.started")
        assert await app.cancel(task) is True  # type: ignore[arg-type]
        samples = {
            (s.labels.get("task"), s.labels.get("status")): s.value
            for family in text_string_to_metric_families(app.metrics().decode())
            for s in family.samples
            if s.name == "qtasks_mp_tasks_total"
        }
        assert samples[("block", "cancel")] == 1 and samples[("block", "error")] == 0
