"""The PostgreSQL server of the store tests: one throw-away cluster per session.

Missing server binaries fail the tests that need them, with the fix; they never skip.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from pg_support import Cluster, ClusterError

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    try:
        cluster = Cluster.start()
    except ClusterError as e:
        pytest.fail(f"cannot start a PostgreSQL server for the tests: {e}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_schema() -> str:
    """A schema name no other test uses: the store creates it, so tests share nothing."""
    return f"t{next(_names)}"


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """The URL of a fresh, empty database owned by the plain test user."""
    return pg_cluster.fresh_database(f"db{next(_names)}")
