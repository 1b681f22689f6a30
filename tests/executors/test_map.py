"""app.map: one task per item, or one per chunk; results in order; errors early and named."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
from procfuncs import square

from qtasks_mp import ProcessExecutor, TaskArgumentsError, TaskFailed
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.progress import ProgressLine


@pytest.fixture
async def proc_app() -> AsyncIterator[QueueTasks]:
    app = QueueTasks(executors={"process": ProcessExecutor(max_workers=2, autoscale=False)})
    app.task(name="square", executor="process")(square)
    async with app:
        yield app


@pytest.mark.parametrize("chunksize", [1, 7, 64])
async def test_results_come_back_in_order(proc_app: QueueTasks, chunksize: int) -> None:
    got = await proc_app.map("square", range(200), chunksize=chunksize, timeout=30)
    assert got == [x * x for x in range(200)]


async def test_chunks_are_tasks_of_a_companion_task(proc_app: QueueTasks) -> None:
    await proc_app.map("square", range(100), chunksize=25, timeout=30)
    assert proc_app.stats()["tasks"]["square.map"]["ok"] == 4  # four chunks, four tasks
    assert "square" not in proc_app.stats()["tasks"]  # no per-item tasks


async def test_a_failed_item_raises_task_failed_with_the_worker_traceback(
    proc_app: QueueTasks,
) -> None:
    with pytest.raises(TaskFailed, match="negative one is not welcome") as info:
        await proc_app.map("square", [1, -1, 2], chunksize=2, timeout=30)
    assert "procfuncs.py" in (info.value.traceback or "")


async def test_items_are_checked_before_anything_is_accepted() -> None:
    app = QueueTasks()

    @app.task
    def two(a: int, b: int) -> int:
        return a + b

    with pytest.raises(TaskArgumentsError, match="task 'two'"):
        await app.map("two", [1, 2])
    assert app.stats()["unfinished"] == 0


async def test_coroutines_map_one_task_per_item_and_refuse_chunks() -> None:
    app = QueueTasks()

    @app.task
    async def inc(x: int) -> int:
        return x + 1

    async with app:
        assert await app.map("inc", [1, 2, 3]) == [2, 3, 4]
        with pytest.raises(Exception, match="plain function"):
            await app.map("inc", [1, 2, 3], chunksize=2)


def test_sync_facade_map() -> None:
    from qtasks_mp import QueueTasks as SyncApp

    app = SyncApp()
    app.task(name="double")(lambda x: 2 * x)
    try:
        assert app.map("double", range(10), chunksize=3, timeout=10) == [2 * x for x in range(10)]
    finally:
        app.stop()


async def test_progress_callback_sees_items_counted_up_to_the_total(
    proc_app: QueueTasks,
) -> None:
    seen: list[tuple[int, int]] = []
    got = await proc_app.map(
        "square", range(100), chunksize=30, timeout=30, progress=lambda d, t: seen.append((d, t))
    )
    assert got == [x * x for x in range(100)]
    assert seen == [(0, 100), (30, 100), (60, 100), (90, 100), (100, 100)]


async def test_progress_true_writes_a_line_per_tenth_to_a_non_terminal_stderr(
    proc_app: QueueTasks, capsys: pytest.CaptureFixture[str]
) -> None:
    await proc_app.map("square", range(50), chunksize=5, timeout=30, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "map 'square': 0/50 items (0%)"
    assert [line.split(" items")[0] for line in lines[1:]] == [
        f"map 'square': {n}/50" for n in range(5, 55, 5)
    ]
    assert lines[-1].startswith("map 'square': 50/50 items (100%), done in ")


async def test_progress_must_be_a_bool_or_a_callable(proc_app: QueueTasks) -> None:
    with pytest.raises(TypeError, match=r"map\('square'\): progress must be"):
        await proc_app.map("square", range(3), progress="yes")  # type: ignore[arg-type]


def test_progress_line_on_a_terminal_rewrites_one_line_at_most_five_times_a_second() -> None:
    clock = iter([0.0, 0.0, 0.1, 0.25, 0.3, 0.5])

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    line = ProgressLine("map 'x'", out, clock=lambda: next(clock))
    for done in (0, 10, 20, 30, 40):  # at 0.0, 0.1 (skipped), 0.25, 0.3 (skipped), 0.5 (end)
        line(done, 40)
    shown = out.getvalue().split("\r")[1:]
    assert shown[0] == "map 'x': 0/40 items (0%)"
    assert shown[1] == "map 'x': 20/40 items (50%), 80/s, about 250 ms left"
    assert shown[2] == "map 'x': 40/40 items (100%), done in 500 ms\n"
