"""What the tests/cluster modules share: one deployed cluster for test_deploy_k3s.py and
test_faults_k3s.py (deploy_harness.Shared), and the order that lets them share it.

The fault scenarios stop nodes and kill pods, so the module that runs them declares it spends the
cluster (``SPENDS_SHARED``): its tests are moved after every other test asking for the same fixture,
whatever order the files were named in, and the cluster is stopped when it is done.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .deploy_harness import Shared


def _spends(item: pytest.Item) -> set[str]:
    spent = set(getattr(getattr(item, "module", None), "SPENDS_SHARED", ()))
    return spent & set(getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that spend a shared fixture run after the last test that only uses it (stable otherwise)."""
    spent = {name for item in items for name in _spends(item)}
    users = [i for i, item in enumerate(items)
             if not _spends(item) and spent & set(getattr(item, "fixturenames", ()))]  # fmt: skip
    if not users:
        return
    last = max(users)
    early = [item for item in items[:last] if _spends(item)]
    if early:
        moved = {id(item) for item in early}
        head = [item for item in items[: last + 1] if id(item) not in moved]
        items[:] = head + early + items[last + 1 :]


@pytest.fixture(scope="session")
def shared_clusters() -> Iterator[Shared]:
    """The shared values; whatever a module left running (a run ended early) is stopped at the end."""
    shared = Shared()
    try:
        yield shared
    finally:
        shared.close()
