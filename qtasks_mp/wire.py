"""What crosses a process boundary, and how.

Every message is one msgpack array whose first item is an op code (the `OP_*` ints
below); a stream of them needs no length prefix, since `msgpack.Unpacker` finds the
boundaries itself. Python objects inside a message are opaque `bytes`:

- arguments, results, yielded items and exceptions: pickle protocol 5, falling back
  to cloudpickle for what plain pickle refuses (lambdas, closures, local classes);
- callables: a reference (module, qualified name) when the worker can import it,
  else cloudpickle by value. Either way a function crosses to a worker once and is
  afterwards named by a small integer key (see `ProcessExecutor`);
- large buffers (see `SHM_MIN_BYTES`): left out of the pickle (protocol 5
  out-of-band buffers) and copied into one POSIX shared-memory segment per message;
  only the segment's name and the buffers' lengths cross the socket.

`loads` reads both pickle and cloudpickle output (cloudpickle emits ordinary pickle
opcodes, only needing cloudpickle importable on the reading side).
"""

from __future__ import annotations

import mmap
import os
import pickle
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing import resource_tracker
from typing import Any

import cloudpickle
import msgpack

# parent -> worker
OP_FUNC = 1  # [OP_FUNC, key, ref | None, blob | None, is_generator]
OP_CALL = 2  # [OP_CALL, call_id, key, payload, context | None, shm | None]
OP_STOP = 3  # [OP_STOP]: finish the calls already received, then exit 0
OP_REPLY = 4  # [OP_REPLY, request_id, ok, payload]: answer to OP_ADD
OP_ACK = 5  # [OP_ACK, call_id, n]: n more items of that call's generator were handled
OP_SKIP = 6  # [OP_SKIP, [call_id, ...]]: calls sent that another worker runs instead
# worker -> parent
OP_READY = 10  # [OP_READY, pid]
OP_OK = 11  # [OP_OK, call_id, payload, shm | None, retire]
OP_ERR = 12  # [OP_ERR, call_id, where, exc_payload | None, type_name, text, traceback, retire]
OP_ITEM = 13  # [OP_ITEM, call_id, payload, shm | None]: one item yielded by a generator task
# `shm`: [segment name, [length of each out-of-band buffer]] (see `shm_create`).
OP_LOG = 14  # [OP_LOG, {LogRecord attributes}]
OP_ADD = 15  # [OP_ADD, call_id, request_id, payload, waits]: the task context's add_task
OP_FATAL = 16  # [OP_FATAL, traceback]: the worker could not start
OP_PROGRESS = 17  # [OP_PROGRESS, call_id, done, total, note]: the latest self.progress(...)
#: A worker sends a call's progress at most this often; the latest value wins, and
#: the last one not yet sent goes out before the call's answer.
PROGRESS_EVERY_S = 0.1

#: Items of a generator a worker may have sent that the parent's `generate_handler`
#: has not handled yet (OP_ACK returns credit): bounds the memory items hold.
ITEM_WINDOW = 8

# `OP_ERR.where`: the step of a call that failed.
WHERE_FUNCTION = "function"  # loading the function in the worker
WHERE_ARGS = "args"  # unpickling the arguments in the worker
WHERE_CALL = "call"  # the task's own code raised
WHERE_RESULT = "result"  # pickling the result in the worker
WHERE_ITEM = "item"  # pickling a yielded item in the worker

EMPTY_ARGS = b""  # payload of a call with no arguments: spares a pickle round trip

# A message may carry a large argument or result; msgpack's default cap is 100 MiB.
_MAX_MESSAGE = 2**32 - 1


def packb(message: list[Any]) -> bytes:
    """Encode one message, with this thread's `msgpack.Packer`.

    A Packer is not thread-safe (a worker's log records are sent from the user's
    threads too), and `msgpack.packb` makes a new one per call, whose 256 KiB buffer
    can cost an mmap and page faults each time: one per thread it is.
    """
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    data: bytes = packer.pack(message)
    return data


_local = threading.local()


def unpacker() -> msgpack.Unpacker:
    """A streaming decoder: `feed(bytes)`, then `unpack()` until `msgpack.OutOfData`."""
    return msgpack.Unpacker(raw=False, max_buffer_size=_MAX_MESSAGE)


