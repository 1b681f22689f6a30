"""Work on large buffers, in threads of the pool's own, off the event loop."""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from ... import wire
from ...errors import SerializationError
from ..thread import Threads

log = logging.getLogger("qtasks_mp.process")
T = TypeVar("T")
_UNLINK_INLINE_BYTES = 8 << 20  # larger argument segments are unlinked in a thread
#: Bytes of argument segments that may exist at once (in /dev/shm, which is memory). A
#: quick function is pipelined up to 128 calls deep per worker: without a bound, as many
#: calls of 32 MiB arrays would hold 8 GiB per worker. Past it, a call waits for room.
PLACED_MAX_BYTES = 1 << 30


class Offload:
    """Copies a call's large buffers into shared memory, unpickles answers that hold
    some, and unlinks large argument segments, in two threads of the pool's, so that a
    256 MiB array does not stall the event loop (it did for 170-220 ms). Calls without
    buffers of `wire.SHM_MIN_BYTES` or more never come here: no thread hop for them.

    The threads hold the GIL only briefly: `pwrite` into the segment, unlinking and
    unmapping release it. (A `bytes` result is copied out of its segment with the GIL
    held, wherever that happens: arrays and memoryviews are views, no copy.)
    """

    def __init__(self, name: str, placed_max_bytes: int = PLACED_MAX_BYTES) -> None:
        self._name = name
        self._threads: Threads | None = None  # from start()
        self.jobs = 0  # calls run in the threads (stats: "offloaded")
        self._unlinking: set[asyncio.Future[bool]] = set()
        self.placed_bytes = 0  # of argument segments placed (or being placed), not unlinked
        self._placed_max = placed_max_bytes
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()  # for room, in order

    def start(self) -> None:
        """Start the threads, all at once: threads of our own, since the stdlib pools
        refuse work once the interpreter shuts down, while the sync facade still drains
        the app (and Python 3.12 starts no thread then)."""
        if self._threads is None:
            self._threads = Threads(2, f"qtasks_mp-{self._name}-io")

    def __call__(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`fn(*args)` in one of our threads (here, on the loop, once they are closed)."""
        loop = asyncio.get_running_loop()
        self.jobs += 1
        try:
            if self._threads is None:
                raise RuntimeError("not started")
            return asyncio.wrap_future(self._threads.submit(fn, *args), loop=loop)
        except RuntimeError:
            fut: asyncio.Future[T] = loop.create_future()
            try:
                fut.set_result(fn(*args))
            except Exception as e:
                fut.set_exception(e)
            return fut

    async def place(
        self,
        task_name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        payload: bytes,
        buffers: list[pickle.PickleBuffer],
    ) -> tuple[bytes, list[Any] | None]:
        """Copy a call's large buffers (from `encode_args`) into a segment, in a thread:
        the payload and the segment (`[name, lengths]`, ours to unlink). Waits first
        while the segments not yet unlinked hold `placed_max_bytes` (one call larger
        than that goes on alone)."""
        size = sum(b.raw().nbytes for b in buffers)
        await self._reserve(size)
        fut = self(place_args, task_name, args, kwargs, payload, buffers)
        try:
            done = await asyncio.shield(fut)
        except asyncio.CancelledError:  # the thread goes on: unlink what it makes
            fut.add_done_callback(lambda f: self._forget(placed(f), size))
            raise
        except BaseException:
            self._release(size)
            raise
        if done[1] is None:  # sent through the socket instead
            self._release(size)
        return done

    async def _reserve(self, size: int) -> None:
        """Count `size` bytes as placed, once they fit (first come, first served)."""
        if not self._waiting and (
            not self.placed_bytes or self.placed_bytes + size <= self._placed_max
        ):
            self.placed_bytes += size
            return
        room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((size, room))
        try:
            await room  # `_release` counts our bytes as it wakes us
        except asyncio.CancelledError:
            if room.done() and not room.cancelled():  # woken, then cancelled
                self._release(size)
            raise

    def _release(self, size: int) -> None:
        self.placed_bytes -= size
        waiting = self._waiting
        while waiting:
            wanted, room = waiting[0]
            if not room.done():  # (a cancelled waiter is done: dropped)
                if self.placed_bytes and self.placed_bytes + wanted > self._placed_max:
                    return
                self.placed_bytes += wanted
                room.set_result(None)
            waiting.popleft()

    def _forget(self, shm: list[Any] | None, size: int) -> None:
        """A call was cancelled while its segment was being made: unlink it, if any."""
        if shm is None:
            self._release(size)
        else:
            self.unlink(shm)

    def unlink(self, shm: list[Any] | None) -> None:
        """Unlink an argument segment. Once no process maps it any more, unlinking frees
        its memory: ~0.2 ms per MiB, so a large one is unlinked in a thread."""
        if shm is None:
            return
        size = sum(shm[1])
        self._release(size)
        if size < _UNLINK_INLINE_BYTES:
            wire.shm_unlink(shm[0])
            return
        fut = self(wire.shm_unlink, shm[0])
        self._unlinking.add(fut)
        fut.add_done_callback(self._unlinking.discard)

    async def close(self) -> None:
        """Wait for the unlinking still under way; let the threads go."""
        if self._unlinking:
            await asyncio.wait(list(self._unlinking))
        if self._threads is not None:
            self._threads.close()  # nothing else waits for them any more


_arg_segments = itertools.count(1)  # numbers the names of argument segments


def encode_args(
    task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[bytes, list[pickle.PickleBuffer] | None]:
    """A call's payload, and the large buffers left out of it (None if there are none).

    Cheap even for large arguments: the buffers are not copied (protocol 5 out-of-band
    buffers); `place_args` then copies them into a segment, off the event loop.
    """
    if not args and not kwargs:
        return wire.EMPTY_ARGS, None
    buffers: list[pickle.PickleBuffer] | None = [] if wire.SHM else None
    try:
        return wire.dumps_args(args, kwargs, buffers), buffers or None
    except ValueError as e:
        raise SerializationError(
            f"task {task_name!r}: {e}. Pass data a worker process can unpickle "
            "(plain values, or classes defined at module level)."
        ) from e.__cause__


def place_args(
    task_name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    payload: bytes,
    buffers: list[pickle.PickleBuffer],
) -> tuple[bytes, list[Any] | None]:
    """Copy a call's large buffers into a new segment (in a thread: ~0.5 ms per MiB);
    the payload and `[name, lengths]` of the segment, ours to unlink."""
    try:
        return payload, wire.shm_create(wire.args_segment(next(_arg_segments)), buffers)
    except OSError as e:  # no room in /dev/shm: the slow way, through the socket
        log.warning(
            "task %r: shared memory for its arguments failed (%s): sent through the socket",
            task_name,
            e,
        )
        return wire.dumps_args(args, kwargs), None


def placed(fut: asyncio.Future[tuple[bytes, list[Any] | None]]) -> list[Any] | None:
    """The segment a finished `place_args` made, if any (for a call cancelled meanwhile,
    whose segment nobody else knows of)."""
    if fut.cancelled() or fut.exception() is not None:
        return None
    return fut.result()[1]
