"""add_task: binding errors before acceptance, args=/kwargs=, waiting, get, priority order."""

from __future__ import annotations

import asyncio
import enum
import gc
import threading
import types
from typing import Any

import pytest

from qtasks_mp import Task, TaskArgumentsError, TaskNotFound, TaskStatus
from qtasks_mp.asyncio import QueueTasks


def _register(app: QueueTasks) -> None:
    @app.task(name="send_reminder")
    async def send_reminder(chat_id: int, text: str, *, silent: bool = False) -> str:
        return f"{chat_id}:{text}:{silent}"


async def test_returns_a_new_task_at_once_then_waits_for_the_result(app: QueueTasks) -> None:
    _register(app)
    task = await app.add_task("send_reminder", 42, "hi")
    assert isinstance(task, Task) and task.status == TaskStatus.NEW == "new"
    assert (task.task_name, task.args, task.kwargs, task.retry) == (
        "send_reminder",
        (42, "hi"),
        {},
        0,
    )
    await app.start()
    done = await task.wait_result_async(timeout=5)
    assert done is not None and done.status == "success" and done.returning == "42:hi:False"
    assert done.updated_at >= done.created_at


async def test_timeout_waits_and_returns_the_finished_task(app: QueueTasks) -> None:
    _register(app)
    await app.start()
    done = await app.add_task("send_reminder", 1, text="x", silent=True, timeout=5)
    assert done is not None and done.status == "success" and done.returning == "1:x:True"


