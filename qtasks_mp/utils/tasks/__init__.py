"""QTasks' `AsyncTaskUtils` / `SyncTaskUtils`: chains (and gathers) of pre-built calls.

    chain = AsyncTaskUtils.chain(add(2, 2), add(4), add(8))
    tasks = await chain.get(timeout=50)        # results 4, 8, 16

A chain runs through the store, as links: a link is a task (`qtasks_mp.chain`) that
waits for the previous step, adds the next step with the previous result as one more
positional argument, then adds the link after it. Every step and link is a task in the
store, so with a SQLite store a chain goes on after the worker restarts (a link cut
short runs again: at-least-once, like every task). The link task is registered on an
app when a chain is first used there, and by `run_forever()` (QTasks' worker).

```text
 client: add link0 ─────────► worker: link0: add step0 ──► add link1 ──► returns (step0, link1)
         wait link0, step0            link1: wait step0, add step1(…, result0), add link2
         wait link1, step1 ...        ...                       last link: (stepN, None)
```
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ...context import AsyncTask
from ...registries import TaskCall
from ...task import Task

LINK = "qtasks_mp.chain"


async def _chain_link(
    self: AsyncTask, steps: list[list[Any]], previous: str | None = None
) -> list[str | None]:
    """One link: wait for `previous`, add the first step with its result, add the next link."""
    name, args, kwargs, priority = steps[0]
    args = list(args)
    if previous is not None:
        done = await self._host.wait(previous)
        args.append(None if done is None else done.returning)
    step = await self.add_task(name, *args, priority=priority, kwargs=dict(kwargs))
    assert step is not None
    after = None
    if len(steps) > 1:
        link = await self.add_task(LINK, steps[1:], str(step.uuid))
        assert link is not None
        after = str(link.uuid)
    return [str(step.uuid), after]


def ensure_link(core: Any) -> None:
    """Register the link task on an app (the async core) if it is not there yet."""
    if LINK not in core.specs:
        core.task(name=LINK, echo=True, description="a link of a chain (qtasks_mp.utils.tasks)")(
            _chain_link
        )


class Chain:
    """Calls run one after the other, each given the previous one's result."""

    def __init__(self, *tasks: TaskCall) -> None:
        if not tasks:
            raise TypeError("chain() takes at least one pre-built call, e.g. add(2, 2)")
        for call in tasks:
            if not isinstance(call, TaskCall):
                raise TypeError(
                    f"chain() takes pre-built calls (my_task(1, 2)), got {call!r}; call the "
                    "task object with its arguments instead of .add_task(...)"
                )
        self.tasks = tasks
        self.app = tasks[0].task.app

    def _steps(self) -> list[list[Any]]:
        return [[c.task_name, list(c.args), dict(c.kwargs), c.priority] for c in self.tasks]

    def get(self, timeout: float = 50.0) -> Any:
        """The steps' `Task`s in order (None for a step not finished within `timeout`
        seconds, counted per step as in QTasks). Awaitable on the async app."""
        core = getattr(self.app, "core", self.app)
        ensure_link(core)
        if core is self.app:
            return _run_chain(core, self._steps(), timeout)
        return self.app._call(_run_chain, core, self._steps(), timeout)


async def _run_chain(core: Any, steps: list[list[Any]], timeout: float) -> list[Task | None]:
    results: list[Task | None] = []
    link = await core.add_task(LINK, steps, None)
    link_id: str | None = str(link.uuid)
    while link_id is not None:
        done = await core.wait(link_id, timeout)
        if done is None or done.status != "success":
            break
        step_id, link_id = done.returning
        results.append(await core.wait(step_id, timeout))
    results.extend([None] * (len(steps) - len(results)))
    return results


class Gather:
    """Calls run side by side; `get()` gives their `Task`s in order."""

    def __init__(self, *tasks: TaskCall) -> None:
        self.tasks = tasks

    def get(self, timeout: float = 50.0) -> Any:
        app = self.tasks[0].task.app
        core = getattr(app, "core", app)
        if core is app:
            return _run_gather(core, self.tasks, timeout)
        return app._call(_run_gather, core, self.tasks, timeout)


async def _run_gather(core: Any, calls: Sequence[TaskCall], timeout: float) -> list[Task | None]:
    added = [
        await core.add_task(c.task_name, *c.args, priority=c.priority, **c.kwargs) for c in calls
    ]
    return list(await asyncio.gather(*(core.wait(t.uuid, timeout) for t in added)))


class TaskUtils:
    """QTasks' `AsyncTaskUtils` and `SyncTaskUtils` (one class: the app decides)."""

    @staticmethod
    def chain(*tasks: TaskCall) -> Chain:
        return Chain(*tasks)

    @staticmethod
    def gather(*tasks: TaskCall) -> Gather:
        return Gather(*tasks)


AsyncTaskUtils = SyncTaskUtils = TaskUtils
AsyncChain = SyncChain = Chain

__all__ = ["AsyncChain", "AsyncTaskUtils", "Chain", "SyncChain", "SyncTaskUtils", "TaskUtils"]
