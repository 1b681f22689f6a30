"""The key of a call of a `@app.task(unique=True)` task: its name and bound arguments.

Equal calls give equal keys: arguments are bound to the signature with defaults
applied (`f(1)`, `f(x=1)` and `f(1, y=2)` when `y=2` is the default are one call),
and values are written in a canonical form before hashing: dicts and sets with their
items sorted, so `{"a": 1, "b": 2}` and `{"b": 2, "a": 1}` are one value. Types stay
apart (`1`, `1.0`, `True` and `"1"` give four keys; a tuple is not a list). A value of
another type is taken by its pickle, which is equal for equal plain objects
(dataclasses, enums) but not for every type: pass plain data, or give `unique_key=`.
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
from typing import Any

from .errors import TaskArgumentsError


def call_key(
    task_name: str,
    signature: inspect.Signature | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> str:
    """`"<task name>:<sha256 of the canonical arguments>"` (64 hex digits).

    Raises `TaskArgumentsError` for an argument that cannot be pickled (a lock, a
    socket): it has no key; the fix is a `unique_key=` of the caller's own."""
    if signature is not None:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        parts: list[Any] = list(bound.arguments.items())
    else:
        parts = [list(args), sorted(kwargs.items())]
    digest = hashlib.sha256()
    try:
        _write(digest, parts)
    except Exception as e:
        raise TaskArgumentsError(
            f"task {task_name!r} (unique=True): its arguments have no key: {type(e).__name__}: "
            f"{e}. Pass plain data, or give the call a key of your own: unique_key='...'"
        ) from e
    return f"{task_name}:{digest.hexdigest()}"


def _write(h: Any, value: Any) -> None:
    t = type(value)
    if value is None or t is bool or t is int or t is float or t is complex:
        h.update(f"{t.__name__}:{value!r};".encode())
    elif t is str:
        data = value.encode("utf-8", "surrogatepass")
        h.update(b"str:%d:" % len(data) + data)
    elif t is bytes or t is bytearray:
        h.update(b"%s:%d:" % (t.__name__.encode(), len(value)) + bytes(value))
    elif t is list or t is tuple:
        h.update(b"%s[%d:" % (t.__name__.encode(), len(value)))
        for item in value:
            _write(h, item)
        h.update(b"]")
    elif t is dict:
        h.update(b"dict{%d:" % len(value))
        for key, item in sorted(value.items(), key=lambda kv: _order(kv[0])):
            _write(h, key)
            _write(h, item)
        h.update(b"}")
    elif t is set or t is frozenset:
        h.update(b"%s{%d:" % (t.__name__.encode(), len(value)))
        for item in sorted(value, key=_order):
            _write(h, item)
        h.update(b"}")
    else:
        data = pickle.dumps(value, protocol=5)
        h.update(b"pickle:%d:" % len(data) + data)


def _order(value: Any) -> tuple[str, str]:
    """A sort key for dict keys and set members of any type (by type, then repr)."""
    return (type(value).__name__, repr(value))
