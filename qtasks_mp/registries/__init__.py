"""Registered tasks and the task context (`AsyncTask`) that `echo=True` passes in.

`TaskSpec` is everything `@app.task` learned about a function: its kind (coroutine,
async generator, function, generator), its options, and the signature that
`add_task` binds arguments to before it accepts anything.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from ..context import AsyncTask, SyncTask, TaskInfo
from ..errors import TaskArgumentsError

if TYPE_CHECKING:
    from ..executors.base import Executor
    from ..middleware.base import Middleware

P = ParamSpec("P")

#: Keywords `add_task` takes for itself: a task parameter of these names gets no keyword.
_ADD_TASK_KEYWORDS = ("priority", "timeout", "unique_key", "args", "kwargs")
R = TypeVar("R")


class Kind(enum.Enum):
    COROUTINE = "coroutine"
    ASYNC_GEN = "async generator"
    FUNCTION = "function"
    GENERATOR = "generator"

    @property
    def is_async(self) -> bool:
        return self in (Kind.COROUTINE, Kind.ASYNC_GEN)


def kind_of(fn: Callable[..., Any]) -> Kind:
    """What calling `fn` gives; a callable object is judged by its `__call__`."""
    for candidate in (fn, getattr(fn, "__call__", None)):  # noqa: B004
        if inspect.isasyncgenfunction(candidate):
            return Kind.ASYNC_GEN
        if inspect.iscoroutinefunction(candidate):
            return Kind.COROUTINE
        if inspect.isgeneratorfunction(candidate):
            return Kind.GENERATOR
    return Kind.FUNCTION


@dataclass(eq=False, frozen=True)
class TaskSpec:
    """A registered task: the function, how to call it, and its options. Frozen: what
    the app builds from it (the middleware chain, the route) the app keeps beside it."""

    name: str
    fn: Callable[..., Any]
    kind: Kind
    executor: str | Executor
    priority: int | None = None
    echo: bool = False
    pass_context: bool = False
    retry: int | None = None
    retry_on_exc: tuple[type[BaseException], ...] | None = None
    retry_backoff: float | None = None
    generate_handler: Callable[[Any], Any] | None = None
    timeout: float | None = None
    middlewares: Sequence[Middleware] = ()
    tags: tuple[str, ...] = ()
    description: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    signature: inspect.Signature | None = None
    #: (fewest, most) positional arguments that bind when no keyword is given; None: always
    #: run the full `Signature.bind`.
    positional_range: tuple[int, float] | None = None
    #: `unique=True`: adding a call equal to one new or process returns that one
    unique: bool = False
    #: `rate_limit="30/s"` as seconds between starts (1/30); None: no limit
    rate_interval_s: float | None = None

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise `TaskArgumentsError` now if the arguments cannot be passed to the function."""
        sig = self.signature
        if sig is None:
            return
        fast = self.positional_range
        if fast is not None and not kwargs and fast[0] <= len(args) <= fast[1]:
            return  # the common case, ~10x cheaper than Signature.bind
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            fix = "Fix the add_task call (or the function's parameters)."
            taken = [p for p in _ADD_TASK_KEYWORDS if p in sig.parameters and p not in kwargs]
            if taken:  # add_task(timeout=5) waits; it never reaches a parameter named timeout
                fix = (
                    f"add_task keeps {', '.join(f'{p}=' for p in taken)} for itself: pass "
                    f"the task's own as kwargs={{{taken[0]!r}: ...}} or positionally."
                )
            fn_name = getattr(self.fn, "__name__", self.name)
            raise TaskArgumentsError(
                f"task {self.name!r}: the arguments do not fit {fn_name}{sig}: {e}. {fix}"
            ) from None


def call_signature(fn: Callable[..., Any], pass_context: bool) -> inspect.Signature | None:
    """The signature `add_task` arguments must fit: the function's, minus the context."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: accept anything
        return None
    if pass_context:
        params = list(sig.parameters.values())
        if params and params[0].kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            sig = sig.replace(parameters=params[1:])
    return sig


def positional_range(sig: inspect.Signature | None) -> tuple[int, float] | None:
    """How many positional arguments bind to `sig` when no keyword is given, if that is
    all there is to check (no required keyword-only parameter)."""
    if sig is None:
        return None
    fewest, most = 0, 0.0
    for p in sig.parameters.values():
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            most += 1
            if p.default is inspect.Parameter.empty:
                fewest += 1
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            most = float("inf")
        elif p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty:
            return None
    return fewest, most


def accepts_context(fn: Callable[..., Any]) -> bool:
    """Whether `fn` has a first positional parameter to receive the task context."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True
    return bool(params) and params[0].kind in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
    )


