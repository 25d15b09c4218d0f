"""The operator's I/O with the Kubernetes API: flyslice objects in, NFInstances, status and Events out.

The reconcile core (:mod:`.reconcile`) is pure; this module is everything around it that talks to the
API server, through the official ``kubernetes`` client:

* :func:`manifests_from_objects`: API objects -> :class:`Manifest` values validated exactly like git YAML;
* :func:`derive_state`: the controller's memory rebuilt from the NFInstances and Slice status that
  exist, so that an operator restart re-plans from where things run and nothing moves;
* :class:`ClusterClient`: list objects, apply NFInstances idempotently (create / patch / delete by
  deterministic name), patch Slice status, post Events. It counts every HTTP request it makes.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from flyslice.crds import is_namespaced
from flyslice.operator.intake.catalog import Catalog

# Re-exported: it lives in intake so that `flyslice diff` (operator/review) can read the cluster too.
from flyslice.operator.intake.manifests import manifests_from_objects as manifests_from_objects
from flyslice.operator.planning.actions import InstanceAction
from flyslice.operator.reconcile import (
    ControllerState,
    InstanceObservation,
    NodeObservation,
    Observation,
    SliceRecord,
)
from flyslice.solver.model import Assignment, Flavor

log = logging.getLogger("flyslice.operator.cluster")
T = TypeVar("T")
R = TypeVar("R")

GROUP, VERSION = "flyslice.io", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PLURALS = {
    "EdgeNode": "edgenodes",
    "NFPackage": "nfpackages",
    "NetworkService": "networkservices",
    "Slice": "slices",
    "NFInstance": "nfinstances",
    "GitSource": "gitsources",
}
#: The kinds that make up the desired state the solver sees.
DESIRED_KINDS = ("EdgeNode", "NFPackage", "NetworkService", "Slice")
MANAGED_BY = "app.kubernetes.io/managed-by"
OPERATOR = "flyslice-operator"
SLICE_LABEL = "flyslice.io/slice"
COMPONENT = "flyslice-operator"
#: Where Events about cluster-scoped objects (EdgeNodes) go, as kubectl does for Nodes.
CLUSTER_EVENTS_NAMESPACE = "default"


# -- API objects -> manifests ------------------------------------------------------------------


def object_ref(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind", "")), str(meta.get("namespace") or ""), str(meta.get("name", ""))


# -- restart: the controller's memory from what exists ------------------------------------------


def nf_id(spec: Mapping[str, Any]) -> str:
    """The solver's NF id of an NFInstance spec (``role`` or ``role@attachment``, see expansion)."""
    attachment = spec.get("attachment")
    return f"{spec['role']}@{attachment}" if attachment else str(spec["role"])


def derive_state(
    catalog: Catalog, instances: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]]
) -> ControllerState:
    """What the previous operator life decided, read back from the cluster.

    Each slice with NFInstances gets a record with those instances as its actions and their nodes
    and flavours as its assignments, so the first re-plan passes them to the solver as ``current``
    (whose migration term keeps them in place) and the apply step finds nothing to change. The plan
    fingerprint stays empty: the first pass re-plans once, from these assignments.
    """
    by_slice: dict[str, list[InstanceAction]] = {}
    for obj in instances:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        if (meta.get("labels") or {}).get(MANAGED_BY) != OPERATOR or meta.get("deletionTimestamp"):
            continue
        try:
            key = f"{meta['namespace']}/{spec['slice']}"
            action = InstanceAction(meta["namespace"], meta["name"], dict(spec))
            nf_id(spec), action.node, Flavor(spec["flavor"])
        except (KeyError, ValueError):
            continue
        by_slice.setdefault(key, []).append(action)
    status_of = {
        f"{(s.get('metadata') or {}).get('namespace')}/{(s.get('metadata') or {}).get('name')}": s.get(
            "status"
        )
        or {}
        for s in slices
    }
    records: dict[str, SliceRecord] = {}
    for spec_ in catalog.slices.values():
        key = spec_.key
        actions = sorted(by_slice.get(key, []), key=lambda a: a.name)
        if not actions:
            continue
        status = status_of.get(key, {})
        expires = _parse_time(status.get("expiresAt"))
        first = expires - spec_.lifetime_s if expires is not None and spec_.lifetime_s else None
        records[key] = SliceRecord(
            fingerprint="",
            admitted=True,
            service=status.get("networkService"),
            assignments={nf_id(a.spec): Assignment(a.node, Flavor(a.spec["flavor"])) for a in actions},
            path_latency_ms={
                p["name"]: float(p["predictedLatencyMs"])
                for p in status.get("paths") or []
                if "name" in p and "predictedLatencyMs" in p
            },
            budget_ms=spec_.max_latency_ms,
            reasons=(),
            first_placed_at=first,
            expires_at=expires,
            revision=str(status.get("lastAppliedRevision", "")),
            actions=tuple(actions),
        )
    return ControllerState(slices=records)


