"""@app.task: options, defaults, and every registration error."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from qtasks_mp import AsyncTask, InlineExecutor, Middleware, TaskRegistrationError
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.registries import Kind


def test_bare_decorator_uses_function_name_and_keeps_calling() -> None:
    app = QueueTasks()

    @app.task
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8  # still the function
    assert double.name == "double"
    assert app.specs["double"].executor == "thread"


def test_positional_name_and_kind_defaults() -> None:
    app = QueueTasks()

    @app.task("coro")
    async def c() -> None: ...

    @app.task(name="agen")
    async def ag() -> Any:
        yield 1

    @app.task(name="gen")
    def g() -> Any:
        yield 1

    assert (app.specs["coro"].kind, app.specs["coro"].executor) == (Kind.COROUTINE, "inline")
    assert (app.specs["agen"].kind, app.specs["agen"].executor) == (Kind.ASYNC_GEN, "inline")
    assert (app.specs["gen"].kind, app.specs["gen"].executor) == (Kind.GENERATOR, "thread")


def test_duplicate_name_is_an_error_naming_both() -> None:
    app = QueueTasks()

    @app.task(name="x")
    def a() -> None: ...

    with pytest.raises(TaskRegistrationError, match=r"task 'x'.*already registered.*\.a"):

        @app.task(name="x")
        def b() -> None: ...


def test_unknown_option_suggests_the_close_one() -> None:
    app = QueueTasks()
    with pytest.raises(TaskRegistrationError, match=r"unknown option 'retries'.*'retry'"):

        @app.task(retries=3)
        def f() -> None: ...


def test_option_declared_by_a_middleware_is_accepted() -> None:
    class Audit(Middleware):
        options = frozenset({"audit_channel"})

        async def __call__(self, call: Any, call_next: Any) -> Any:
            return await call_next(call)

    app = QueueTasks(middlewares=[Audit()])

    @app.task(audit_channel="#ops")
    def f() -> None: ...

    assert app.specs["f"].options == {"audit_channel": "#ops"}


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"timeout": 1, "max_time": 2}, "not both"),
        ({"timeout": -1}, "positive number"),
        ({"retry": -1}, "whole number"),
        ({"retry_on_exc": ["nope"]}, "exception classes"),
        ({"generate_handler": 3}, "callable"),
        ({"executor": "gpu"}, "no executor named 'gpu'"),
    ],
)
def test_bad_options_name_the_task(opts: dict[str, Any], message: str) -> None:
    app = QueueTasks()
    with pytest.raises(TaskRegistrationError, match=rf"task 'f'.*{message}"):
        app.task(name="f", **opts)(lambda: None)


def test_coroutine_on_thread_executor_is_refused_with_the_fix() -> None:
    app = QueueTasks()
    with pytest.raises(TaskRegistrationError, match=r"coroutine.*drop executor='thread'"):

        @app.task(executor="thread")
        async def f() -> None: ...


def test_max_time_is_an_alias_of_timeout() -> None:
    app = QueueTasks()
    app.task(name="f", max_time=2.5)(lambda: None)
    assert app.specs["f"].timeout == 2.5


def test_retry_on_exc_accepts_a_single_class() -> None:
    app = QueueTasks()
    app.task(name="f", retry=1, retry_on_exc=ValueError)(lambda: None)
    assert app.specs["f"].retry_on_exc == (ValueError,)


def test_echo_without_a_parameter_warns_and_runs_without_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = QueueTasks()
    with caplog.at_level(logging.WARNING, logger="qtasks_mp"):

        @app.task(echo=True)
        async def export() -> Any:
            yield 1

    assert app.specs["export"].echo and not app.specs["export"].pass_context
    assert "echo=True but export() has no parameter" in caplog.text


def test_echo_context_is_not_part_of_the_call_signature() -> None:
    app = QueueTasks()

    @app.task(echo=True)
    async def f(self: AsyncTask, n: int) -> int:
        return n

    sig = app.specs["f"].signature
    assert sig is not None and list(sig.parameters) == ["n"]


def test_executor_instance_is_registered_by_name() -> None:
    app = QueueTasks()
    mine = InlineExecutor(max_tasks=3)
    mine.name = "slow_io"

    @app.task(executor=mine)
    async def f() -> None: ...

    assert app.executors["slow_io"] is mine
    assert app.specs["f"].executor == "slow_io"


def test_tags_description_priority_are_kept() -> None:
    app = QueueTasks()

    @app.task(priority=-5, tags=["shop"], description="d")
    def f() -> None:
        """doc"""

    @app.task
    def g() -> None:
        """Says hi."""

    spec = app.specs["f"]
    assert (spec.priority, spec.tags, spec.description) == (-5, ("shop",), "d")
    assert app.specs["g"].description == "Says hi."