def dumps(obj: Any, buffers: list[pickle.PickleBuffer] | None = None) -> bytes:
    """Pickle `obj` (protocol 5), or cloudpickle it if plain pickle cannot.

    With `buffers`, contiguous buffers of at least `SHM_MIN_BYTES` are left out of the
    pickle and appended to `buffers` (to pass to `loads` in the same order): those of
    numpy arrays anywhere in `obj`, and `bytes`, `bytearray` and contiguous
    `memoryview` objects that are `obj`, its items or their items (tuples, lists,
    dict values). A `memoryview` crosses as a memoryview (plain pickle refuses it).

    Raises what cloudpickle raises for objects neither can handle (a lock, a socket):
    usually `TypeError` or `pickle.PicklingError`.
    """
    callback: Callable[[pickle.PickleBuffer], bool] | None = None
    if buffers is not None:
        obj = _lift(obj, 2)

        def callback(buffer: pickle.PickleBuffer) -> bool:  # True: keep it in the pickle
            if buffer.raw().nbytes < SHM_MIN_BYTES:
                return True
            buffers.append(buffer)
            return False

    try:
        return pickle.dumps(obj, protocol=5, buffer_callback=callback)
    except (pickle.PicklingError, AttributeError, TypeError):
        # AttributeError: "Can't pickle local object"; PicklingError: lambdas and
        # functions not found under their name. TypeError is most often fatal for
        # cloudpickle too, but a class defined in a function can still get through.
        if buffers:
            buffers.clear()  # from the failed attempt
        return bytes(cloudpickle.dumps(obj, protocol=5, buffer_callback=callback))


def loads(data: bytes, buffers: Sequence[Any] | None = None) -> Any:
    return pickle.loads(data, buffers=buffers)


def type_name(obj: Any) -> str:
    """`module.QualName` of `obj`'s type (just the name for builtins)."""
    cls = obj if isinstance(obj, type) else type(obj)
    module = getattr(cls, "__module__", None)
    if module in (None, "builtins"):
        return str(cls.__qualname__)
    return f"{module}.{cls.__qualname__}"


def dumps_args(
    args: tuple[Any, ...], kwargs: dict[str, Any], buffers: list[pickle.PickleBuffer] | None = None
) -> bytes:
    """The payload of a call (large buffers into `buffers`, as `dumps` says).

    Raises `ValueError` naming the argument that cannot be pickled."""
    if not args and not kwargs:
        return EMPTY_ARGS
    try:
        return dumps((args, kwargs), buffers)
    except (Exception, SystemExit) as e:  # SystemExit: a __reduce__ that calls sys.exit
        raise ValueError(_culprit(args, kwargs, e)) from e


