"""`myapp` of QTasks' examples/integrations/django: `tasks.py` is its block 3 and
`../manage.py` its block 4, the import prefix changed. `shared.py` and `broken.py`
are ours (a shared task, a module failing on import)."""