async def test_args_and_kwargs_keywords_like_qtasks(app: QueueTasks) -> None:
    _register(app)
    await app.start()
    done = await app.add_task("send_reminder", args=(7,), kwargs={"text": "t"}, timeout=5)
    assert done is not None and done.returning == "7:t:False"
    with pytest.raises(TypeError, match="not both"):
        await app.add_task("send_reminder", 1, args=(2,))
    with pytest.raises(TypeError, match="given twice"):
        await app.add_task("send_reminder", 1, text="a", kwargs={"text": "b"})


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing a required argument: 'chat_id'"),
        ((1, "a", "b"), {}, "too many positional arguments"),
        ((1, "a"), {"txt": "a"}, "unexpected keyword argument 'txt'"),
    ],
)
async def test_arguments_that_do_not_bind_raise_before_acceptance(
    app: QueueTasks, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    _register(app)
    with pytest.raises(TaskArgumentsError, match=rf"task 'send_reminder'.*{message}"):
        await app.add_task("send_reminder", *args, **kwargs)
    assert app.stats()["unfinished"] == 0  # nothing was accepted


async def test_unknown_task_suggests_the_closest_name(app: QueueTasks) -> None:
    _register(app)
    with pytest.raises(TaskNotFound, match=r"'send_remindr' is not registered.*'send_reminder'"):
        await app.add_task("send_remindr", 1, "x")
    with pytest.raises(KeyError):  # also a KeyError, for code that catches that
        await app.add_task("nothing_like_it")


async def test_timeout_that_runs_out_returns_none_and_the_task_goes_on(
    app: QueueTasks, gate: asyncio.Event
) -> None:
    @app.task
    async def blocked() -> str:
        await gate.wait()
        return "late"

    await app.start()
    assert await app.add_task("blocked", timeout=0.05) is None
    gate.set()
    assert await app.wait_idle(timeout=5)


async def test_gathered_waiters_share_deadlines_and_time_out_together(
    app: QueueTasks, gate: asyncio.Event
) -> None:
    """A gather of waiting callers holds one deadline per 2 ms tick, not one each; every
    one of them still gets None when the time runs out, and none is kept after."""

    @app.task
    async def blocked(i: int) -> int:
        await gate.wait()
        return i

    await app.start()
    waiters = app._runtime.waiters
    assert waiters is not None
    loop = asyncio.get_running_loop()
    began = loop.time()
    gathered = asyncio.gather(*(app.add_task("blocked", i, timeout=0.2) for i in range(200)))
    await asyncio.sleep(0)  # every caller is waiting now
    ticks = (loop.time() - began) / 0.002 + 2  # the ticks their deadlines can fall in
    assert len(waiters) == 200
    assert len(waiters.deadlines) <= min(ticks, 100), (len(waiters.deadlines), ticks)
    assert await gathered == [None] * 200
    assert len(waiters) == 0 and len(waiters.deadlines) == 0
    gate.set()
    assert await app.wait_idle(timeout=5)


async def test_ended_waits_leave_no_deadline_behind(app: QueueTasks) -> None:
    """A waiter that got its answer drops its share of the deadline at once: 300
    gathered round trips with an hour to spare leave nothing armed."""

    @app.task
    async def quick(i: int) -> int:
        return i

    await app.start()
    waiters = app._runtime.waiters
    assert waiters is not None
    done = await asyncio.gather(*(app.add_task("quick", i, timeout=3600) for i in range(300)))
    assert [t.returning for t in done if t is not None] == list(range(300))
    assert len(waiters) == 0
    live = [e for e in waiters.deadlines._heap if e[2].callback is not None]
    assert live == []


def _coroutines() -> int:
    # type(), not isinstance(): a lazy object of another test (Django's settings) raises
    # when asked for its __class__.
    return sum(1 for o in gc.get_objects() if type(o) is types.CoroutineType)


async def test_a_gather_of_waiting_callers_holds_no_task_or_coroutine_per_caller(
    app: QueueTasks, gate: asyncio.Event
) -> None:
    """In the app's loop a waited add_task is accepted by the call and returns its
    waiter, a future: a gather of 2,000 makes no asyncio.Task and no coroutine per
    caller: each waiting task holds 2 gc-tracked objects (its record and its waiter: its
    uuid is an int until asked for, and gather's callback on the waiter needs no copy of
    the context), where an asyncio.Task per caller held 11."""

    @app.task
    async def blocked(i: int) -> int:
        await gate.wait()
        return i

    await app.start()
    n = 2_000
    tasks_before = len(asyncio.all_tasks())
    gc.collect()
    objects_before = len(gc.get_objects())
    coroutines_before = _coroutines()
    gathered = asyncio.gather(*(app.add_task("blocked", i, timeout=60) for i in range(n)))
    assert app.stats()["unfinished"] == n  # accepted by the calls already
    await asyncio.sleep(0)  # the lane's workers start (one per slot)
    slots = app.executors["inline"].slots
    assert len(asyncio.all_tasks()) - tasks_before <= slots
    # the workers' calls, eight coroutines deep each (worker, chain, function, event)
    assert _coroutines() - coroutines_before <= 10 * slots
    gc.collect()
    per_task = (len(gc.get_objects()) - objects_before) / n
    assert per_task < 2.5, per_task
    gate.set()
    done = await gathered
    assert [t.returning for t in done if t is not None] == list(range(n))


async def test_a_waiter_is_also_a_coroutine(app: QueueTasks) -> None:
    """What a waited add_task returns works wherever an `async def`'s result does:
    awaited, in create_task, in wait_for; a cancelled one stops waiting, and its task
    goes on."""
    gate = asyncio.Event()

    @app.task
    async def quick(i: int) -> int:
        return i

    @app.task
    async def slow() -> str:
        await gate.wait()
        return "late"

    await app.start()
    waiter = app.add_task("quick", 1, timeout=5)
    assert asyncio.iscoroutine(waiter)
    done = await asyncio.create_task(waiter)
    assert done is not None and done.returning == 1
    waiting = asyncio.create_task(app.add_task("slow", timeout=60))
    await asyncio.sleep(0)
    waiters = app._runtime.waiters
    assert waiters is not None and len(waiters) == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(waiters) == 0  # it left at once, and took its deadline with it
    assert [e for e in waiters.deadlines._heap if e[2].callback is not None] == []
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(app.add_task("slow", timeout=60), 0.05)
    assert len(waiters) == 0
    gate.set()
    assert await app.wait_idle(timeout=5)
    assert (await app.store.counts())["success"] == 3  # both slow ones ran to the end


async def test_bad_input_raises_at_the_await_in_the_apps_loop(app: QueueTasks) -> None:
    """A call accepted at once in the app's loop still raises at the await, so a
    gather with return_exceptions=True collects the error beside the results."""
    _register(app)
    await app.start()
    call = app.add_task("send_reminder", 1, timeout=5)  # missing `text`
    with pytest.raises(TaskArgumentsError, match="send_reminder"):
        await call
    got = await asyncio.gather(
        app.add_task("send_reminder", 1, "a", timeout=5),
        app.add_task("nope", timeout=5),
        return_exceptions=True,
    )
    assert isinstance(got[0], Task) and got[0].returning == "1:a:False"
    assert isinstance(got[1], TaskNotFound)
    assert app.stats()["unfinished"] == 0


async def test_get_reads_the_current_state(app: QueueTasks, gate: asyncio.Event) -> None:
    started = asyncio.Event()

    @app.task
    async def job() -> int:
        started.set()
        await gate.wait()
        return 1

    await app.start()
    task = await app.add_task("job")
    assert task is not None
    await asyncio.wait_for(started.wait(), 5)
    now = await app.get(str(task.uuid))
    assert now is not None and now.status == "process"
    gate.set()
    await app.wait_idle(5)
    final = await app.get(task.uuid)
    assert final is not None and final.status == "success" and final.returning == 1
    with pytest.raises(TaskNotFound):
        await app.wait("00000000-0000-4000-8000-000000000000")


async def test_lower_priority_number_runs_first(app: QueueTasks) -> None:
    order: list[str] = []
    app.config.max_tasks_process = 1

    @app.task
    async def note(label: str) -> None:
        order.append(label)

    for label, prio in [("c", 5), ("a", -1), ("b", 0), ("b2", 0), ("d", 9)]:
        await app.add_task("note", label, priority=prio)
    await app.start()
    assert await app.wait_idle(5)
    assert order == ["a", "b", "b2", "c", "d"]


async def test_task_priority_option_is_the_default_for_add_task(app: QueueTasks) -> None:
    @app.task(priority=3)
    async def f() -> None: ...

    task = await app.add_task("f")
    assert task is not None and task.priority == 3
    task = await app.add_task("f", priority=-2)
    assert task is not None and task.priority == -2


async def test_wait_result_blocks_in_another_thread(app: QueueTasks) -> None:
    @app.task
    async def f() -> str:
        return "ok"

    await app.start()
    task = await app.add_task("f")
    assert task is not None
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(task.wait_result(timeout=5)))
    thread.start()
    await asyncio.to_thread(thread.join)
    assert out[0].status == "success" and out[0].returning == "ok"
    with pytest.raises(Exception, match=r"inside the app's event loop"):
        task.wait_result(timeout=1)  # in the loop's own thread: refused, not a deadlock


