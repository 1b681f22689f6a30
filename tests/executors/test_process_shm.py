"""Large buffers through shared memory, both ways, and never a leaked segment.

Arguments and results holding buffers of 1 MiB or more (numpy arrays; bytes,
bytearray and memoryview objects) cross in POSIX shared-memory segments named
`qtmp_...`; every test here checks that /dev/shm holds the same such names after it
as before it, including when the worker dies, a call times out, or unpickling fails.
The module has its own pool: several rows kill workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import procfuncs
import psutil
import pytest
import pytest_asyncio
from polling import until
from proc_support import gone, make_call

from qtasks_mp import SerializationError, TaskTimeout, WorkerCrashed, wire
from qtasks_mp.executors.process import ProcessExecutor
from qtasks_mp.executors.process.offload import Offload, encode_args
from qtasks_mp.registries import TaskSpec, kind_of

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm to look into"),
]

MIB = 1 << 20


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[ProcessExecutor]:
    executor = ProcessExecutor(max_workers=2, autoscale=False)
    await executor.start()
    yield executor
    await executor.aclose(cancel_pending=True)


_ours: set[int] = {os.getpid()}  # this process and every worker it has had


def our_segments() -> set[str]:
    """Segments made by this process or its workers (other programs may use /dev/shm)."""
    _ours.update(p.pid for p in psutil.Process().children(recursive=True))
    return {n for n in procfuncs.shm_segments() if int(re.split("[ar]", n[5:])[0], 16) in _ours}


@pytest.fixture(autouse=True)
def no_leaked_segment() -> Iterator[None]:
    before = our_segments()
    yield
    assert our_segments() == before


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the segments the parent maps (results coming back), in order."""
    names: list[str] = []
    original = wire.shm_open

    def spy(name: str, lengths: list[int], *, unlink: bool) -> list[memoryview]:
        names.append(name)
        return original(name, lengths, unlink=unlink)

    monkeypatch.setattr(wire, "shm_open", spy)
    return names


def ours(names: list[str]) -> list[str]:
    """The argument segments this process made, among `names`."""
    return [n for n in names if n.startswith(f"qtmp_{os.getpid():x}a")]


async def run(pool: ProcessExecutor, fn: Any, *args: Any, timeout: float | None = None) -> Any:
    return await asyncio.wait_for(pool.run(make_call(fn, *args, timeout=timeout)), 10)


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
async def test_large_argument_crosses_in_a_segment(
    pool: ProcessExecutor, kind: str, opened: list[str]
) -> None:
    value = procfuncs.make_bytes(kind, 2)
    type_name, size, owner, segments = await run(pool, procfuncs.look_at, value)
    assert (type_name, size) == (kind, 2 * MIB)
    assert len(ours(segments)) == 1  # open while the call ran; unlinked since (see the fixture)
    assert owner == ("mmap" if kind == "memoryview" else kind)  # a memoryview: no copy
    assert opened == []  # the small answer came back in the message


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
async def test_large_result_comes_back_in_a_segment(
    pool: ProcessExecutor, kind: str, opened: list[str]
) -> None:
    result = await run(pool, procfuncs.make_bytes, kind, 1.5)
    assert type(result).__name__ == kind
    assert bytes(result) == bytes(procfuncs.make_bytes("bytes", 1.5))
    assert len(opened) == 1 and "r" in opened[0].removeprefix("qtmp_")
    if kind == "memoryview":
        assert procfuncs.backing(result) == "mmap"  # a view of the mapping, no copy


async def test_small_buffers_stay_in_the_message(pool: ProcessExecutor, opened: list[str]) -> None:
    value = procfuncs.make_bytes("bytes", 0.5)
    assert await run(pool, procfuncs.echo, value) == value
    _, _, _, segments = await run(pool, procfuncs.look_at, value)
    assert ours(segments) == [] and opened == []


async def test_several_buffers_share_one_segment_each_way(
    pool: ProcessExecutor, opened: list[str]
) -> None:
    values = {"a": procfuncs.make_bytes("bytes", 1), "b": [procfuncs.make_bytes("bytearray", 3)]}
    small = b"x" * 100
    back = await run(pool, procfuncs.echo, (values, small))
    assert back == (values, small)
    assert len(opened) == 1


