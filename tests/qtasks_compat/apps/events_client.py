"""The client of events_app.py: adds a task to the worker and prints its result."""

from events_app import add

print(add.add_task(2, 3, timeout=30).returning)
