"""What the autoscaler costs the event loop: its share of the loop's time, at rest and
when nudged as hard as a burst of waiting calls can (every millisecond).

    python benchmarks/autoscale_cost.py

psutil's reads run in a thread; what is left on the loop is the pool's load, the
policy's decision and applying it (`Autoscaler.loop_s`). Target: under 1%.
"""

from __future__ import annotations

import asyncio
import time

from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.executors.process import ProcessExecutor


async def measure(seconds: float = 4.0) -> dict[str, float]:
    pool = ProcessExecutor(max_workers=2, min_workers=2)
    app = QueueTasks(executors={"process": pool})
    out: dict[str, float] = {}
    async with app:
        await pool.wait_ready(10)
        scaler = pool.autoscaler
        assert scaler is not None
        for label, nudge_every_s in (("rest", None), ("nudged every 1 ms", 0.001)):

            async def nudger(every_s: float) -> None:
                while True:
                    scaler.nudge()
                    await asyncio.sleep(every_s)

            nudging = asyncio.create_task(nudger(nudge_every_s)) if nudge_every_s else None
            loop_s, samples, began = scaler.loop_s, scaler.samples, time.perf_counter()
            await asyncio.sleep(seconds)
            elapsed = time.perf_counter() - began
            if nudging is not None:
                nudging.cancel()
            share = (scaler.loop_s - loop_s) / elapsed
            out[label] = share
            verdict = "PASS" if share < 0.01 else "MISS"
            print(
                f"{label:>18}: {scaler.samples - samples:4d} samples in {elapsed:.1f} s, "
                f"{100 * share:.2f}% of the loop (target < 1%: {verdict})"
            )
    return out


if __name__ == "__main__":
    asyncio.run(measure())
