"""QTasks' middleware names (`qtasks.middlewares`), so that QTasks code imports.

QTasks' `TaskMiddleware` classes go in `middlewares_before=` / `middlewares_after=`,
which are kept as task extras here and not run. A middleware that runs is a
`qtasks_mp.Middleware` (an onion: `async def __call__(self, call, call_next)`), given
in `QueueTasks(middlewares=[...])` or `@app.task(middlewares=[...])`; see
docs/qtasks.md ("Middleware") for the same middleware written both ways.
"""

from __future__ import annotations

from typing import Any


class BaseMiddleware:
    """QTasks' base of middlewares: `name`, and a `__call__` subclasses write."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return None


class TaskMiddleware(BaseMiddleware):
    """QTasks' task middleware: made with the task's executor, returns it when called."""

    def __init__(self, task_executor: Any) -> None:
        super().__init__()
        self.task_executor = task_executor

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.task_executor


__all__ = ["BaseMiddleware", "TaskMiddleware"]
