"""The CRDs on a real API server: they install, the examples apply, bad objects are refused with
messages a user can act on, and kubectl shows printer columns and explains fields."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubeenv
import pytest
import yaml

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = sorted((REPO / "crds").glob("*.yaml"))
EXAMPLE_DIRS = sorted(d for d in (REPO / "examples").iterdir() if d.is_dir() and any(d.glob("*.yaml")))
INVALID = REPO / "tests" / "invalid"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _crd(kind: str) -> dict[str, Any]:
    for path in CRD_FILES:
        doc = _docs(path)[0]
        if doc["spec"]["names"]["kind"] == kind:
            return doc
    raise KeyError(kind)


def test_every_crd_is_established(kube_env: kubeenv.KubeEnv, crds_installed: list[str]) -> None:
    expected = {_docs(p)[0]["metadata"]["name"] for p in CRD_FILES}
    assert set(crds_installed) == expected and len(expected) == 6
    for name in crds_installed:
        crd = kube_env.kubectl_json("get", "crd", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", (name, conditions)
        assert conditions.get("NamesAccepted") == "True", (name, conditions)
    resources = kube_env.kubectl("api-resources", "--api-group=flyslice.io", "-o", "name").stdout.split()
    assert sorted(resources) == sorted(expected)


@pytest.mark.parametrize("example", EXAMPLE_DIRS, ids=lambda d: d.name)
def test_every_example_applies(kube_env: kubeenv.KubeEnv, crds_installed: list[str], example: Path,
                               namespace: str) -> None:  # fmt: skip
    out = kube_env.kubectl("apply", "-n", namespace, "-f", str(example))
    docs = [d for f in sorted(example.glob("*.yaml")) for d in _docs(f)]
    assert len(out.stdout.strip().splitlines()) == len(docs)
    for doc in docs:  # read back: the server kept the spec (no field pruned as unknown)
        ns = [] if doc["kind"] == "EdgeNode" else ["-n", namespace]
        stored = kube_env.kubectl_json(
            "get", f"{doc['kind'].lower()}.flyslice.io", doc["metadata"]["name"], *ns
        )
        assert _subset(doc["spec"], stored["spec"]), (doc["kind"], doc["metadata"]["name"])


def _subset(want: Any, got: Any) -> bool:
    """``want`` is contained in ``got`` (the server may add defaults, never drop fields)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and _subset(v, got[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) and all(map(_subset, want, got))
    if isinstance(want, float | int) and isinstance(got, float | int):
        return float(want) == float(got)
    return bool(want == got)


# A sample of the invalid corpus that the API server itself must refuse (schema, CEL, metadata),
# with the words its message must contain. Cross-object errors (dangling references, graph
# cycles) and YAML syntax errors are the CLI's job; the server cannot see them.
INVALID_SAMPLE = {
    "availability-as-percent.yaml": ["spec.availability", "less than or equal to 1"],
    "edgenode-missing-tier.yaml": ["spec.tier", "Required value"],
    "edgenode-unknown-tier.yaml": ["spec.tier", 'Unsupported value: "edge"', '"gateway"'],
    "runtimes-unknown-value.yaml": ["spec.runtimes[1]", 'Unsupported value: "docker"'],
    "runtimes-not-a-list.yaml": ["spec.runtimes", "must be of type array"],
    "spec-is-a-string.yaml": ["spec", "must be of type object"],
    "invalid-name.yaml": ["metadata.name", "Gateway_1", "RFC 1123"],
    "quantity-unknown-suffix.yaml": ["spec.capacity.memory", "should match"],
    "link-to-itself.yaml": ["spec.links", "a link cannot point at the node itself"],
    "neither-services-nor-ref.yaml": ["spec", "set exactly one of services and networkServiceRef"],
    "services-and-network-service-ref.yaml": ["spec", "set exactly one of services and networkServiceRef"],
    "duplicate-attachment.yaml": ["spec.attachments[1]", "Duplicate value"],
}


def _dry_run(kube_env: kubeenv.KubeEnv, doc: dict[str, Any], namespace: str) -> tuple[bool, str]:
    """Apply ``doc`` with server-side dry run: full validation and admission, nothing stored.
    (apply, not create: a cluster-scoped EdgeNode of the same name may exist from another test.)"""
    ns = [] if doc.get("kind") == "EdgeNode" else ["-n", namespace]
    result = kube_env.kubectl("apply", "--dry-run=server", *ns, "-f", "-", input=json.dumps(doc), check=False)
    return result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(INVALID_SAMPLE))
def test_the_server_refuses_invalid_objects_with_useful_messages(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, name: str
) -> None:
    path = INVALID / name
    if not path.exists():
        pytest.skip(f"{name} is not in the invalid corpus (any more)")
    results = [(doc, *_dry_run(kube_env, doc, namespace)) for doc in _docs(path)]
    refused = [(doc, err) for doc, ok, err in results if not ok]
    assert len(refused) == 1, f"expected exactly one refused object in {name}, got {[e for _, e in refused]}"
    doc, message = refused[0]
    assert f'"{doc["metadata"]["name"]}" is invalid' in message, message  # names the object
    for fragment in INVALID_SAMPLE[name]:
        assert fragment in message, f"{fragment!r} missing from: {message}"


# Our own invalid objects for rules the corpus does not exercise yet.
def _nfinstance(**spec: Any) -> dict[str, Any]:
    base = {"slice": "s", "role": "r", "package": "p", "flavor": "fnf", "node": "gw-1"}
    return {"apiVersion": "flyslice.io/v1alpha1", "kind": "NFInstance", "metadata": {"name": "nfi"},
            "spec": {**base, **spec}}  # fmt: skip


