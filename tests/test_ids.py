"""Task ids: valid random UUIDs, unique, and never repeated by a forked child."""

from __future__ import annotations

import os
import uuid
import warnings

from qtasks_mp.task import new_uuid


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
