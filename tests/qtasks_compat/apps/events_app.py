"""architecture/components/schemas.md block 1, `@app.events.on.worker_running` (a
handler of QTasks' worker-running event), in QTasks' worker: it prints each event it
is told about. Our own app around the snippet's line (the page shows no more)."""

from qtasks_mp import QueueTasks

app = QueueTasks()


@app.events.on.worker_running
def worker_running(**kwargs):
    print("event: worker_running")


@app.events.on.task_success()
def task_success(task, **kwargs):
    print(f"event: task_success {task.task_name} {task.returning}")


@app.events.on.stopping()
async def stopping(**kwargs):
    print("event: stopping")


@app.task
def add(a, b):
    return a + b


if __name__ == "__main__":
    app.run_forever()
