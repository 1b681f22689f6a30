# QTasks docs/en/examples/index.md, block 1, prefix changed. The lines after
# run_forever() never run (run_forever() returns only at Ctrl-C), in QTasks as here.
from qtasks_mp import QueueTasks

app = QueueTasks()


@app.task(name="print_text")
def print_text(text: str):
    print(text)
    return text


if __name__ == "__main__":
    app.run_forever()
    # Adding a task to the queue
    app.add_task("print_text", "Hello, world!")
    # Result: "Hello, world!"
