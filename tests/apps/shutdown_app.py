"""A real `run_forever()` program for the shutdown tests. argv: facade (async|sync|timer), mode.

`long_job` queues five more tasks (which cannot start: one inline slot), waits until
the program's SIGINT handler is installed, then prints "started" for the test to signal.
mode "finishes": long_job ends within shutdown_timeout.
mode "overruns": long_job never ends and is cancelled.
mode "hangs": the same with a shutdown_timeout of 60 s: only a second signal ends the stop.
mode "stuck": long_job ends, but a worker_stopping handler never returns: a third
signal leaves.
"""

from __future__ import annotations

import asyncio
import signal
import sys

facade, mode = sys.argv[1], sys.argv[2]
# As in a terminal: SIGINT not inherited as ignored (a test run started in the
# background by a shell without job control ignores it), so that the wait below for
# run_forever's own handler means something.
signal.signal(signal.SIGINT, signal.default_int_handler)

if facade == "sync":
    from qtasks_mp import QueueTasks as SyncApp

    app = SyncApp(store="memory://")  # not run_forever's home file: runs share nothing
    core = app.core
else:
    from qtasks_mp.asyncio import QueueTasks as AsyncApp

    app = core = AsyncApp(store="memory://")

core.config.max_tasks_process = 1
core.config.shutdown_timeout = {"overruns": 0.3, "hangs": 60.0}.get(mode, 5.0)


@core.task
async def long_job() -> str:
    for i in range(5):
        await core.add_task("queued", i)
    while signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # noqa: ASYNC110
        await asyncio.sleep(0.005)  # run_forever has not installed its handler yet: no event
    print("started", flush=True)
    if mode in ("overruns", "hangs"):
        await asyncio.Event().wait()
    await asyncio.sleep(0.3)
    print("long_job finished", flush=True)
    return "done"


if mode == "stuck":

    @core.events.on.worker_stopping()
    async def never_returns(app: object) -> None:
        print("stopping handler hangs", flush=True)
        await asyncio.Event().wait()


@core.task
async def queued(i: int) -> None:
    print(f"queued {i} ran", flush=True)


if facade == "sync":
    app.add_task("long_job")
    app.run_forever()
elif facade == "timer":
    from apscheduler.triggers.date import DateTrigger

    from qtasks_mp.timers import AsyncTimer

    timer = AsyncTimer(app=app)
    timer.add_task("long_job", trigger=DateTrigger())
    timer.run_forever()
else:

    async def main() -> None:
        await core.add_task("long_job")
        await core.serve()

    asyncio.run(main())
print("exited cleanly", flush=True)
