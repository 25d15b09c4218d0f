"""The agent's view of the Kubernetes API: its node's NFInstances in, their status out."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from flyslice.nodeagent.agent import SourceUnavailable
from flyslice.nodeagent.spec import InstanceSpec, InstanceStatus, SpecError

log = logging.getLogger("flyslice.nodeagent.kube")

GROUP, VERSION, PLURAL = "flyslice.io", "v1alpha1", "nfinstances"


class KubeSource:
    """Callable desired-state source for ``Agent.run``; ``custom`` is a ``CustomObjectsApi``."""

    def __init__(self, custom: Any, node: str, namespace: str | None = None) -> None:
        self.custom = custom
        self.node = node
        self.namespace = namespace
        self.errors: dict[str, str] = {}
        #: NFInstance name -> uid, from the last successful list (owner references of VNF pods).
        self.uids: dict[str, str] = {}

    def __call__(self) -> list[InstanceSpec]:
        selector = f"flyslice.io/node={self.node}"
        try:
            if self.namespace:
                objs = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, label_selector=selector
                )
            else:
                objs = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector=selector)
        except Exception as exc:  # any transport or API failure means: keep the cache
            raise SourceUnavailable(str(exc)) from exc
        out, self.errors, self.uids = [], {}, {}
        for obj in objs.get("items", []):
            if (obj.get("spec") or {}).get("node") != self.node:
                continue
            meta = obj.get("metadata") or {}
            if meta.get("uid"):
                self.uids[meta.get("name", "")] = meta["uid"]
            try:
                out.append(InstanceSpec.from_object(obj))
            except SpecError as exc:
                self.errors[(obj.get("metadata") or {}).get("name", "?")] = str(exc)
        return out

    def report(self, spec: InstanceSpec, status: InstanceStatus) -> None:
        """Write one instance's status subresource (only this node's agent writes it)."""
        body = {"status": status_body(spec, status)}
        # A merge patch keeps a field it does not name: a restarted sink (no arrivals yet) must not
        # keep reporting its old end-to-end latency to the operator, so null removes it.
        body["status"].setdefault("e2eLatencyMs", None)
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, spec.namespace, PLURAL, spec.name, body
        )


#: Counters written to ``status.counters``. Beyond in/out/dropped/errors: ``rejected`` (messages for
#: another slice, dropped), ``queueDropped`` (this instance's messages a full queue dropped) and, for a
#: tenant of a shared instance, that instance's ``sharedQueueDropped`` and ``sharedOverloaded`` (0/1,
#: sustained queue drops: the scale-out signal). A CRD without them prunes them; nothing fails.
STATUS_COUNTERS = (
    "in",
    "out",
    "dropped",
    "errors",
    "rejected",
    "queueDropped",
    "sharedQueueDropped",
    "sharedOverloaded",
)


def status_body(spec: InstanceSpec, status: InstanceStatus) -> dict[str, Any]:
    """The NFInstance ``status`` for an observed instance (field names of the CRD)."""
    body: dict[str, Any] = {
        "state": status.state if status.state != "Uninstalled" else "Stopped",
        "message": status.message,
        "observedGeneration": spec.generation,
        "counters": {k: int(v) for k, v in status.counters.items() if k in STATUS_COUNTERS},
    }
    if status.address:
        body["address"] = status.address
    if status.latency_ms is not None:
        body["latencyMs"] = round(status.latency_ms, 6)
    if status.e2e_latency_ms is not None:
        # What embedded mode hands the operator directly: the mean end-to-end latency of the messages
        # whose path ends here (sinks only); the operator's Slice observedLatencyMs is the worst of these.
        body["e2eLatencyMs"] = round(status.e2e_latency_ms, 6)
    body["restarts"] = status.restarts
    if status.started_at is not None:
        # When the instance last started (the CRD's startedAt): a restart, a re-creation or an agent
        # that re-installed it on reconnecting shows here as a new time.
        started = datetime.fromtimestamp(status.started_at, tz=UTC)
        body["startedAt"] = started.strftime("%Y-%m-%dT%H:%M:%SZ")
    body["conditions"] = instance_conditions(body["state"], status.message, spec.generation)
    return body


#: NFInstance state -> (Ready, Reconciling, Stalled), the kstatus triple Argo CD and Flux read
#: (deploy/health/). Failed is Stalled: the agent keeps its restart budget in ``restarts`` and a Failed
#: instance needs a person (or a new spec); the transient states are Reconciling: the agent is on it.
_KSTATUS: dict[str, tuple[bool, bool, bool]] = {
    "Running": (True, False, False),
    "Failed": (False, False, True),
    "Pending": (False, True, False),
    "Installing": (False, True, False),
    "Updating": (False, True, False),
    "Stopped": (False, True, False),
}


def instance_conditions(state: str, message: str, generation: int) -> list[dict[str, Any]]:
    """kstatus conditions (Ready, Reconciling, Stalled) for an NFInstance in ``state``.

    No lastTransitionTime: the agent writes status only when this body changes, and a timestamp
    would make every body differ (the operator's Slice conditions carry the transitions).
    """
    ready, reconciling, stalled = _KSTATUS.get(state, (False, True, False))

    def cond(kind: str, holds: bool, reason: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": "True" if holds else "False",
            "reason": reason,
            "message": message if holds != (kind == "Ready") else "",
            "observedGeneration": generation,
        }

    return [
        cond("Ready", ready, state),
        cond("Reconciling", reconciling, state if reconciling else "Reconciled"),
        cond("Stalled", stalled, state if stalled else "NotStalled"),
    ]


#: The EdgeNode condition an agent with MQTT ingress writes: False while it cannot reach the broker.
INGRESS_CONDITION = "IngressReady"


def edgenode_conditions(
    healthy: bool,
    why: str,
    since: str,
    generation: int | None,
    ingress: tuple[bool, str, str] | None = None,
) -> list[dict[str, Any]]:
    """kstatus conditions of an EdgeNode, written with each heartbeat by the node's own agent.

    Ready means "heartbeating and healthy"; an agent that reports itself unhealthy (NFs it cannot
    keep up) is Stalled, since it will not recover on its own. A node whose agent stopped writing
    keeps its last conditions: the operator judges staleness from ``heartbeatTime`` (and moves its NFs).

    ``ingress`` is (reachable, why not, since) for an agent with MQTT ingress: an ``IngressReady``
    condition, False with reason ``BrokerUnreachable`` while the broker cannot be reached. It is a
    warning, not a health verdict: the NFs run, only the devices' readings do not arrive, so Ready and
    Stalled do not change with it (the operator surfaces it on the slices attached to this node).
    """
    gen = {} if generation is None else {"observedGeneration": generation}
    reason = "AgentReady" if healthy else "AgentUnhealthy"
    extra: list[dict[str, Any]] = []
    if ingress is not None:
        reachable, ingress_why, ingress_since = ingress
        extra.append(
            {"type": INGRESS_CONDITION, "status": "True" if reachable else "False",
             "reason": "BrokerConnected" if reachable else "BrokerUnreachable",
             "message": "" if reachable else ingress_why, "lastTransitionTime": ingress_since, **gen}
        )  # fmt: skip
    return [
        {"type": "Ready", "status": "True" if healthy else "False", "reason": reason,
         "message": why, "lastTransitionTime": since, **gen},
        {"type": "Reconciling", "status": "False", "reason": "Heartbeating", "message": "",
         "lastTransitionTime": since, **gen},
        {"type": "Stalled", "status": "False" if healthy else "True", "reason": reason,
         "message": "" if healthy else why, "lastTransitionTime": since, **gen},
        *extra,
    ]  # fmt: skip
