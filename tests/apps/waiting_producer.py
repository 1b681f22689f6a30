"""A producer that waits for each result, as a Flask view or a script would: the sync
facade, the store given on the command line, no dispatcher of its own.

    python tests/apps/waiting_producer.py STORE N   -> JSON [[returning, status, seconds], ...]
"""

import json
import sys
import time

from qtasks_mp import QueueTasks

app = QueueTasks("web", store=sys.argv[1])


@app.task
async def double(x: int) -> int: ...


out = []
for i in range(int(sys.argv[2])):
    start = time.perf_counter()
    task = app.add_task("double", i, timeout=10)
    out.append(
        [
            None if task is None else task.returning,
            None if task is None else task.status,
            time.perf_counter() - start,
        ]
    )
assert not app.running  # the producer never started a dispatcher
print(json.dumps(out))
