"""The Pythons the package claims are the ones CI runs the suite under."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def claimed() -> tuple[tuple[int, int], list[str]]:
    text = (REPO / "pyproject.toml").read_text()
    floor = re.search(r'^requires-python = ">=(\d+)\.(\d+)"$', text, re.M)
    assert floor is not None, "requires-python is not a plain >=3.X"
    minors = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', text)
    return (int(floor[1]), int(floor[2])), minors


def test_classifiers_start_at_requires_python_and_leave_no_gap() -> None:
    (major, low), minors = claimed()
    assert minors, "no Python version classifiers"
    numbers = [int(m.split(".")[1]) for m in minors]
    assert numbers == list(range(low, low + len(numbers))), minors
    assert major == 3


def test_ci_runs_each_claimed_python() -> None:
    _, minors = claimed()
    loop = re.search(r"^for minor in ([\d. ]+); do$", (REPO / ".ci/run").read_text(), re.M)
    assert loop is not None, ".ci/run has no loop over Python versions"
    assert loop[1].split() == minors


def test_this_python_is_one_of_them() -> None:
    _, minors = claimed()
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in minors
