"""`AsyncTimer`: APScheduler 3 triggers that add tasks. The only module importing APScheduler.

The task name is resolved when the trigger fires, not when the timer is added (so a
timer may be set up before the task is defined); an unknown name at that moment is
logged as an error and the timer goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Any

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

from . import checks
from .app import AppCore
from .errors import QTasksError
from .lifecycle import run_forever_deferred, stop_signals

log = logging.getLogger("qtasks_mp.timers")


class AsyncTimer:
    """Timers for one app: `timer.add_task(name, trigger=CronTrigger(...), args=(...))`.

    `timer.run_forever()` runs the app and the timers in this process until Ctrl-C;
    `async with timer:` (inside `async with app:`) for programs that own the loop.
    The sync facade's app is accepted too: its core is used.
    """

    def __init__(self, app: Any, **scheduler_options: Any) -> None:
        core = getattr(app, "core", app)
        if not isinstance(core, AppCore):
            raise TypeError(f"AsyncTimer(app=...) takes a QueueTasks app, got {app!r}")
        self.app = core
        self.fired = 0
        self.scheduler = AsyncIOScheduler(**scheduler_options)

    def add_task(
        self,
        *call: Any,
        task_name: str | None = None,
        trigger: BaseTrigger | None = None,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Job:
        """Add a task each time `trigger` fires: `timer.add_task("name", trigger=...,
        args=(...), kwargs={...})`, the other `options` going to APScheduler's `add_job`
        (`id`, `max_instances`, `misfire_grace_time`...).

        QTasks' form works too: `timer.add_task(5, task_name="name", trigger=...)`, the
        positional arguments and the other keywords then being the task's arguments.
        `timeout` (QTasks) is accepted and not used: a timer does not wait for its task.
        """
        job_options = options
        if task_name is None:
            if not call:
                raise TypeError("timer.add_task: give the task's name first (or task_name=)")
            task_name, call = call[0], call[1:]
            if trigger is None and call and isinstance(call[0], BaseTrigger):
                trigger, call = call[0], call[1:]
        else:  # QTasks: the other keywords are the task's own
            kwargs = {**(kwargs or {}), **options}
            job_options = {}
        if not isinstance(task_name, str):  # (the name itself is checked as add_task does)
            raise TypeError(
                f"timer.add_task: the task's name comes first, a str; got {task_name!r}"
            )
        args = (*call, *checks.call_args(task_name, args))
        kwargs = checks.call_kwargs(task_name, kwargs)
        if not isinstance(trigger, BaseTrigger):
            hint = (
                f"; for a crontab line, pass CronTrigger.from_crontab({trigger!r})"
                if isinstance(trigger, str)
                else ""
            )
            raise TypeError(
                f"timer for task {task_name!r}: trigger= takes an APScheduler trigger "
                f"(CronTrigger, IntervalTrigger, DateTrigger), got {trigger!r}{hint}"
            )
        if task_name in self.app.specs:  # else resolved when it fires (registered later)
            self.app.check_call(task_name, *args, priority=priority, kwargs=kwargs or {})
        job_options.setdefault("name", task_name)
        job_options.setdefault("misfire_grace_time", None)
        return self.scheduler.add_job(
            self._fire,
            trigger,
            args=(task_name, tuple(args), dict(kwargs or {}), priority),
            **job_options,
        )

    async def _fire(
        self, task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], priority: int | None
    ) -> None:
        self.fired += 1
        app = self.app
        try:
            adding = app.add_task(task_name, *args, priority=priority, kwargs=kwargs)
            if app.running and app.loop is not asyncio.get_running_loop():
                # the app runs in another thread's loop (the sync facade's)
                assert app.loop is not None
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(adding, app.loop))
            else:
                await adding
        except QTasksError as e:
            log.error("timer for %r could not add the task: %s", task_name, e)
        except TypeError as e:
            log.error("timer for %r could not add the task: %s", task_name, e)

    async def start(self) -> None:
        if not self.scheduler.running:
            self.scheduler.start()

    async def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # let the scheduler's loop callbacks unwind

    async def __aenter__(self) -> AsyncTimer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def serve(self) -> None:
        """Run the app and the timers until SIGINT or SIGTERM; another one while the
        app stops cancels its running tasks now."""
        with stop_signals(self.app.hurry_stop) as stop:
            async with self.app, self:
                log.info("running; press Ctrl-C to stop")
                await stop.wait()

    def run_forever(self) -> None:
        """Run the app and the timers in this thread until Ctrl-C; returns after a clean stop."""
        if run_forever_deferred(self):
            return
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.serve())


#: QTasks' sync timer: the same timer; `run_forever()` blocks, and a sync app is accepted.
SyncTimer = AsyncTimer

__all__ = ["AsyncTimer", "SyncTimer"]
