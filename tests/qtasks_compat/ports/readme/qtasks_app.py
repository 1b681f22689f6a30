# QTasks README.md "Quick start" (block 1), then "Generators" (block 3) in the same
# module (it uses the same `app`), prefix changed.
from qtasks_mp import QueueTasks

app = QueueTasks()


@app.task(name="echo")
def echo(text: str) -> str:
    return text


@app.task(name="divide")
def divide(a: int, b: int):
    return a / b


async def gen_handler(value: int) -> int:
    return value + 1


@app.task(generate_handler=gen_handler)
async def counter(n: int):
    for _ in range(n):
        n += 1
        yield n


if __name__ == "__main__":
    app.run_forever()
