# QTasks README.md "Calling tasks" (block 2) and the generator's result (block 4): the
# commented lines as code. README's block 4 awaits, but `app` is the sync QueueTasks
# there, whose add_task returns the Task (in QTasks as here): called without await.
from qtasks_app import counter, divide, echo

print(echo.add_task("Hello", timeout=50).returning)
print(divide.add_task(1, 0, timeout=50).status)
print(counter.add_task(5, timeout=50).returning)
