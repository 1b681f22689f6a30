"""examples/cls/test_async_taskutils_wait.py against chain_app."""

import asyncio

from chain_app import add

from qtasks_mp.utils.tasks.async_task_utils import AsyncTaskUtils


async def main():
    chain = AsyncTaskUtils.chain(add(2, 2), add(4), add(8))
    print([task.returning for task in await chain.get(timeout=60)])


asyncio.run(main())
