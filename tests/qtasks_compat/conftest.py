"""Fixtures of the QTasks ports; `ports/` holds programs, not test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from compat_support import remove_home

collect_ignore = ["ports", "apps"]


@pytest.fixture(scope="module")
def ported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Copies of port groups made in this module, their homes removed at the end."""
    made: dict[str, Path] = {}
    yield made
    for where in made.values():
        for file in where.rglob("*.py"):
            remove_home(file)
