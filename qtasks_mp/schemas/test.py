"""QTasks' `TestConfig`: which components a test case runs. Here every test case runs
the whole app in the test's process, so the flags are kept and change nothing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TestConfig:
    __test__ = False  # not a pytest test class

    worker: bool = False
    broker: bool = False
    storage: bool = False
    global_config: bool = False
    plugins: bool = False

    @classmethod
    def full(cls) -> TestConfig:
        return cls(worker=True, broker=True, storage=True, global_config=True, plugins=True)

    @classmethod
    def only_worker(cls, plugins: bool = False) -> TestConfig:
        return cls(worker=True, plugins=plugins)

    @classmethod
    def only_broker(cls, plugins: bool = False) -> TestConfig:
        return cls(broker=True, plugins=plugins)

    @classmethod
    def full_broker(cls) -> TestConfig:
        return cls(broker=True, storage=True, global_config=True, plugins=True)


__all__ = ["TestConfig"]
