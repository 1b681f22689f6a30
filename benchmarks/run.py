"""Benchmarks: qtasks_mp against the plain asyncio it stands on, side by side in one run.

    python benchmarks/run.py [--quick] [--markdown] [--only core]

The machine is shared and noisy, so each comparison alternates its two contenders
(A, B, A, B, ...) after a warm-up round, takes the median of each, and reports the
ratio app / baseline. Compare ratios between runs, not absolute rates.

A section is one function `(quick) -> list[Row]`, listed in `SECTIONS`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import os
import platform
import statistics
import sys
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import perf_counter

from qtasks_mp.asyncio import QueueTasks

Bench = Callable[[int], Awaitable[float]]  # runs n calls, returns a rate (/s) or a p50 (s)


@dataclass
class Row:
    name: str
    app: float
    baseline: float
    unit: str  # "/s": a rate, "eff": a CPU efficiency (higher is better); "s": a latency
    # the ratio app / baseline that passes: at least this for a rate, at most for a latency
    target: float | None = None

    @property
    def ratio(self) -> float:
        return self.app / self.baseline

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "info"
        met = self.ratio <= self.target if self.unit == "s" else self.ratio >= self.target
        return "PASS" if met else "MISS"

    def cells(self) -> list[str]:
        bound = "<=" if self.unit == "s" else ">="
        target = "-" if self.target is None else f"{bound} {self.target:.2g}x"
        app, base = _fmt(self.app, self.unit), _fmt(self.baseline, self.unit)
        return [self.name, app, base, f"{self.ratio:.2f}x", target, self.verdict]


def _fmt(value: float, unit: str) -> str:
    if unit == "eff":
        return f"{value:.3f}"
    return f"{value:,.0f}/s" if unit == "/s" else f"{value * 1e6:,.1f} µs"


async def compare(app: Bench, baseline: Bench, n: int, rounds: int) -> tuple[float, float]:
    """Median of each contender over `rounds` alternating runs, after one warm-up each."""
    await app(n)
    await baseline(n)
    results: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for bench, out in zip((app, baseline), results, strict=True):
            gc.collect()  # neither contender pays for the other's garbage
            out.append(await bench(n))
    return statistics.median(results[0]), statistics.median(results[1])


def rate(run_n: Callable[[int], Awaitable[object]]) -> Bench:
    async def bench(n: int) -> float:
        start = perf_counter()
        await run_n(n)
        return n / (perf_counter() - start)

    return bench


def p50_latency(once: Callable[[], Awaitable[object]]) -> Bench:
    async def bench(n: int) -> float:
        samples = []
        for _ in range(n):
            start = perf_counter()
            await once()
            samples.append(perf_counter() - start)
        return statistics.median(samples)

    return bench


# ---------------------------------------------------------------- sections


async def noop() -> None:
    return None


def tnoop() -> None:
    return None


async def _core(quick: bool) -> list[Row]:
    n, n_latency, rounds = (2_000, 200, 2) if quick else (20_000, 1_000, 5)
    app = QueueTasks()
    app.task(name="noop")(noop)
    app.task(name="tnoop")(tnoop)
    loop = asyncio.get_running_loop()

    async def app_burst(name: str, n: int) -> None:
        for _ in range(n):
            await app.add_task(name)
        await app.wait_idle()

    async def app_round_trip() -> None:
        task = await app.add_task("noop", timeout=5)
        assert task is not None and task.status == "success", task

    async def gather_noop(n: int) -> None:
        await asyncio.gather(*[asyncio.create_task(noop()) for _ in range(n)])

    async def gather_in_pool(n: int) -> None:
        await asyncio.gather(*[loop.run_in_executor(pool, tnoop) for _ in range(n)])

    async def create_task_noop() -> None:
        await asyncio.create_task(noop())

    async with app:
        with ThreadPoolExecutor(app.config.thread_workers) as pool:
            asyncio_rates = await compare(
                rate(lambda n: app_burst("noop", n)), rate(gather_noop), n, rounds
            )
            thread_rates = await compare(
                rate(lambda n: app_burst("tnoop", n)), rate(gather_in_pool), n, rounds
            )
        latencies = await compare(
            p50_latency(app_round_trip), p50_latency(create_task_noop), n_latency, rounds
        )
        tasks = app.stats()["tasks"]
    # A benchmark of tasks that failed fast would be worthless: every one must have run.
    expected = {"noop": (rounds + 1) * (n + n_latency), "tnoop": (rounds + 1) * n}
    for name, count in expected.items():
        if tasks[name]["ok"] != count:
            raise RuntimeError(f"{name}: {tasks[name]['ok']} of {count} tasks succeeded")
    workers = app.config.thread_workers
    return [
        Row("async no-op: app vs asyncio.gather", *asyncio_rates, "/s", 0.6),
        Row(
            f"sync no-op: thread executor vs run_in_executor ({workers} threads)",
            *thread_rates,
            "/s",
            0.8,
        ),
        Row("async round trip p50: add_task(timeout=5) vs await create_task", *latencies, "s"),
    ]


async def _process(quick: bool) -> list[Row]:
    """The process executor through the app vs the stdlib pool, multiprocessing.Pool and
    loky (see bench_process.py; each contender runs once, in a thread of its own)."""
    import bench_process  # next to this file

    sizes = bench_process.Sizes.make(2, quick)
    results = await asyncio.to_thread(bench_process.run_all, sizes)
    map_app, map_base = await asyncio.to_thread(bench_process.map_rates, sizes)
    app = results.pop("qtasks_mp app")
    results.pop("qtasks_mp run()")
    print(
        "process, CPU efficiency (1.0 is perfect): "
        + ", ".join(f"{k} {v[2]:.3f}" for k, v in [("app", app), *results.items()])
    )
    # (rate, round trip, arrays) targets per baseline: the bar is the stdlib pool;
    # Pool's rate must be beaten too.
    targets = {"ProcessPoolExecutor": (3.0, 0.33, 3.0), "multiprocessing.Pool": (1.0, None, None)}
    arrays = f"{len(sizes.arrays)} x {sizes.mib / max(1, len(sizes.arrays)):.0f} MiB arrays"
    rows = []
    for name, base in results.items():
        rate_target, trip_target, array_target = targets.get(name, (None, None, None))
        rows.append(Row(f"process no-op rate: app vs {name}", app[0], base[0], "/s", rate_target))
        rows.append(
            Row(f"process round trip p50: app vs {name}", app[1], base[1], "s", trip_target)
        )
        if sizes.arrays:
            rows.append(
                Row(f"process {arrays}, MiB/s: app vs {name}", app[3], base[3], "/s", array_target)
            )
    rows.append(
        Row(
            "process map, chunksize=64, items/s: app.map vs ProcessPoolExecutor.map",
            map_app,
            map_base,
            "/s",
            1.0,
        )
    )
    return rows


def _users(quick: bool) -> list[Row]:
    """The paths users write (bench_users.py): gathers of waited add_task, the sync
    facade from the main thread, a CPU batch; each with its baselines and floors."""
    import bench_users as u  # next to this file

    s = u.Sizes.make(quick)
    rows = []
    inline = u.inline_gather(s)
    what = f"gather of {s.gather:,} waited add_task, inline"
    rows.append(Row(f"{what}: app vs asyncio.gather", inline[0], inline[1], "/s", 0.6))
    rows.append(
        Row(f"{what}: app vs its fire-and-forget+wait_idle", inline[0], inline[2], "/s", 0.8)
    )
    if len(inline) > 3:
        rows.append(Row(f"{what}: app vs TaskIQ InMemoryBroker", inline[0], inline[3], "/s", 5.0))
    trip = u.sync_round_trip(s)
    what = "sync facade add_task(timeout=) p50, process, main thread"
    rows.append(Row(f"{what}: app vs ProcessPoolExecutor", trip[0], trip[1], "s", 0.33))
    rows.append(Row(f"{what}: app vs floor (thread-pipe echo)", trip[0], trip[2], "s"))
    what = f"sync facade add_task(timeout=), process, {u.THREADS} plain threads at once"
    rows.append(Row(f"{what}: app vs ProcessPoolExecutor", trip[3], trip[4], "/s"))
    gather = u.process_gather(s)
    what = f"gather of {s.process_gather:,} waited add_task, process no-ops"
    rows.append(Row(f"{what}: app vs ProcessPoolExecutor", gather[0], gather[1], "/s", 3.0))
    rows.append(Row(f"{what}: app vs multiprocessing.Pool", gather[0], gather[2], "/s", 1.5))
    rows.append(Row(f"{what}: app vs floor (asyncio socket echo)", gather[0], gather[3], "/s"))
    cpu = u.cpu_batch(s)
    what = f"CPU batch, {s.cpu_tasks} x {s.cpu_s * 1e3:.0f} ms gathered, efficiency"
    rows.append(Row(f"{what}: app vs ProcessPoolExecutor", cpu[0], cpu[1], "eff", 1.0))
    rows.append(Row(f"{what}: app vs perfect (1.0)", cpu[0], 1.0, "eff", 0.97))
    what = f"CPU batch, {s.cpu_tasks} x {s.cpu_s * 1e3:.0f} ms gathered, workers' busy fraction"
    rows.append(Row(f"{what}: app vs ProcessPoolExecutor", cpu[2], cpu[3], "eff"))
    return rows


SECTIONS: dict[str, Callable[[bool], list[Row]]] = {
    "core": lambda quick: asyncio.run(_core(quick)),
    "process": lambda quick: asyncio.run(_process(quick)),
    "users": _users,
}

# ---------------------------------------------------------------- output

HEADER = ["comparison", "app", "baseline", "ratio", "target", "result"]


def text_table(rows: Sequence[Row]) -> str:
    lines = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*line) for line in lines]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [HEADER, ["---", *["---:"] * (len(HEADER) - 1)], *(row.cells() for row in rows)]
    return "\n".join(f"| {' | '.join(line)} |" for line in lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N, 2 rounds (smoke test)")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("--only", choices=sorted(SECTIONS), help="run one section")
    args = parser.parse_args(argv)

    print(
        f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"{os.cpu_count()} CPUs, {datetime.datetime.now():%Y-%m-%d %H:%M}"
        f"{', quick' if args.quick else ''}"
    )
    print("ratio = app / baseline; rates: higher is better, latencies: lower is better\n")
    rows: list[Row] = []
    for name in [args.only] if args.only else SECTIONS:
        rows += SECTIONS[name](args.quick)
    print(text_table(rows))
    if args.markdown:
        print("\n" + markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
