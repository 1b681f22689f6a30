"""`InlineExecutor`: runs tasks in the dispatcher's own event loop (for I/O coroutines)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from ..errors import TaskTimeout
from ..registries import Kind
from .base import Call, Executor, run_in_loop


class InlineExecutor(Executor):
    """Up to `max_tasks` calls at once in the event loop; default `config.max_tasks_process`.

    A plain function here blocks the loop while it runs: give it the thread executor
    unless it is quick. A timeout cancels the coroutine.
    """

    name = "inline"

    def __init__(self, max_tasks: int | None = None) -> None:
        super().__init__()
        self.max_tasks = max_tasks or 10
        self.lent = 0  # slots lent by calls waiting for other tasks (`lend`)

    @property
    def slots(self) -> int:
        return self.max_tasks + self.lent

    @property
    def capacity(self) -> int:
        # (`slots - active`, read once a call: one call less)
        return self.max_tasks + self.lent - self._active

    def lend(self) -> bool:
        """A coroutine waiting for another task holds nothing: one more runs meanwhile."""
        full = self.capacity <= 0
        self.lent += 1
        if full:  # (else the dispatcher takes what waits already)
            self.wakeup()
        return True

    def give_back(self) -> None:
        self.lent -= 1

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "lent": self.lent}

    def run(self, call: Call) -> Coroutine[Any, Any, Any]:
        """The coroutine that runs `call`; for a coroutine function without a timeout,
        the function's own coroutine (no frame of ours between the chain and it)."""
        spec = call.spec
        if spec.timeout is None:
            if spec.kind is Kind.COROUTINE:  # the common case
                coro: Coroutine[Any, Any, Any] = spec.fn(*call.args, **call.kwargs)
                return coro
            return run_in_loop(call)
        return self._run_timed(call, spec.timeout)

    async def _run_timed(self, call: Call, timeout: float) -> Any:
        try:
            return await asyncio.wait_for(run_in_loop(call), timeout)
        except asyncio.TimeoutError:
            raise TaskTimeout(call.task_name, timeout, "the coroutine was cancelled") from None
