"""The live cluster as a side of ``flyslice diff``: ``cluster:`` (every namespace) or ``cluster:NS``.

Git refs cannot contain ``:``, so the prefix never shadows a revision. The desired objects (EdgeNodes,
NFPackages, NetworkServices, Slices) are read through the ``kubernetes`` client and validated as the
operator validates them; the placement is what the operator *placed*, not a fresh plan: each slice's
instances come from the NFInstances the operator owns (what the agents run), else from the Slice's
``status.placement``, and its admission and predicted latency from the Slice status. Node usage is
the sum of those NFInstances' resources, so headroom is what the cluster has left now.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from flyslice.crds import is_namespaced
from flyslice.operator.intake.catalog import Catalog
from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.manifests import Manifest, manifests_from_objects
from flyslice.operator.intake.quantities import cpu_millis, memory_bytes
from flyslice.operator.intake.validation import validate

PREFIX = "cluster:"
GROUP, VERSION = "flyslice.io", "v1alpha1"
PLURALS = {
    "EdgeNode": "edgenodes",
    "NFPackage": "nfpackages",
    "NetworkService": "networkservices",
    "Slice": "slices",
    "NFInstance": "nfinstances",
}
DESIRED_KINDS = ("EdgeNode", "NFPackage", "NetworkService", "Slice")
#: Only the operator's NFInstances are placement (operator/kube/cluster.py labels them so).
OPERATOR_INSTANCES = "app.kubernetes.io/managed-by=flyslice-operator"
#: Phases of a slice whose placement the operator has not made or has withdrawn.
NOT_PLACED = (None, "Pending", "Infeasible", "Expired")
#: Seconds per API request: a diff is interactive, an unresponsive server must not hang CI.
REQUEST_TIMEOUT_S = 15
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ClusterReadError(Exception):
    """The cluster cannot be read: one line naming what and what to do."""


def is_cluster(spec: str) -> bool:
    return spec.startswith(PREFIX)


def namespace_of(spec: str) -> str | None:
    """``cluster:NS`` -> ``NS``; ``cluster:`` -> None (every namespace). Raises on a malformed name."""
    ns = spec[len(PREFIX) :]
    if not ns:
        return None
    if len(ns) > 63 or not _NAMESPACE.match(ns):
        raise ClusterReadError(
            f"{spec!r}: {ns!r} is not a namespace name; give cluster: or cluster:NAMESPACE"
        )
    return ns


def in_namespace(manifests: Iterable[Manifest], namespace: str) -> tuple[list[Manifest], list[ManifestError]]:
    """Put namespaced objects without a namespace into ``namespace``, as ``kubectl apply -n NS`` does.

    An object naming another namespace is an error and is left out, as kubectl refuses it: compared
    with ``namespace``'s objects it would show as new, and validating it would add follow-on errors.
    """
    kept, errors = [], []
    for m in manifests:
        try:
            namespaced = is_namespaced(m.kind)
        except KeyError:  # not a flyslice kind: validation reports it
            namespaced = False
        meta = m.data.get("metadata")
        if not namespaced or not isinstance(meta, dict):
            kept.append(m)  # cluster-scoped, or malformed: validation reports what is wrong
            continue
        have = meta.get("namespace")
        if have is None:
            meta["namespace"] = namespace
        elif have != namespace:
            errors.append(
                ManifestError(
                    m.file,
                    m.line,
                    f"{m.kind}/{have}/{meta.get('name', '')}",
                    "metadata.namespace",
                    f"{have!r} is not the namespace diffed against, {namespace!r} (kubectl apply -n "
                    f"{namespace} refuses it too): remove metadata.namespace or diff against cluster:{have}",
                )
            )
            continue
        kept.append(m)
    return kept, errors


def api_client(kubeconfig: str | None, context: str | None) -> Any:
    """Credentials as kubectl finds them: ``--kubeconfig`` (or $KUBECONFIG / ~/.kube/config) and
    ``--context``; with neither, a pod's service account first, as ``flyslice operator`` does."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        if kubeconfig is None and context is None:
            try:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=cfg
            )
    except (config.ConfigException, OSError) as exc:
        where = kubeconfig or "in-cluster, $KUBECONFIG or ~/.kube/config"
        ctx = f", context {context!r}" if context else ""
        raise ClusterReadError(
            f"no cluster credentials ({where}{ctx}): {str(exc).rstrip('.')}; pass --kubeconfig FILE "
            "(and --context NAME)"
        ) from None
    # One attempt per request: a refused connection is reported at once, not after urllib3's retries.
    cfg.retries = False
    return client.ApiClient(cfg)


