"""The executor contract: every executor and every recipe in `executors/` passes the
same tests, unchanged, through the app.

Where executors legitimately differ (whether `echo=True` works, what a timeout does
to the running code), each declares it in `CASES`; the tests check what it declares.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import contract_funcs as f
import pytest
from contract_support import descendants, leaked, pid_gone, wait_for_file
from recipe_loader import load_recipe

from qtasks_mp import Executor, InlineExecutor, TaskRegistrationError, ThreadExecutor
from qtasks_mp.asyncio import QueueTasks

X = "x"  # the executor's name in every app here


@dataclass(frozen=True)
class Case:
    """An executor under test and what it declares it supports."""

    id: str
    make: Callable[[pytest.FixtureRequest], Executor]
    echo: bool  # echo=True works (else: the task fails with a message about echo)
    async_context: bool  # an echo task there is a coroutine (inline) rather than a function
    timeout: str  # "cancel": coroutine cancelled; "runs_on": code keeps running; "kill"
    timeout_says: str  # a phrase its TaskTimeout message contains
    processes: bool = False  # starts processes: checked for leaks after stop
    #: the task timeout of the timeout test: it must cover what a call costs before the
    #: task's code starts (a fresh interpreter per call for the subprocess recipe)
    timeout_s: float = 0.5


def _process(request: pytest.FixtureRequest) -> Executor:
    from qtasks_mp.executors.process import ProcessExecutor

    return ProcessExecutor(max_workers=1)


def _dask(request: pytest.FixtureRequest) -> Executor:
    from qtasks_mp.executors.dask import DaskExecutor

    cluster = request.getfixturevalue("dask_cluster")
    return DaskExecutor(cluster.scheduler_address)


def _keyed(request: pytest.FixtureRequest) -> Executor:
    return load_recipe("keyed_serial").KeyedSerialExecutor(ThreadExecutor(4))  # type: ignore[no-any-return]


def _rate(request: pytest.FixtureRequest) -> Executor:
    module = load_recipe("rate_limited")
    return module.RateLimitedExecutor(ThreadExecutor(4), rate=200)  # type: ignore[no-any-return]


def _subprocess(request: pytest.FixtureRequest) -> Executor:
    module = load_recipe("subprocess_per_call")
    return module.SubprocessExecutor(2)  # type: ignore[no-any-return]


CASES = [
    Case("inline", lambda r: InlineExecutor(4), True, True, "cancel", "coroutine was cancelled"),
    Case("thread", lambda r: ThreadExecutor(4), True, False, "runs_on", "cannot be stopped"),
    Case("process", _process, True, False, "kill", "was killed", processes=True),
    Case("dask", _dask, False, False, "runs_on", "cannot be killed", processes=True),
    Case("keyed_serial", _keyed, True, False, "runs_on", "cannot be stopped"),
    Case("rate_limited", _rate, True, False, "runs_on", "cannot be stopped"),
    Case(
        "subprocess", _subprocess, False, False, "kill", "were killed", processes=True, timeout_s=4
    ),
]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    c: Case = request.param
    if c.id == "dask":
        pytest.importorskip("distributed")
    return c


@pytest.fixture
def app(case: Case, request: pytest.FixtureRequest) -> QueueTasks:
    application = QueueTasks(f"contract-{case.id}", executors={X: case.make(request)})
    application.config.shutdown_timeout = 5.0
    return application


def register(app: QueueTasks, name: str, fn: Callable[..., Any], **options: Any) -> None:
    app.task(name=name, executor=X, **options)(fn)


async def test_results(app: QueueTasks) -> None:
    register(app, "add", f.add)
    register(app, "length", f.length)
    big = b"q" * (2 << 20)  # large enough for Dask's scatter and the process pool's shm
    async with app:
        done = await app.add_task("add", 2, b=3, timeout=10)
        assert done is not None and done.status == "success" and done.returning == 5
        done = await app.add_task("length", big, timeout=10)
        assert done is not None and done.status == "success" and done.returning == len(big)


async def test_functions_by_name_and_by_value(app: QueueTasks) -> None:
    register(app, "square", f.square.__wrapped__)  # module attribute: the @app.task wrapper
    register(app, "add_three", f.make_adder(3))  # a closure: no name to import it by
    async with app:
        done = await app.add_task("square", 7, timeout=10)
        assert done is not None
        assert done.status == "success", done.traceback
        assert done.returning == 49
        done = await app.add_task("add_three", 4, timeout=10)
        assert done is not None
        assert done.status == "success", done.traceback
        assert done.returning == 7


async def test_exception_keeps_type_and_traceback(app: QueueTasks) -> None:
    register(app, "fail", f.fail)
    async with app:
        done = await app.add_task("fail", "boom", timeout=10)
    assert done is not None and done.status == "error"
    assert done.traceback is not None
    assert "ValueError: contract failure: boom" in done.traceback
    assert f.RAISE_LINE in done.traceback  # the function's own frame, from wherever it ran


async def test_generator_items_go_through_the_handler_here(app: QueueTasks) -> None:
    register(app, "count", f.count, generate_handler=f.tag_item)
    async with app:
        done = await app.add_task("count", 3, timeout=10)
    assert done is not None
    assert done.status == "success", done.traceback
    assert done.returning == [[0, os.getpid()], [10, os.getpid()], [20, os.getpid()]]


async def test_retries_are_the_apps(app: QueueTasks, tmp_path: Path) -> None:
    register(app, "flaky", f.flaky, retry=2, retry_on_exc=[ConnectionError])
    register(app, "flaky_once", f.flaky, retry=1, retry_on_exc=[ConnectionError])
    async with app:
        done = await app.add_task("flaky", str(tmp_path / "a"), 2, timeout=10)
        assert done is not None
        assert done.status == "success", done.traceback
        assert done.returning == 3 and done.retry == 2
        done = await app.add_task("flaky_once", str(tmp_path / "b"), 2, timeout=10)
        assert done is not None and done.status == "error" and done.retry == 1
        assert done.traceback is not None and "ConnectionError: attempt 2 fails" in done.traceback


async def test_echo(app: QueueTasks, case: Case) -> None:
    app.task(name="nested_add")(f.add)  # on the app's thread pool, not the executor under test
    fn = f.echo_async if case.async_context else f.echo_sync
    if not case.echo:
        try:
            register(app, "echo", fn, echo=True)
        except TaskRegistrationError as e:  # refused up front, where the app checks it
            assert "echo=True" in str(e) and "'echo'" in str(e)
            return
    else:
        register(app, "echo", fn, echo=True)
    async with app:
        done = await app.add_task("echo", 2, 5, timeout=10)
    assert done is not None
    if case.echo:
        assert done.status == "success", done.traceback
        assert done.returning == ["echo", "success", 7]
    else:
        assert done.status == "error"
        assert done.traceback is not None
        assert "TaskRegistrationError" in done.traceback
        assert "echo=True" in done.traceback and "'echo'" in done.traceback


async def test_timeout_as_documented(app: QueueTasks, case: Case, tmp_path: Path) -> None:
    fn = f.block_until_async if case.timeout == "cancel" else f.block_until
    register(app, "block", fn, timeout=case.timeout_s)
    started, release, done_file = (tmp_path / n for n in ("started", "release", "done"))
    async with app:
        done = await app.add_task("block", str(started), str(release), str(done_file), timeout=15)
        assert done is not None and done.status == "error"
        assert done.traceback is not None and "TaskTimeout" in done.traceback
        assert case.timeout_says in done.traceback
        pid = int(await wait_for_file(started))
        if case.timeout == "cancel":
            assert done_file.read_text() == "cancelled"
        elif case.timeout == "kill":
            assert pid_gone(pid), f"the process {pid} that ran the task is still alive"
            assert not done_file.exists()
        else:  # runs on: once released, the abandoned call finishes by itself
            release.write_text("go")
            assert await wait_for_file(done_file) == "done"
        release.write_text("go")
        args = (str(tmp_path / "s2"), str(release), str(tmp_path / "d2"))
        again = await app.add_task("block", *args, timeout=15)
        assert again is not None and again.status == "success"  # the executor still works


async def test_shutdown_leaves_nothing_running(app: QueueTasks, case: Case) -> None:
    register(app, "add", f.add)
    before = descendants()
    async with app:
        assert app.running
    assert not app.running
    async with app:  # and it starts again
        done = await app.add_task("add", 1, 2, timeout=10)
        assert done is not None and done.returning == 3
    assert not app.running
    if case.processes:
        assert leaked(before) == []
