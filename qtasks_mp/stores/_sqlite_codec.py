"""How the SQL stores (SQLite, PostgreSQL) turn task arguments and results into bytes,
and back.

msgpack first: compact, fast, and readable by any language. It is packed with
`strict_types=True`, so anything msgpack would silently change (a tuple becoming a
list, an `IntEnum` becoming an int, an `OrderedDict` a dict) reaches `_default`
instead, which keeps it exact:

- tuples: ext type `_EXT_TUPLE`, holding the msgpack of its items;
- everything else msgpack cannot hold as is: ext type `_EXT_PICKLE`, holding a pickle
  (protocol 5; cloudpickle for lambdas and local classes, see `qtasks_mp.wire.dumps`).

Pickles run code when loaded: whoever can write the database file can run code in
the worker. That is why the store creates its file readable by its owner only.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

import msgpack

from ..errors import SerializationError
from ..task import TaskStatus
from ..wire import dumps, type_name

if TYPE_CHECKING:
    from ..task import TaskRecord

_EXT_PICKLE = 1
_EXT_TUPLE = 2


class EncodeError(TypeError):
    """A value that neither msgpack nor (cloud)pickle can encode; names the value's type."""


def _default(obj: Any) -> msgpack.ExtType:
    if type(obj) is tuple:
        return msgpack.ExtType(_EXT_TUPLE, _pack(list(obj)))
    try:
        return msgpack.ExtType(_EXT_PICKLE, dumps(obj))
    except (Exception, SystemExit) as e:  # SystemExit: a __reduce__ that calls sys.exit
        raise EncodeError(f"a value of type {type_name(obj)} cannot be stored: {e}") from e


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_TUPLE:
        return tuple(_unpack(data))
    if code == _EXT_PICKLE:
        return pickle.loads(data)
    return msgpack.ExtType(code, data)


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True, strict_types=True, default=_default)
    return data


def _unpack(data: bytes) -> Any:
    # strict_map_key=False: task kwargs are str-keyed, but a result may be {1: "a"}.
    return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=False)


def encode_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """The stored form of a task's arguments. Raises `EncodeError` naming the culprit."""
    try:
        return _pack([list(args), kwargs])
    except EncodeError:
        for i, value in enumerate(args):
            _check(f"argument {i}", value)
        for key, value in kwargs.items():
            _check(f"argument {key!r}", value)
        raise


def _check(label: str, value: Any) -> None:
    try:
        _pack(value)
    except EncodeError as e:
        raise EncodeError(f"{label}: {e}") from e


def decode_call(data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args, kwargs = _unpack(data)
    return tuple(args), kwargs


def encode_value(value: Any) -> bytes | None:
    """The stored form of a result; None stands for None (the common case costs nothing)."""
    return None if value is None else _pack(value)


def stored_call(record: TaskRecord, store: str) -> bytes:
    """`record`'s arguments as `store` keeps them; raises `SerializationError` naming
    the task, the argument and the fix, before anything is accepted."""
    try:
        return encode_call(record.args, record.kwargs)
    except EncodeError as e:
        raise SerializationError(
            f"task {record.task_name!r} cannot be stored in {store}: {e}. Pass plain data "
            "(numbers, strings, bytes, lists, dicts) or picklable objects"
        ) from e


def stored_outcome(record: TaskRecord, store: str) -> bytes | None:
    """`record.returning` as `store` keeps it. A result that cannot be encoded ends the
    task `error` instead, its traceback saying why: the outcome must be stored, and
    every reader sees the same one."""
    try:
        return encode_value(record.returning)
    except EncodeError as e:
        record.status = TaskStatus.ERROR
        record.returning = None
        record.traceback = (
            f"SerializationError: task {record.task_name!r} returned a value that "
            f"cannot be stored in {store}: {e}\n"
        )
        return None


def decode_value(data: bytes | None) -> Any:
    return None if data is None else _unpack(data)
