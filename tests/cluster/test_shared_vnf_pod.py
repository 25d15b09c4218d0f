"""A shared VNF instance in cluster mode is ONE pod under a real kubelet, whose tenants join and leave
without a restart.

As tests/cluster/test_vnf_pod_on_node.py: one kubelet + containerd node (``tools/kubeenv/nodes.py``)
on an API server of its own, the NF-runner image built from this checkout, and ``flyslice agent
--kube`` in the node's network namespace (``tools/kubeenv/agentnode.py``). Two NFInstances of the
broker's VNF flavour, of slices s1 and s2, name the same ``sharedInstance.name``; each has its own
next hop, an fNF sink of its slice in the agent. The test checks that

* the agent's pod driver runs ONE pod for both (one pod with the shared-instance label, none per
  tenant), and that pod -- its UID, its container id, restartCount 0, the runner process in its
  cgroup -- is the same before the second tenant joins, after it joined and after the first left;
* messages of each slice go through that pod and come back only to their own slice's next hop (each
  sink counts exactly its slice's messages), and a message labelled s2 but addressed to the s1 tenant
  is refused and counted in that tenant's status, not delivered;
* each NFInstance's status is its own: Running, and its own ``in`` counter from the runner;
* deleting one tenant keeps the pod (the other's traffic still flows); deleting the last deletes it
  and the kubelet stops the runner.

No operator runs here (no signer), so the agent runs ``--insecure-plaintext`` and the pod gets no
certificate; the certificate path (all tenants' slices in one certificate, sent with the tenants) is
covered by tests/nodeagent/test_shared_vnf_control.py and tests/kube/test_shared_pod_certificate.py.
Skips like test_real_node.py: without ``FLYSLICE_REQUIRE_KUBE=1`` or the node binaries.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "kubeenv"))

import agentnode  # noqa: E402
import image  # noqa: E402
import kubeenv  # noqa: E402
import nodes  # noqa: E402

from flyslice.nodeagent.dataplane.transport import send_lines  # noqa: E402
from flyslice.nodeagent.message import new_message  # noqa: E402

from .test_real_node import _assert_nothing_left  # noqa: E402

pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.timeout(900)]

RUNNER_MODULE = b"flyslice.nodeagent.runtime.runner"
SHARED_LABEL = "flyslice.io/shared-instance"
GVP = ("flyslice.io", "v1alpha1")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[nodes.NodeCluster, image.Image]]:
    if os.environ.get("FLYSLICE_REQUIRE_KUBE") != "1":
        pytest.skip(
            "real nodes run only with FLYSLICE_REQUIRE_KUBE=1 (and after tools/kubeenv/build-node.sh)"
        )
    try:
        binaries = nodes.find_node_binaries()
    except nodes.NodesUnavailable as exc:
        pytest.skip(str(exc))
    try:
        kube_binaries = kubeenv.find_binaries()
    except kubeenv.KubeEnvUnavailable as exc:
        pytest.fail(str(exc))
    _app, runner = image.flyslice_images()
    with agentnode.control_plane(kube_binaries) as env:
        c = nodes.NodeCluster(env, binaries, images=[runner]).start()
        try:
            c.add_node(f"edge-{c.id}")
            yield c, runner
        finally:
            problems = c.stop()
            assert problems == [], problems
            _assert_nothing_left(c)


def _tenant(name: str, node: str, img: str, slice_name: str, sink: str, shared: str) -> dict[str, Any]:
    body = agentnode.broker_nfinstance(name, node, img, next_hops=(sink,), slice_name=slice_name)
    body["spec"]["sharedInstance"] = {"name": shared, "perTenantConfig": False}
    return body


def test_tenants_of_a_shared_vnf_share_one_pod_that_never_restarts(
    cluster: tuple[nodes.NodeCluster, image.Image],
) -> None:
    from kubernetes import client, config

    from tests.kube.operator_harness import agent_kubeconfig

    c, runner_image = cluster
    env = c.env
    (node,) = c.nodes
    ns = f"shared-{uuid.uuid4().hex[:8]}"
    env.kubectl("create", "namespace", ns)
    env.kubectl("apply", "-f", "-", input=yaml.safe_dump(agentnode.edgenode(node.name)))
    admin = config.new_client_from_config(config_file=str(env.kubeconfig))
    core, custom = client.CoreV1Api(admin), client.CustomObjectsApi(admin)
    agent = agentnode.start_agent(c, node, agent_kubeconfig(env, node.name, ns), ns)
    shared = f"broker/vnf/any@{node.name}#0"

    def obj(name: str) -> dict[str, Any]:
        found: dict[str, Any] = custom.get_namespaced_custom_object(*GVP, ns, "nfinstances", name)
        return found

    def status(name: str) -> dict[str, Any]:
        st: dict[str, Any] = obj(name).get("status") or {}
        return st

    def counters(name: str) -> dict[str, int]:
        got: dict[str, int] = status(name).get("counters") or {}
        return got

    def pods() -> list[Any]:
        return list(core.list_namespaced_pod(ns).items)

    def shared_pods() -> list[Any]:
        return [p for p in pods() if SHARED_LABEL in (p.metadata.labels or {})]

    def why() -> str:
        state = [(p.metadata.name, p.status.phase, p.status.container_statuses) for p in pods()]
        nfs = custom.list_namespaced_custom_object(*GVP, ns, "nfinstances")["items"]
        state += [(o["metadata"]["name"], o.get("status")) for o in nfs]
        return f"{state}\nagent:\n{agent.log_tail()}\nkubelet:\n{node.logs('kubelet', 20)}"

    def wait(check: Any, timeout: float, what: str, interval: float = 0.3) -> Any:
        return agentnode.wait_until(check, timeout, lambda: f"{what} {why()}", interval)

    def identity() -> tuple[str, str, int, list[int]]:
        """(pod UID, container id, restarts, runner pids in its cgroup) of the one shared pod."""
        (pod,) = shared_pods()
        (cs,) = pod.status.container_statuses
        cgroup = node.container_cgroup(cs.container_id)
        pids = sorted(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
        runners = [p for p in pids if RUNNER_MODULE in Path(f"/proc/{p}/cmdline").read_bytes()]
        return pod.metadata.uid, cs.container_id, cs.restart_count, runners

    def send(*batches: tuple[str, str, int]) -> None:
        """(slice, tenant, count): messages into the agent (node IP), addressed to the tenant."""
        msgs = [
            {**new_message(s, f"sensors/{i}", {"i": i}), "to": to} for s, to, n in batches for i in range(n)
        ]
        send_lines(f"{node.ip}:{agentnode.AGENT_PORT}", msgs)

    try:
        agentnode.wait_heartbeat(env, agent)
        for sink, s in (("sink-1", "s1"), ("sink-2", "s2")):  # each slice's next hop: an fNF of its own
            custom.create_namespaced_custom_object(
                *GVP, ns, "nfinstances", agentnode.broker_nfinstance(sink, node.name, None, slice_name=s)
            )
        img = runner_image.by_digest
        t0 = time.monotonic()
        custom.create_namespaced_custom_object(
            *GVP, ns, "nfinstances", _tenant("tenant-1", node.name, img, "s1", "sink-1", shared)
        )
        wait(lambda: status("tenant-1").get("state") == "Running", 180, "tenant-1 Running")
        first_ms = (time.monotonic() - t0) * 1000
        (pod,) = shared_pods()
        assert pod.metadata.annotations[SHARED_LABEL] == shared and pod.spec.node_name == node.name
        assert pod.status.container_statuses[0].image_id.endswith(runner_image.digest)
        first = identity()
        assert first[2] == 0 and first[3], first  # a runner process runs in the pod's container

        t0 = time.monotonic()
        custom.create_namespaced_custom_object(
            *GVP, ns, "nfinstances", _tenant("tenant-2", node.name, img, "s2", "sink-2", shared)
        )
        wait(lambda: status("tenant-2").get("state") == "Running", 60, "tenant-2 Running")
        join_ms = (time.monotonic() - t0) * 1000
        # Measurements (nothing asserted on them): the pod's start, and a join into the running pod.
        print(f"\nshared_first_tenant_running_ms={first_ms:.0f} shared_join_running_ms={join_ms:.0f}")
        assert status("tenant-1").get("state") == "Running"
        assert [p.metadata.name for p in pods()] == [pod.metadata.name]  # no pod of its own for a tenant
        assert identity() == first  # the same pod, container and runner process: nothing restarted

        # Each slice's messages through the one pod, back to that slice's own sink only; one message of
        # s2 addressed to s1's tenant is refused (and counted), not delivered. The agent writes counters
        # to the status at most every 30 s (report_s), hence the long waits.
        send(("s1", "tenant-1", 3), ("s2", "tenant-2", 4), ("s2", "tenant-1", 1))
        wait(
            lambda: counters("sink-1").get("in") == 3 and counters("sink-2").get("in") == 4,
            75,
            "each sink counting its own slice's messages",
            1.0,
        )
        wait(
            lambda: counters("tenant-1").get("in") == 3 and counters("tenant-2").get("in") == 4,
            75,
            "each tenant's own counters in its status",
            1.0,
        )
        assert counters("tenant-1").get("rejected", 0) >= 1 and counters("tenant-2").get("rejected", 0) == 0
        assert counters("sink-1").get("in") == 3 and counters("sink-2").get("in") == 4
        assert identity() == first

        # tenant-1 leaves: the pod stays, tenant-2's traffic still flows through it.
        custom.delete_namespaced_custom_object(*GVP, ns, "nfinstances", "tenant-1")
        send(("s2", "tenant-2", 2))
        wait(lambda: counters("sink-2").get("in") == 6, 75, "tenant-2's traffic after tenant-1 left", 1.0)
        assert status("tenant-2").get("state") == "Running"
        assert identity() == first
        assert counters("sink-1").get("in") == 3

        # The last tenant leaves: the pod is deleted and the kubelet stops its runner.
        custom.delete_namespaced_custom_object(*GVP, ns, "nfinstances", "tenant-2")
        wait(lambda: not shared_pods(), 60, "the shared pod deleted with its last tenant")
        assert not nodes.wait_gone(first[3], 30.0), f"runner processes {first[3]} still alive"
        assert agent.popen.poll() is None, agent.log_tail()
    finally:
        returncode = agent.stop()
        env.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    assert returncode == 0, agent.log_tail()
