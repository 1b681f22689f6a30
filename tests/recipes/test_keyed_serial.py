"""executors/keyed_serial.py: one key at a time and in order; other keys in parallel."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from recipe_loader import load_recipe
from recipe_support import make_call

from qtasks_mp import InlineExecutor, ThreadExecutor
from qtasks_mp.asyncio import QueueTasks

recipe = load_recipe("keyed_serial")
KeyedSerialExecutor = recipe.KeyedSerialExecutor


class Journal:
    """Records starts and ends, and the most calls of one key / of all keys at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.order: dict[Any, list[int]] = {}
        self.running: dict[Any, int] = {}
        self.most_per_key = 0
        self.most_overall = 0

    def start(self, key: Any, seq: int) -> None:
        with self.lock:
            self.order.setdefault(key, []).append(seq)
            self.running[key] = self.running.get(key, 0) + 1
            self.most_per_key = max(self.most_per_key, self.running[key])
            self.most_overall = max(self.most_overall, sum(self.running.values()))

    def end(self, key: Any) -> None:
        with self.lock:
            self.running[key] -= 1


async def test_same_key_in_order_other_keys_in_parallel() -> None:
    journal = Journal()
    app = QueueTasks("keyed", executors={"chats": KeyedSerialExecutor(InlineExecutor(12))})

    @app.task(executor="chats")
    async def reply(chat_id: int, seq: int) -> None:
        journal.start(chat_id, seq)
        for _ in range(3):  # suspend: a second call of the same chat could start now
            await asyncio.sleep(0)
        journal.end(chat_id)

    async with app:
        for seq in range(15):
            for chat_id in (1, 2, 3):
                await app.add_task("reply", chat_id, seq)
        assert await app.wait_idle(timeout=10)
    assert journal.order == {k: list(range(15)) for k in (1, 2, 3)}
    assert journal.most_per_key == 1  # never two of one chat at once
    assert journal.most_overall == 3  # but the three chats side by side
    stats = app.executors["chats"].stats()
    assert stats["waits"] > 0 and stats["keys"] == 0  # waited, and forgot finished keys


async def test_blocking_functions_on_threads_keep_their_order() -> None:
    journal = Journal()
    go = threading.Event()
    app = QueueTasks("keyed", executors={"db": KeyedSerialExecutor(ThreadExecutor(4))})

    @app.task(executor="db")
    def apply(account: str, seq: int) -> None:
        journal.start(account, seq)
        go.wait(0.002)  # a blocking call; lets another thread run meanwhile
        journal.end(account)

    async with app:
        for seq in range(12):
            for account in ("a", "b"):
                await app.add_task("apply", account, seq)
        assert await app.wait_idle(timeout=10)
    assert journal.order == {"a": list(range(12)), "b": list(range(12))}
    assert journal.most_per_key == 1
    assert journal.most_overall == 2


async def test_key_by_parameter_name_or_function() -> None:
    by_name = KeyedSerialExecutor(InlineExecutor(), key="chat_id")
    by_func = KeyedSerialExecutor(InlineExecutor(), key=lambda call: call.kwargs["user"].lower())

    async def send(text: str, *, chat_id: int = 7) -> None: ...

    async def greet(*, user: str) -> None: ...

    assert by_name.key(make_call(send, "hi")) == 7
    assert by_name.key(make_call(send, "hi", chat_id=9)) == 9
    assert by_func.key(make_call(greet, user="Ann")) == "ann"
    with pytest.raises(TypeError, match="no parameter 'chat_id'"):
        by_name.key(make_call(greet, user="x"))


async def test_a_call_without_arguments_is_refused_with_the_fix() -> None:
    async def ping() -> None: ...

    executor = KeyedSerialExecutor(InlineExecutor())
    with pytest.raises(TypeError, match=r"pass the key .* as the first argument"):
        executor.key(make_call(ping))


async def test_a_failure_releases_its_key() -> None:
    executor = KeyedSerialExecutor(InlineExecutor())
    await executor.start()

    async def job(key: str, fail: bool) -> str:
        if fail:
            raise ValueError("first fails")
        return "second ran"

    with pytest.raises(ValueError):
        await executor.run(make_call(job, "k", True))
    assert await asyncio.wait_for(executor.run(make_call(job, "k", False)), 5) == "second ran"


async def test_a_call_cancelled_while_waiting_does_not_let_the_next_one_jump_ahead() -> None:
    executor = KeyedSerialExecutor(InlineExecutor())
    await executor.start()
    gate = asyncio.Event()
    events: list[str] = []

    async def job(key: str, name: str) -> None:
        events.append(f"{name} start")
        if name == "a":
            await gate.wait()
        events.append(f"{name} end")

    a = asyncio.ensure_future(executor.run(make_call(job, "k", "a")))
    b = asyncio.ensure_future(executor.run(make_call(job, "k", "b")))
    await asyncio.sleep(0)  # a runs and blocks; b waits for its turn
    b.cancel()
    c = asyncio.ensure_future(executor.run(make_call(job, "k", "c")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert events == ["a start"]  # c still waits for a, although b (a's successor) is gone
    gate.set()
    await asyncio.wait_for(asyncio.gather(a, c), 5)
    assert b.cancelled()
    assert events == ["a start", "a end", "c start", "c end"]