class TaskCall:
    """A task call built in advance, QTasks' `(A)syncTaskCls`: what `my_task(2, 2)` returns.

    `call.add_task()` adds it (awaitable on the async app); chains
    (`qtasks_mp.utils.tasks`) pass each result on as one more positional argument.
    """

    __slots__ = ("args", "kwargs", "priority", "task", "task_name", "timeout")

    def __init__(
        self,
        task: RegisteredTask[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int | None = None,
        timeout: float | None = None,
        task_name: str | None = None,
    ) -> None:
        self.task = task
        self.task_name = task_name or task.name
        self.args = args
        self.kwargs = kwargs
        self.priority = priority
        self.timeout = timeout

    def add_task(self) -> Any:
        """Add the call: a `Task` on the sync app, a coroutine of one on the async app."""
        return self.task.add_task(
            *self.args,
            task_name=self.task_name,
            priority=self.priority,
            timeout=self.timeout,
            **self.kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"TaskCall(task_name={self.task_name!r}, priority={self.priority!r}, "
            f"timeout={self.timeout!r}, args={self.args!r}, kwargs={self.kwargs!r})"
        )


class RegisteredTask(Generic[P, R]):
    """What `@app.task` returns, QTasks' `(A)syncTask`: `my_task.add_task(...)` adds the
    task (awaitable on the async app, blocking on the sync one), `my_task(2, 2)` builds a
    call to add later (`TaskCall`), and the function itself is `my_task.fn`.

    `app` is the facade the task was registered on (anything with QTasks' `add_task`).
    """

    def __init__(self, spec: TaskSpec, fn: Callable[P, R], app: Any = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.fn = fn
        self.app = app
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", spec.name)

    def add_task(
        self,
        *args: Any,
        task_name: str | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Add this task (`task_name=` adds another by name, as in QTasks); the same
        arguments as `app.add_task`. On the async app, await it."""
        if self.app is None:
            raise TypeError(f"task {self.name!r} was not registered on an app")
        return self.app.add_task(
            task_name or self.name, *args, priority=priority, timeout=timeout, **kwargs
        )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> TaskCall:
        """A call to add later (QTasks' pre-built task): `add(2, 2, priority=1)`."""
        options: dict[str, Any] = {
            k: kwargs.pop(k) for k in ("priority", "timeout", "task_name") if k in kwargs
        }
        # Not bound to the signature yet: a chain adds the previous result (`add(4)`).
        return TaskCall(self, args, kwargs, **options)

    # QTasks' attributes of a task object (`self.priority` in an echo task reads these too)
    @property
    def task_name(self) -> str:
        return self.name

    @property
    def priority(self) -> int | None:
        return self.spec.priority

    @property
    def echo(self) -> bool:
        return self.spec.echo

    @property
    def retry(self) -> int | None:
        return self.spec.retry

    @property
    def retry_on_exc(self) -> tuple[type[BaseException], ...] | None:
        return self.spec.retry_on_exc

    @property
    def max_time(self) -> float | None:
        return self.spec.timeout

    @property
    def tags(self) -> list[str]:
        return list(self.spec.tags)

    @property
    def description(self) -> str | None:
        return self.spec.description

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.spec.options)

    @property
    def generate_handler(self) -> Callable[[Any], Any] | None:
        return self.spec.generate_handler

    @property
    def executor(self) -> str | Executor:
        return self.spec.executor

    @property
    def middlewares(self) -> list[Middleware]:
        return list(self.spec.middlewares)

    def __repr__(self) -> str:
        return f"<task {self.name!r} ({self.spec.kind.value}, executor={self.spec.executor!r})>"


__all__ = [
    "AsyncTask",
    "Kind",
    "RegisteredTask",
    "SyncTask",
    "TaskCall",
    "TaskInfo",
    "TaskSpec",
]
