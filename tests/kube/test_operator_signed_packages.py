"""`flyslice operator --require-signed-packages NS` on the real API server: in such a namespace an
NFPackage without a module signature is refused (a Warning Event says why) and nothing of a slice
that needs it is placed (without the option, test_operator_wildfire.py places the same manifests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubeenv
import pytest

from .operator_harness import (
    OperatorProcess,
    apply_docs,
    kubectl_items,
    operator_kubeconfig,
    wait_for,
    wildfire_docs,
)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(180)]


def _invalid_package_events(env: kubeenv.KubeEnv, ns: str) -> list[dict[str, Any]]:
    return [
        e
        for e in kubectl_items(env, ns, "events")
        if e["reason"] == "Invalid" and e["involvedObject"]["kind"] == "NFPackage"
    ]


def test_unsigned_packages_are_refused_where_the_operator_requires_signatures(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    docs = wildfire_docs(namespace)
    # The example's packages carry digests but no signatures.
    assert all("signature" not in str(d.get("spec", {})) for d in docs if d["kind"] == "NFPackage")
    apply_docs(kube_env, namespace, docs)
    op = OperatorProcess(
        operator_kubeconfig(kube_env),
        namespace,
        tmp_path,
        identity="signed",
        lease_name=f"lease-{namespace}",
        extra=("--require-signed-packages", namespace),
    )
    try:
        events = wait_for(lambda: _invalid_package_events(kube_env, namespace), 60, "Invalid events")
        assert any("requires signed packages" in e["message"] for e in events), events
        wait_for(lambda: (op.status() or {}).get("passes", 0) >= 3, 30, "three passes")
        assert kubectl_items(kube_env, namespace, "nfinstances") == []
    finally:
        op.stop()
        print(op.tail())
