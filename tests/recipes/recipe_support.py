"""Loading the recipes in `executors/` (a folder, not a package) by path, and a `Call`
built as the dispatcher builds one, for tests that drive an executor by hand."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from qtasks_mp.executors.base import Call
from qtasks_mp.registries import TaskSpec, call_signature, kind_of
from qtasks_mp.task import TaskRecord, new_uuid

RECIPES = Path(__file__).resolve().parents[2] / "executors"


def load_recipe(name: str) -> ModuleType:
    """Import `executors/<name>.py` once (the same module object as the contract suite's)."""
    module_name = f"qtasks_recipe_{name}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, RECIPES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return module


def make_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Call:
    name = getattr(fn, "__name__", "fn")
    spec = TaskSpec(
        name=name, fn=fn, kind=kind_of(fn), executor="x", signature=call_signature(fn, False)
    )
    record = TaskRecord(new_uuid(), name, "x", 0, args, kwargs, time.time())
    return Call(spec, record, None)
