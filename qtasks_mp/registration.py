"""The task registry of an app: `@app.task`, the specs it makes, the executors they run
on, and the route (middleware chain and executor) each task is run through.

Every option is checked at registration (`checks.py`, and each middleware's
`check_options`): a bad one raises `TaskRegistrationError` naming the task, the value
and the fix, and nothing is registered, not even an executor the task brought in.
Specs are frozen once registered; what is built from them (routes) is built by
`route()` and kept by the runtime.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol, cast, overload

from . import checks
from .config import QueueConfig
from .dispatcher import Route
from .errors import TaskRegistrationError
from .executors.base import Executor
from .executors.inline import InlineExecutor
from .executors.thread import ThreadExecutor
from .metrics import TaskMetrics
from .middleware.base import Middleware, build_chain
from .middleware.call_logging import CallLogging
from .middleware.retries import Retries
from .middleware.timing import Timing
from .plugins import inject
from .registries import (
    Kind,
    P,
    R,
    RegisteredTask,
    TaskSpec,
    accepts_context,
    call_signature,
    kind_of,
    positional_range,
)

log = logging.getLogger("qtasks_mp")

_STANDARD_OPTIONS = [
    *("name", "priority", "echo", "retry", "retry_on_exc", "retry_backoff"),
    *("generate_handler", "executor", "timeout", "max_time", "middlewares", "tags", "description"),
    *("unique", "rate_limit"),
]

#: QTasks' options kept as extras with no effect here (docs/qtasks.md says why)
_QTASKS_EXTRAS = {"decode", "middlewares_before", "middlewares_after", "awaiting"}

#: Middleware known not to count on running in a task of its own (see `Route.eager`).
_BUILTIN_MIDDLEWARE = (CallLogging, Timing, TaskMetrics, Retries)


class TaskDecorator(Protocol):
    """The type of `app.task`: `@app.task`, `@app.task("name")`, `@app.task(name=..., ...)`;
    the decorated function keeps its signature (ParamSpec)."""

    @overload
    def __call__(self, fn: Callable[P, R], /) -> RegisteredTask[P, R]: ...

    @overload
    def __call__(
        self,
        name: str | None = None,
        /,
        *,
        priority: int | None = None,
        echo: bool = False,
        retry: int | None = None,
        retry_on_exc: Iterable[type[BaseException]] | None = None,
        retry_backoff: float | None = None,
        generate_handler: Callable[[Any], Any] | None = None,
        executor: str | Executor | None = None,
        timeout: float | None = None,
        max_time: float | None = None,
        middlewares: Sequence[Middleware] | None = None,
        tags: Iterable[str] | None = None,
        description: str | None = None,
        unique: bool = False,
        rate_limit: str | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, R]], RegisteredTask[P, R]]: ...


def _where(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


def _redefined(registered: Callable[..., Any], fn: Callable[..., Any]) -> bool:
    """Whether `fn` is the registered function defined again (same module and name,
    another object: a cell run again), not another function under the same task name."""
    registered = getattr(registered, "__wrapped__", registered)  # (inject.prepare's)
    return fn is not registered and _where(fn) == _where(registered)


class TaskRegistry:
    """The specs of an app's tasks (by name) and its executors (by lane name).

    `middlewares` are the app-wide ones, outermost first; `on_registered(spec)` is told
    of each new task (the runtime routes it, and starts its executor if the app runs).
    """

    def __init__(
        self,
        config: QueueConfig,
        middlewares: list[Middleware],
        executors: Mapping[str, Executor] | None = None,
    ) -> None:
        self._config = config
        self.middlewares = middlewares  # the app's list, app-wide ones, outermost first
        self.specs: dict[str, TaskSpec] = {}
        self.executors: dict[str, Executor] = {}
        self._sized_by_config: set[str] = {"inline", "thread"}
        builtin: list[Executor] = [InlineExecutor(), ThreadExecutor()]
        for executor in builtin:
            self.executors[executor.name] = executor
        for key, executor in (executors or {}).items():
            self.add_executor(executor, key)
        self._on_registered: Callable[[TaskSpec], None] = lambda spec: None
        #: the app object `my_task.add_task(...)` goes through (the sync or async facade)
        self.facade: Any = None

    def on_registered(self, callback: Callable[[TaskSpec], None]) -> None:
        self._on_registered = callback

    @property
    def task(self) -> TaskDecorator:
        """`@app.task`, typed by `TaskDecorator` (its overloads keep the signature)."""
        return cast(TaskDecorator, self._task)

    def _task(self, fn_or_name: Any = None, /, **opts: Any) -> Any:
        """Register a task: `@app.task`, `@app.task("name")` or `@app.task(name=..., ...)`.

        Every option is checked here (`checks.py`, and each middleware's `check_options`):
        a bad one raises `TaskRegistrationError` naming the task, the value and the fix,
        and nothing is registered.
        """
        if callable(fn_or_name):
            return self.register(fn_or_name, opts)
        if fn_or_name is not None:
            if not isinstance(fn_or_name, str):
                raise TaskRegistrationError(
                    f"app.task({checks.got(fn_or_name)}): the first argument is the task's "
                    "name (a str) or the function to register; pass @app.task('my_task') or "
                    "put a bare @app.task above a def"
                )
            if opts.get("name") is not None:
                raise TaskRegistrationError(
                    f"task {fn_or_name!r}: the name is given twice ({fn_or_name!r} and "
                    f"name={opts['name']!r}); pass it once: @app.task({fn_or_name!r})"
                )
            opts["name"] = fn_or_name

        def decorate(fn: Callable[P, R]) -> RegisteredTask[P, R]:
            return self.register(fn, opts)

        return decorate

    def register(self, fn: Callable[P, R], opts: dict[str, Any]) -> RegisteredTask[P, R]:
        opts = dict(opts)  # a decorator may be reused: never consume the caller's options
        if isinstance(fn, RegisteredTask):  # stacked @app.task: register the function itself
            fn = fn.__wrapped__
        checks.task_function(fn, opts.get("name"))
        name = checks.task_name(opts.pop("name", None), fn)
        fail = checks.registration(name)
        if name.endswith(".map") and not isinstance(fn, _MapChunk):
            raise fail(
                "names ending in '.map' are kept for the chunks of app.map(..., chunksize=N); "
                f"pass another name, e.g. name={name[:-4] + '_map'!r}"
            )
        if name in self.specs:
            other = self.specs[name].fn
            if not _redefined(other, fn):
                raise fail(
                    f"a task of this name is already registered ({other.__module__}."
                    f"{other.__qualname__}); give one of them another name= "
                )
            # The same function defined again (a notebook cell run again): the new
            # definition replaces the old one, as a redefined Python function would.
            log.info("task %r: redefined (%s), the new definition replaces it", name, _where(fn))
        task_middlewares = checks.middleware_list(
            f"task {name!r}", opts.get("middlewares"), Middleware
        )
        options = {k: opts.pop(k) for k in list(opts) if k not in _STANDARD_OPTIONS}
        declared = {o for mw in (*self.middlewares, *task_middlewares) for o in mw.options}
        for extra in sorted(set(options) - declared - _QTASKS_EXTRAS):
            # Kept as an extra (`my_task.extra`, QTasks' `test="..."`), unless it looks
            # like a misspelt option, which would otherwise change nothing and say nothing.
            close = difflib.get_close_matches(extra, _STANDARD_OPTIONS + sorted(declared), 1)
            if close:
                raise fail(
                    f"unknown option {extra!r} (did you mean {close[0]!r}?). Options: "
                    f"{', '.join(_STANDARD_OPTIONS)}; other keywords are kept as extras "
                    "(`my_task.extra`), a middleware may declare more in its `options`."
                )
        user_fn, fn = (
            fn,
            cast("Callable[P, R]", inject.prepare(fn)),
        )  # QTasks' Depends, State, pydantic arguments
        kind = kind_of(fn)
        timeout = checks.seconds_option(name, "timeout", opts.get("timeout"), zero_ok=False)
        max_time = checks.seconds_option(name, "max_time", opts.get("max_time"), zero_ok=False)
        if timeout is not None and max_time is not None:
            raise fail(
                f"give timeout= or its alias max_time=, not both (got timeout={timeout:g}, "
                f"max_time={max_time:g}); drop max_time="
            )
        timeout = timeout if timeout is not None else max_time
        retry = checks.count(name, "retry", opts.get("retry"), "retries after the first attempt")
        retry_on_exc = checks.exception_classes(fail, opts.get("retry_on_exc"))
        retry_backoff = checks.seconds_option(
            name, "retry_backoff", opts.get("retry_backoff"), zero_ok=True
        )
        priority = checks.task_priority(name, opts.get("priority"))
        echo = checks.flag(name, "echo", opts.get("echo"))
        handler = opts.get("generate_handler")
        checks.generate_handler(name, handler, kind in (Kind.GENERATOR, Kind.ASYNC_GEN), kind.value)
        tags = checks.tag_list(name, opts.get("tags"))
        description = checks.description(name, opts.get("description"))
        unique = checks.flag(name, "unique", opts.get("unique"))
        rate_interval_s = checks.rate_limit(name, opts.get("rate_limit"))
        given = MappingProxyType(
            {
                **opts,
                **options,
                "retry": retry,
                "retry_on_exc": retry_on_exc,
                "retry_backoff": retry_backoff,
            }
        )
        for mw in (*self.middlewares, *task_middlewares):
            mw.check_options(name, given)  # a middleware refuses what it cannot use
        pass_context = echo and accepts_context(fn)
        executor = self.resolve_executor(name, kind, opts.get("executor"), pass_context)
        if echo and not pass_context:
            log.warning(
                "task %r: echo=True but %s() has no parameter for the task context; it runs "
                "without it (add a first parameter `self: AsyncTask` to use it)",
                name,
                getattr(fn, "__name__", name),
            )
        signature = call_signature(fn, pass_context)
        spec = TaskSpec(
            name=name,
            fn=fn,
            kind=kind,
            executor=executor,
            priority=priority,
            echo=echo,
            pass_context=pass_context,
            retry=retry,
            retry_on_exc=retry_on_exc,
            retry_backoff=retry_backoff,
            generate_handler=handler,
            timeout=timeout,
            middlewares=task_middlewares,
            tags=tags,
            description=description or (getattr(fn, "__doc__", None) or "").strip() or None,
            options=options,
            signature=signature,
            positional_range=positional_range(signature),
            unique=unique,
            rate_interval_s=rate_interval_s,
        )
        self.specs[name] = spec
        self._on_registered(spec)
        return RegisteredTask(spec, user_fn, self.facade)

    def resolve_executor(
        self, name: str, kind: Kind, choice: str | Executor | None, pass_context: bool = False
    ) -> str:
        """The key of the executor a task runs on. Every check comes first: an executor
        (a process pool, an instance given to the task) joins the app only if they pass."""
        checks.executor_choice(name, choice, Executor)
        fail = checks.registration(name)
        if choice is None:
            choice = "inline" if kind.is_async else "thread"
        new: Executor | None = None  # to add once every check has passed
        sized = False
        if isinstance(choice, Executor):
            instance = choice
            if kind not in instance.kinds:
                raise fail(
                    f"it is a {kind.value} function, which {instance!r} does not run; give it "
                    "an executor that does (coroutines run on executor='inline')"
                )
            key = next((k for k, e in self.executors.items() if e is instance), None)
            if key is None:
                # its own lane: an instance given to a task never replaces the app's pools
                key, n = instance.name, 1
                while key in self.executors:
                    n += 1
                    key = f"{instance.name}-{n}"
                new = instance
        elif choice == "process" and "process" not in self.executors:
            from .executors.process import ProcessExecutor  # processes start with the app

            key, instance = "process", ProcessExecutor()
            new, sized = instance, True
        elif choice in self.executors:
            key, instance = choice, self.executors[choice]
        else:
            raise fail(
                f"no executor named {choice!r}; this app has "
                f"{', '.join(sorted(self.executors))}. Pass one in "
                "QueueTasks(executors={...}) or give an Executor instance."
            )
        if kind not in instance.kinds:
            raise TaskRegistrationError(
                f"task {name!r} is a {kind.value} function, which the {key!r} executor "
                f"does not run; drop executor={key!r} (coroutines run inline) or make it "
                "a plain function"
            )
        if pass_context and not instance.supports_context:
            raise fail(
                f"echo=True, but the {key!r} executor cannot pass the task context to "
                "the code it runs (it runs elsewhere: another machine, a fresh process); drop "
                "echo=True, or give the task executor='process' or 'thread'"
            )
        if new is not None:
            self.add_executor(new, key)
            if sized:
                self._sized_by_config.add(key)
        return key

    def add_executor(self, executor: Executor, key: str) -> None:
        checks.executor_entry(key, executor, Executor)
        present = self.executors.get(key)
        if present is executor:
            return
        if present is not None and key not in self._sized_by_config:
            raise TaskRegistrationError(
                f"another executor is already registered as {key!r}; give this one another name"
            )
        executor.attach(key, None)  # its name in this app; the runtime attaches a listener
        self.executors[key] = executor
        self._sized_by_config.discard(key)

    def chunk_spec(self, spec: TaskSpec) -> TaskSpec:
        """The companion task that runs `spec`'s function over a list of items."""
        name = f"{spec.name}.map"
        if name not in self.specs:
            if spec.kind is not Kind.FUNCTION or spec.pass_context:
                raise TaskRegistrationError(
                    f"map({spec.name!r}, chunksize>1) takes a plain function without echo; "
                    "use chunksize=1 for coroutines, generators and echo tasks"
                )
            self.register(
                _MapChunk(spec.fn),
                {
                    "name": name,
                    "executor": spec.executor,
                    "retry": spec.retry,
                    "retry_on_exc": spec.retry_on_exc,
                    "retry_backoff": spec.retry_backoff,
                    "timeout": spec.timeout,
                    "priority": spec.priority,
                    "description": f"chunks of {spec.name} for app.map",
                },
            )
        return self.specs[name]

    def unknown_task(self, task_name: str) -> str:
        close = difflib.get_close_matches(task_name, self.specs, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(self.specs)) or "none yet"
        return (
            f"task {task_name!r} is not registered.{hint} Registered: {known}. "
            "Register it with @app.task before adding it."
        )

    def route(self, spec: TaskSpec, outer: Middleware | None = None) -> Route:
        """`outer`: a middleware put outside all others (the app's events, if any)."""
        assert isinstance(spec.executor, str)
        executor = self.executors[spec.executor]
        middlewares = [*([outer] if outer else []), *self.middlewares, *spec.middlewares]
        chain = build_chain(middlewares, executor.run)
        eager = executor.eager and all(type(m) in _BUILTIN_MIDDLEWARE for m in middlewares)
        return Route(spec, chain, eager)

    def size_executor(self, key: str, executor: Executor) -> None:
        """The built-in executors take their size from the config, read at each start."""
        if key in self._sized_by_config:
            if isinstance(executor, InlineExecutor):
                executor.max_tasks = self._config.max_tasks_process
            elif isinstance(executor, ThreadExecutor):
                executor.max_workers = self._config.thread_workers


class _MapChunk:
    """Calls a task's function on each item of a chunk (see `AppCore.map`). Picklable."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = f"{getattr(fn, '__name__', 'task')}_chunk"

    def __call__(self, items: list[Any]) -> list[Any]:
        fn = self.fn
        return [fn(item) for item in items]