async def test_priority_must_be_an_int(app: QueueTasks) -> None:
    _register(app)
    with pytest.raises(TypeError, match=r"task 'send_reminder': priority must be an int"):
        await app.add_task("send_reminder", 1, "x", priority="high")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"task 'f': priority must be an int"):
        app.task(name="f", priority=1.5)(lambda: None)


async def test_add_task_from_another_event_loop_is_refused(app: QueueTasks) -> None:
    _register(app)
    await app.start()

    def elsewhere() -> None:
        asyncio.run(app.add_task("send_reminder", 1, "x"))

    with pytest.raises(Exception, match="runs in another event loop"):
        await asyncio.to_thread(elsewhere)


def test_restart_in_a_new_event_loop() -> None:
    app = QueueTasks()

    @app.task
    async def hello(i: int) -> int:
        return i

    async def one(i: int) -> Any:
        async with app:
            await app.add_task("hello", i)
            assert await app.wait_idle(5)
            return app.stats()["tasks"]["hello"]["ok"]

    assert asyncio.run(one(1)) == 1
    assert asyncio.run(one(2)) == 2


async def test_accepted_forms_of_the_checked_arguments(app: QueueTasks) -> None:
    """What the checks must not refuse: a StrEnum name, an int timeout, numpy's ints,
    args= as a list, kwargs= as any mapping, a UUID string with upper case."""
    np = pytest.importorskip("numpy")

    class Names(str, enum.Enum):
        SEND = "send_reminder"

    _register(app)
    await app.start()
    done = await app.add_task(Names.SEND, 1, "x", timeout=5)
    assert done is not None and done.status == "success"
    assert type(done.task_name) is str
    task = await app.add_task(
        "send_reminder",
        args=[2],
        kwargs=types.MappingProxyType({"text": "y"}),
        priority=np.int64(4),
    )
    assert task is not None and task.priority == 4 and type(task.priority) is int
    assert task.args == (2,) and task.kwargs == {"text": "y"}
    done = await app.wait(str(task.uuid).upper(), timeout=5.0)
    assert done is not None and done.returning == "2:y:False"


async def test_wait_with_timeout_zero_only_looks(app: QueueTasks, gate: asyncio.Event) -> None:
    @app.task
    async def blocked() -> None:
        await gate.wait()

    await app.start()
    task = await app.add_task("blocked")
    assert task is not None
    assert await app.wait(task.uuid, timeout=0) is None  # still running: None at once
    gate.set()
    done = await app.wait(task.uuid, timeout=5)
    assert done is not None and done.status == "success"
    assert (await app.wait(task.uuid, timeout=0)) is not None  # finished: returned at once


async def test_a_refused_call_leaves_the_app_as_it_was(app: QueueTasks) -> None:
    """The app is not started, the store not even opened, by a call that is refused."""
    _register(app)
    with pytest.raises(ValueError, match="timeout"):
        await app.add_task("send_reminder", 1, "x", timeout=-1)
    with pytest.raises(TypeError, match="add_task"):
        await app.add_task(123)  # type: ignore[arg-type]
    assert app.loop is None and not app.running
    assert app.stats()["unfinished"] == 0
