"""echo=True contexts (async and sync) and generator tasks with handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from qtasks_mp import AsyncTask, SyncTask
from qtasks_mp.asyncio import QueueTasks


async def test_echo_context_adds_nested_tasks(app: QueueTasks) -> None:
    seen: list[Any] = []

    @app.task(name="send_reminder")
    async def send_reminder(chat_id: int, text: str) -> None:
        seen.append((chat_id, text))

    @app.task(name="error_logger")
    def error_logger(message: str) -> None:
        seen.append(message)

    @app.task(name="check_orders", echo=True)
    async def check_orders(self: AsyncTask) -> tuple[str, str, int]:
        assert isinstance(self, AsyncTask) and self.task_name == "check_orders"
        self.logger.info("checking")
        await self.add_task("send_reminder", 42, "delivered!")
        await self.add_task("error_logger", args=("boom",))
        return self.task_name, str(self.uuid), self.attempt

    await app.start()
    done = await app.add_task("check_orders", timeout=5)
    assert done is not None and done.status == "success"
    assert done.returning == ("check_orders", str(done.uuid), 1)
    assert await app.wait_idle(5)
    assert sorted(map(str, seen)) == ["(42, 'delivered!')", "boom"]


async def test_sync_echo_task_in_a_thread_adds_tasks_blocking(app: QueueTasks) -> None:
    @app.task
    async def child(n: int) -> int:
        return n

    @app.task(echo=True)
    def parent(self: SyncTask, n: int) -> str:
        assert isinstance(self, SyncTask)
        task = self.add_task("child", n)
        assert task is not None
        return str(task.uuid)

    await app.start()
    done = await app.add_task("parent", 5, timeout=5)
    assert done is not None and done.status == "success", done
    child_task = await app.wait(done.returning, timeout=5)
    assert child_task is not None and child_task.returning == 5


async def test_sync_echo_task_inline_gets_a_clear_error(app: QueueTasks) -> None:
    @app.task
    async def child() -> None: ...

    @app.task(echo=True, executor="inline")
    def parent(self: SyncTask) -> None:
        self.add_task("child")

    await app.start()
    done = await app.add_task("parent", timeout=5)
    assert done is not None and done.status == "error"
    assert "make the task `async def` or give it executor='thread'" in (done.traceback or "")


async def test_async_generator_with_async_handler(app: QueueTasks) -> None:
    async def log_crm(order: dict[str, int]) -> int:
        return order["id"] * 10

    @app.task(generate_handler=log_crm, echo=True)  # echo without a parameter: runs anyway
    async def export_orders() -> AsyncIterator[dict[str, int]]:
        for i in range(3):
            yield {"id": i}

    await app.start()
    done = await app.add_task("export_orders", timeout=5)
    assert done is not None and done.status == "success" and done.returning == [0, 10, 20]


async def test_sync_generator_in_thread_with_sync_and_async_handlers(app: QueueTasks) -> None:
    handled_in: list[str] = []

    async def async_handler(x: int) -> int:
        import threading

        handled_in.append(threading.current_thread().name)
        return x + 100

    @app.task(generate_handler=async_handler)
    def numbers(n: int) -> Iterator[int]:
        yield from range(n)

    @app.task(generate_handler=str)
    def letters() -> Iterator[int]:
        yield from (1, 2)

    @app.task
    def plain_items() -> Iterator[int]:
        yield from (7, 8)

    await app.start()
    done = await app.add_task("numbers", 3, timeout=5)
    assert done is not None and done.returning == [100, 101, 102]
    assert handled_in == ["MainThread"] * 3  # handlers run in the dispatcher's loop
    done = await app.add_task("letters", timeout=5)
    assert done is not None and done.returning == ["1", "2"]
    done = await app.add_task("plain_items", timeout=5)
    assert done is not None and done.returning == [7, 8]


async def test_exception_in_generator_and_in_handler_fail_the_task(app: QueueTasks) -> None:
    def bad_handler(x: int) -> int:
        raise ValueError(f"handler refused {x}")

    @app.task
    async def broken_gen() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("generator broke")

    @app.task(generate_handler=bad_handler)
    def fine_gen() -> Iterator[int]:
        yield 1

    await app.start()
    done = await app.add_task("broken_gen", timeout=5)
    assert done is not None and done.status == "error"
    assert "RuntimeError: generator broke" in (done.traceback or "")
    done = await app.add_task("fine_gen", timeout=5)
    assert done is not None and done.status == "error"
    assert "ValueError: handler refused 1" in (done.traceback or "")
