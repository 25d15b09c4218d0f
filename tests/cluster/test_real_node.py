"""Two real kubelet + containerd nodes run pods of an image built here, and the pods talk over veths.

Everything is real: the kubelets register with the test kube-apiserver and post Ready; containerd
runs the containers with Debian's runc; the CNI bridge plugin gives each pod an IP from its node's
range; the pods reach each other through the nodes' network namespaces and the host bridge; the
memory figure comes from the container's own cgroup. Only when ``FLYSLICE_REQUIRE_KUBE=1`` and
``tools/kubeenv/build-node.sh`` has built the node binaries: otherwise the test skips and says why.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "kubeenv"))

import image  # noqa: E402
import kubeenv  # noqa: E402
import nodes  # noqa: E402

pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.timeout(600)]

PORT = 7000
BALLAST_MIB = 48  # the server keeps this much touched memory, so its cgroup must show at least that

SERVER = textwrap.dedent(
    f"""
    import os, socket
    ballast = b"x" * ({BALLAST_MIB} << 20)  # touched pages: counted in the container's memory cgroup
    me = os.environ["POD_IP"]
    srv = socket.create_server(("0.0.0.0", {PORT}))
    print("serving on", me, flush=True)
    while True:
        conn, (peer, _port) = srv.accept()
        with conn:
            conn.sendall(f"hello {{peer}} from {{me}}\\n".encode())
    """
)

CLIENT = textwrap.dedent(
    f"""
    import os, socket, sys, time
    me, server = os.environ["POD_IP"], os.environ["SERVER_IP"]
    for attempt in range(50):
        try:
            with socket.create_connection((server, {PORT}), timeout=2) as s:
                line = s.makefile().readline().strip()
                break
        except OSError as exc:
            print("retry:", exc, flush=True)
            time.sleep(0.2)
    else:
        sys.exit(2)
    print(line, flush=True)
    # The server saw this pod's own address: no NAT between pods on different nodes.
    sys.exit(0 if line == f"hello {{me}} from {{server}}" else 3)
    """
)


@pytest.fixture(scope="module")
def node_env() -> Iterator[tuple[kubeenv.KubeEnv, nodes.NodeBinaries]]:
    """An API server of its own and the node binaries, or a skip saying what is missing."""
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
    # Not the shared API server: it cannot reach kubelets for `kubectl logs` (see
    # nodes.APISERVER_ARGS), and other tests need not see these Node objects.
    with kubeenv.KubeEnv(kube_binaries, extra_apiserver_args=nodes.APISERVER_ARGS) as env:
        yield env, binaries


@pytest.fixture(scope="module")
def cluster(node_env: tuple[kubeenv.KubeEnv, nodes.NodeBinaries]) -> Iterator[nodes.NodeCluster]:
    env, binaries = node_env
    c = nodes.NodeCluster(env, binaries, images=[image.python_image()]).start()
    try:
        c.add_node(f"cloud-{c.id}")
        c.add_node(f"fog-{c.id}")
        yield c
    finally:
        problems = c.stop()
        assert problems == [], problems
        _assert_nothing_left(c)


def _assert_nothing_left(c: nodes.NodeCluster) -> None:
    """After stop(): no namespace, link, cgroup, mount, directory or process of this cluster."""
    assert f"fs{c.id}-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"fsbr{c.id}" not in links and f"fs{c.id}v" not in links
    assert not [h for h in nodes.cgroup_hierarchies(unified=True) if list(h.glob(f"flyslice-{c.id}-*"))]
    assert str(c.dir) not in Path("/proc/self/mountinfo").read_text()
    assert not c.dir.exists()
    ours = [p for p in os.listdir("/proc") if p.isdigit() and str(c.dir).encode() in _cmdline(p)]
    assert ours == [], f"processes left: {ours}"


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _pod(name: str, node: str, script: str, img: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    ]
    variables += [{"name": k, "value": v} for k, v in (env or {}).items()]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,  # bound directly: no scheduler runs here
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "dnsPolicy": "Default",
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": img,
                    "imagePullPolicy": "Never",  # no registry: the image was imported into containerd
                    "command": ["/usr/bin/python3", "-c", script],
                    "env": variables,
                }
            ],
        },
    }


def _wait_pod(
    cluster: nodes.NodeCluster, ns: str, name: str, phases: set[str], timeout: float = 90
) -> dict[str, Any]:
    env = cluster.env
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = env.kubectl_json("-n", ns, "get", "pod", name)
        status = pod.get("status", {})
        if status.get("phase") in phases and status.get("podIP"):
            running = status.get("containerStatuses", [{}])[0].get("state", {})
            if "Running" not in phases or "running" in running:
                return pod
        if status.get("phase") == "Failed" and "Failed" not in phases:
            break
        time.sleep(0.3)
    events = env.kubectl("-n", ns, "get", "events", check=False).stdout
    node = cluster.node(pod.get("spec", {}).get("nodeName", ""))
    raise AssertionError(
        f"pod {ns}/{name} not in {phases}: {json.dumps(pod.get('status'), indent=1)}\n{events}\n"
        f"kubelet:\n{node.logs('kubelet', 25)}\ncontainerd:\n{node.logs('containerd', 25)}"
    )


def test_two_nodes_run_pods_that_reach_each_other(cluster: nodes.NodeCluster) -> None:
    env = cluster.env
    cloud, fog = cluster.nodes
    for node in (cloud, fog):
        obj = env.kubectl_json("get", "node", node.name)
        ready = {c["type"]: c["status"] for c in obj["status"]["conditions"]}["Ready"]
        assert ready == "True"
        assert {"type": "InternalIP", "address": node.ip} in obj["status"]["addresses"]
        assert obj["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")

    python = cluster.images[0]
    ns = f"rn-{uuid.uuid4().hex[:8]}"
    env.kubectl("create", "namespace", ns)
    try:
        env.kubectl(
            "-n",
            ns,
            "apply",
            "-f",
            "-",
            input=json.dumps(_pod("server", cloud.name, SERVER, python.by_digest)),
        )
        server = _wait_pod(cluster, ns, "server", {"Running"})
        server_ip = server["status"]["podIP"]
        assert ipaddress.ip_address(server_ip) in ipaddress.ip_network(cloud.pod_cidr)
        assert server["status"]["containerStatuses"][0]["imageID"].endswith(python.digest)

        client_pod = _pod("client", fog.name, CLIENT, python.by_digest, {"SERVER_IP": server_ip})
        env.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(client_pod))
        client = _wait_pod(cluster, ns, "client", {"Succeeded"})
        client_ip = client["status"]["podIP"]
        assert ipaddress.ip_address(client_ip) in ipaddress.ip_network(fog.pod_cidr)
        # The log travels kubelet -> API server -> kubectl, like any user's `kubectl logs`.
        log = env.kubectl("-n", ns, "logs", "client").stdout
        assert f"hello {client_ip} from {server_ip}" in log

        # Memory of the server container, read from its own v1 memory cgroup on node cloud.
        container_id = server["status"]["containerStatuses"][0]["containerID"]
        cgroup = cloud.container_cgroup(container_id)
        usage = int((cgroup / "memory.usage_in_bytes").read_text())
        assert usage >= BALLAST_MIB << 20, f"{cgroup}: {usage} bytes"
        pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
        assert pids and all(Path(f"/proc/{p}").exists() for p in pids)
        assert container_id.split("://")[1] in cloud.ctr("tasks", "ls", "-q").split()

        # Deleting the Pod stops its container: the kubelet kills it and containerd removes the task.
        env.kubectl("-n", ns, "delete", "pod", "server", "--wait=true", "--timeout=60s", timeout=70)
        assert not nodes.wait_gone(pids, 10.0), f"server processes {pids} still alive"
        assert container_id.split("://")[1] not in cloud.ctr("tasks", "ls", "-q").split()
    finally:
        env.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_a_cluster_whose_process_died_is_reaped(node_env: tuple[kubeenv.KubeEnv, nodes.NodeBinaries]) -> None:
    """A test run killed before stop() leaves kubelet, containerd, namespaces and cgroups behind;
    the next NodeCluster.start() (reap_stale) removes them. Simulated by handing the cluster's
    ownership to a process that has exited."""
    env, binaries = node_env
    c = nodes.NodeCluster(env, binaries).start()
    try:
        node = c.add_node(f"stale-{c.id}")
        assert node.running()
        dead = subprocess.Popen(["true"])
        dead.wait()
        (c.dir / "owner.pid").write_text(str(dead.pid))
        assert c.id in nodes.reap_stale()
        assert not node.running()
        _assert_nothing_left(c)
    finally:
        c.stop()
