# ruff: noqa
# type: ignore
"""DESIGN.md's user code, verbatim between the markers, with stubbed externals before it
and a test driver (which adds each task once, prints the outcomes, then sends itself
SIGINT) inserted just before `timer.run_forever()`."""

# --- stubs (not part of DESIGN.md) ---
import logging


class _Order:
    def __init__(self, n):
        self.n = n

    def to_dict(self):
        return {"id": self.n}


class db:
    @staticmethod
    async def get_exportable_orders():
        return [_Order(1), _Order(2)]


def log_crm(order):
    return f"crm:{order['id']}"


# --- DESIGN.md begins ---
from qtasks_mp.asyncio import QueueTasks          # async facade (qtasks_mp.QueueTasks: sync facade)
from qtasks_mp.registries import AsyncTask
from qtasks_mp.timers import AsyncTimer
from apscheduler.triggers.cron import CronTrigger

app = QueueTasks()                                 # embedded default: nothing to install
app.config.logs_default_level = logging.INFO

@app.task(name="send_reminder")
async def send_reminder(chat_id: int, text: str): ...      # coroutine -> inline executor

@app.task(name="error_logger")
def error_logger(message: str): ...                        # plain function -> thread executor

@app.task(name="check_orders", echo=True)                  # echo: first argument is the task context
async def check_orders(self: AsyncTask):
    await self.add_task("send_reminder", 42, "delivered!")         # nested task, positional args
    await self.add_task("error_logger", args=("boom",))             # args= / kwargs= also accepted

@app.task(generate_handler=log_crm, echo=True)             # async generator: handler called per item,
async def export_orders():                                 # result = list of handler results
    for order in await db.get_exportable_orders():
        yield order.to_dict()

@app.task(retry=3, retry_on_exc=[ConnectionError])         # up to 3 more attempts, only on these errors
async def sync_with_crm(): ...

@app.task(executor="process", timeout=60)                  # CPU-heavy: process pool, hard time limit
def daily_analytics(rows): ...

timer = AsyncTimer(app=app)
timer.add_task("send_reminder", trigger=CronTrigger(minute="*/1"), args=(123, "text"))
timer.add_task("daily_report", trigger=CronTrigger(hour=23, minute=59))
# --- test driver (not part of DESIGN.md) ---
import json
import os
import signal

from apscheduler.triggers.date import DateTrigger


@app.task(name="_drive")
async def _drive():
    outcome = {}
    for name, args in [
        ("check_orders", ()),
        ("export_orders", ()),
        ("sync_with_crm", ()),
        ("daily_analytics", ([3, 1, 2],)),
        ("error_logger", ("boom",)),
        ("send_reminder", (1, "hi")),
    ]:
        task = await app.add_task(name, *args, timeout=30)
        outcome[name] = [task.status, task.returning] if task else None
    print(json.dumps(outcome), flush=True)
    os.kill(os.getpid(), signal.SIGINT)


timer.add_task("_drive", trigger=DateTrigger())
# --- end of test driver ---
timer.run_forever()                                        # runs the app and the timers; Ctrl-C stops cleanly
# --- DESIGN.md ends ---
