"""Lease-based leader election against the real API server (coordination.k8s.io/v1)."""

from __future__ import annotations

import threading
import uuid

import kubeenv
import pytest

from flyslice.operator.kube.leader import LeaseElector

pytestmark = [pytest.mark.kube, pytest.mark.timeout(60)]


class Clock:
    """A monotonic clock the test moves by hand: expiry without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def coordination(kube_env: kubeenv.KubeEnv, namespace: str) -> object:
    from kubernetes import client, config

    return client.CoordinationV1Api(config.new_client_from_config(str(kube_env.kubeconfig)))  # type: ignore[no-untyped-call]


def _pair(coordination: object, namespace: str) -> tuple[LeaseElector, LeaseElector, Clock, Clock]:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    ca, cb = Clock(), Clock()
    a = LeaseElector(coordination, namespace, name, identity="a", lease_duration_s=10, renew_s=2, clock=ca)
    b = LeaseElector(coordination, namespace, name, identity="b", lease_duration_s=10, renew_s=2, clock=cb)
    return a, b, ca, cb


def test_one_holder_until_the_lease_expires_on_the_standbys_clock(
    coordination: object, namespace: str
) -> None:
    a, b, ca, cb = _pair(coordination, namespace)
    assert a.try_acquire_or_renew() and a.is_leader
    assert not b.try_acquire_or_renew() and not b.is_leader
    cb.now += 9  # not yet expired as b observed it
    assert not b.try_acquire_or_renew()
    ca.now += 5
    assert a.try_acquire_or_renew()  # a renewal changes the record: b's expiry clock restarts
    cb.now += 9
    assert not b.try_acquire_or_renew()
    cb.now += 11  # a stopped renewing (crashed): b takes over
    assert b.try_acquire_or_renew() and b.is_leader
    ca.now += 1
    assert not a.try_acquire_or_renew() and not a.is_leader  # the old leader sees it lost
    lease = coordination.read_namespaced_lease(a.name, namespace)  # type: ignore[attr-defined]
    assert lease.spec.holder_identity == "b" and lease.spec.lease_transitions == 1


def test_release_hands_over_at_once(coordination: object, namespace: str) -> None:
    a, b, _, _ = _pair(coordination, namespace)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert not a.is_leader
    assert b.try_acquire_or_renew()


def test_concurrent_candidates_exactly_one_wins(coordination: object, namespace: str) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    electors = [
        LeaseElector(coordination, namespace, name, identity=f"c{i}", lease_duration_s=10, renew_s=2)
        for i in range(6)
    ]
    results: dict[str, bool] = {}
    start = threading.Barrier(len(electors))

    def run(e: LeaseElector) -> None:
        start.wait()
        results[e.identity] = e.try_acquire_or_renew()

    threads = [threading.Thread(target=run, args=(e,)) for e in electors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert list(results.values()).count(True) == 1, results
    winner = next(i for i, won in results.items() if won)
    assert coordination.read_namespaced_lease(name, namespace).spec.holder_identity == winner  # type: ignore[attr-defined]
