"""The dashboard's CPU cost while the app runs 5,000 tasks/s, in the app's own process.

    python benchmarks/web_cpu.py [--rate 5000] [--seconds 10] [--store memory|sqlite]

A producer adds async no-op tasks at `--rate` (batches every 10 ms). The process's
CPU time is measured over `--seconds` three times: no dashboard page open, the
overview open in headless Chromium (live: a refresh per change, so once a second),
the task list open. Chromium's own CPU is not counted: it is the viewer's machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time

import psutil
from playwright.async_api import async_playwright

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.metrics import TaskMetrics
from qtasks_mp.web import AppSource, DashboardServer


async def noop() -> None:
    return None


async def produce(app: QueueTasks, rate: int, stop: asyncio.Event) -> int:
    added = 0
    start = time.perf_counter()
    while not stop.is_set():
        due = int((time.perf_counter() - start) * rate)
        for _ in range(due - added):
            await app.add_task("noop")
        added = due
        await asyncio.sleep(0.01)
    return added


async def cpu_over(seconds: float) -> tuple[float, float]:
    """(CPU %, of one core) of this process over `seconds`, and the wall time."""
    me = psutil.Process()
    before = me.cpu_times()
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    after = me.cpu_times()
    wall = time.perf_counter() - start
    used = (after.user - before.user) + (after.system - before.system)
    return 100 * used / wall, wall


async def main(rate: int, seconds: float, store: str) -> None:
    path = None
    if store == "sqlite":
        path = os.path.join(tempfile.mkdtemp(), "cpu.db")
    app = QueueTasks("cpu", store=path, middlewares=[TaskMetrics()])
    app.task(name="noop")(noop)
    chromium = shutil.which("chromium")
    assert chromium, "run .ci/browser.sh"
    async with app, DashboardServer(AppSource(app), port=0) as dash, async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        stop = asyncio.Event()
        producer = asyncio.create_task(produce(app, rate, stop))
        await asyncio.sleep(2)  # warm up
        done0 = app.stats()["tasks"]["noop"]["count"]
        t0 = time.perf_counter()
        count = lambda: app.stats()["tasks"]["noop"]["count"]  # noqa: E731
        n0 = count()
        base, wall = await cpu_over(seconds)
        results = {"no page open": (base, (count() - n0) / wall)}
        for label, rel in (("overview open", ""), ("task list open", "tasks")):
            page = await browser.new_page()
            await page.goto(dash.url + rel)
            await asyncio.sleep(1)
            n0 = count()
            cpu, wall = await cpu_over(seconds)
            results[label] = (cpu, (count() - n0) / wall)
            await page.close()
        done = app.stats()["tasks"]["noop"]["count"] - done0
        held = done / (time.perf_counter() - t0)
        stop.set()
        await producer
        await browser.close()
    print(f"store {store}, target {rate}/s, held {held:,.0f} tasks/s")
    for label, (cpu, tasks_s) in results.items():
        extra = "" if label == "no page open" else f"  (+{cpu - base:.1f} points)"
        print(f"  {label:16s} {tasks_s:7,.0f} tasks/s, process CPU {cpu:5.1f}% of one core{extra}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    a = parser.parse_args()
    asyncio.run(main(a.rate, a.seconds, a.store))
