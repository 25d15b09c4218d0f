"""The API server refuses what `flyslice validate` refuses for numbers (issue 9, part 3).

The CRDs carry the bounds of operator/intake/limits.py (minimum/maximum, maxLength and CEL rules on
quantities and durations). Here every bound reproducer of the invalid corpus is dry-run against a real
kube-apiserver and must be refused there too, and values at and just past each limit are accepted or
refused by both alike. (test_client_server_parity.py checks the other direction over the whole corpus.)
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from flyslice.crds import API_VERSION, GROUP, VERSION, crd_documents, is_namespaced
from flyslice.operator.intake.manifests import load_file, load_text
from flyslice.operator.intake.validation import validate

pytestmark = pytest.mark.kube

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "invalid"

#: Corpus file -> (object, field) the number makes invalid.
REPRODUCERS = {
    "availability-nan.yaml": ("EdgeNode/gw-1", "spec.availability"),
    "bandwidth-nan.yaml": ("EdgeNode/gw-1", "spec.links[0].bandwidthMbps"),
    "cost-400-digits.yaml": ("EdgeNode/gw-1", "spec.cost"),
    "cost-inf.yaml": ("EdgeNode/gw-1", "spec.cost"),
    "cpu-exponent-huge.yaml": ("EdgeNode/gw-1", "spec.capacity.cpu"),
    "gitsource-interval-beyond-a-week.yaml": ("GitSource/fleet", "spec.interval"),
    "latency-400-digits.yaml": ("EdgeNode/gw-1", "spec.links[0].latencyMs"),
    "lifetime-5000-nines.yaml": ("Slice/cameras", "spec.lifetime"),
    "lifetime-beyond-ten-years.yaml": ("Slice/cameras", "spec.lifetime"),
    "max-latency-400-digits.yaml": ("Slice/cameras", "spec.qos.maxLatencyMs"),
    "memory-exponent-5000.yaml": ("EdgeNode/gw-1", "spec.capacity.memory"),
    "memory-exponent-999999.yaml": ("EdgeNode/gw-1", "spec.capacity.memory"),
    "nan-in-config.yaml": ("NetworkService/edge-protection", "spec.graph.roles[0].config.rate"),
    "nfinstance-memory-beyond-limit.yaml": ("NFInstance/cameras-firewall-gw-1", "spec.resources.memory"),
    "package-memory-beyond-limit.yaml": ("NFPackage/firewall", "spec.flavors.fnf.resources.memory"),
    "priority-400-digits.yaml": ("Slice/cameras", "spec.priority"),
    "priority-below-int32.yaml": ("Slice/cameras", "spec.priority"),
    "quantity-exponent-tiny.yaml": ("EdgeNode/gw-1", "spec.capacity.cpu"),
    # NF sharing (issue 15); "tenant" contains "nan", so the zero and negative cases are listed too.
    "nfinstance-shared-per-tenant-beyond-limit.yaml": (
        "NFInstance/cameras-broker-gw-1",
        "spec.sharedInstance.perTenant.cpu",
    ),
    "sharing-capacity-nan.yaml": ("NFPackage/broker", "spec.flavors.fnf.sharing.capacityMbps"),
    "sharing-max-tenants-zero.yaml": ("NFPackage/broker", "spec.flavors.fnf.sharing.maxTenants"),
    "sharing-per-tenant-cpu-negative.yaml": ("NFPackage/broker", "spec.flavors.vnf.sharing.perTenant.cpu"),
    "sharing-per-tenant-memory-beyond-limit.yaml": (
        "NFPackage/broker",
        "spec.flavors.fnf.sharing.perTenant.memory",
    ),
}


def _dry_run(api: Any, data: dict[str, Any], namespace: str) -> tuple[int, str]:
    """(HTTP status, message) of a server-side dry-run create of ``data``: 201 when accepted.

    The name gets a unique suffix: an object of that name left by another test would answer 409.
    """
    from kubernetes.client.exceptions import ApiException

    # The client writes NaN and Infinity as JSON tokens no JSON parser accepts, as the API server's
    # doesn't; kubectl refuses to send them at all ("json: unsupported value: NaN").
    body = copy.deepcopy(data)
    body["metadata"]["name"] += f"-{uuid.uuid4().hex[:6]}"
    body["metadata"].pop("namespace", None)
    kind = body["kind"]
    plural = crd_documents()[kind]["spec"]["names"]["plural"]
    try:
        if is_namespaced(kind):
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body, dry_run="All")
        else:
            api.create_cluster_custom_object(GROUP, VERSION, plural, body, dry_run="All")
    except ApiException as exc:
        return exc.status, str(json.loads(exc.body).get("message", "")) if exc.body else ""
    return 201, ""


def _is_json(data: Any) -> bool:
    try:
        json.dumps(data, allow_nan=False)
    except ValueError:
        return False
    return not _has_huge_int(data)


def _has_huge_int(data: Any) -> bool:
    if isinstance(data, dict):
        return any(_has_huge_int(v) for v in data.values())
    if isinstance(data, list):
        return any(_has_huge_int(v) for v in data)
    return isinstance(data, int) and not isinstance(data, bool) and abs(data) > 2**63


def test_every_bound_reproducer_of_the_corpus_is_listed_here() -> None:
    bounds = {"nan", "inf", "400-digits", "exponent", "beyond", "int32", "5000-nines"}
    named = {p.name for p in CORPUS.glob("*.yaml") if any(b in p.name for b in bounds)}
    assert named - {"number-5000-digits.yaml"} == set(REPRODUCERS), "add new bound reproducers here"


@pytest.mark.parametrize("name", sorted(REPRODUCERS))
def test_the_server_refuses_every_bound_reproducer(
    custom_api: Any, crds_installed: list[str], dry_run_namespace: str, name: str
) -> None:
    target, field = REPRODUCERS[name]
    manifests, errors = load_file(CORPUS / name)
    assert not errors
    by_ref = {m.ref: m for m in manifests if m.api_version == API_VERSION}
    for ref, m in by_ref.items():
        status, message = _dry_run(custom_api, m.data, dry_run_namespace)
        if ref != target:
            assert status == 201, f"{ref} is valid and must be accepted: {message}"
            continue
        # The CLI's own error for the same object and field, to compare with.
        assert any(e.object == ref and e.path == field for e in validate([m]).errors)
        if _is_json(m.data):
            assert status == 422, f"{name}: the server accepts {ref}"
            assert field.rsplit(".", 1)[-1].split("[")[0] in message, message
        else:
            # Not JSON at all (NaN, infinity, an integer beyond int64): no client can send it.
            assert status in (400, 422), f"{name}: the server accepts {ref} ({status})"


def _node(**spec: Any) -> dict[str, Any]:
    base = {"tier": "gateway", "runtimes": ["fnf"], "capacity": {"cpu": "1", "memory": "512Mi"}}
    return {
        "apiVersion": API_VERSION,
        "kind": "EdgeNode",
        "metadata": {"name": "edge"},
        "spec": {**base, **spec},
    }


def _slice(**spec: Any) -> dict[str, Any]:
    base = {"services": ["s"], "qos": {"maxLatencyMs": 5}, "attachments": [{"node": "gw-1"}]}
    return {"apiVersion": API_VERSION, "kind": "Slice", "metadata": {"name": "sl"}, "spec": {**base, **spec}}


def _gitsource(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "GitSource",
        "metadata": {"name": "gs"},
        "spec": {"url": "https://git.example.com/x.git", **spec},
    }


#: (object, field path) at and just past each limit: accepted, then refused, by both.
EDGES = [
    ("cpu 1M", _node(capacity={"cpu": "1M", "memory": "1Mi"}), "spec.capacity.cpu", True),
    ("cpu 1000001", _node(capacity={"cpu": "1000001", "memory": "1Mi"}), "spec.capacity.cpu", False),
    ("cpu int 1000000", _node(capacity={"cpu": 1000000, "memory": "1Mi"}), "spec.capacity.cpu", True),
    ("cpu int 1000001", _node(capacity={"cpu": 1000001, "memory": "1Mi"}), "spec.capacity.cpu", False),
    ("cpu 1e-999", _node(capacity={"cpu": "1e-999", "memory": "1Mi"}), "spec.capacity.cpu", True),
    ("memory 512Ti", _node(capacity={"cpu": "1", "memory": "512Ti"}), "spec.capacity.memory", True),
    ("memory 513Ti", _node(capacity={"cpu": "1", "memory": "513Ti"}), "spec.capacity.memory", False),
    ("memory 1e999", _node(capacity={"cpu": "1", "memory": "1e999"}), "spec.capacity.memory", False),
    ("memory 1e1000", _node(capacity={"cpu": "1", "memory": "1e1000"}), "spec.capacity.memory", False),
    ("cost 1000", _node(cost=1000), "spec.cost", True),
    ("cost 1000.5", _node(cost=1000.5), "spec.cost", False),
    (
        "latency 86400000",
        _node(links=[{"node": "b", "latencyMs": 86400000}]),
        "spec.links[0].latencyMs",
        True,
    ),
    (
        "latency 86400001",
        _node(links=[{"node": "b", "latencyMs": 86400001}]),
        "spec.links[0].latencyMs",
        False,
    ),
    (
        "bandwidth 1e7",
        _node(links=[{"node": "b", "latencyMs": 1, "bandwidthMbps": 1e7}]),
        "spec.links[0].bandwidthMbps",
        True,
    ),
    (
        "bandwidth 1e300",
        _node(links=[{"node": "b", "latencyMs": 1, "bandwidthMbps": 1e300}]),
        "spec.links[0].bandwidthMbps",
        False,
    ),
    ("priority int32 max", _slice(priority=2**31 - 1), "spec.priority", True),
    ("priority int32 max+1", _slice(priority=2**31), "spec.priority", False),
    ("priority int32 min-1", _slice(priority=-(2**31) - 1), "spec.priority", False),
    ("max latency 86400000", _slice(qos={"maxLatencyMs": 86400000}), "spec.qos.maxLatencyMs", True),
    ("max latency 1e300", _slice(qos={"maxLatencyMs": 1e300}), "spec.qos.maxLatencyMs", False),
    ("lifetime 3650d", _slice(lifetime="3650d"), "spec.lifetime", True),
    ("lifetime 87600h", _slice(lifetime="87600h"), "spec.lifetime", True),
    ("lifetime 87601h", _slice(lifetime="87601h"), "spec.lifetime", False),
    ("lifetime 32 nines", _slice(lifetime="9" * 32 + "ms"), "spec.lifetime", False),
    ("interval 7d", _gitsource(interval="7d"), "spec.interval", True),
    ("interval 604800001ms", _gitsource(interval="604800001ms"), "spec.interval", False),
]


@pytest.mark.parametrize(("case", "data", "field", "valid"), EDGES, ids=[e[0] for e in EDGES])
def test_the_server_and_validate_draw_each_limit_at_the_same_place(
    custom_api: Any,
    crds_installed: list[str],
    dry_run_namespace: str,
    case: str,
    data: dict[str, Any],
    field: str,
    valid: bool,
) -> None:
    manifests, errors = load_text(json.dumps(data), "edge.yaml")
    assert not errors
    client_refuses = any(e.path == field and e.severity == "error" for e in validate(manifests).errors)
    status, message = _dry_run(custom_api, data, dry_run_namespace)
    assert (status == 201, client_refuses) == (valid, not valid), message