def observe(edge_nodes: Iterable[Mapping[str, Any]], instances: Iterable[Mapping[str, Any]]) -> Observation:
    """Heartbeats and load from EdgeNode status, instance states from NFInstance status (agents write both)."""
    nodes: dict[str, NodeObservation] = {}
    for obj in edge_nodes:
        status = obj.get("status") or {}
        load = status.get("load")
        nodes[(obj.get("metadata") or {}).get("name", "")] = NodeObservation(
            heartbeat_at=_parse_time(status.get("heartbeatTime")),
            load=float(load) if isinstance(load, int | float) else None,
        )
    found: dict[tuple[str, str], InstanceObservation] = {}
    for obj in instances:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        if not status.get("state"):
            continue
        # A status written for an older spec describes what ran before: not yet this instance.
        current = status.get("observedGeneration", meta.get("generation")) == meta.get("generation")
        state = str(status["state"]) if current else "Pending"
        spec = obj.get("spec") or {}
        shared = spec.get("sharedInstance") or {}
        counters = status.get("counters") or {}
        hot = current and isinstance(counters, Mapping) and bool(counters.get("sharedOverloaded"))
        # What the agent measured where the slice's paths end (sinks): the Slice's observedLatencyMs is
        # the worst of these, as embedded (reconcile._status). Only for the current spec: an old one's
        # figure describes what ran before.
        e2e = status.get("e2eLatencyMs")
        e2e_ms = None
        if current and isinstance(e2e, int | float) and not isinstance(e2e, bool):
            e2e_ms = float(e2e)
        found[(meta.get("namespace", ""), meta.get("name", ""))] = InstanceObservation(
            state=state,
            node=str(spec.get("node", "")),
            message=str(status.get("message", "")),
            e2e_latency_ms=e2e_ms,
            # The scale-out signal, from the tenant's own status (its agent writes the instance's flag).
            shared_instance=str(shared.get("name", "")) if isinstance(shared, Mapping) else "",
            shared_overloaded=hot,
        )
    return Observation(nodes, found)