OWN_INVALID = {
    "fnf-without-module": (_nfinstance(), ["spec", "an fnf instance needs module and digest"]),
    "vnf-without-image": (_nfinstance(flavor="vnf"), ["spec", "a vnf instance needs an image"]),
    "bad-digest": (
        _nfinstance(module="builtin:broker", digest="md5:abc"),
        ["spec.digest", "should match '^sha256:[0-9a-f]{64}$'"],
    ),
    "unknown-flavor": (_nfinstance(flavor="vm"), ["spec.flavor", 'Unsupported value: "vm"']),
}


@pytest.mark.parametrize("case", sorted(OWN_INVALID))
def test_the_server_refuses_invalid_nfinstances(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, case: str
) -> None:
    doc, fragments = OWN_INVALID[case]
    ok, message = _dry_run(kube_env, doc, namespace)
    assert not ok, f"{case} was accepted"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"


def test_a_valid_nfinstance_passes_the_same_rules(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str
) -> None:
    ok, message = _dry_run(
        kube_env, _nfinstance(module="builtin:broker", digest="sha256:" + "0" * 64), namespace
    )
    assert ok, message


def _header(output: str) -> list[str]:
    return re.split(r"\s{2,}", output.splitlines()[0].strip())


def _table(output: str) -> list[dict[str, str]]:
    """kubectl's table as rows keyed by column; cells are cut at the header's column positions
    because empty cells (no status yet) leave no separator to split on."""
    lines = output.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    names = lines[0].split()
    bounds = [*starts[1:], None]
    return [
        {n: line[a:b].strip() for n, a, b in zip(names, starts, bounds, strict=True)} for line in lines[1:]
    ]


@pytest.mark.parametrize(
    "kind", ["EdgeNode", "NFPackage", "NetworkService", "Slice", "NFInstance", "GitSource"]
)
def test_kubectl_get_shows_the_printer_columns(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, kind: str
) -> None:
    crd = _crd(kind)
    plural = crd["spec"]["names"]["plural"]
    columns = crd["spec"]["versions"][0].get("additionalPrinterColumns", [])
    if not columns:
        pytest.skip(f"{kind} declares no printer columns")
    # An object must exist for kubectl to print a table header.
    example = next(
        (d for ex in EXAMPLE_DIRS for f in sorted(ex.glob("*.yaml")) for d in _docs(f) if d["kind"] == kind),
        None,
    )
    if example is None and kind == "NFInstance":
        example = _nfinstance(module="builtin:broker", digest="sha256:" + "0" * 64)
    if example is None and kind == "GitSource":
        example = {"apiVersion": "flyslice.io/v1alpha1", "kind": "GitSource", "metadata": {"name": "lab"},
                   "spec": {"url": "https://git.example.invalid/lab.git"}}  # fmt: skip
    if example is None:
        pytest.skip(f"no example {kind} to list")
    ns = [] if kind == "EdgeNode" else ["-n", namespace]
    kube_env.kubectl("apply", *ns, "-f", "-", input=json.dumps(example))
    normal = [c["name"].upper() for c in columns if c.get("priority", 0) == 0]
    wide = [c["name"].upper() for c in columns]
    assert _header(kube_env.kubectl("get", plural, *ns).stdout) == ["NAME", *normal]
    assert _header(kube_env.kubectl("get", plural, *ns, "-o", "wide").stdout) == ["NAME", *wide]


def test_kubectl_get_slices_prints_the_budget(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str
) -> None:
    slice_doc = next(d for f in sorted((REPO / "examples").glob("*/slice*.yaml")) for d in _docs(f))
    kube_env.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(slice_doc))
    (row,) = _table(kube_env.kubectl("get", "slices", "-n", namespace).stdout)
    assert row["NAME"] == slice_doc["metadata"]["name"]
    assert row["PHASE"] == ""  # no status until the operator places it
    assert float(row["BUDGET-MS"]) == float(slice_doc["spec"]["qos"]["maxLatencyMs"])
    # Once placed, the status fills the other columns (their jsonPaths point at real fields).
    status = {"phase": "Ready", "predictedLatencyMs": 7.5, "observedLatencyMs": 6.25, "nodeCount": 4,
              "networkService": "iot-data-pipeline"}  # fmt: skip
    name = slice_doc["metadata"]["name"]
    kube_env.kubectl("-n", namespace, "patch", "slice", name, "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": status}))  # fmt: skip
    (row,) = _table(kube_env.kubectl("get", "slices", "-n", namespace, "-o", "wide").stdout)
    assert (row["PHASE"], row["LATENCY-MS"], row["NODES"]) == ("Ready", "7.5", "4")
    assert (row["OBSERVED-MS"], row["SERVICE"]) == ("6.25", "iot-data-pipeline")


def test_kubectl_explain_slice_qos_is_helpful(kube_env: kubeenv.KubeEnv, crds_installed: list[str]) -> None:
    out = kube_env.kubectl("explain", "slice.spec.qos").stdout
    qos = _crd("Slice")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["qos"]
    assert "GROUP:      flyslice.io" in out and "KIND:       Slice" in out
    assert "<number> -required-" in out  # maxLatencyMs is marked required
    for field, schema in qos["properties"].items():
        assert field in out
        first_words = " ".join(schema["description"].split()[:4])
        assert first_words in " ".join(out.split()), f"description of {field} missing"
    recursive = kube_env.kubectl("explain", "slice.spec", "--recursive").stdout
    for field in ("attachments", "maxLatencyMs", "lifetime", "isolation"):
        assert field in recursive
