# QTasks docs/en/getting_started.md, block 5 ("file: add_tasks.py"), prefix unchanged
# (it imports only the app module); typographic quotes straightened; the results
# are printed so that the test can read them.
from app import app, mytest

# Adding a task by name via an application instance
print(app.add_task("mytest", "Test").status)

# Calling via a registered task function
print(mytest.add_task("Test").status)

# Adding a task with a timeout (in seconds)
print(mytest.add_task("Test", timeout=50).returning)

# Adding a task that will result in an error
print(app.add_task("error_zero").status)
