# QTasks docs/en/getting_started.md, block 6, prefix changed (quotes straightened).
from qtasks_mp.asyncio import QueueTasks

app = QueueTasks()


@app.task(name="mytest_async")
async def mytest_async(text: str):
    print(text)
    return text


if __name__ == "__main__":
    app.run_forever()
