"""QTasks' command line, `qtasks -A module:app run`, on ours: `qtasks-mp -A module:app run`.

`-A/--app TARGET` before the command is moved to where our commands take it:
`run TARGET`, and `stats inspect tasks` (QTasks: the registered tasks) becomes
`inspect TARGET`, which prints them from the imported app.
"""

from __future__ import annotations

from collections.abc import Sequence


def translate(argv: Sequence[str]) -> list[str]:
    """QTasks' argument order to ours; anything else is returned as it is."""
    args = list(argv)
    if len(args) < 3 or args[0] not in ("-A", "--app"):
        if args and args[0].startswith("--app="):
            args = ["--app", args[0].split("=", 1)[1], *args[1:]]
        else:
            return args
    target, rest = args[1], args[2:]
    if rest[:1] == ["run"]:
        return ["run", target, *rest[1:]]
    if rest[:2] == ["stats", "inspect"]:
        return ["inspect", target, *rest[2:]]
    return args


def inspect_lines(app: object, what: Sequence[str]) -> str:
    """`stats inspect tasks [NAME...]` / `stats inspect app`: QTasks' inspection text."""
    from .stats import InspectStats

    inspect = InspectStats(app)
    if what[:1] == ["app"]:
        return str(inspect.app())
    names = list(what[1:]) if what[:1] == ["tasks"] else list(what)
    return str(inspect.tasks(*names))


__all__ = ["inspect_lines", "translate"]
