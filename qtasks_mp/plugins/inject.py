"""Parameters that QTasks' plugins fill when a task runs: `Depends`, `State`, and a
pydantic model built from the task's arguments.

`@app.task` calls `prepare(fn)` once. A function with none of these parameters is
returned as it is (the common case costs one look at its annotations). Otherwise it
is wrapped: the wrapper's signature, which `add_task` binds arguments to, leaves out
the filled parameters and spreads a model's fields in place of the model
(`add_task("Test", value=42)` for `item: Item`), as QTasks' pydantic plugin does.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

from .depends import Depends
from .states import State

_P = inspect.Parameter


def _filler(annotation: Any, default: Any) -> Depends | type[State] | None:
    if isinstance(default, Depends):
        return default
    if typing.get_origin(annotation) is typing.Annotated:
        found = [m for m in typing.get_args(annotation)[1:] if isinstance(m, Depends)]
        if found:
            return found[0]
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, State):
        return annotation
    return None


def _model(annotation: Any) -> Any:
    """The pydantic model class a parameter is annotated with, or None."""
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    return None


def prepare(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, or a wrapper filling its plugin parameters (see the module's doc)."""
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        return fn  # a wrapper would change what the call gives (see registries.kind_of)
    try:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # no signature, or annotations that do not resolve: nothing to fill
        return fn
    fillers: dict[str, Depends | type[State]] = {}
    models: dict[str, Any] = {}
    for p in sig.parameters.values():
        ann = hints.get(p.name, p.annotation)
        filler = _filler(ann, p.default)
        if filler is not None:
            fillers[p.name] = filler
        elif _model(ann) is not None and p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY):
            models[p.name] = _model(ann)
    if not fillers and not models:
        return fn
    if len(models) > 1:
        models = {}  # several models: which argument is whose is not ours to guess
    public: list[_P] = []
    for p in sig.parameters.values():
        if p.name in fillers:
            continue
        if p.name in models:
            for field, info in models[p.name].model_fields.items():
                default = _P.empty if info.is_required() else info.get_default()
                public.append(_P(field, _P.POSITIONAL_OR_KEYWORD, default=default))
            continue
        public.append(p)
    public_sig = sig.replace(parameters=_ordered(public))
    worker_values: dict[int, Any] = {}

    def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = public_sig.bind(*args, **kwargs)
        bound.apply_defaults()
        given = dict(bound.arguments)
        for name, model in models.items():
            fields = {f: given.pop(f) for f in model.model_fields if f in given}
            given[name] = model(**fields)
        return given

    def enter(stack: Any, dep: Depends) -> Any:
        value = _opened(dep.func)
        if isinstance(value, contextlib.AbstractContextManager):
            return stack.enter_context(value)
        return value

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = arguments(args, kwargs)
            async with contextlib.AsyncExitStack() as stack:
                for name, filler in fillers.items():
                    given[name] = await _fill_async(stack, filler, worker_values)
                return await fn(**given)

    else:

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = arguments(args, kwargs)
            with contextlib.ExitStack() as stack:
                for name, filler in fillers.items():
                    if isinstance(filler, type):
                        given[name] = filler()
                    elif filler.per_task:
                        given[name] = enter(stack, filler)
                    else:
                        key = id(filler.func)
                        if key not in worker_values:
                            worker_values[key] = enter(contextlib.ExitStack(), filler)
                        given[name] = worker_values[key]
                return fn(**given)

    wrapper.__signature__ = public_sig  # type: ignore[attr-defined]
    del wrapper.__wrapped__  # inspect.signature must read __signature__, not fn's
    return wrapper


async def _fill_async(stack: contextlib.AsyncExitStack, filler: Any, kept: dict[int, Any]) -> Any:
    if isinstance(filler, type):
        return filler()
    if not filler.per_task and id(filler.func) in kept:
        return kept[id(filler.func)]
    target = stack if filler.per_task else contextlib.AsyncExitStack()  # worker: never left
    value = _opened(filler.func)
    if isinstance(value, contextlib.AbstractAsyncContextManager):
        value = await target.enter_async_context(value)
    elif isinstance(value, contextlib.AbstractContextManager):
        value = target.enter_context(value)
    elif inspect.isawaitable(value):
        value = await value
    if not filler.per_task:
        kept[id(filler.func)] = value
    return value


def _opened(func: Callable[..., Any]) -> Any:
    """What a dependency gives: a generator function is a context manager (QTasks)."""
    if inspect.isasyncgenfunction(func):
        return contextlib.asynccontextmanager(func)()
    if inspect.isgeneratorfunction(func):
        return contextlib.contextmanager(func)()
    return func()


def _ordered(params: list[_P]) -> list[_P]:
    """Parameters in an order `Signature` accepts (a model's optional fields may come
    before required ones): by kind, then positional ones without a default first."""
    return sorted(
        params,
        key=lambda p: (p.kind, p.kind <= _P.POSITIONAL_OR_KEYWORD and p.default is not _P.empty),
    )


__all__ = ["prepare"]
