"""Import a recipe from the top-level `executors/` folder (not a package) by path, once:
the recipe and contract tests share the module object (and so its classes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

RECIPES = Path(__file__).resolve().parents[1] / "executors"


def load_recipe(name: str) -> ModuleType:
    """Import `executors/<name>.py` as module `qtasks_recipe_<name>`, once."""
    module_name = f"qtasks_recipe_{name}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, RECIPES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # before exec: dataclasses, pickling look it up
        spec.loader.exec_module(module)
    return module
