"""QTasks' `qtasks.utils` paths."""
