"""A large argument or result never stalls the event loop: copying it into shared
memory, unlinking its segment and unpickling it happen in a thread.

The probe (lag_probe.py) is a coroutine that sleeps 1 ms in a loop and records its
worst overshoot while a 256 MiB numpy array goes through `run`. On main the argument
stalled the loop for 130-500 ms (over a second on a busy machine). The bound is a
correctness bound, not a benchmark. The machine may be busy (other processes compete
for the cores, and a worker making 256 MiB is busy itself), so each try first measures
the same probe while a worker makes 256 MiB and returns nothing large: the lag of the
real call may exceed that floor by less than `BOUND_S`. Up to five tries: a stall of
ours would show in every one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import procfuncs
import pytest
import pytest_asyncio
from lag_probe import worst_lag_s
from proc_support import make_call

from qtasks_mp.executors.process import ProcessExecutor

pytestmark = pytest.mark.asyncio(loop_scope="module")

MIB = 1 << 20
BOUND_S = 0.05


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[ProcessExecutor]:
    executor = ProcessExecutor(max_workers=1, autoscale=False)
    await executor.start()
    yield executor
    await executor.aclose(cancel_pending=True)


@pytest.mark.parametrize("direction", ["argument", "result"])
async def test_a_256_mib_array_does_not_stall_the_loop(
    pool: ProcessExecutor, direction: str
) -> None:
    np = pytest.importorskip("numpy")
    array = np.ones(256 * MIB, dtype=np.uint8)

    async def argument() -> None:
        assert await pool.run(make_call(procfuncs.nbytes, array)) == 256 * MIB

    kept: list[Any] = []

    async def result() -> None:
        # Kept until the probe has stopped: dropping the last view of a result unmaps
        # it and frees its memory (tens of ms), in whatever code drops it.
        kept.append(await pool.run(make_call(procfuncs.ones, 256 * MIB)))
        assert kept[-1].nbytes == 256 * MIB

    async def floor() -> None:  # the same work for the machine, nothing large crossing
        assert await pool.run(make_call(procfuncs.touch, 256 * MIB)) == (256 * MIB) >> 12

    tries = []
    for _ in range(5):
        noise = await worst_lag_s(floor)
        lag = await worst_lag_s(argument if direction == "argument" else result)
        tries.append((round(lag, 4), round(noise, 4)))
        kept.clear()
        if lag < noise + BOUND_S:
            return
    raise AssertionError(f"the loop stalled: (lag, floor) in seconds per try: {tries}")


async def test_small_calls_take_no_thread_hop() -> None:
    # Below the shared-memory threshold nothing goes to the pool's I/O threads.
    executor = ProcessExecutor(max_workers=1, autoscale=False)
    await executor.start()
    try:
        small = bytes(512 * 1024)
        assert await executor.run(make_call(procfuncs.nbytes, memoryview(small))) == len(small)
        assert len(await executor.run(make_call(procfuncs.make_bytes, "bytes", 0.5))) > 0
        assert executor.stats()["offloaded"] == 0
        await executor.run(make_call(procfuncs.nbytes, memoryview(bytes(2 * MIB))))
        assert executor.stats()["offloaded"] >= 1  # a large one does (the check above can fail)
    finally:
        await executor.aclose()
