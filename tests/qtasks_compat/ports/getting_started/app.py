# QTasks docs/en/getting_started.md, block 4 ("file: app.py"), prefix changed.
# (QTasks' page has typographic quotes, a SyntaxError as printed; straight here.)
from qtasks_mp import QueueTasks

app = QueueTasks()


@app.task(name="mytest")  # Example of a normal task
def mytest(text: str):
    print(text)
    return text


@app.task(name="error_zero")  # Example of a task with an error
def error_zero():
    result = 1 / 0
    return


if __name__ == "__main__":
    app.run_forever()