async def test_numpy_arrays_cross_both_ways_without_copies(
    pool: ProcessExecutor, opened: list[str]
) -> None:
    np = pytest.importorskip("numpy")
    array = np.arange(4 * MIB // 8, dtype=np.float64).reshape(512, -1)
    _, size, owner, _ = await run(pool, procfuncs.look_at, array)
    assert (size, owner) == (4 * MIB, "mmap")  # the worker's array views the segment
    back = await run(pool, procfuncs.echo, array)
    assert back.shape == array.shape and back.dtype == array.dtype
    assert np.array_equal(back, array) and procfuncs.backing(back) == "mmap"
    assert back.flags.writeable
    strided = array[:, ::2]  # not contiguous: numpy pickles a copy into the message
    _, size, owner, segments = await run(pool, procfuncs.look_at, strided)
    assert (size, owner, ours(segments)) == (2 * MIB, "bytes", [])
    assert np.array_equal(await run(pool, procfuncs.echo, strided), strided)
    assert len(opened) == 2  # the echoed arrays (the worker's copy of `strided` is contiguous)


async def test_generator_items_cross_in_segments(pool: ProcessExecutor, opened: list[str]) -> None:
    items = await run(pool, procfuncs.yield_big, 3, 1.25)
    assert [(len(b), b[0]) for b in items] == [(int(1.25 * MIB), i) for i in range(3)]
    assert len(opened) == 3


def blob() -> bytes:
    return procfuncs.make_bytes("bytes", 2)


# Where a call holding segments ends badly -> the error it must raise.
LEAK_TABLE: dict[str, tuple[Any, Any, type[BaseException]]] = {
    "worker exits mid-call": (procfuncs.crash_with, lambda: (blob(), "os_exit"), WorkerCrashed),
    "worker SIGKILLed mid-call": (procfuncs.crash_with, lambda: (blob(), "sigkill"), WorkerCrashed),
    "task raises": (procfuncs.crash_with, lambda: (blob(), "raise"), RuntimeError),
    "arguments fail to unpickle": (
        procfuncs.take,
        lambda: ((blob(), procfuncs.OnUnpickle("raise")),),
        SerializationError,
    ),
    "result fails to pickle": (
        procfuncs.return_big_and,
        lambda: ("pickle", "raise"),
        SerializationError,
    ),
    "result fails to unpickle": (
        procfuncs.return_big_and,
        lambda: ("unpickle", "raise"),
        SerializationError,
    ),
}


@pytest.mark.parametrize("case", LEAK_TABLE)
async def test_no_segment_outlives_a_failed_call(pool: ProcessExecutor, case: str) -> None:
    fn, make_args, expected = LEAK_TABLE[case]
    with pytest.raises(expected):
        await run(pool, fn, *make_args())
    assert await run(pool, procfuncs.add, 1, 2) == 3


async def test_timeout_unlinks_the_arguments(pool: ProcessExecutor) -> None:
    assert await pool.wait_ready(10)
    blob = procfuncs.make_bytes("bytearray", 2)
    with pytest.raises(TaskTimeout):
        await run(pool, procfuncs.block_with, blob, timeout=0.2)


async def test_cancelled_call_unlinks_its_arguments(pool: ProcessExecutor) -> None:
    assert await pool.wait_ready(10)
    blob = procfuncs.make_bytes("bytes", 2)
    running = asyncio.ensure_future(pool.run(make_call(procfuncs.block_with, blob)))
    await until(lambda: pool.stats()["busy"] >= 1, 5, "a busy worker")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


@pytest.mark.parametrize("how", ["kill", "stop"])
async def test_dead_worker_result_segment_is_swept(pool: ProcessExecutor, how: str) -> None:
    # The worker dies ("kill": SIGKILL) or hangs ("stop": SIGSTOP, then our timeout
    # kills it) after making its result's segment and before sending its name: only
    # the parent's sweep after the worker is gone can unlink it.
    assert await pool.wait_ready(10)
    pids = set(pool.stats()["pids"])
    timeout = 0.3 if how == "stop" else None
    expected = WorkerCrashed if how == "kill" else TaskTimeout
    with pytest.raises(expected):
        await run(pool, procfuncs.big_result_then, how, 2, timeout=timeout)
    (dead,) = pids - set(pool.stats()["pids"])
    await until(lambda: dead not in pool.stats()["per_worker"], 5, "the parent to be done with it")
    assert gone([dead])
    if how == "kill":
        assert pool.stats()["crashes"] >= 1


async def test_abandoned_stream_leaks_nothing(pool: ProcessExecutor) -> None:
    # The handler fails on the first item: the worker is killed while it may still be
    # sending more items in segments (read or not, each is unlinked once).
    def fail(item: Any) -> None:
        raise ValueError("handler failed")

    assert await pool.wait_ready(10)
    pids = set(pool.stats()["pids"])
    spec = TaskSpec(
        "yield_big",
        procfuncs.yield_big,
        kind_of(procfuncs.yield_big),
        "process",
        generate_handler=fail,
    )
    call = make_call(procfuncs.yield_big, 20, 1)
    call.spec = spec
    with pytest.raises(ValueError, match="handler failed"):
        await asyncio.wait_for(pool.run(call), 10)
    (dead,) = pids - set(pool.stats()["pids"])
    await until(lambda: dead not in pool.stats()["per_worker"], 5, "the dead worker to be dropped")


def alive_items(worker_pids: list[int]) -> int:
    """Item segments of these workers that hold memory: mapped here, or still in
    /dev/shm (made, not yet received)."""
    prefixes = tuple(f"qtmp_{pid:x}r" for pid in worker_pids)
    with open("/proc/self/maps") as maps:
        mapped = {
            line.split("/dev/shm/")[1].split()[0] for line in maps if "/dev/shm/qtmp_" in line
        }
    made = procfuncs.shm_segments()
    return len({n for n in mapped | made if n.startswith(prefixes)})


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="counts mappings in /proc")
async def test_a_slow_handler_holds_at_most_a_window_of_items(pool: ProcessExecutor) -> None:
    # The worker makes a 1 MiB item in about a millisecond; the handler takes 20 ms
    # per item. Unbounded, all 30 items would sit in memory at once.
    assert await pool.wait_ready(10)
    pids = pool.stats()["pids"]
    alive: list[int] = []

    async def slow(item: bytes) -> int:
        alive.append(alive_items(pids))
        await asyncio.sleep(0.02)  # a slow handler (not a synchronisation)
        return len(item)

    spec = TaskSpec(
        "yield_big",
        procfuncs.yield_big,
        kind_of(procfuncs.yield_big),
        "process",
        generate_handler=slow,
    )
    call = make_call(procfuncs.yield_big, 30, 1)
    call.spec = spec
    assert await asyncio.wait_for(pool.run(call), 30) == [MIB] * 30
    assert wire.ITEM_WINDOW == 8
    assert 1 < max(alive) <= 8, alive  # the worker ran ahead, this far only


