"""Task ids: valid random UUIDs, unique, never repeated by a forked child; a `Task`
pickled before ids were kept as ints still loads."""

from __future__ import annotations

import os
import pickle
import uuid
import warnings
from typing import Any

from qtasks_mp.task import Task, TaskRecord, new_key, new_uuid


def test_ids_are_version_4_uuids_and_unique() -> None:
    ids = [new_uuid() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in ids)
    for u in ids[:300]:  # a whole buffer and more
        assert uuid.UUID(str(u)) == u and hash(uuid.UUID(str(u))) == hash(u)


def test_a_forked_child_does_not_reuse_the_parents_buffered_ids() -> None:
    new_uuid()  # the parent now holds a buffer of ready ids
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # child
        os.write(write, new_uuid().bytes)
        os._exit(0)
    os.close(write)
    child_id = uuid.UUID(bytes=os.read(read, 16))
    os.close(read)
    os.waitpid(pid, 0)
    parent_next = [new_uuid() for _ in range(300)]
    assert child_id not in parent_next


class _PickledBefore:
    """Pickles as a `Task` did before its uuid was kept as an int: the same class, its
    slots' state with `uuid` (a UUID) and no `_key` / `_uuid`."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def __reduce__(self) -> tuple[Any, ...]:
        return (object.__new__, (Task,), (None, self.state))


def test_a_task_pickled_by_the_version_before_loads_and_one_pickled_now_too() -> None:
    u = new_uuid()
    old = {"status": "success", "uuid": u, "task_name": "t", "returning": 5, "_host": None}
    task = pickle.loads(pickle.dumps(_PickledBefore(old)))
    assert type(task) is Task
    assert task.uuid == u and task._key == u.int and task.returning == 5
    record = TaskRecord(new_key(), "t", "inline", 0, (1,), {}, 0.0)
    again = pickle.loads(pickle.dumps(Task(record)))
    assert again.uuid == record.uuid and again.args == (1,)
