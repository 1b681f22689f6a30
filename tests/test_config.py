"""app.config: typed, and unknown fields are errors that name the field."""

from __future__ import annotations

import logging

import pytest

from qtasks_mp import ConfigError, QueueConfig
from qtasks_mp.asyncio import QueueTasks


def test_unknown_field_names_it_and_suggests() -> None:
    app = QueueTasks()
    with pytest.raises(
        ConfigError,
        match=r"unknown config field 'max_task_process'.*"
        r"'max_tasks_process'",
    ):
        app.config.max_task_process = 4  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):  # also an AttributeError
        app.config.nonsense = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_tasks_process", "4", "of type int"),
        ("max_tasks_process", 0, "at least 1"),
        ("shutdown_timeout", -1, "must not be negative"),
        ("logs_default_level", True, "of type int"),
    ],
)
def test_bad_values_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"{field}.*{message}"):
        setattr(QueueConfig(), field, value)


def test_good_values_and_int_for_float() -> None:
    config = QueueConfig()
    config.logs_default_level = logging.DEBUG
    config.shutdown_timeout = 3
    assert config.shutdown_timeout == 3.0 and isinstance(config.shutdown_timeout, float)
    config.default_task_priority = -3
    assert config.default_task_priority == -3


async def test_config_sizes_the_default_executors_at_start() -> None:
    app = QueueTasks()
    app.config.max_tasks_process = 4
    app.config.thread_workers = 3
    async with app:
        assert app.executors["inline"].slots == 4
        assert app.executors["thread"].slots == 3


async def test_default_priority_applies(app: QueueTasks) -> None:
    app.config.default_task_priority = 7
    app.task(name="f")(lambda: None)
    task = await app.add_task("f")
    assert task is not None and task.priority == 7
