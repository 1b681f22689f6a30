"""QTasks' `qtasks.schemas` names that user code imports: `Task`, `TestConfig`, the
pre-built call (`AsyncTaskCls` / `SyncTaskCls`, our `TaskCall`)."""
