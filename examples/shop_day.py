"""A small shop's day, compressed into a few seconds — the README's first command.

What it shows, as it happens:
- a timer fires every second (three times) and queues `check_orders`;
- `check_orders` (echo=True) fans out one `notify_customer` task per new order;
- `sync_with_crm` fails twice with ConnectionError and succeeds on its third attempt;
- `export_orders` is an async generator whose items go to `generate_handler`;
- `nightly_report` is a blocking function on the thread pool;
then it prints a per-task summary table and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from apscheduler.triggers.interval import IntervalTrigger

from qtasks_mp import Call, Middleware, format_table
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.middleware import CallNext
from qtasks_mp.registries import AsyncTask
from qtasks_mp.timers import AsyncTimer

T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:5.2f}s] {message}", flush=True)


class Narrator(Middleware):
    """Prints each task as it ends: a user middleware, app-wide."""

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        start = time.perf_counter()
        try:
            result = await call_next(call)
        except Exception as exc:
            say(f"  x {call.task_name} attempt {call.attempt}: {type(exc).__name__}: {exc}")
            raise
        ms = (time.perf_counter() - start) * 1000
        say(f"  ok {call.task_name}{_short(call.args, call.kwargs)} in {ms:.1f} ms")
        return result


def _short(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    shown = [repr(a) for a in args if not isinstance(a, AsyncTask)]
    shown += [f"{k}={v!r}" for k, v in kwargs.items()]
    return "(" + ", ".join(shown)[:50] + ")"


app = QueueTasks("shop", middlewares=[Narrator()])
app.config.logs_default_level = logging.WARNING  # the Narrator speaks; the library stays quiet
random.seed(7)
next_order = iter(range(1040, 2000))
crm_attempts = 0
rounds = 0
rounds_done = asyncio.Event()


@app.task(name="notify_customer")
async def notify_customer(order_id: int, status: str) -> str:
    await asyncio.sleep(random.uniform(0.01, 0.05))  # the messenger API
    return f"order {order_id}: {status}"


@app.task(name="check_orders", echo=True)
async def check_orders(self: AsyncTask) -> int:
    global rounds
    rounds += 1
    new = [next(next_order) for _ in range(random.randint(2, 4))]
    say(f"check_orders round {rounds}: {len(new)} new orders {new}")
    for order_id in new:
        await self.add_task("notify_customer", order_id, "paid")
    if rounds == 3:
        rounds_done.set()
    return len(new)


@app.task(name="sync_with_crm", retry=3, retry_on_exc=[ConnectionError], retry_backoff=0.1)
async def sync_with_crm() -> str:
    global crm_attempts
    crm_attempts += 1
    await asyncio.sleep(0.02)
    if crm_attempts <= 2:
        raise ConnectionError("CRM did not answer")
    return "42 customers synced"


async def log_crm(order: dict[str, Any]) -> str:
    return f"exported {order['id']}"


@app.task(name="export_orders", generate_handler=log_crm)
async def export_orders() -> AsyncIterator[dict[str, Any]]:
    for order_id in range(1040, 1046):
        await asyncio.sleep(0.01)  # the database
        yield {"id": order_id, "total": order_id % 97}


@app.task(name="nightly_report")
def nightly_report(days: int) -> dict[str, float]:
    time.sleep(0.2)  # a blocking query: runs on the thread pool, not in the loop
    return {"days": days, "revenue": 1234.5}


async def main() -> None:
    timer = AsyncTimer(app=app)
    timer.add_task("check_orders", trigger=IntervalTrigger(seconds=1))
    async with app, timer:
        say("shop open: timer checks orders every second; CRM sync, export and report queued")
        crm = await app.add_task("sync_with_crm")
        export = await app.add_task("export_orders")
        report = await app.add_task("nightly_report", days=1)
        await asyncio.wait_for(rounds_done.wait(), 10)  # three timer rounds
        await app.wait_idle(timeout=10)
        for task in (crm, export, report):
            assert task is not None
            done = await app.get(task.uuid)
            assert done is not None
            say(f"{done.task_name}: {done.status} after {done.retry} retries -> {done.returning}")
    print()
    print(format_table(app.stats()["tasks"]))
    failed = sum(row["failed"] for row in app.stats()["tasks"].values())
    print(f"\nshop closed after {time.monotonic() - T0:.1f}s; {failed} tasks failed")


if __name__ == "__main__":
    asyncio.run(main())
