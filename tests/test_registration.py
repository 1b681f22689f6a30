"""@app.task: options, defaults, and every registration error."""

from __future__ import annotations

import enum
import logging
from typing import Any

import pytest

from qtasks_mp import AsyncTask, InlineExecutor, Middleware, Retries, TaskRegistrationError
from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.registries import Kind


def test_bare_decorator_uses_function_name_and_keeps_the_function() -> None:
    app = QueueTasks()

    @app.task
    def double(x: int) -> int:
        return 2 * x

    assert double.fn(4) == 8  # the function itself
    call = double(4)  # QTasks' pre-built call, added later with call.add_task()
    assert (call.task_name, call.args, call.kwargs) == ("double", (4,), {})
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


async def test_a_task_defined_again_replaces_the_old_definition() -> None:
    """A notebook cell run again defines the same function anew (same module and
    name, another object): its registration replaces the old one, on a running app
    too, where it used to raise 'already registered'."""
    app = QueueTasks()
    cell = "@app.task\nasync def crunch(x):\n    return x * {factor}\n"
    namespace: dict[str, Any] = {"app": app, "__name__": "__main__"}
    exec(cell.format(factor=2), namespace)
    async with app:
        done = await app.add_task("crunch", 5, timeout=5)
        assert done is not None and done.returning == 10
        exec(cell.format(factor=3), namespace)  # the cell, edited and run again
        done = await app.add_task("crunch", 5, timeout=5)
        assert done is not None and done.returning == 15


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


def test_a_decorator_reused_keeps_its_options() -> None:
    class Audit(Middleware):
        options = frozenset({"audit_channel"})

        async def __call__(self, call: Any, call_next: Any) -> Any:
            return await call_next(call)

    app = QueueTasks(middlewares=[Audit()])
    shop = app.task(retry=2, audit_channel="#shop")

    @shop
    def a() -> None: ...

    @shop
    def b() -> None: ...

    assert app.specs["a"].options == app.specs["b"].options == {"audit_channel": "#shop"}
    assert app.specs["a"].retry == app.specs["b"].retry == 2


def test_stacked_decorators_register_the_function_itself() -> None:
    app = QueueTasks()

    @app.task(name="outer")
    @app.task(name="inner")
    async def f() -> int:
        return 1

    assert app.specs["outer"].fn is app.specs["inner"].fn
    assert app.specs["outer"].kind is Kind.COROUTINE
    assert app.specs["outer"].executor == "inline"


def test_a_str_subclass_name_is_kept_as_a_plain_str() -> None:
    class Names(str, enum.Enum):
        SEND = "send"

    app = QueueTasks()
    app.task(name=Names.SEND)(lambda: None)
    assert type(app.specs["send"].name) is str


def test_whole_numbers_of_other_types_are_accepted_as_ints() -> None:
    np = pytest.importorskip("numpy")
    app = QueueTasks()
    app.task(name="f", priority=np.int64(3), retry=np.int32(2))(lambda: None)
    spec = app.specs["f"]
    assert (spec.priority, spec.retry) == (3, 2)
    assert type(spec.priority) is int and type(spec.retry) is int


def test_normalised_options() -> None:
    app = QueueTasks()
    app.task(
        name="f",
        retry=1,
        retry_on_exc=(e for e in [ConnectionError, TimeoutError]),  # a one-shot iterable
        retry_backoff=1,
        timeout=2,
        tags={"shop"},
    )(lambda: None)
    spec = app.specs["f"]
    assert spec.retry_on_exc == (ConnectionError, TimeoutError)
    assert spec.retry_backoff == 1.0 and type(spec.retry_backoff) is float
    assert spec.timeout == 2.0 and type(spec.timeout) is float
    assert spec.tags == ("shop",)


def test_an_app_wide_retry_default_makes_retry_on_exc_useful() -> None:
    app = QueueTasks(middlewares=[Retries(max_retries=2)])
    app.task(name="f", retry_on_exc=[ConnectionError], retry_backoff=0.5)(lambda: None)
    assert app.specs["f"].retry_on_exc == (ConnectionError,)


def test_a_refused_task_adds_no_executor() -> None:
    """The check that fails last (the context) still comes before the executor joins."""

    class Remote(InlineExecutor):
        supports_context = False

    app = QueueTasks()
    remote = Remote()
    remote.name = "remote"
    before = dict(app.executors)
    with pytest.raises(TaskRegistrationError, match=r"task 'f': echo=True.*drop echo=True"):

        @app.task(echo=True, executor=remote)
        async def f(self: AsyncTask) -> None: ...

    assert app.executors == before and "f" not in app.specs
    with pytest.raises(TaskRegistrationError, match="retry"):
        app.task(name="g", executor="process", retry=-1)(lambda: None)
    assert "process" not in app.executors  # the pool is made only for a task that is accepted
