"""How `SQLiteStore` turns task arguments and results into bytes, and back.

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
from typing import Any

import msgpack

from ..wire import dumps, type_name

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


def decode_value(data: bytes | None) -> Any:
    return None if data is None else _unpack(data)
