"""A module written to be started with `python sqlite_timer_app.py`: it calls
`timer.run_forever()` at the bottom, unguarded. `qtasks-mp run` must still import it
(that call returns at once during the import) and then run the app and the timer."""

from __future__ import annotations

from apscheduler.triggers.interval import IntervalTrigger

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.timers import AsyncTimer

app = QueueTasks("sqlite-timer")


@app.task
async def tick() -> str:
    return "tock"


timer = AsyncTimer(app=app)
timer.add_task("tick", trigger=IntervalTrigger(seconds=0.05))
timer.run_forever()
print("module imported past run_forever()", flush=True)
