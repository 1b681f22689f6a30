"""The autoscaler at work: a burst of CPU tasks, then the idle tail, drawn over time.

    python benchmarks/autoscale_plot.py [--workers N] [--burst-s 4] [--idle-timeout 1]
                                        [--out docs/autoscale.png] [--quick]

One run, through the full app (`add_task` -> result):
1. an autoscaled pool (min_workers=1, max_workers=N) gets a burst of ~50 ms CPU tasks
   sized so that N workers need `--burst-s` seconds; a sampler records, every 20 ms,
   the live, ready and busy workers, the tasks waiting, and the CPU (ours and the
   others'), until the pool is back to one worker after the idle tail;
2. a fixed pool of N workers (autoscale=False) runs the same burst.
The pair runs `--repeat` times, alternating, and the best of each is kept. It prints
the reaction times (burst -> first growth decision, -> a second worker running a
call, -> full size), the makespans and their ratio, every decision with its reason,
and writes the plot (needs matplotlib: `pip install matplotlib`).
The machine may be shared: other programs' CPU shows in the plot, and the policy
reacts to it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpu_work import calibrate, spin  # next to this file

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.autoscale import Decision
from qtasks_mp.executors.process import ProcessExecutor

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    makespan_s: float = 0.0
    rows: list[tuple[float, ...]] = field(default_factory=list)  # t, live, ready, busy, ...
    decisions: list[tuple[float, Decision]] = field(default_factory=list)
    first_grow_s: float | None = None
    second_busy_s: float | None = None
    full_s: float | None = None


async def burst(workers: int, calls: int, spin_n: int, idle_timeout: float, autoscale: bool) -> Run:
    pool = ProcessExecutor(
        max_workers=workers, min_workers=1, autoscale=autoscale, idle_timeout=idle_timeout
    )
    app = QueueTasks("autoscale-bench", executors={"process": pool})
    app.config.logs_default_level = logging.WARNING
    app.task(executor="process")(spin)
    run = Run()
    async with app:
        await app.add_task("spin", 1000, timeout=30)  # the function shipped, paths warm
        await pool.wait_ready(30)
        start = time.monotonic()
        back_to_one = asyncio.Event()

        def record(d: Decision) -> None:
            run.decisions.append((time.monotonic() - start, d))
            if d.action == "shrink" and d.target == 1:
                back_to_one.set()

        if pool.autoscaler is not None:
            pool.autoscaler.on_decision.append(record)
        done = 0

        def finished(_: Any) -> None:
            nonlocal done
            done += 1

        sampling = True

        async def sample() -> None:
            while sampling:
                t = time.monotonic() - start
                stats = pool.stats()
                live, starting, busy = stats["workers"], stats["starting"], stats["busy"]
                last = pool.autoscaler.last_sample if pool.autoscaler is not None else None
                cpu = last.cpu_total_percent if last is not None else float("nan")
                ours = last.cpu_ours_percent if last is not None else float("nan")
                waiting = 0 if run.makespan_s else calls - done - busy
                run.rows.append((t, live, live - starting, busy, max(0, waiting), cpu, ours))
                if busy >= 2 and run.second_busy_s is None:
                    run.second_busy_s = t
                if live - starting >= workers and run.full_s is None:
                    run.full_s = t
                await asyncio.sleep(0.02)

        sampler = asyncio.get_running_loop().create_task(sample())
        tasks = [await app.add_task("spin", spin_n) for _ in range(calls)]
        waits = [asyncio.ensure_future(app.wait(t.uuid, timeout=120)) for t in tasks if t]
        for w in waits:
            w.add_done_callback(finished)
        await asyncio.gather(*waits)
        run.makespan_s = time.monotonic() - start
        if autoscale:  # the idle tail: until it is back to one worker, and a little more
            if pool.stats()["workers"] > 1:
                await asyncio.wait_for(back_to_one.wait(), idle_timeout * (workers + 4) + 5)
            await asyncio.sleep(min(1.0, idle_timeout))  # to show the flat tail
        sampling = False
        await sampler
    grows = [t for t, d in run.decisions if d.action == "grow"]
    run.first_grow_s = grows[0] if grows else None
    return run


def plot(run: Run, workers: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r[0] for r in run.rows]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, sharex=True, figsize=(9, 7.5))
    ax1.step(t, [r[1] for r in run.rows], where="post", label="live workers", lw=2)
    ax1.step(t, [r[2] for r in run.rows], where="post", label="ready", ls="--")
    ax1.step(t, [r[3] for r in run.rows], where="post", label="busy", alpha=0.7)
    for when, d in run.decisions:
        if d.action != "hold":
            ax1.axvline(when, color="grey", lw=0.6, alpha=0.6)
    ax1.set_ylabel("workers")
    ax1.set_ylim(0, workers + 0.7)
    ax1.legend(loc="upper right")
    ax1.set_title(
        f"autoscaled pool, min 1 / max {workers} workers: a burst, then the idle tail"
        f" (makespan {run.makespan_s:.1f} s)"
    )
    ax2.plot(t, [r[4] for r in run.rows], color="tab:red")
    ax2.set_ylabel("tasks waiting")
    ax3.plot(t, [r[5] for r in run.rows], label="CPU, whole machine")
    ax3.plot(t, [r[6] for r in run.rows], label="CPU, our workers")
    ax3.set_ylabel("% of all CPUs")
    ax3.set_ylim(0, 105)
    ax3.set_xlabel("seconds since the burst")
    ax3.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--burst-s", type=float, default=4.0)
    parser.add_argument("--idle-timeout", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "autoscale.png")
    parser.add_argument("--repeat", type=int, default=2, help="pairs of runs, alternating")
    parser.add_argument("--quick", action="store_true", help="a 1 s burst, once, no plot")
    args = parser.parse_args()
    burst_s = 1.0 if args.quick else args.burst_s
    call_s = 0.05
    spin_n = calibrate(call_s)
    calls = max(args.workers, round(burst_s * args.workers / call_s))
    logging.basicConfig(level=logging.WARNING)
    print(f"{calls} tasks of ~{call_s * 1000:.0f} ms CPU, {args.workers} workers at most")

    scaled_runs, fixed_runs = [], []
    for _ in range(1 if args.quick else max(1, args.repeat)):  # alternating: shared noise
        scaled_runs.append(asyncio.run(burst(args.workers, calls, spin_n, args.idle_timeout, True)))
        fixed_runs.append(asyncio.run(burst(args.workers, calls, spin_n, args.idle_timeout, False)))
    print("makespans, autoscaled:", " ".join(f"{r.makespan_s:.2f}" for r in scaled_runs))
    print("makespans, fixed pool:", " ".join(f"{r.makespan_s:.2f}" for r in fixed_runs))
    scaled = min(scaled_runs, key=lambda r: r.makespan_s)  # the least disturbed run
    fixed = min(fixed_runs, key=lambda r: r.makespan_s)

    def ms(value: float | None) -> str:
        return "never" if value is None else f"{value * 1000:.0f} ms"

    print(f"burst -> first growth decision: {ms(scaled.first_grow_s)}")
    print(f"burst -> a second worker running a call: {ms(scaled.second_busy_s)}")
    print(f"burst -> full size ({args.workers} ready): {ms(scaled.full_s)}")
    ratio = scaled.makespan_s / fixed.makespan_s
    print(
        f"makespan: autoscaled {scaled.makespan_s:.2f} s, fixed pool {fixed.makespan_s:.2f} s,"
        f" ratio {ratio:.2f} ({'PASS' if ratio <= 1.10 else 'MISS'} the 10% target)"
    )
    for when, d in scaled.decisions:
        print(f"  {when:6.2f} s  {d.reason}")
    if not args.quick:
        plot(scaled, args.workers, args.out)
        print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
