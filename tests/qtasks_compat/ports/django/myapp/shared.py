"""Not QTasks' example: a tasks module with a shared task, which joins the app passed
to autodiscover_tasks (and every other app of the process)."""

from qtasks_mp import shared_task


@shared_task()
def greet(name: str) -> str:
    return f"Hi, {name}!"
