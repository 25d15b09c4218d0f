"""FAKE kubelet for tests of tests/kube, whose clusters are an API server alone (no kubelet, no runtime).

A real kubelet, for each pod bound to its node, starts the containers and writes the pod status
(phase Running, the Ready condition, the pod IP), and finishes a graceful deletion by removing the
object once the containers have stopped. This fake does exactly those two API writes for pods bound
to the nodes it is given, without running anything. Nothing in flyslice itself uses it.

Where it stays, and why: the tests/kube modules that import it check what the operator and agents
write to the API server (NFInstances, pod specs and Secrets, statuses, conditions, Events, metrics,
RBAC refusals), for which a VNF pod only has to *say* Running; they start in seconds, on a bare API
server, many per run. Whatever depends on a container really running is tested on real kubelet +
containerd nodes in tests/cluster (tools/kubeenv/nodes.py), never here: the deployed product and
wildfire's data end to end (test_deploy_k3s.py), pod, container, node and operator faults
(test_faults_k3s.py), a shared VNF pod and its certificate (test_shared_vnf_pod.py), the agent's pod
driver under a kubelet (test_vnf_pod_on_node.py).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any


class FakeKubelet:
    def __init__(self, core: Any, namespace: str, nodes: set[str], *, interval_s: float = 0.2) -> None:
        self.core = core
        self.namespace = namespace
        self.nodes = set(nodes)
        self.interval_s = interval_s
        self.started: set[str] = set()
        self.removed: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-kubelet", daemon=True)

    def __enter__(self) -> FakeKubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception:  # the API server may be busy; the next round retries
                continue

    def sync(self) -> None:
        from kubernetes.client.exceptions import ApiException

        for pod in self.core.list_namespaced_pod(self.namespace).items:
            if pod.spec.node_name not in self.nodes:
                continue
            name = pod.metadata.name
            try:
                if pod.metadata.deletion_timestamp is not None:
                    # The containers "stopped": confirm the deletion, as a kubelet does.
                    self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
                    self.removed.add(name)
                elif (pod.status.phase or "Pending") != "Running":
                    self.core.patch_namespaced_pod_status(name, self.namespace, _running_status(pod))
                    self.started.add(name)
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise


def _running_status(pod: Any) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "hostIP": "127.0.0.1",
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": c.name,
                    "image": c.image,
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": now}},
                }
                for c in pod.spec.containers
            ],
        }
    }