def loads_args(
    payload: bytes, buffers: Sequence[Any] | None = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if payload == EMPTY_ARGS:
        return (), {}
    args, kwargs = loads(payload, buffers)
    return args, kwargs


def _culprit(args: tuple[Any, ...], kwargs: dict[str, Any], error: BaseException) -> str:
    named: list[tuple[str, Any]] = [(f"argument {i}", a) for i, a in enumerate(args)]
    named += [(f"argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in named:
        try:
            dumps(value)
        except (Exception, SystemExit) as e:
            return f"{label} of type {type_name(value)} cannot be pickled: {e}"
    return f"the arguments cannot be pickled: {type(error).__name__}: {error}"


def function_ref(fn: Callable[..., Any]) -> tuple[str, str, bool] | None:
    """(module, qualified name, unwrap) if a worker can import `fn` by name, else None.

    `unwrap` is set when the name resolves to a wrapper whose `__wrapped__` is `fn`
    (what `@app.task` leaves in the module). Functions of `__main__` are never named:
    a worker's `__main__` is not the parent's (pytest, a REPL, `python -c`).
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is fn:
        return module, qualname, False
    if obj is not None and getattr(obj, "__wrapped__", None) is fn:
        return module, qualname, True
    return None


def dumps_function(fn: Callable[..., Any]) -> tuple[list[Any] | None, bytes | None]:
    """(reference, None) for an importable function, else (None, cloudpickled function)."""
    ref = function_ref(fn)
    if ref is not None:
        return list(ref), None
    return None, bytes(cloudpickle.dumps(fn, protocol=5))


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as text; set as `__cause__`.

    `traceback.format_exception` of the parent-side error then prints the worker's
    traceback first, followed by "The above exception was the direct cause of ...".
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


# ---------------------------------------------------------------- shared memory

SHM_MIN_BYTES = 1 << 20  # a buffer at least this large travels through shared memory
SHM_PREFIX = "qtmp_"  # of every segment's name: "qtmp_<pid>a<n>" (arguments, made by
# the parent), "qtmp_<worker pid>r<call id>_<n>" (results and items, made by a worker)
_ALIGN = 64  # each buffer starts at a multiple of this in its segment

try:
    # The C module behind multiprocessing.shared_memory on POSIX. Not its
    # `SharedMemory` class, because (a) on Python < 3.13 attaching to a segment
    # registers it with the resource tracker again, and (b) its close() raises
    # BufferError while a numpy array still views the memory, and __del__ calls it.
    # A plain mmap lives exactly as long as the last view of it.
    import _posixshmem  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Windows: large buffers travel in the message
    _posixshmem = None

SHM = _posixshmem is not None


class _Lifted:
    """Stands in for a `bytes`, `bytearray` or `memoryview` so that pickle sees its
    buffer (protocol 5 hands buffers to `buffer_callback` only when wrapped in a
    `PickleBuffer`, and a pickler never consults a reducer for exact `bytes`)."""

    __slots__ = ("obj",)

    def __init__(self, obj: bytes | bytearray | memoryview) -> None:
        self.obj = obj

    def __reduce__(self) -> tuple[Any, ...]:
        # Unpickled as type(obj)(buffer): a copy for bytes and bytearray, a view of
        # the shared memory for a memoryview.
        return type(self.obj), (pickle.PickleBuffer(self.obj),)


# Types `_lift` leaves as they are, looked at no further (the common arguments).
_PLAIN = frozenset({int, float, str, bool, type(None)})


def _lift(obj: Any, depth: int) -> Any:
    kind = type(obj)
    if kind in _PLAIN:
        return obj
    if kind is bytes or kind is bytearray:
        return _Lifted(obj) if len(obj) >= SHM_MIN_BYTES else obj
    if kind is memoryview:
        return _Lifted(obj) if obj.contiguous else obj
    if depth and (kind is tuple or kind is list):
        plain = _PLAIN
        for item in obj:  # usually all plain: no copy, no recursion
            if type(item) not in plain:
                break
        else:
            return obj
        items = [_lift(item, depth - 1) for item in obj]
        if any(a is not b for a, b in zip(items, obj, strict=True)):
            return kind(items)
    elif depth and kind is dict:
        if not obj:
            return obj
        values = {k: _lift(v, depth - 1) for k, v in obj.items()}
        if any(values[k] is not v for k, v in obj.items()):
            return values
    return obj


def _layout(lengths: Sequence[int]) -> tuple[list[int], int]:
    """Offsets of buffers of `lengths` laid out back to back, aligned; the total size."""
    offsets, end = [], 0
    for n in lengths:
        offsets.append(end)
        end += -(-n // _ALIGN) * _ALIGN
    return offsets, max(end, 1)


def args_segment(serial: int) -> str:
    return f"{SHM_PREFIX}{os.getpid():x}a{serial:x}"


def result_segment(worker_pid: int, call_id: int, n: int) -> str:
    return f"{SHM_PREFIX}{worker_pid:x}r{call_id:x}_{n:x}"


def use_resource_tracker(fd: int) -> None:
    """Register segments with the resource tracker whose pipe is `fd` (a worker: its
    parent's), instead of starting a tracker of our own.

    One tracker for the parent and every worker: it unlinks what is still registered
    when the whole program is gone, whoever made it. The stdlib's own child start-up
    (`multiprocessing.spawn._main`, the forkserver's `_serve_one`) hands the tracker
    over by setting this same attribute; there is no public way to.
    """
    resource_tracker._resource_tracker._fd = fd  # type: ignore[attr-defined]


def tracker_fd() -> int:
    """The resource tracker's pipe (started if need be), for `use_resource_tracker`."""
    resource_tracker.ensure_running()
    fd = resource_tracker.getfd()
    assert fd is not None  # it runs
    return fd


def shm_create(name: str, buffers: Sequence[pickle.PickleBuffer]) -> list[Any]:
    """Create segment `name` holding `buffers`; return `[name, lengths]` for a message.

    The segment is registered with multiprocessing's resource tracker (shared by the
    parent and its workers), which unlinks it if the whole program dies first;
    `shm_unlink` unregisters it. Raises `OSError` (no room in /dev/shm, the name is
    taken); the segment is then gone.
    """
    raws = [b.raw() for b in buffers]
    lengths = [r.nbytes for r in raws]
    offsets, size = _layout(lengths)
    path = "/" + name
    # Registered first: whoever unlinks it (maybe the parent, after this process died
    # just after creating it) unregisters it, and the tracker must know the name then.
    resource_tracker.register(path, "shared_memory")
    try:
        fd = _posixshmem.shm_open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    except BaseException:
        resource_tracker.unregister(path, "shared_memory")
        raise
    try:
        os.ftruncate(fd, size)
        # pwrite, not a mapping: twice as fast here (no page faults), and a full
        # /dev/shm is an ENOSPC error instead of a SIGBUS.
        for offset, raw in zip(offsets, raws, strict=True):
            done = 0
            while done < raw.nbytes:
                done += os.pwrite(fd, raw[done:], offset + done)
    except BaseException:
        shm_unlink(name)
        raise
    finally:
        os.close(fd)
    return [name, lengths]


def shm_open(name: str, lengths: Sequence[int], *, unlink: bool) -> list[memoryview]:
    """Map segment `name`: views of its buffers, for `loads`. No copy: the mapping
    lasts as long as the last view (or numpy array) of it. With `unlink`, the name is
    removed too, whatever happens (a mapping outlives its name).

    Raises `FileNotFoundError` when there is no such segment any more."""
    offsets, size = _layout(lengths)
    fd = -1
    try:
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        view = memoryview(mmap.mmap(fd, size))
    finally:
        if unlink:  # even when mapping failed: we are its last user
            shm_unlink(name)
        if fd >= 0:
            os.close(fd)
    return [view[o : o + n] for o, n in zip(offsets, lengths, strict=True)]


def shm_unlink(name: str) -> bool:
    """Remove segment `name` (a mapped one lives on until unmapped); False if none."""
    path = "/" + name
    try:
        _posixshmem.shm_unlink(path)
    except FileNotFoundError:
        return False
    resource_tracker.unregister(path, "shared_memory")
    return True