def read_cluster(
    spec: str, *, kubeconfig: str | None = None, context: str | None = None
) -> tuple[dict[str, Any], list[ManifestError]]:
    """The live view of ``spec`` (``compare``'s format) and the validation errors of its objects."""
    namespace = namespace_of(spec)
    api = api_client(kubeconfig, context)
    try:
        objects = {kind: _list(api, kind, namespace) for kind in DESIRED_KINDS}
        instances = _list(api, "NFInstance", namespace, OPERATOR_INSTANCES)
    finally:
        api.close()
    result = validate(manifests_from_objects(o for kind in DESIRED_KINDS for o in objects[kind]))
    return cluster_view(spec, result.catalog, objects["Slice"], instances), list(result.errors)


def _list(api: Any, kind: str, namespace: str | None, label_selector: str = "") -> list[dict[str, Any]]:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as TransportError

    custom: Any = client.CustomObjectsApi(api)
    plural = PLURALS[kind]
    try:
        if namespace and is_namespaced(kind):
            doc = custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural,
                label_selector=label_selector, _request_timeout=REQUEST_TIMEOUT_S,
            )  # fmt: skip
        else:
            doc = custom.list_cluster_custom_object(
                GROUP, VERSION, plural, label_selector=label_selector, _request_timeout=REQUEST_TIMEOUT_S
            )
    except ApiException as exc:
        if exc.status == 404:
            raise ClusterReadError(
                f"the API server at {api.configuration.host} does not serve {plural}.{GROUP}: the flyslice "
                "CRDs are not installed (kubectl apply --server-side -f crds/)"
            ) from None
        raise ClusterReadError(
            f"the Kubernetes API server answered {exc.status} {_api_message(exc)} listing {plural}; check "
            "the credentials (reading needs get/list on flyslice.io objects)"
        ) from None
    except TransportError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ClusterReadError(
            f"cannot reach the Kubernetes API server at {api.configuration.host}: {reason}; is the cluster "
            "up, and is it the kubeconfig's (or --context's) server?"
        ) from None
    items: list[dict[str, Any]] = doc.get("items", [])
    for item in items:  # list items carry no kind of their own
        item.setdefault("kind", kind)
        item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
    return items


def _api_message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def _nf(spec: Mapping[str, Any]) -> str:
    """The solver's NF id (``role`` or ``role@attachment``), as the other sides name instances."""
    return f"{spec['role']}@{spec['attachment']}" if spec.get("attachment") else str(spec["role"])


def cluster_view(
    label: str,
    catalog: Catalog,
    slices: Iterable[Mapping[str, Any]],
    instances: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """What runs in the cluster, in ``compare``'s view format (its module docstring)."""
    placed: dict[str, dict[str, dict[str, str]]] = {}
    used: dict[str, list[int]] = {}
    for obj in instances:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        if meta.get("deletionTimestamp"):
            continue  # being torn down: no longer part of the placement
        try:
            key, nf = f"{meta['namespace']}/{spec['slice']}", _nf(spec)
            node, flavor = str(spec["node"]), str(spec["flavor"])
        except KeyError:
            continue
        placed.setdefault(key, {})[nf] = {"node": node, "flavor": flavor}
        res = spec.get("resources") or {}
        cpu_mem = used.setdefault(node, [0, 0])
        cpu_mem[0] += cpu_millis(res.get("cpu", 0))
        cpu_mem[1] += memory_bytes(res.get("memory", 0))
    budgets = {s.key: s.max_latency_ms for s in catalog.slices.values()}
    views: dict[str, dict[str, Any]] = {}
    for obj in slices:
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        if meta.get("deletionTimestamp"):
            continue
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        admitted = status.get("phase") not in NOT_PLACED
        paths = status.get("paths") or []
        # The budget the placement was made for; a slice not yet placed has only its spec's.
        budget = paths[0].get("budgetMs") if paths else budgets.get(key)
        from_status = {
            _nf(p): {"node": str(p["node"]), "flavor": str(p["flavor"])}
            for p in status.get("placement") or []
            if "role" in p and "node" in p and "flavor" in p
        }
        views[key] = {
            "admitted": admitted,
            "service": status.get("networkService"),
            "latencyMs": status.get("predictedLatencyMs") if admitted else None,
            "budgetMs": budget,
            "reasons": list(status.get("reasons") or [])
            or ([] if admitted else ["not placed by the operator yet"]),
            # The NFInstances are what the agents run; the status copy lags them by one write.
            "instances": (placed.get(key) or from_status) if admitted else {},
        }
    nodes = {
        name: {
            "tier": node.tier,
            "cpuUsedMillis": used.get(name, [0, 0])[0],
            "cpuCapacityMillis": node.cpu_millis,
            "memoryUsedBytes": used.get(name, [0, 0])[1],
            "memoryCapacityBytes": node.memory_bytes,
        }
        for name, node in sorted(catalog.nodes.items())
    }
    return {"label": label, "slices": views, "nodes": nodes}
