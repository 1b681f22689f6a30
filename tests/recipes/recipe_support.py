"""A `Call` built as the dispatcher builds one, for tests that drive an executor by hand.
(Recipes are loaded with `recipe_loader.load_recipe`.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from qtasks_mp.executors.base import Call
from qtasks_mp.registries import TaskSpec, call_signature, kind_of
from qtasks_mp.task import TaskRecord, new_key


def make_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Call:
    name = getattr(fn, "__name__", "fn")
    spec = TaskSpec(
        name=name, fn=fn, kind=kind_of(fn), executor="x", signature=call_signature(fn, False)
    )
    record = TaskRecord(new_key(), name, "x", 0, args, kwargs, time.time())
    return Call(spec, record, None)
