"""What crosses a process boundary, and how.

Every message is one msgpack array whose first item is an op code (the `OP_*` ints
below); a stream of them needs no length prefix, since `msgpack.Unpacker` finds the
boundaries itself. Python objects inside a message are opaque `bytes`:

- arguments, results, yielded items and exceptions: pickle protocol 5, falling back
  to cloudpickle for what plain pickle refuses (lambdas, closures, local classes);
- callables: a reference (module, qualified name) when the worker can import it,
  else cloudpickle by value. Either way a function crosses to a worker once and is
  afterwards named by a small integer key (see `ProcessExecutor`).

`loads` reads both pickle and cloudpickle output (cloudpickle emits ordinary pickle
opcodes, only needing cloudpickle importable on the reading side).
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from typing import Any

import cloudpickle
import msgpack

# parent -> worker
OP_FUNC = 1  # [OP_FUNC, key, ref | None, blob | None, is_generator]
OP_CALL = 2  # [OP_CALL, call_id, key, payload, context | None]
OP_STOP = 3  # [OP_STOP]: finish the calls already received, then exit 0
OP_REPLY = 4  # [OP_REPLY, request_id, ok, payload]: answer to OP_ADD
# worker -> parent
OP_READY = 10  # [OP_READY, pid]
OP_OK = 11  # [OP_OK, call_id, payload, retire]
OP_ERR = 12  # [OP_ERR, call_id, where, exc_payload | None, type_name, text, traceback, retire]
OP_ITEM = 13  # [OP_ITEM, call_id, payload]: one item yielded by a generator task
OP_LOG = 14  # [OP_LOG, {LogRecord attributes}]
OP_ADD = 15  # [OP_ADD, call_id, request_id, payload]: the task context's add_task
OP_FATAL = 16  # [OP_FATAL, traceback]: the worker could not start

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
    """Encode one message. (A shared `msgpack.Packer` would be faster, but is not
    thread-safe: a worker's log records are sent from the user's threads too.)"""
    data: bytes = msgpack.packb(message, use_bin_type=True)
    return data


def unpacker() -> msgpack.Unpacker:
    """A streaming decoder: `feed(bytes)`, then `unpack()` until `msgpack.OutOfData`."""
    return msgpack.Unpacker(raw=False, max_buffer_size=_MAX_MESSAGE)


def dumps(obj: Any) -> bytes:
    """Pickle `obj` (protocol 5), or cloudpickle it if plain pickle cannot.

    Raises what cloudpickle raises for objects neither can handle (a lock, a socket):
    usually `TypeError` or `pickle.PicklingError`.
    """
    try:
        return pickle.dumps(obj, protocol=5)
    except (pickle.PicklingError, AttributeError, TypeError):
        # AttributeError: "Can't pickle local object"; PicklingError: lambdas and
        # functions not found under their name. TypeError is most often fatal for
        # cloudpickle too, but a class defined in a function can still get through.
        return bytes(cloudpickle.dumps(obj, protocol=5))


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def type_name(obj: Any) -> str:
    """`module.QualName` of `obj`'s type (just the name for builtins)."""
    cls = obj if isinstance(obj, type) else type(obj)
    module = getattr(cls, "__module__", None)
    if module in (None, "builtins"):
        return str(cls.__qualname__)
    return f"{module}.{cls.__qualname__}"


def dumps_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """The payload of a call. Raises `ValueError` naming the argument that cannot be pickled."""
    if not args and not kwargs:
        return EMPTY_ARGS
    try:
        return dumps((args, kwargs))
    except (Exception, SystemExit) as e:  # SystemExit: a __reduce__ that calls sys.exit
        raise ValueError(_culprit(args, kwargs, e)) from e


def loads_args(payload: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if payload == EMPTY_ARGS:
        return (), {}
    args, kwargs = loads(payload)
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
