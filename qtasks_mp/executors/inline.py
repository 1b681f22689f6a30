"""`InlineExecutor`: runs tasks in the dispatcher's own event loop (for I/O coroutines)."""

from __future__ import annotations

import asyncio
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

    @property
    def slots(self) -> int:
        return self.max_tasks

    async def run(self, call: Call) -> Any:
        spec = call.spec
        timeout = spec.timeout
        if timeout is None:
            if spec.kind is Kind.COROUTINE:  # the common case, one frame less
                return await spec.fn(*call.args, **call.kwargs)
            return await run_in_loop(call)
        try:
            return await asyncio.wait_for(run_in_loop(call), timeout)
        except asyncio.TimeoutError:
            raise TaskTimeout(call.task_name, timeout, "the coroutine was cancelled") from None
