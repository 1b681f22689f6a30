"""`qtasks-mp top`: the live view in a terminal (Rich), refreshed in place.

    qtasks-mp top --store tasks.db            a SQLite store other processes run
    qtasks-mp top --store tasks.db --once     print one frame and exit (scripts, tests)
    await watch(app)                          an app in this process, in its own loop

It reads through the dashboard's sources (`qtasks_mp.web.source`), so it shows the
same numbers: lanes, counts, timings, running tasks, recent failures and, for an app
in this process, its workers. One frame is `render(await snapshot(source))`, a plain
function of the data, which `render_text` turns into a string.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .stats import format_duration
from .web.source import AppSource, Filter, Overview, Source

__all__ = ["Snapshot", "main_top", "render", "render_text", "snapshot", "watch"]

STORE_ENV = "QTASKS_MP_STORE"
_STYLE = {"new": "blue", "process": "yellow", "success": "green", "error": "red", "cancel": "dim"}


@dataclass
class Snapshot:
    title: str
    at: float
    overview: Overview
    running: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    in_process: bool


async def snapshot(source: Source, rows: int = 10) -> Snapshot:
    """Everything one frame shows, read from `source`."""
    overview = await source.overview()
    running = (await source.page(Filter(status="process"), None, rows)).rows
    failures = (await source.page(Filter(status="error"), None, rows)).rows
    return Snapshot(
        source.title,
        time.time(),
        overview,
        running,
        failures,
        source.workers(),
        source.in_process,
    )


def _ago(ts: float, now: float) -> str:
    if not ts:
        return "-"
    d = now - ts
    return f"{d:.0f}s" if d < 120 else f"{d / 60:.0f}m" if d < 7200 else f"{d / 3600:.1f}h"


def render(snap: Snapshot) -> RenderableType:
    """One frame: a header line, then lanes, tasks, running, failures, workers."""
    ov = snap.overview
    counts = ov.counts
    head = Text.assemble(
        ("qtasks_mp top ", "bold"),
        (snap.title, "cyan"),
        f"  {time.strftime('%H:%M:%S', time.localtime(snap.at))}  ",
        *(
            [
                (f"{counts[s]} {label}  ", _STYLE[s])
                for s, label in (
                    ("new", "queued"),
                    ("process", "running"),
                    ("success", "ok"),
                    ("error", "failed"),
                    ("cancel", "cancelled"),
                )
            ]
            if counts
            else [("counting…  ", "dim")]
        ),
        f"{ov.done_per_s:.1f}/s done, {ov.failed_per_s:.2f}/s failed",
    )

    lanes = Table(title="lanes", title_justify="left", expand=False)
    for col in ("lane", "queued", "running", "slots"):
        lanes.add_column(col, justify="left" if col == "lane" else "right")
    for lane in ov.lanes:
        slots = lane["slots"]
        lanes.add_row(
            lane["lane"],
            str(lane["queued"]),
            str(lane["running"]),
            "-" if slots is None else str(slots),
        )

    timing = Table(title="tasks", title_justify="left")
    for col in ("task", "run p50", "run p95", "wait p50", "wait p95"):
        timing.add_column(col, justify="left" if col == "task" else "right")
    for t in ov.timing:
        timing.add_row(
            t["task"],
            format_duration(t["run_p50_s"]),
            format_duration(t["run_p95_s"]),
            format_duration(t["wait_p50_s"]),
            format_duration(t["wait_p95_s"]),
        )

    running = Table(title="running", title_justify="left")
    for col in ("task", "id", "lane", "for", "progress", "arguments"):
        running.add_column(col, overflow="ellipsis", no_wrap=True)
    for r in snap.running:
        running.add_row(
            r["task_name"],
            r["uuid"][:8],
            r["lane"],
            _ago(r["started_at"], snap.at),
            r.get("progress", ""),
            r["args"],
        )
    if not snap.running:
        running.add_row("[dim]nothing running[/dim]", "", "", "", "", "")

    failures = Table(title="recent failures", title_justify="left")
    for col in ("task", "id", "when", "error"):
        failures.add_column(col, overflow="ellipsis", no_wrap=col != "error")
    for r in snap.failures:
        failures.add_row(
            r["task_name"], r["uuid"][:8], _ago(r["updated_at"], snap.at), Text(r["error"], "red")
        )
    if not snap.failures:
        failures.add_row("[dim]none[/dim]", "", "", "")

    parts: list[RenderableType] = [head, lanes, timing, running, failures]
    for ex in snap.workers:
        if not ex["workers"]:
            continue
        workers = Table(title=f"workers: {ex['name']}", title_justify="left")
        for col in ("pid", "state", "holding", "calls", "RSS MiB", "CPU %"):
            workers.add_column(col, justify="right" if col != "state" else "left")
        for w in ex["workers"]:
            rss = w.get("rss")
            cpu = w.get("cpu_percent")
            workers.add_row(
                str(w["pid"]),
                str(w.get("state", "")),
                str(w.get("held", "")),
                str(w.get("done", "")),
                "-" if rss is None else f"{rss / 2**20:.0f}",
                "-" if cpu is None else f"{cpu:.0f}",
            )
        stats = ex["stats"]
        workers.caption = (
            f"crashes {stats.get('crashes', 0)}, recycles {stats.get('recycles', 0)}, "
            f"timeouts {stats.get('timeouts', 0)}"
        )
        parts.append(workers)
        if ex["decisions"]:
            d = ex["decisions"][0]
            parts.append(Text(f"autoscaler, last: {d['reason']}", "dim"))
    if not snap.in_process:
        parts.append(Text("workers show for an app in this process only (watch(app))", "dim"))
    return Group(*parts)


def render_text(snap: Snapshot, width: int = 120) -> str:
    """One frame as plain text (no colour codes)."""
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=False)
    console.print(render(snap))
    return out.getvalue()


async def _loop(
    source: Source, interval_s: float, console: Console | None = None, frames: int | None = None
) -> None:
    with Live(console=console, auto_refresh=False, screen=False, transient=False) as live:
        shown = 0
        while frames is None or shown < frames:
            source.tick()
            live.update(render(await snapshot(source)), refresh=True)
            shown += 1
            if frames is None or shown < frames:
                await asyncio.sleep(interval_s)


async def watch(
    app: Any, interval_s: float = 1.0, *, console: Console | None = None, frames: int | None = None
) -> None:
    """Show an app of this process in the terminal until cancelled (in the app's loop).

    `frames`: stop after that many (None: never); `console`: where to draw."""
    source = AppSource(app)
    try:
        await _loop(source, interval_s, console, frames)
    finally:
        await source.aclose()


def main_top(argv: Sequence[str] | None = None) -> int:
    """`qtasks-mp top`: 0 after Ctrl-C, 2 on a usage error (one line on stderr)."""
    from .web.serve import open_store_source

    parser = argparse.ArgumentParser(
        prog="qtasks-mp top",
        description=(
            "Watch a task store (a SQLite file or a PostgreSQL URL) in the terminal: "
            "lanes, tasks, failures."
        ),
    )
    parser.add_argument(
        "--store", default=os.environ.get(STORE_ENV), help=f"the store (default ${STORE_ENV})"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    args = parser.parse_args(argv)
    if not args.store:
        print(f"qtasks-mp top: error: give --store (or set {STORE_ENV})", file=sys.stderr)
        return 2
    if args.interval <= 0:
        print("qtasks-mp top: error: --interval must be > 0", file=sys.stderr)
        return 2

    async def run() -> int:
        from .lifecycle import wait_for_stop_signal

        try:
            source = await open_store_source(args.store)
        except ValueError as e:
            print(f"qtasks-mp top: error: {e}", file=sys.stderr)
            return 2
        try:
            if args.once:
                await source.overview()
                if source.counted is not None:  # wait for the full count, once
                    await source.counted.get(wait_s=60.0)
                print(render_text(await snapshot(source), width=Console().width), end="")
                return 0
            view = asyncio.create_task(_loop(source, args.interval))
            stop = asyncio.create_task(wait_for_stop_signal())
            await asyncio.wait([view, stop], return_when=asyncio.FIRST_COMPLETED)
            for t in (view, stop):
                t.cancel()
            await asyncio.gather(view, stop, return_exceptions=True)
        finally:
            await source.aclose()
        return 0

    return asyncio.run(run())


if __name__ == "__main__":  # python -m qtasks_mp.top --store tasks.db
    sys.exit(main_top())
