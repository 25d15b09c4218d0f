"""A GitSource object syncs a real git repository (file://) into the cluster with the GitOps engine:
valid objects applied, per-object errors in its status, pruning limited to what it created."""

from __future__ import annotations

from pathlib import Path

import kubeenv
import pytest
import yaml

from .gitsource_harness import git, gitsource, wildfire_repo
from .gitsource_harness import status as status_of
from .operator_harness import (
    OperatorProcess,
    kubectl_items,
    operator_kubeconfig,
    operators,
    wait_for,
)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(120)]

BAD_SLICE = """\
apiVersion: flyslice.io/v1alpha1
kind: Slice
metadata:
  name: bad
spec:
  services: [data-collection]
  qos:
    maxLatencyMs: fast
  attachments:
    - node: nowhere
"""


def test_gitsource_applies_valid_objects_reports_errors_and_prunes_only_its_own(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    repo, docs = wildfire_repo(tmp_path, namespace, {"bad.yaml": BAD_SLICE})
    first = git(repo, "rev-parse", "HEAD")
    # Made by hand, not from git: pruning must never touch it.
    handmade = next(d for d in docs if d["kind"] == "NFPackage")
    handmade = {**handmade, "metadata": {"name": "handmade"}}
    kube_env.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(handmade))
    source = gitsource(repo)
    kube_env.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(source))
    wrong = {**source, "metadata": {"name": "wrong"}, "spec": {"url": "ftp://example.org/lab.git"}}
    kube_env.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(wrong))

    op = OperatorProcess(
        operator_kubeconfig(kube_env), namespace, tmp_path, identity="git", lease_name=f"lease-{namespace}"
    )
    with operators(op):
        status = wait_for(
            lambda: (s := status_of(kube_env, namespace)).get("lastAppliedRevision") == first and s,
            60,
            "first revision applied",
        )
        (error,) = status["errors"]
        assert (error["file"], error["object"], error["path"]) == (
            "bad.yaml",
            f"Slice/{namespace}/bad",
            "spec.qos.maxLatencyMs",
        )
        assert error["line"] == 8
        assert "Slice/" + namespace + "/wildfire" in status["inventory"]
        assert f"EdgeNode/{namespace}-gw-1" in status["inventory"]
        assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
        wildfire = kube_env.kubectl_json("-n", namespace, "get", "slice", "wildfire")
        assert wildfire["metadata"]["labels"]["flyslice.io/gitsource"] == f"{namespace}.lab"
        assert wildfire["metadata"]["annotations"]["flyslice.io/revision"] == first
        assert kube_env.kubectl("-n", namespace, "get", "slice", "bad", check=False).returncode != 0
        # A GitSource the engine cannot use says why in its own status; the good one is unaffected.
        bad = wait_for(
            lambda: kube_env.kubectl_json("-n", namespace, "get", "gitsource", "wrong").get("status"),
            20,
            "status",
        )
        (ready,) = bad["conditions"]
        assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
        assert "spec.url" in ready["message"] and "ftp" in ready["message"]
        # The synced objects are reconciled like any other: the slice is placed.
        wait_for(lambda: len(kubectl_items(kube_env, namespace, "nfinstances")) == 9, 30, "9 NFInstances")

        (repo / "slice.yaml").unlink()
        git(repo, "add", "-A")
        # Removing the only slice is what the prune guard holds: this commit says it means it
        # (tests/kube/test_operator_prune_guard.py covers the held case).
        git(repo, "commit", "-q", "-m", "retire the slice\n\nFlyslice-Prune: confirm")
        second = git(repo, "rev-parse", "HEAD")
        status = wait_for(
            lambda: (s := status_of(kube_env, namespace)).get("lastAppliedRevision") == second and s,
            30,
            "second revision",
        )
        assert f"Slice/{namespace}/wildfire" not in status["inventory"]
        wait_for(
            lambda: kube_env.kubectl("-n", namespace, "get", "slice", "wildfire", check=False).returncode != 0,
            30, "the pruned slice to go (after its teardown)",
        )  # fmt: skip
        wait_for(lambda: not kubectl_items(kube_env, namespace, "nfinstances"), 20, "its NFInstances to go")
        assert kube_env.kubectl("-n", namespace, "get", "nfpackage", "handmade", check=False).returncode == 0
        assert kube_env.kubectl("-n", namespace, "get", "nfpackage", "broker", check=False).returncode == 0

        # Deleting the GitSource (prune: true) takes along what it applied, and only that.
        kube_env.kubectl("-n", namespace, "delete", "gitsource", "lab", "--wait=true", "--timeout=60s")
        assert kube_env.kubectl("-n", namespace, "get", "nfpackage", "broker", check=False).returncode != 0
        assert kube_env.kubectl("get", "edgenode", f"{namespace}-gw-1", check=False).returncode != 0
        assert kube_env.kubectl("-n", namespace, "get", "nfpackage", "handmade", check=False).returncode == 0
