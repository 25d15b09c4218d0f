"""Issue 11, item 3 for in-cluster GitSources, against the real API server: a commit that removes every
Slice is held (the Slice and its NFInstances stay, ``PruneHeld=True`` on the GitSource, a Warning
Event) until the GitSource is annotated ``flyslice.io/confirm-prune: "<revision>"``; then it is pruned
with an Event per deleted object."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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

pytestmark = [pytest.mark.kube, pytest.mark.timeout(150)]


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions", [])}


def _events(env: kubeenv.KubeEnv, ns: str, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in kubectl_items(env, ns, "events", "--field-selector", "involvedObject.kind=GitSource")
        if e["reason"] == reason and e["involvedObject"]["name"] == "lab"
    ]


def test_a_commit_removing_every_slice_is_held_until_the_gitsource_confirms_it(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    repo, _docs = wildfire_repo(tmp_path, namespace)
    first = git(repo, "rev-parse", "HEAD")
    source = gitsource(repo)
    kube_env.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(source))
    op = OperatorProcess(
        operator_kubeconfig(kube_env), namespace, tmp_path, identity="guard", lease_name=f"lease-{namespace}"
    )
    with operators(op):
        wait_for(
            lambda: status_of(kube_env, namespace).get("lastAppliedRevision") == first, 60, "first revision"
        )
        wait_for(lambda: len(kubectl_items(kube_env, namespace, "nfinstances")) == 9, 60, "9 NFInstances")

        # A mistake: every manifest of the slice deleted, no confirmation in the commit.
        (repo / "slice.yaml").unlink()
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "tidy up")
        second = git(repo, "rev-parse", "HEAD")
        status = wait_for(
            lambda: (
                (s := status_of(kube_env, namespace)).get("lastAppliedRevision") == second
                and "PruneHeld" in _conditions(s)
                and s
            ),
            30,
            "the second revision applied with its prune held",
        )
        held = _conditions(status)["PruneHeld"]
        assert (held["status"], held["reason"]) == ("True", "PruneNeedsConfirmation")
        assert "removes every slice" in held["message"] and "flyslice.io/confirm-prune" in held["message"]
        # What runs keeps running: the Slice, its NFInstances and its inventory entry stay.
        assert f"Slice/{namespace}/wildfire" in status["inventory"]
        (warning,) = wait_for(lambda: _events(kube_env, namespace, "PruneHeld"), 10, "a PruneHeld Event")
        assert warning["type"] == "Warning" and second[:12] in warning["message"]
        for _ in range(3):  # and stays held over further sync rounds (1 s interval), with one Event
            assert kube_env.kubectl("-n", namespace, "get", "slice", "wildfire", check=False).returncode == 0
            assert len(kubectl_items(kube_env, namespace, "nfinstances")) == 9
            time.sleep(1)
        assert len(_events(kube_env, namespace, "PruneHeld")) == 1
        assert not _events(kube_env, namespace, "Pruned")

        # A stale confirmation (another revision) confirms nothing.
        kube_env.kubectl(
            "-n", namespace, "annotate", "gitsource", "lab", f"flyslice.io/confirm-prune={first}"
        )
        time.sleep(2.5)
        assert kube_env.kubectl("-n", namespace, "get", "slice", "wildfire", check=False).returncode == 0

        kube_env.kubectl(
            "-n",
            namespace,
            "annotate",
            "--overwrite",
            "gitsource",
            "lab",
            f"flyslice.io/confirm-prune={second[:12]}",
        )
        status = wait_for(
            lambda: (
                (s := status_of(kube_env, namespace))
                and _conditions(s).get("PruneHeld", {}).get("status") == "False"
                and s
            ),
            30,
            "the confirmed prune",
        )
        assert _conditions(status)["PruneHeld"]["reason"] == "Confirmed"
        assert f"Slice/{namespace}/wildfire" not in status["inventory"]
        wait_for(
            lambda: (
                kube_env.kubectl("-n", namespace, "get", "slice", "wildfire", check=False).returncode != 0
            ),
            30,
            "the pruned slice to go (after its teardown)",
        )
        wait_for(lambda: not kubectl_items(kube_env, namespace, "nfinstances"), 30, "its NFInstances to go")
        pruned = wait_for(lambda: _events(kube_env, namespace, "Pruned"), 10, "a Pruned Event")
        assert any(
            f"Slice/{namespace}/wildfire" in e["message"] and second[:12] in e["message"] for e in pruned
        )
        # The catalog objects are still in the revision: nothing else was pruned.
        assert kube_env.kubectl("-n", namespace, "get", "nfpackage", "broker", check=False).returncode == 0
