"""Leader election with a ``coordination.k8s.io/v1`` Lease, the way client-go's leaderelection does it.

Only the holder of the Lease runs the operator's handlers and reconcile loop; other replicas wait.
Writes are compare-and-swap on the Lease's ``resourceVersion``, so two replicas can never both
believe they acquired it. Expiry is judged on this replica's own clock, from when it last saw the
record change (not from the timestamps another machine wrote), so clock skew between replicas
cannot make a live leader look expired. The leader renews every ``renew_s``; if it cannot renew
within ``lease_duration_s`` it steps down (and the operator exits, to restart as a candidate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("flyslice.operator.leader")

#: On the operator's own pod: ``"true"`` while this replica leads, ``"false"`` otherwise. The
#: ``flyslice-console`` Service selects on it, so the console reaches the leader only.
LEADER_LABEL = "flyslice.io/leader"


def default_identity() -> str:
    """``<pod or host name>_<random>``: unique per process, readable in ``kubectl get lease``."""
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    duration_s: float
    transitions: int
    resource_version: str


class LeaseElector:
    """Acquire and hold one Lease. ``coordination`` is a ``kubernetes.client.CoordinationV1Api``;
    its calls are blocking, so they run in worker threads."""

    def __init__(
        self,
        coordination: Any,
        namespace: str,
        name: str = "flyslice-operator",
        *,
        identity: str | None = None,
        lease_duration_s: float = 15.0,
        renew_s: float = 5.0,
        retry_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not renew_s < lease_duration_s:
            raise ValueError("renew_s must be shorter than lease_duration_s")
        self.api = coordination
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration_s = lease_duration_s
        self.renew_s = renew_s
        self.retry_s = retry_s
        self._clock = clock
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None
        self.is_leader = False

    # -- one attempt -----------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One compare-and-swap attempt; True when this replica holds the Lease afterwards."""
        from kubernetes.client.exceptions import ApiException

        now = self._clock()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("reading lease %s/%s failed: %s", self.namespace, self.name, exc.reason)
                return self._still_valid(now)
            return self._create(now)
        spec = lease.spec
        record = LeaseRecord(
            holder=spec.holder_identity or "",
            duration_s=float(spec.lease_duration_seconds or self.lease_duration_s),
            transitions=int(spec.lease_transitions or 0),
            resource_version=lease.metadata.resource_version,
        )
        if record != self._observed:
            self._observed, self._observed_at = record, now
        mine = record.holder == self.identity
        expired = not record.holder or now >= self._observed_at + record.duration_s
        if not mine and not expired:
            self.is_leader = False
            return False
        micro = datetime.now(UTC)
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = int(self.lease_duration_s)
        spec.renew_time = micro
        if not mine:
            spec.acquire_time = micro
            spec.lease_transitions = record.transitions + 1
        try:
            updated = self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status != 409:  # 409: someone else wrote first; they win this round
                log.warning("updating lease %s/%s failed: %s", self.namespace, self.name, exc.reason)
            return self._still_valid(now) if mine else False
        self._seen_own_write(updated, now)
        if not mine:
            log.info("became leader (lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        return True

    def _create(self, now: float) -> bool:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        micro = datetime.now(UTC)
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=int(self.lease_duration_s),
                acquire_time=micro,
                renew_time=micro,
                lease_transitions=0,
            ),
        )
        try:
            created = self.api.create_namespaced_lease(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                log.warning("creating lease %s/%s failed: %s", self.namespace, self.name, exc.reason)
            return False
        self._seen_own_write(created, now)
        log.info("became leader (new lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        return True

    def _seen_own_write(self, lease: Any, now: float) -> None:
        spec = lease.spec
        self._observed = LeaseRecord(
            self.identity, float(spec.lease_duration_seconds), int(spec.lease_transitions or 0),
            lease.metadata.resource_version,
        )  # fmt: skip
        self._observed_at = self._renewed_at = now
        self.is_leader = True

    @property
    def holder(self) -> str:
        """Who holds the Lease: this replica's identity while it leads, else the holder it last read
        (``""`` before the first read, or when the Lease was released and nobody has taken it yet)."""
        if self.is_leader:
            return self.identity
        return self._observed.holder if self._observed is not None else ""

    def _still_valid(self, now: float) -> bool:
        """After a failed renewal: still leader only while the last successful renewal has not expired."""
        self.is_leader = self._renewed_at is not None and now < self._renewed_at + self.lease_duration_s
        return self.is_leader

    def release(self) -> None:
        """Give the Lease up (on shutdown) so a standby takes over at once instead of after expiry."""
        from kubernetes.client.exceptions import ApiException

        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = ""
            lease.spec.lease_duration_seconds = 1
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
            log.info("released lease %s/%s", self.namespace, self.name)
        except ApiException as exc:
            log.warning("releasing lease %s/%s failed: %s", self.namespace, self.name, exc.reason)

    # -- loops -------------------------------------------------------------------------------

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this replica is the leader (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            if await asyncio.to_thread(self.try_acquire_or_renew):
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.retry_s)
        return False

    async def hold(self, stop: asyncio.Event, before_release: Callable[[], object] | None = None) -> None:
        """Renew until ``stop`` is set (then release) or leadership is lost (then return at once).

        ``before_release`` (blocking, run in a thread) runs just before a release, while this replica
        still holds the Lease: the operator takes its pod's leader label off there."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.renew_s)
            if stop.is_set():
                break
            if not await asyncio.to_thread(self.try_acquire_or_renew):
                log.error("lost the lease %s/%s: stepping down", self.namespace, self.name)
                return
        if before_release is not None:
            await asyncio.to_thread(before_release)
        await asyncio.to_thread(self.release)


class LeaderPodLabel:
    """Keeps :data:`LEADER_LABEL` on this replica's own pod equal to whether it leads.

    ``core`` is a ``kubernetes.client.CoreV1Api``. The pod comes from the downward API (``POD_NAME``,
    ``POD_NAMESPACE``); when either is unknown (not in a pod, or an older manifest) the label is
    never written and no other pod is guessed at. A failed write is logged and never affects
    leadership: the label steers the console Service, nothing else.
    """

    def __init__(self, core: Any, namespace: str | None, pod: str | None) -> None:
        self.api = core
        self.namespace = namespace or ""
        self.pod = pod or ""
        self.value: bool | None = None  # what was last written successfully

    @classmethod
    def from_env(cls, core: Any) -> LeaderPodLabel:
        return cls(core, os.environ.get("POD_NAMESPACE"), os.environ.get("POD_NAME"))

    @property
    def enabled(self) -> bool:
        return bool(self.namespace and self.pod)

    def set(self, leader: bool) -> bool:
        """Write the label (blocking); True when the pod now carries it."""
        from kubernetes.client.exceptions import ApiException

        if not self.enabled:
            return False
        body = {"metadata": {"labels": {LEADER_LABEL: "true" if leader else "false"}}}
        try:
            self.api.patch_namespaced_pod(self.pod, self.namespace, body)
        except ApiException as exc:
            log.warning(
                "cannot label pod %s/%s %s=%s: %s",
                self.namespace, self.pod, LEADER_LABEL, str(leader).lower(), exc.reason,
            )  # fmt: skip
            return False
        except Exception as exc:  # the API server unreachable: the label waits for the next try
            log.warning("cannot label pod %s/%s: %s", self.namespace, self.pod, exc)
            return False
        self.value = leader
        return True

    async def keep(self, leader: bool, stop: asyncio.Event, retry_s: float) -> None:
        """Write the label, retrying every ``retry_s`` until it sticks or ``stop`` is set."""
        while self.enabled and not stop.is_set():
            if await asyncio.to_thread(self.set, leader):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_s)
