"""Not QTasks' example: a tasks module that fails on import."""

raise RuntimeError("broken tasks module")