async def test_full_shared_memory_falls_back_to_the_socket(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    executor = ProcessExecutor(max_workers=1, autoscale=False)
    await executor.start()
    try:
        await executor.run(make_call(procfuncs.refuse_shared_memory))  # in the worker
        monkeypatch.setattr(wire, "shm_create", refuse)  # and here
        value = procfuncs.make_bytes("bytes", 2)
        with caplog.at_level(logging.WARNING, logger="qtasks_mp"):
            assert await executor.run(make_call(procfuncs.echo, value)) == value
    finally:
        await executor.aclose()
    warnings = [r.getMessage() for r in caplog.records if "through the socket" in r.getMessage()]
    assert len(warnings) == 2  # one for the arguments, one for the result


async def test_segment_names_fit_every_platform() -> None:
    # macOS limits a name to 31 characters, leading slash included.
    longest = wire.result_segment(2**22, 2**32, 255)
    assert len("/" + longest) <= 31 and longest.startswith(wire.SHM_PREFIX)
    assert len("/" + wire.args_segment(2**32)) <= 31


def refuse(name: str, buffers: Any) -> Any:
    raise OSError(28, "No space left on device")


async def test_argument_segments_past_the_byte_bound_wait_for_room() -> None:
    """Segments are memory: past `placed_max_bytes` of them a call waits in `place`
    (first come, first served) until an earlier call's segment is unlinked; a call
    larger than the bound goes on alone; a waiter cancelled takes no room."""
    offload = Offload("bound-test", placed_max_bytes=3 * MIB)
    offload.start()

    def place(mib: int) -> Any:
        args = (procfuncs.make_bytes("bytes", mib),)
        payload, buffers = encode_args("t", args, {})
        assert buffers is not None
        return offload.place("t", args, {}, payload, buffers)

    try:
        _, first = await asyncio.wait_for(place(2), 10)
        assert offload.placed_bytes == 2 * MIB
        second = asyncio.ensure_future(place(2))
        cancelled = asyncio.ensure_future(place(1))
        await asyncio.sleep(0)  # both ran up to their wait for room
        assert len(offload._waiting) == 2 and not second.done()
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        offload.unlink(first)
        _, then = await asyncio.wait_for(second, 10)
        assert offload.placed_bytes == 2 * MIB  # the second's; none for the cancelled one
        offload.unlink(then)
        _, big = await asyncio.wait_for(place(4), 10)  # larger than the bound: alone
        assert offload.placed_bytes == 4 * MIB
        offload.unlink(big)
        assert offload.placed_bytes == 0 and not offload._waiting
    finally:
        await offload.close()
