"""A VNF of an NFInstance runs as a real pod under a real kubelet, created by the real cluster agent.

One kubelet + containerd node (``tools/kubeenv/nodes.py``) on an API server of its own with the
flyslice CRDs; the NF-runner image is built here from this checkout (``image.flyslice_images``) and
imported into the node's containerd. ``flyslice agent --kube`` runs as a process in the node's
network namespace, as the bare-gateway form does (deploy/gateway), with the agent credentials of
deploy/k3s/rbac-agent.yaml. An NFInstance of the broker's VNF flavour for that node, naming the
image by digest, is created; the test checks that the agent's pod driver creates the pod, the
KUBELET runs it (phase Running and Ready from the kubelet; no FakeKubelet anywhere), the runner
process exists in the container's cgroup, it answers a data-plane liveness probe on the pod IP, the
agent reports the NFInstance Running, messages sent to the agent for the VNF go through the pod's
broker and back through the agent to its next hop (an fNF in the agent, whose status counters
count them), and deleting the NFInstance stops the container.

There is no operator here (so no signer): the agent runs with ``--insecure-plaintext`` and the pod
gets no certificate. ``FLYSLICE_VNF_POD_RUNS=N`` repeats the create/delete cycle N times and prints
``vnf_pod_start_ms`` and the container's memory per run (measurements; nothing is asserted on them).
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

from flyslice.nodeagent.dataplane.transport import probe, send_lines  # noqa: E402
from flyslice.nodeagent.message import new_message  # noqa: E402

from .test_real_node import _assert_nothing_left  # noqa: E402

pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.timeout(900)]

AGENT_PORT = agentnode.AGENT_PORT
RUNNER_MODULE = "flyslice.nodeagent.runtime.runner"


@pytest.fixture(scope="module")
def node_env() -> Iterator[tuple[kubeenv.KubeEnv, nodes.NodeBinaries]]:
    """An API server of its own with the flyslice CRDs, and the node binaries (or a skip)."""
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
    with agentnode.control_plane(kube_binaries) as env:
        yield env, binaries


@pytest.fixture(scope="module")
def runner_image() -> image.Image:
    _app, runner = image.flyslice_images()
    return runner


@pytest.fixture(scope="module")
def cluster(
    node_env: tuple[kubeenv.KubeEnv, nodes.NodeBinaries], runner_image: image.Image
) -> Iterator[nodes.NodeCluster]:
    env, binaries = node_env
    c = nodes.NodeCluster(env, binaries, images=[runner_image]).start()
    try:
        c.add_node(f"edge-{c.id}")
        yield c
    finally:
        problems = c.stop()
        assert problems == [], problems
        _assert_nothing_left(c)


_broker = agentnode.broker_nfinstance
_wait = agentnode.wait_until


def _pods(core: Any, ns: str, instance: str) -> list[Any]:
    return list(core.list_namespaced_pod(ns, label_selector=f"flyslice.io/instance={instance}").items)


def _running(pod: Any) -> bool:
    statuses = pod.status.container_statuses or []
    return pod.status.phase == "Running" and bool(statuses) and statuses[0].state.running is not None


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _counters(custom: Any, ns: str, name: str) -> dict[str, int]:
    obj = custom.get_namespaced_custom_object("flyslice.io", "v1alpha1", ns, "nfinstances", name)
    counters: dict[str, int] = (obj.get("status") or {}).get("counters") or {}
    return counters


def _state(custom: Any, ns: str, name: str) -> str | None:
    obj = custom.get_namespaced_custom_object("flyslice.io", "v1alpha1", ns, "nfinstances", name)
    state: str | None = (obj.get("status") or {}).get("state")
    return state


def test_agent_starts_a_vnf_pod_the_kubelet_runs(
    cluster: nodes.NodeCluster, runner_image: image.Image
) -> None:
    from kubernetes import client, config

    from tests.kube.operator_harness import agent_kubeconfig

    env = cluster.env
    (node,) = cluster.nodes
    ns = f"vnf-{uuid.uuid4().hex[:8]}"
    env.kubectl("create", "namespace", ns)
    # No kube-controller-manager publishes kube-root-ca.crt here: the pod starts only because the
    # driver does not mount a service-account token into NF pods.
    env.kubectl("apply", "-f", "-", input=yaml.safe_dump(agentnode.edgenode(node.name)))
    admin = config.new_client_from_config(config_file=str(env.kubeconfig))
    core, custom = client.CoreV1Api(admin), client.CustomObjectsApi(admin)
    agent = agentnode.start_agent(cluster, node, agent_kubeconfig(env, node.name, ns), ns)
    agent_log = agent.log_tail

    try:
        # The agent heartbeats from inside the node's namespace, through the forwarder.
        agentnode.wait_heartbeat(env, agent)
        # The VNF's next hop: an fNF in the agent's own process, whose counters show what arrived.
        custom.create_namespaced_custom_object(
            "flyslice.io", "v1alpha1", ns, "nfinstances", _broker("sink", node.name, None)
        )
        runs = int(os.environ.get("FLYSLICE_VNF_POD_RUNS", "1"))
        for run in range(runs):
            _one_vnf(cluster, node, core, custom, ns, f"broker-{run}", runner_image, agent_log, send=run == 0)
        assert agent.popen.poll() is None, agent_log()
    finally:
        returncode = agent.stop()
        env.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    assert returncode == 0, agent_log()


def _one_vnf(
    cluster: nodes.NodeCluster,
    node: nodes.Node,
    core: Any,
    custom: Any,
    ns: str,
    name: str,
    runner_image: image.Image,
    agent_log: Any,
    *,
    send: bool,
) -> None:
    body = _broker(name, node.name, runner_image.by_digest, next_hops=("sink",))
    t0 = time.monotonic()
    custom.create_namespaced_custom_object("flyslice.io", "v1alpha1", ns, "nfinstances", body)

    def why() -> str:
        pods = core.list_namespaced_pod(ns).items
        status = [(p.metadata.name, p.status.phase, p.status.container_statuses) for p in pods]
        nfs = custom.list_namespaced_custom_object("flyslice.io", "v1alpha1", ns, "nfinstances")["items"]
        status += [(o["metadata"]["name"], o.get("status")) for o in nfs]
        return f"{status}\nagent:\n{agent_log()}\nkubelet:\n{node.logs('kubelet', 20)}"

    (pod,) = _wait(
        lambda: [p for p in _pods(core, ns, name) if _running(p)],
        120,
        lambda: f"{name}'s pod Running {why()}",
    )
    start_ms = (time.monotonic() - t0) * 1000
    pod = _wait(
        lambda: [p for p in _pods(core, ns, name) if _ready(p)], 60, lambda: f"{name}'s pod Ready {why()}"
    )[0]
    ready_ms = (time.monotonic() - t0) * 1000
    # The agent's pod driver made it, pinned to the node; the kubelet of that node runs it.
    assert pod.metadata.labels["app.kubernetes.io/managed-by"] == "flyslice-nodeagent"
    assert pod.spec.node_name == node.name and pod.status.host_ip == node.ip
    (status,) = pod.status.container_statuses
    assert status.image_id.endswith(runner_image.digest)
    assert pod.spec.containers[0].image == runner_image.by_digest

    # The runner process exists in the container's own cgroup on that node.
    cgroup = node.container_cgroup(status.container_id)
    pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0") for p in pids]
    assert any(RUNNER_MODULE.encode() in c for c in cmdlines), cmdlines
    # ... and answers a data-plane liveness probe on its pod IP (the host routes to the pod range).
    assert probe(f"{pod.status.pod_ip}:7000", timeout=5.0)
    # The agent observed the Ready pod and says so in the NFInstance's status.
    _wait(
        lambda: _state(custom, ns, name) == "Running",
        30,
        lambda: f"{name} Running in its status {why()}",
        0.2,
    )
    state_ms = (time.monotonic() - t0) * 1000

    if send:
        # Data plane: into the agent (node IP), which forwards to the pod's runner; the broker in the
        # pod sends its output up to the agent, which hands it to the sink fNF. The agent writes the
        # sink's counters to its status at most every 30 s (report_s), hence the long wait.
        n = 3
        messages = [{**new_message("s1", f"sensors/{i}", {"i": i}), "to": name} for i in range(n)]
        send_lines(f"{node.ip}:{AGENT_PORT}", messages)
        _wait(
            lambda: _counters(custom, ns, "sink").get("in", 0) >= n,
            60,
            lambda: f"{n} messages at the sink through {name}'s pod {_counters(custom, ns, 'sink')} {why()}",
            0.5,
        )

    memory = agentnode.container_memory(cgroup)
    print(
        f"\nvnf_pod_start_ms={start_ms:.0f} ready_ms={ready_ms:.0f} nfinstance_running_ms={state_ms:.0f} "
        f"memory.usage_in_bytes={memory['usage'] / 2**20:.1f}MiB rss={memory['rss'] / 2**20:.1f}MiB "
        f"cache={memory['cache'] / 2**20:.1f}MiB pod={pod.metadata.name}"
    )
    assert memory["rss"] > 5 << 20  # a Python process with flyslice imported, not an empty cgroup

    # Deleting the NFInstance: the agent deletes the pod, the kubelet stops the container.
    custom.delete_namespaced_custom_object("flyslice.io", "v1alpha1", ns, "nfinstances", name)
    _wait(lambda: not _pods(core, ns, name), 60, lambda: f"{name}'s pod deleted {why()}", 0.2)
    assert not nodes.wait_gone(pids, 15.0), f"runner processes {pids} still alive"
