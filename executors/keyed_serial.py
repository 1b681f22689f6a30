"""Calls with the same key run one at a time, in the order they were taken; other keys
run in parallel.

When to use it: a chat bot must not reorder one user's messages, a per-account ledger
must apply its updates in sequence, a device accepts one command at a time. The key is
the task's first argument (`chat_id`), a parameter by name (`key="chat_id"`), or any
function of the `Call`.

    app = QueueTasks(executors={"chats": KeyedSerialExecutor(InlineExecutor(20))})

    @app.task(executor="chats")
    async def reply(chat_id: int, text: str) -> None: ...

It wraps another executor (`inner`), which does the running: `InlineExecutor` for
coroutines, `ThreadExecutor` for blocking functions, any executor of yours. Timeouts,
echo and generators behave as they do on `inner`.

What to know:

- "In order" means the order in which the dispatcher hands calls over: priority, then
  first come first served, as the store orders them. A call that fails and is retried
  goes back to the store, so later calls of its key may run before the retry.
- A call waiting for its key's turn holds one of this executor's slots (`max_waiting`
  of them on top of `inner`'s). If one key floods the queue, other keys wait for a slot;
  give such a key its own app or a larger `max_waiting`.
- A timed-out call whose code runs on (a thread cannot be stopped) releases its key:
  the next call of that key may then overlap with it.

Uses only the public API: `Executor`, `Call`, `call.spec`, `call.record`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any

from qtasks_mp import Call, Executor

KeyFunc = Callable[[Call], Hashable]


def first_argument(call: Call) -> Hashable:
    """The default key: the task's first argument (after the task context, if any)."""
    if call.record.args:
        key: Hashable = call.record.args[0]
        return key
    if call.record.kwargs:
        first: Hashable = next(iter(call.record.kwargs.values()))
        return first
    raise TypeError(
        f"task {call.task_name!r} runs on a KeyedSerialExecutor, which orders calls by their "
        "first argument, but this call has none; pass the key (e.g. the chat id) as the "
        "first argument, or give the executor key=<parameter name or function>"
    )


def by_parameter(name: str) -> KeyFunc:
    """A key function that reads the argument bound to parameter `name`."""

    def key(call: Call) -> Hashable:
        sig = call.spec.signature
        if sig is None or name not in sig.parameters:
            raise TypeError(
                f"task {call.task_name!r} has no parameter {name!r}, which its "
                f"KeyedSerialExecutor uses as the key; rename it or pick another key"
            )
        bound = sig.bind_partial(*call.record.args, **call.record.kwargs)
        bound.apply_defaults()
        value: Hashable = bound.arguments[name]
        return value

    return key


class KeyedSerialExecutor(Executor):
    """Runs calls on `inner`, one at a time per key, several keys at once.

    `key`: a parameter name, or a function of the `Call` returning a hashable key;
    default: the first argument. `max_waiting`: how many calls may wait for their
    key's turn (holding a slot) on top of the `inner.slots` that run.
    """

    name = "keyed_serial"

    def __init__(
        self,
        inner: Executor,
        *,
        key: str | KeyFunc | None = None,
        max_waiting: int = 32,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.kinds = inner.kinds
        self.key: KeyFunc = by_parameter(key) if isinstance(key, str) else key or first_argument
        self.max_waiting = max_waiting
        # key -> a future done when the last call of that key taken so far has ended
        self._tails: dict[Hashable, asyncio.Future[None]] = {}
        self._running: asyncio.Semaphore | None = None
        self.waits = 0  # calls that had to wait for an earlier call of their key

    @property
    def slots(self) -> int:
        return self.inner.slots + self.max_waiting

    @property
    def capacity(self) -> int:
        return min(self.slots - self.active, self.inner.capacity + self.max_waiting)

    async def start(self) -> None:
        self.inner.attach(f"{self.name}.inner", self.wakeup)  # its room grew: so did ours
        await self.inner.start()
        self._running = asyncio.Semaphore(self.inner.slots)

    async def aclose(self, cancel_pending: bool = False) -> None:
        await self.inner.aclose(cancel_pending)

    async def run(self, call: Call) -> Any:
        key = self.key(call)  # before any await: calls queue up in the order they came
        before = self._tails.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = mine
        try:
            if before is not None and not before.done():
                self.waits += 1
                await asyncio.shield(before)  # our cancellation must not cancel theirs
            assert self._running is not None, "KeyedSerialExecutor.run before start()"
            async with self._running:
                self.inner.claim()
                try:
                    return await self.inner.run(call)
                finally:
                    self.inner.release()
        finally:
            if before is None or before.done():
                self._release(key, mine)
            else:  # cancelled while waiting: the next call must still wait for `before`
                before.add_done_callback(lambda _: self._release(key, mine))

    def _release(self, key: Hashable, mine: asyncio.Future[None]) -> None:
        mine.set_result(None)
        if self._tails.get(key) is mine:  # nobody queued behind us: forget the key
            del self._tails[key]

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "keys": len(self._tails),
            "waits": self.waits,
            "inner": self.inner.stats(),
        }
