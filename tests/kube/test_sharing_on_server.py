"""NF sharing's CRD fields on a real kube-apiserver (issue 15): the server refuses what `flyslice validate`
refuses, keeps what the control plane writes (no field pruned), and its defaults never trip the rules.

(The example examples/shared-gateways applies unpruned in test_crds_on_server.py, and every corpus file is
compared with the CLI in test_client_server_parity.py.)
"""

from __future__ import annotations

import json
from typing import Any

import kubeenv
import pytest

from flyslice.operator.intake.manifests import load_text
from flyslice.operator.intake.validation import validate

pytestmark = pytest.mark.kube

RULE = "isolation required forbids sharing NF instances with other slices"


def _slice(**extra: Any) -> dict[str, Any]:
    spec = {
        "services": ["forest-telemetry"],
        "qos": {"maxLatencyMs": 10},
        "attachments": [{"node": "tower-1"}],
    }
    return {"apiVersion": "flyslice.io/v1alpha1", "kind": "Slice", "metadata": {"name": "cameras"},
            "spec": {**spec, **extra}}  # fmt: skip


def _nfinstance(shared: dict[str, Any]) -> dict[str, Any]:
    spec = {"slice": "cameras", "role": "broker-gw", "package": "tower-broker", "flavor": "fnf", "node": "tower-1",
            "module": "builtin:broker", "digest": "sha256:" + "0" * 64,
            "resources": {"cpu": "50m", "memory": "8Mi"}, "sharedInstance": shared}  # fmt: skip
    return {"apiVersion": "flyslice.io/v1alpha1", "kind": "NFInstance", "metadata": {"name": "cameras-broker"},
            "spec": spec}  # fmt: skip


def _package(sharing: dict[str, Any]) -> dict[str, Any]:
    fnf = {"module": "builtin:broker", "digest": "sha256:" + "0" * 64,
           "resources": {"cpu": "50m", "memory": "8Mi"}, "sharing": sharing}  # fmt: skip
    return {"apiVersion": "flyslice.io/v1alpha1", "kind": "NFPackage", "metadata": {"name": "tower-broker"},
            "spec": {"function": "broker", "flavors": {"fnf": fnf}}}  # fmt: skip


def _apply(
    kube_env: kubeenv.KubeEnv, doc: dict[str, Any], namespace: str, dry: bool = True
) -> tuple[bool, str]:
    args = ["apply", *(["--dry-run=server"] if dry else []), "-n", namespace, "-f", "-"]
    result = kube_env.kubectl(*args, input=json.dumps(doc), check=False)
    return result.returncode == 0, result.stderr


def _cli_refuses(doc: dict[str, Any]) -> bool:
    manifests, errors = load_text(json.dumps(doc), "doc.yaml")
    assert not errors
    return any(e.severity == "error" for e in validate(manifests).errors)


CASES = {
    "slice-sharing-with-isolation": (_slice(isolation="required", sharing="allowed"), ["spec.sharing", RULE]),
    "package-capacity-zero": (_package({"capacityMbps": 0}), ["capacityMbps", "should be greater than 0"]),
    "package-no-capacity": (_package({"maxTenants": 3}), ["capacityMbps", "Required value"]),
    "package-max-tenants-zero": (
        _package({"capacityMbps": 10, "maxTenants": 0}),
        ["maxTenants", "should be greater than or equal to 1"],
    ),
    "package-per-tenant-too-big": (
        _package({"capacityMbps": 10, "perTenant": {"memory": "1Pi"}}),
        ["perTenant.memory", "at most 512Ti"],
    ),
    "nfinstance-shared-without-name": (
        _nfinstance({"perTenantConfig": True}),
        ["sharedInstance.name", "Required"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_server_refuses_bad_sharing_fields_as_the_cli_does(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, case: str
) -> None:
    doc, fragments = CASES[case]
    ok, message = _apply(kube_env, doc, namespace)
    assert not ok, f"{case} was accepted by the server"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"
    assert _cli_refuses(doc), f"{case}: the server refuses it but flyslice validate does not"


@pytest.mark.parametrize(
    "extra",
    [{"isolation": "required"}, {"isolation": "required", "sharing": "forbidden"}, {"sharing": "allowed"}],
    ids=["isolation-only", "isolation-and-forbidden", "allowed-only"],
)
def test_the_server_accepts_isolation_without_explicit_sharing(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, extra: dict[str, Any]
) -> None:
    ok, message = _apply(kube_env, _slice(**extra), namespace)
    assert ok, message


def test_the_server_keeps_every_sharing_field_the_control_plane_writes(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str
) -> None:
    shared = {"name": "default/tower-broker/fnf/any@tower-1#0", "perTenantConfig": False,
              "perTenant": {"cpu": "5m", "memory": "2Mi"}}  # fmt: skip
    ok, message = _apply(kube_env, _nfinstance(shared), namespace, dry=False)
    assert ok, message
    stored = kube_env.kubectl_json("get", "nfinstance.flyslice.io", "cameras-broker", "-n", namespace)
    assert stored["spec"]["sharedInstance"] == shared
    # The slice status names the shared instance on its placement entries (status is structural: an
    # undeclared field would be pruned silently).
    ok, message = _apply(kube_env, _slice(sharing="allowed"), namespace, dry=False)
    assert ok, message
    entry = {"role": "broker-gw", "attachment": "tower-1", "package": "tower-broker", "node": "tower-1",
             "flavor": "fnf", "instance": "cameras-broker", "state": "Running",
             "sharedInstance": shared["name"]}  # fmt: skip
    kube_env.kubectl("-n", namespace, "patch", "slice", "cameras", "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": {"placement": [entry]}}))  # fmt: skip
    got = kube_env.kubectl_json("get", "slice.flyslice.io", "cameras", "-n", namespace)
    assert got["status"]["placement"] == [entry]
    assert got["spec"]["sharing"] == "allowed"
