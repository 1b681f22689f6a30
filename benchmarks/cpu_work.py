"""CPU-bound work for the benchmarks: a pure-Python loop, how long to run it, a timer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def spin(n: int) -> int:
    x = 0
    for i in range(n):
        x += i
    return x


def timed_spin(n: int) -> float:
    """`spin(n)`, returning the seconds it took where it ran (a worker's own clock)."""
    start = time.perf_counter()
    spin(n)
    return time.perf_counter() - start


def calibrate(seconds: float) -> int:
    """How many `spin` iterations take about `seconds` here."""
    n = 100_000
    while True:
        start = time.perf_counter()
        spin(n)
        took = time.perf_counter() - start
        if took > 0.02:
            return int(n * seconds / took)
        n *= 2


def timed(fn: Callable[..., Any], *args: Any) -> float:
    """Seconds `fn(*args)` takes."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start