def node_ingress(edge_nodes: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """EdgeNode name -> "" (broker reachable) or why not, for each node whose agent reports MQTT ingress
    (its ``IngressReady`` condition). The message loses the agent's running "(down …s, n attempts…)"
    tail, so a Slice status built from it changes when the fault does, not on every heartbeat."""
    out: dict[str, str] = {}
    for obj in edge_nodes:
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") != "IngressReady":
                continue
            why = (
                "" if cond.get("status") == "True" else str(cond.get("message") or "MQTT broker unreachable")
            )
            out[(obj.get("metadata") or {}).get("name", "")] = why.split(" (down ", 1)[0]
    return out


def slice_ingress_conditions(
    slice_obj: Mapping[str, Any], ingress: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The Slice's ``IngressReady`` condition from the nodes it is attached to: False (reason
    ``BrokerUnreachable``, naming each node and why) while an attached node's agent cannot reach its
    MQTT broker, True once they all can; none when no attached node has MQTT ingress. A warning
    beside the phase: the slice's NFs run (it may be Ready), its devices' readings do not arrive."""
    attached = sorted(
        {str(a.get("node")) for a in (slice_obj.get("spec") or {}).get("attachments") or [] if a.get("node")}
        & set(ingress)
    )
    if not attached:
        return []
    down = [f"node {n}: {ingress[n]}" for n in attached if ingress[n]]
    if down:
        return [
            {
                "type": "IngressReady",
                "status": "False",
                "reason": "BrokerUnreachable",
                "message": "; ".join(down),
            }
        ]
    return [{"type": "IngressReady", "status": "True", "reason": "BrokerConnected", "message": ""}]


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- desired objects --------------------------------------------------------------------------


def instance_object(action: InstanceAction, owner_uid: str | None) -> dict[str, Any]:
    """The NFInstance for ``action``: labelled as the operator's, owned by its Slice."""
    obj = action.as_object()
    obj["metadata"]["labels"][MANAGED_BY] = OPERATOR
    if owner_uid:
        obj["metadata"]["ownerReferences"] = [
            {
                "apiVersion": API_VERSION,
                "kind": "Slice",
                "name": str(action.spec["slice"]),
                "uid": owner_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return obj


def merge_conditions(
    new: Sequence[Mapping[str, Any]], old: Sequence[Mapping[str, Any]], now: float, generation: int
) -> list[dict[str, Any]]:
    """``new`` with ``lastTransitionTime`` kept from ``old`` where a condition's status did not change."""
    before = {c.get("type"): c for c in old}
    out = []
    for c in new:
        prev = before.get(c["type"])
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == c["status"] else None
        out.append({**c, "lastTransitionTime": since or rfc3339(now), "observedGeneration": generation})
    return out


def status_changed(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether patching ``wanted`` over ``current`` would change anything."""
    return any(current.get(k) != v for k, v in wanted.items())


_SLICE_EVENT = re.compile(r"^slice (?P<ns>[^/\s]+)/(?P<name>[^:\s]+): (?P<rest>.*)$", re.S)
_NODE_EVENT = re.compile(r"^(?:node|load on node) (?P<name>\S+) ")
#: Scale-out decisions (operator/planning/scale_out.py), on the EdgeNode of the overloaded instance.
_SCALE_OUT_EVENT = re.compile(r"^(?P<reason>ScaledOut|ScaleOut[A-Za-z]+): pool \S+ on node (?P<name>\S+?): ")


@dataclass(frozen=True)
class EventSpec:
    kind: str
    namespace: str
    name: str
    reason: str
    message: str
    type: str = "Normal"


def event_for(message: str) -> EventSpec | None:
    """A reconcile decision (``Outcome.events``) as a Kubernetes Event on the object it is about."""
    if m := _SLICE_EVENT.match(message):
        rest = m["rest"]
        if rest.startswith("placed"):
            reason, type_ = "Placed", "Normal"
        elif rest.startswith("re-placed"):
            reason, type_ = "Replaced", "Normal"
        elif rest.startswith("not admitted"):
            reason, type_ = "Infeasible", "Warning"
        elif rest.startswith("new intent not admitted"):
            reason, type_ = "NewIntentNotAdmitted", "Warning"
        elif rest.startswith("new intent admitted"):
            reason, type_ = "NewIntentAdmitted", "Normal"
        elif rest.startswith("node unavailable"):  # held on a lost node: nowhere to move its NFs
            reason, type_ = "NodeUnavailable", "Warning"
        elif rest.startswith("cannot be planned"):
            reason, type_ = "Stalled", "Warning"
        elif rest.startswith("lifetime over"):
            reason, type_ = "Expired", "Normal"
        elif rest.startswith("scale-out"):
            reason, type_ = "ScaledOut", "Normal"
        else:
            reason, type_ = "Reconciled", "Normal"
        return EventSpec("Slice", m["ns"], m["name"], reason, rest, type_)
    if m := _SCALE_OUT_EVENT.match(message):
        warn = m["reason"] == "ScaleOutNotApplied"
        return EventSpec("EdgeNode", "", m["name"], m["reason"], message, "Warning" if warn else "Normal")
    if m := _NODE_EVENT.match(message):
        reason = "HeartbeatLost" if message.startswith("node ") else "LoadChanged"
        return EventSpec(
            "EdgeNode", "", m["name"], reason, message, "Warning" if reason == "HeartbeatLost" else "Normal"
        )
    return None


# -- the client -------------------------------------------------------------------------------


class WriteSink(Protocol):
    """What learns of the operator's own writes (:class:`.cache.WatchCache`)."""

    def record(self, kind: str, obj: Mapping[str, Any]) -> None: ...

    def forget(self, kind: str, namespace: str, name: str) -> None: ...


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class ClusterClient:
    """Synchronous API access for the operator; call it from a worker thread, not the event loop."""

    def __init__(self, api_client: Any, *, workers: int = 8) -> None:
        from kubernetes import client

        self.api = api_client
        # Typed Any: the client's generated stubs return ``object`` for custom objects (plain dicts).
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.core: Any = client.CoreV1Api(api_client)
        self.workers = max(1, workers)
        self.requests = 0
        self._count_lock = threading.Lock()
        #: Where the operator's own writes go as the server answered them (the watch-fed cache), so a
        #: pass never acts on a state older than its own last writes.
        self.sink: WriteSink | None = None
        self._count(api_client)
        self._streams: Any = None

    def _count(self, api_client: Any) -> None:
        original = api_client.call_api

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._count_lock:
                self.requests += 1
            return original(*args, **kwargs)

        api_client.call_api = counted

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None, *, pool: int = 8) -> ClusterClient:
        """``pool`` writes in flight; the connection pool has 4 more for what runs beside them (Lease
        renewals, the leader label): at exactly ``pool`` connections, urllib3 discarded the extra ones
        and each new one paid a TLS handshake (seen in the 500-slice benchmark's profile)."""
        return cls(api_client_for(kubeconfig, pool=pool + 4), workers=pool)

    # -- read --

    def list_kind(
        self, kind: str, *, label_selector: str = "", namespace: str | None = None
    ) -> list[dict[str, Any]]:
        plural = PLURALS[kind]
        if namespace and is_namespaced(kind):
            doc = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, label_selector=label_selector
            )
        else:
            doc = self.custom.list_cluster_custom_object(
                GROUP, VERSION, plural, label_selector=label_selector
            )
        items: list[dict[str, Any]] = doc.get("items", [])
        for item in items:  # list items carry no kind/apiVersion of their own
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", API_VERSION)
        return items

    def list_raw(
        self, kind: str, *, namespace: str | None, label_selector: str
    ) -> tuple[list[dict[str, Any]], str]:
        """(items as plain JSON, the list's resourceVersion): the start of a watch."""
        resp = self._collection(self.custom, kind, namespace, label_selector, _preload_content=False)
        doc = json.loads(resp.data)
        return list(doc.get("items") or []), str((doc.get("metadata") or {}).get("resourceVersion", ""))

    def watch_raw(
        self,
        kind: str,
        *,
        namespace: str | None,
        label_selector: str,
        resource_version: str,
        timeout_s: float,
    ) -> Any:
        """A watch from ``resource_version`` as a streaming response (one JSON event a line), on a
        connection pool of its own: the watches hold their connections, the writes need theirs."""
        if self._streams is None:
            from kubernetes import client

            cfg = copy.copy(self.api.configuration)
            cfg.connection_pool_maxsize = 32
            api = client.ApiClient(cfg)
            self._count(api)
            self._streams = client.CustomObjectsApi(api)
        return self._collection(
            self._streams, kind, namespace, label_selector, watch=True, allow_watch_bookmarks=True,
            resource_version=resource_version, timeout_seconds=int(timeout_s),
            _preload_content=False, _request_timeout=(10, timeout_s + 30),
        )  # fmt: skip

    @staticmethod
    def _collection(api: Any, kind: str, namespace: str | None, label_selector: str, **kw: Any) -> Any:
        if namespace and is_namespaced(kind):
            return api.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS[kind], label_selector=label_selector, **kw
            )
        return api.list_cluster_custom_object(
            GROUP, VERSION, PLURALS[kind], label_selector=label_selector, **kw
        )

    # -- NFInstances --

    def apply_instances(
        self,
        desired: Sequence[InstanceAction],
        existing: Iterable[Mapping[str, Any]],
        owners: Mapping[tuple[str, str], str],
    ) -> ApplyResult:
        """Make the operator's NFInstances exactly ``desired``: create, patch the spec of, or delete
        only what differs. ``existing``: the NFInstances labelled as the operator's; ``owners``:
        (namespace, slice) -> Slice uid. Idempotent; one failing object never stops the others.
        Writes go out ``workers`` at a time: a burst of new slices is thousands of small requests."""
        have = {
            ((o.get("metadata") or {}).get("namespace", ""), (o.get("metadata") or {}).get("name", "")): o
            for o in existing
            if not (o.get("metadata") or {}).get("deletionTimestamp")
        }
        work: list[tuple[str, Any]] = []
        for action in desired:
            owner = owners.get((action.namespace, str(action.spec["slice"])))
            current = have.get((action.namespace, action.name))
            if current is None:
                # The body is built by the worker that sends it: a burst holds thousands at once otherwise.
                work.append(("write", (action, owner, None)))
            elif _instance_differs(current, instance_object(action, owner)):
                work.append(("write", (action, owner, current)))
        wanted = {(a.namespace, a.name) for a in desired}
        work += [("delete", key) for key in sorted(have.keys() - wanted)]
        result = ApplyResult()
        for ref, outcome in self.parallel(self._apply_one, work):
            if outcome in ("created", "updated", "deleted"):
                getattr(result, outcome).append(ref)
            elif outcome != "unchanged":
                result.failed[ref] = outcome
        return result

    def parallel(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over ``items`` with up to ``workers`` requests in flight; results in order."""
        from concurrent.futures import ThreadPoolExecutor

        if len(items) <= 1:
            return [fn(i) for i in items]
        out: list[R] = []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            # In chunks: pool.map queues a future per item up front.
            for start in range(0, len(items), 512):
                out += pool.map(fn, items[start : start + 512])
        return out

    def _apply_one(self, item: tuple[str, Any]) -> tuple[str, str]:
        """One NFInstance write: (namespace/name, created|updated|deleted or the API's refusal)."""
        from kubernetes.client.exceptions import ApiException

        what, arg = item
        if what == "delete":
            ref = f"{arg[0]}/{arg[1]}"
            try:
                self.delete_instance(*arg)
            except ApiException as exc:
                return ref, _api_reason(exc)
            return ref, "deleted"
        action, owner, current = arg
        body = instance_object(action, owner)
        ref = f"{action.namespace}/{action.name}"
        plural = PLURALS["NFInstance"]
        try:
            if current is None:
                try:
                    made = _json(
                        self.custom.create_namespaced_custom_object(
                            GROUP, VERSION, action.namespace, plural, body, _preload_content=False
                        )
                    )
                    self._wrote("NFInstance", made)
                    return ref, "created"
                except ApiException as exc:
                    if exc.status != 409:  # 409: it exists after all (a stale list): update it
                        raise
                    current = self.custom.get_namespaced_custom_object(
                        GROUP, VERSION, action.namespace, plural, action.name
                    )
                    self._wrote("NFInstance", current)
                    if not _instance_differs(current, body):
                        return ref, "unchanged"
            labels = {**((current.get("metadata") or {}).get("labels") or {}), **body["metadata"]["labels"]}
            patch = [
                {"op": "replace", "path": "/spec", "value": body["spec"]},
                {"op": "add", "path": "/metadata/labels", "value": labels},
            ]
            if "ownerReferences" in body["metadata"]:
                refs = body["metadata"]["ownerReferences"]
                patch.append({"op": "add", "path": "/metadata/ownerReferences", "value": refs})
            patched = _json(self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, action.namespace, plural, action.name, patch,
                _content_type="application/json-patch+json", _preload_content=False,
            ))  # fmt: skip
            self._wrote("NFInstance", patched)
            return ref, "updated"
        except ApiException as exc:
            return ref, _api_reason(exc)

    def delete_instance(self, namespace: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURALS["NFInstance"], name
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        if self.sink is not None:
            self.sink.forget("NFInstance", namespace, name)

    def set_finalizers(self, kind: str, obj: Mapping[str, Any], finalizers: Sequence[str]) -> None:
        """Replace ``obj``'s finalizers, only if it is still the version read (else 409/422: the
        caller retries from a fresher read)."""
        meta = obj.get("metadata") or {}
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
            {"op": "add", "path": "/metadata/finalizers", "value": list(finalizers)},
        ]
        kw = {"_content_type": "application/json-patch+json"}
        if is_namespaced(kind):
            done = self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, meta.get("namespace"), PLURALS[kind], meta.get("name"), patch, **kw
            )
        else:
            done = self.custom.patch_cluster_custom_object(
                GROUP, VERSION, PLURALS[kind], meta.get("name"), patch, **kw
            )
        self._wrote(kind, done)

    def _wrote(self, kind: str, obj: Any) -> None:
        if self.sink is not None and isinstance(obj, Mapping):
            self.sink.record(kind, obj)

    def slice_instances(self, namespace: str, slice_name: str) -> list[dict[str, Any]]:
        return self.list_kind(
            "NFInstance",
            namespace=namespace,
            label_selector=f"{MANAGED_BY}={OPERATOR},{SLICE_LABEL}={slice_name}",
        )

    # -- status and events --

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        body = {"status": dict(status)}
        if is_namespaced(kind):
            done = _json(
                self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURALS[kind], name, body, _preload_content=False
                )
            )
        else:
            done = self.custom.patch_cluster_custom_object_status(GROUP, VERSION, PLURALS[kind], name, body)
        self._wrote(kind, done)

    def post_event(
        self, involved: Mapping[str, Any], reason: str, message: str, type_: str = "Normal"
    ) -> str:
        """A core/v1 Event on ``involved`` (an object with kind, metadata.name/namespace/uid); its name."""
        meta = involved.get("metadata") or {}
        namespace = meta.get("namespace") or CLUSTER_EVENTS_NAMESPACE
        now = datetime.now(UTC)
        body = {
            "metadata": {"generateName": f"{meta.get('name', 'flyslice')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", API_VERSION),
                "kind": involved.get("kind", ""),
                "name": meta.get("name", ""),
                "namespace": meta.get("namespace") or "",
                "uid": meta.get("uid", ""),
            },
            "reason": reason,
            # Events hold at most 1 kB of message.
            "message": message if len(message) <= 1000 else message[:997] + "...",
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        # Raw response: the Event's name is all that is needed, not the client's model of it.
        resp = self.core.create_namespaced_event(namespace, body, _preload_content=False)
        return str((json.loads(resp.data).get("metadata") or {}).get("name", ""))

    def patch_event(self, namespace: str, name: str, count: int) -> None:
        """An Event seen again: its ``count`` and ``lastTimestamp`` (client-go's de-duplication)."""
        body = {"count": count, "lastTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        self.core.patch_namespaced_event(name, namespace, body, _preload_content=False)


def _json(resp: Any) -> Any:
    """A raw (``_preload_content=False``) response's JSON: the client's own decoding copies it twice."""
    return json.loads(resp.data)


def _instance_differs(current: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    meta = current.get("metadata") or {}
    labels = meta.get("labels") or {}
    if current.get("spec") != body["spec"]:
        return True
    if any(labels.get(k) != v for k, v in body["metadata"]["labels"].items()):
        return True
    want_owner = body["metadata"].get("ownerReferences")
    have_uids = {o.get("uid") for o in meta.get("ownerReferences") or []}
    return bool(want_owner) and want_owner[0]["uid"] not in have_uids


def _api_reason(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return f"{exc.status} {exc.reason}"


def api_client_for(kubeconfig: str | None = None, *, pool: int = 8) -> Any:
    """A ``kubernetes.client.ApiClient`` with a pool sized for the operator's parallel writes."""
    from flyslice.nodeagent.kube.agent import api_client_for as agent_client

    return agent_client(kubeconfig, pool=pool)
