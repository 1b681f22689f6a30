from qtasks_mp.asyncio import QueueTasks
from qtasks_mp.plugins import AsyncState
from qtasks_mp.registries import AsyncTask

app = QueueTasks()


class MyState(AsyncState):
    pass


@app.task
async def step1(state: MyState):
    await state.set("state", "await_phone")
    await state.update(step=1, prompt="Enter your phone number")
    return "ok"


@app.task(echo=True)
async def step2(self: AsyncTask, state: MyState):
    print(await state.get_all())

    cur = await state.get("state")
    if cur != "await_phone":
        return "error"
    await state.update(step=2)
    await state.delete("state")
    await state.clear()
    return "ok"


if __name__ == "__main__":
    app.run_forever()
