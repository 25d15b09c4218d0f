"""flyslice deployed as users deploy it, on real kubelet nodes, and the wildfire slice carrying real MQTT readings.

The cluster: an API server of its own with the workload controllers (Deployment, ReplicaSet,
DaemonSet, the kube-root-ca.crt publisher) and kube-scheduler; two kubelet + containerd nodes ``cloud``
and ``fog-1`` (the EdgeNode names of examples/wildfire: in DaemonSet mode an EdgeNode is named after
its Node), each with the ``kubernetes`` Service's ClusterIP relayed to the API server (no kube-proxy
here) and a private /var/lib/flyslice (two nodes share this machine's file system); two bare gateways
``gw-1`` and ``gw-2``: network namespaces without kubelet, each with mosquitto. The flyslice image is
built from this checkout (tools/kubeenv/image.py) and imported into the nodes; the NF-runner image is
also tagged ``ghcr.io/flyslice/nf-runner:0.1.0`` there, the name examples/wildfire's packages use, as
an air-gapped node is preloaded.

What a user does, in order, and what is checked:

1. ``kubectl apply --server-side -f crds/``, ``kubectl label node ... flyslice.io/agent=true`` and
   ``kubectl apply -k OVERLAY`` (deploy/k3s as the base, the image set, ``--no-load-report`` for agents sharing this one machine): the scheduler places the
   operator's replicas, which reach the API server with their in-cluster service account and elect one
   leader (Lease holder = the pod labelled flyslice.io/leader=true); the DaemonSet runs one agent pod
   per labelled node (host network, pod-bound token), each with a data-plane certificate the leader
   signed (mutual TLS: nowhere ``--insecure-plaintext``).
2. Each gateway as deploy/gateway sets it up: ``make-agent-kubeconfig.sh`` (a client certificate the
   cluster signs), ``install.sh`` (a virtualenv, the unit, agent.env), then the unit's ExecStart in the
   gateway's namespace (fNFs only, ``--no-pods``), with ``--mqtt`` to its mosquitto.
3. ``kubectl apply -f examples/wildfire/``: the operator places the nine NFs; the cloud's three VNFs
   run as pods the cloud agent created and its kubelet runs (image by the example's name), the fNFs in
   the fog and gateway agents; the Slice becomes Ready. Readings a real MQTT client publishes at both
   gateways travel gateway fNFs -> fog fNFs -> the cloud's VNF pods over mutual TLS and end in the
   storage NF's SQLite file in the db pod (read with ``kubectl exec``), with the fire alarm.

The deployed cluster is shared with test_faults_k3s.py (conftest.py, deploy_harness.Shared): these
tests run first and leave it as they found it (the Slice deleted), the fault scenarios then use it
up. Either file run alone builds its own.

Printed: apply -k -> leader and agents Ready; apply -f -> Slice Ready; the test's wall time.
Skips like the other tests here: without ``FLYSLICE_REQUIRE_KUBE=1``, the node binaries or kube-scheduler.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "kubeenv"))

import agentnode  # noqa: E402
import image  # noqa: E402
import kubeenv  # noqa: E402
import nodes  # noqa: E402

from . import deploy_harness as harness  # noqa: E402
from .test_real_node import _assert_nothing_left  # noqa: E402

pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.timeout(1500)]

SYSTEM = "flyslice-system"
KUBE_NODES = ("cloud", "fog-1")
GATEWAYS = ("gw-1", "gw-2")
#: What the wildfire packages name; the runner image built here is preloaded under it.
EXAMPLE_RUNNER = "ghcr.io/flyslice/nf-runner:0.1.0"
#: Beyond kubeenv's defaults: workloads, the CA bundle pods' tokens carry, and the node lifecycle
#: controller, which lifts the not-ready taint kubelets register with (else nothing is scheduled).
#: The endpoint controllers give the flyslice-console Service its endpoints (the API server's service
#: proxy needs them).
CONTROLLERS = ("deployment", "replicaset", "daemonset", "root-ca-cert-publisher", "nodelifecycle",
               "endpoint", "endpointslice")  # fmt: skip
STATE_DIR = "/var/lib/flyslice"  # the DaemonSet's hostPath


def wait(
    check: Callable[[], Any], timeout: float, what: Callable[[], str] | str, interval: float = 0.5
) -> Any:
    """Poll ``check`` until truthy; fail naming ``what`` (a callable is called only then)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what() if callable(what) else what}"
                         f" (last: {last!r})")  # fmt: skip


@dataclass
class Platform:
    env: kubeenv.KubeEnv
    cluster: nodes.NodeCluster
    app: image.Image
    runner: image.Image
    gateways: dict[str, nodes.Host] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def pods(self, namespace: str = SYSTEM, selector: str = "") -> list[dict[str, Any]]:
        args = ["-n", namespace, "get", "pods"] + (["-l", selector] if selector else [])
        items: list[dict[str, Any]] = self.env.kubectl_json(*args)["items"]
        return items

    def diagnose(self) -> str:
        """What a person would look at: pods everywhere, the flyslice logs, events, kubelet tails."""
        k = self.env.kubectl
        parts = [k("get", "pods", "-A", "-o", "wide", check=False).stdout,
                 k("get", "nfinstances,slices", "-A", "-o", "wide", check=False).stdout,
                 k("get", "events", "-A", "--sort-by=.lastTimestamp", check=False).stdout[-4000:]]  # fmt: skip
        for pod in self.pods():
            name = pod["metadata"]["name"]
            if name.startswith(("flyslice-operator", "flyslice-agent")):
                parts.append(f"--- {name}\n" + k("-n", SYSTEM, "logs", name, "--tail=40", check=False).stdout)
        for host in self.gateways.values():
            parts.append(f"--- {host.name} agent\n{host.logs('agent', 30)}")
        for node in self.cluster.nodes:
            parts.append(f"--- kubelet {node.name}\n{node.logs('kubelet', 15)}")
        return "\n".join(parts)


def _binaries_or_skip() -> tuple[kubeenv.Binaries, nodes.NodeBinaries]:
    if os.environ.get("FLYSLICE_REQUIRE_KUBE") != "1":
        pytest.skip(
            "real nodes run only with FLYSLICE_REQUIRE_KUBE=1 (and after tools/kubeenv/build-node.sh)"
        )
    try:
        node_binaries = nodes.find_node_binaries()
    except nodes.NodesUnavailable as exc:
        pytest.skip(str(exc))
    if node_binaries.scheduler is None:
        pytest.skip(f"kube-scheduler not built in {nodes.node_bin_dir()}; run tools/kubeenv/build-node.sh")
    try:
        return kubeenv.find_binaries(), node_binaries
    except kubeenv.KubeEnvUnavailable as exc:
        pytest.fail(str(exc))


@contextlib.contextmanager
def built_platform() -> Iterator[Platform]:
    """The control plane, two kubelet nodes and two gateways with flyslice installed as a user would."""
    kube_binaries, node_binaries = _binaries_or_skip()
    started = time.monotonic()
    state_dir_existed = Path(STATE_DIR).exists()
    app, runner = image.flyslice_images()
    wheels = image.wheelhouse()  # for the gateways' install.sh: built once per source change
    images_s = time.monotonic() - started
    # etcd and the API server in an owned directory: a killed run's are reaped by the next one.
    workdir = agentnode.owned_dir("deploy")
    env = kubeenv.KubeEnv(
        kube_binaries,
        workdir=workdir,
        extra_apiserver_args=nodes.APISERVER_ARGS,
        extra_controllers=CONTROLLERS,
    )
    cluster: nodes.NodeCluster | None = None
    try:
        env.start()
        cluster = nodes.NodeCluster(
            env, node_binaries, images=[app, runner], service_relay=True, node_paths=[STATE_DIR]
        ).start()
        p = Platform(env, cluster, app, runner, started=started)
        p.figures["images_and_wheels_s"] = images_s  # seconds when cached; a source edit rebuilds them
        # Gateways first: their installs (pip, tens of seconds) run while the nodes start.
        installs = {}
        for name in GATEWAYS:
            host = p.gateways[name] = cluster.add_host(name)
            server = f"https://{kubeenv.SERVICE_IP}:443"  # the API server as the gateway reaches it
            kubeconfig = harness.gateway_kubeconfig(env, name, server, host.dir / f"{name}.kubeconfig")
            # No --advertise: the agent finds the address its peers reach it at (nodeagent/kube/advertise.py).
            args = f"--mqtt 127.0.0.1:1883 {' '.join(harness.TEST_AGENT_ARGS)}"
            installs[name] = harness.install_gateway(host, kubeconfig, args, wheels)
        t0 = time.monotonic()
        for name in KUBE_NODES:
            node = cluster.add_node(name)
            node.tag_image(runner, EXAMPLE_RUNNER)
        cluster.start_scheduler()
        p.figures["nodes_ready_s"] = time.monotonic() - t0
        for name, proc in installs.items():
            assert proc.popen.wait(600) == 0, p.gateways[name].logs("install", 40)
        p.figures["gateway_installs_s"] = time.monotonic() - t0
        yield p
    finally:
        problems = cluster.stop() if cluster is not None else []
        env.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        assert problems == [], problems
        if cluster is not None:
            _assert_nothing_left(cluster)
        # The nodes' hostPath copies lived in the cluster's directory; the mount point made for them went.
        assert state_dir_existed or not Path(STATE_DIR).exists()


def _lease_holder(p: Platform) -> str:
    lease = p.env.kubectl("-n", SYSTEM, "get", "lease", "flyslice-operator", "-o", "json", check=False)
    if lease.returncode:
        return ""
    holder: str = json.loads(lease.stdout).get("spec", {}).get("holderIdentity") or ""
    return holder


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _node_certificates(p: Platform) -> dict[str, str]:
    """node -> the data-plane certificate the operator issued to its agent (CSRs of signer flyslice.io/dataplane)."""
    csrs = p.env.kubectl_json("get", "csr")["items"]
    return {
        c["metadata"]["labels"]["flyslice.io/node"]: c["status"]["certificate"]
        for c in csrs
        if c["spec"]["signerName"] == "flyslice.io/dataplane"
        and "flyslice.io/node" in c["metadata"].get("labels", {})
        and c.get("status", {}).get("certificate")
    }


def deploy_flyslice(p: Platform) -> None:
    """crds/ and ``kubectl apply -k`` of the overlay; returns once the operator has a leader and both
    agents run with a certificate; then the gateways' agents as their units run them."""
    env = p.env
    env.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    env.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", timeout=70)
    for name in KUBE_NODES:  # the opt-in of deploy/k3s/agent-daemonset.yaml
        env.kubectl("label", "node", name, "flyslice.io/agent=true")
    overlay = harness.write_overlay(p.cluster.dir / "overlay", p.app)
    t0 = time.monotonic()
    env.kubectl("apply", "-k", str(overlay))

    def leader() -> str | None:
        holder = _lease_holder(p)
        labelled = [q["metadata"]["name"] for q in p.pods(selector="flyslice.io/leader=true")]
        return holder if len(labelled) == 1 and holder.startswith(labelled[0]) else None

    wait(leader, 240, lambda: f"an operator leader\n{p.diagnose()}")
    p.figures["operator_leader_s"] = time.monotonic() - t0

    def agents_ready() -> bool:
        pods = p.pods(selector="app.kubernetes.io/name=flyslice-agent")
        ready = sorted(q["spec"].get("nodeName", "") for q in pods if _ready(q))
        return ready == sorted(KUBE_NODES) and set(KUBE_NODES) <= set(_node_certificates(p))

    wait(agents_ready, 240, lambda: f"agent pods Ready with certificates\n{p.diagnose()}")
    p.figures["apply_k_to_leader_and_agents_s"] = time.monotonic() - t0

    for host in p.gateways.values():
        harness.start_mosquitto(host)
        argv, unit_env = harness.unit_command(host.dir / "root")
        host.spawn("agent", argv, env=unit_env)
    wait(lambda: set(GATEWAYS) <= set(_node_certificates(p)), 120,
         lambda: f"gateway agents' certificates\n{p.diagnose()}")  # fmt: skip


@contextlib.contextmanager
def deployed_platform() -> Iterator[Platform]:
    """``built_platform`` with flyslice deployed; stopped and checked for leftovers on exit."""
    with built_platform() as p:
        deploy_flyslice(p)
        yield p


@pytest.fixture(scope="module")
def deployed(request: pytest.FixtureRequest, shared_clusters: harness.Shared) -> Iterator[Platform]:
    """The deployed cluster, shared with test_faults_k3s.py (conftest.py runs its tests after these)."""
    yield from shared_clusters.module_fixture(request, deployed_platform)


def test_operator_and_agents_run_as_pods_of_the_kustomize_overlay(deployed: Platform) -> None:
    p, env = deployed, deployed.env
    operators = p.pods(selector="app.kubernetes.io/name=flyslice-operator")
    # deploy/k3s says two replicas; the scheduler bound them to kubelet nodes, where they run the image built here.
    assert len(operators) == 2, p.diagnose()
    for pod in operators:
        assert pod["spec"]["nodeName"] in KUBE_NODES and pod["status"]["phase"] == "Running"
        (status,) = pod["status"]["containerStatuses"]
        assert status["imageID"].endswith(p.app.digest) and status["ready"]
        assert pod["spec"]["serviceAccountName"] == "flyslice-operator"
        # In-cluster credentials: no kubeconfig, the projected token, the Service's ClusterIP.
        assert "--kubeconfig" not in pod["spec"]["containers"][0].get("args", [])
    labels = sorted(q["metadata"]["labels"].get("flyslice.io/leader") for q in operators)
    assert labels == ["false", "true"], labels  # exactly one leader; the other waits
    (leader,) = [q for q in operators if q["metadata"]["labels"]["flyslice.io/leader"] == "true"]
    assert _lease_holder(p).startswith(leader["metadata"]["name"])
    env_out = env.kubectl("-n", SYSTEM, "exec", leader["metadata"]["name"], "--", "python3", "-I", "-c",
                          "import os; print(os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT'])"
                          ).stdout.split()  # fmt: skip
    assert env_out == [kubeenv.SERVICE_IP, "443"]

    agents = p.pods(selector="app.kubernetes.io/name=flyslice-agent")
    assert sorted(q["spec"]["nodeName"] for q in agents) == sorted(KUBE_NODES)
    for pod in agents:
        assert pod["spec"]["hostNetwork"] is True
        node = p.cluster.node(pod["spec"]["nodeName"])
        assert pod["status"]["podIP"] == node.ip  # the node's own address: devices and peers reach it there
        (status,) = pod["status"]["containerStatuses"]
        assert status["imageID"].endswith(p.app.digest)
        # Each node's hostPath state is its own: the agent's desired-state cache and key live there.
        own = node.dir / "paths" / STATE_DIR.strip("/")
        assert (own / "tls" / "key.pem").exists(), sorted(str(x) for x in own.rglob("*"))
    # Every agent, in pods and on gateways, asked for its certificate and the leader signed it.
    assert set(_node_certificates(p)) >= {*KUBE_NODES, *GATEWAYS}
    print(f"\ndeploy figures: {json.dumps({k: round(v, 1) for k, v in p.figures.items()})}")


class Devices:
    """A real MQTT client per gateway, publishing temperature readings to the gateway's broker."""

    def __init__(self, gateways: dict[str, nodes.Host]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.clients = {}
        for name, host in gateways.items():
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sensor-{name}")
            client.connect(host.ip, 1883)
            client.loop_start()
            self.clients[name] = client
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Readings every 0.5 s at each gateway; every tenth one at gw-2 is a fire (above sp-cloud's 60 °C).
        while not self._stop.wait(0.5):
            for name, client in self.clients.items():
                hot = name == "gw-2" and self.sent % 10 == 0
                payload = json.dumps({"temperature": 75.0 if hot else 20.0 + self.sent % 7})
                client.publish("flyslice/wildfire/readings/temperature", payload, qos=1).wait_for_publish(5)
            self.sent += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for client in self.clients.values():
            client.loop_stop()
            client.disconnect()


def test_wildfire_end_to_end_through_real_pods(deployed: Platform) -> None:
    p, env = deployed, deployed.env
    t0 = time.monotonic()
    env.kubectl("apply", "-f", str(REPO / "examples" / "wildfire"))

    def slice_status() -> dict[str, Any]:
        status: dict[str, Any] = env.kubectl_json("get", "slice", "wildfire").get("status") or {}
        return status

    ready = wait(lambda: (s := slice_status()).get("phase") == "Ready" and s, 300,
                 lambda: f"Slice wildfire Ready\n{p.diagnose()}")  # fmt: skip
    p.figures["apply_f_to_slice_ready_s"] = time.monotonic() - t0
    placement = {(e["role"], e.get("attachment")): (e["node"], e["flavor"]) for e in ready["placement"]}
    # The seed's deployment: gateways and fog run fNFs in their agents, the cloud runs VNF pods.
    assert {placement[("db", None)], placement[("sp-cloud", None)], placement[("broker-cloud", None)]} == {
        ("cloud", "vnf")
    }
    assert all(flavor == "fnf" for (_role, _att), (node, flavor) in placement.items() if node != "cloud")
    assert {e["state"] for e in ready["placement"]} == {"Running"}

    # The VNFs are pods the cloud agent created and the cloud's kubelet runs, by the example's image name.
    vnfs = p.pods(selector="app.kubernetes.io/managed-by=flyslice-nodeagent")
    assert sorted(q["metadata"]["labels"]["flyslice.io/role"] for q in vnfs) == [
        "broker-cloud",
        "db",
        "sp-cloud",
    ]
    for pod in vnfs:
        assert pod["spec"]["nodeName"] == "cloud" and _ready(pod)
        (container,) = pod["spec"]["containers"]
        assert container["image"] == EXAMPLE_RUNNER and "--tls-dir" in container["args"]
        assert pod["status"]["containerStatuses"][0]["imageID"].endswith(p.runner.digest)
    # Mutual TLS on every agent's data plane, the gateways' MQTT ingress connected.
    for name in (*KUBE_NODES, *GATEWAYS):
        conditions = {c["type"]: c for c in env.kubectl_json("get", "edgenode", name)["status"]["conditions"]}
        assert conditions["DataPlaneAuthenticated"]["reason"] == "MutualTLS", (name, conditions)
        if name in GATEWAYS:
            assert conditions["IngressReady"]["status"] == "True", (name, conditions)

    table = env.kubectl("get", "slices", "-o", "wide").stdout
    print(f"\n{table}")
    assert table.splitlines()[1].split()[:2] == ["wildfire", "Ready"]

    # Data: readings published at both gateways reach the storage NF in the db pod on the cloud.
    (db,) = [q["metadata"]["name"] for q in vnfs if q["metadata"]["labels"]["flyslice.io/role"] == "db"]
    devices = Devices(p.gateways)
    t1 = time.monotonic()
    try:
        rows = wait(
            lambda: (r := harness.storage_rows(env, SYSTEM, db)).get("alarms/fire") and r.get("readings/max") and r,
            120,
            lambda: f"readings and a fire alarm in {db}'s storage ({devices.sent} rounds published)\n{p.diagnose()}",
            interval=2.0,
        )  # fmt: skip
    finally:
        devices.close()
    p.figures["first_reading_to_storage_s"] = time.monotonic() - t1
    print(f"storage rows by topic: {rows}")

    # Every fNF on the way counted what it carried: agents write counters to the NFInstance status
    # at most every 30 s (report_s), hence the wait. (VNF pods' counters stay inside the pod.)
    def counted() -> dict[str, int]:
        items = env.kubectl_json("get", "nfinstances")["items"]
        got = {i["spec"]["role"] + "@" + i["spec"]["node"]: ((i.get("status") or {}).get("counters") or {}).get("in", 0)
               for i in items if i["spec"]["flavor"] == "fnf"}  # fmt: skip
        return got if len(got) == 6 and all(got.values()) else {}

    print(f"fNF messages in: {wait(counted, 90, 'every fNF counting messages', interval=3.0)}")

    # Teardown through the product: the Slice goes, its pods and fNFs with it.
    env.kubectl("delete", "slice", "wildfire", "--timeout=120s", timeout=130)
    wait(lambda: not p.pods(selector="app.kubernetes.io/managed-by=flyslice-nodeagent"), 120,
         lambda: f"VNF pods deleted\n{p.diagnose()}")  # fmt: skip
    p.figures["test_wall_s"] = time.monotonic() - p.started
    print(f"figures: {json.dumps({k: round(v, 1) for k, v in p.figures.items()})}")


def test_installed_unit_is_what_runs_on_the_gateways(deployed: Platform) -> None:
    """The gateway agents run the installed virtualenv's flyslice with the unit's arguments."""
    for name, host in deployed.gateways.items():
        argv, unit_env = harness.unit_command(host.dir / "root")
        assert argv[0] == str(host.dir / "root" / "opt" / "flyslice" / "venv" / "bin" / "flyslice")
        assert argv[1:7] == [
            "agent",
            "--node",
            name,
            "--kube",
            "--state-dir",
            str(host.dir / "root" / STATE_DIR.lstrip("/")),
        ]
        assert "--no-pods" in argv and "--insecure-plaintext" not in argv and "--advertise" not in argv
        # What it found to publish without --advertise: its own address, where devices and peers reach it.
        edge = deployed.env.kubectl_json("get", "edgenode", name)
        assert edge["status"]["agentAddress"] == f"{host.ip}:7000", edge["status"]
        assert unit_env["KUBECONFIG"] == str(host.dir / "root" / "etc" / "flyslice" / "kubeconfig")
        proc = next(pr for pr in host.procs if pr.name == "agent")
        assert proc.popen.poll() is None, host.logs("agent")
        cmdline = Path(f"/proc/{proc.popen.pid}/cmdline").read_bytes().split(b"\0")
        assert str(host.dir / "root" / "opt" / "flyslice" / "venv").encode() in b" ".join(cmdline)


CONSOLE_PROXY = f"/api/v1/namespaces/{SYSTEM}/services/flyslice-console:http/proxy"


def test_console_through_the_api_server_and_port_forward(deployed: Platform, tmp_path: Path) -> None:
    """The operator's console as deploy/k3s/console-service.yaml says to open it: through the API
    server's service proxy (``kubectl proxy``, a real headless Chromium) and ``kubectl port-forward``.
    The Service selects the leader alone: its /status says leader."""
    from tests.observe.browser import Browser
    from tests.observe.test_console import wait_js

    p = deployed
    # The EdgeNodes the page draws (already there after the wildfire test; applying again changes nothing).
    p.env.kubectl("apply", "-f", str(REPO / "examples" / "wildfire" / "nodes.yaml"))

    # kubectl port-forward dials localhost inside the pod: the server must listen there too.
    with (
        _kubectl_serving(
            p, tmp_path / "forward.log", "-n", SYSTEM, "port-forward", "svc/flyslice-console", ":http"
        ) as port,
        urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=20) as resp,
    ):
        forwarded = json.loads(resp.read())
    assert forwarded["role"] == "leader", forwarded.get("message")

    def status_via_proxy() -> dict[str, Any] | None:
        got = p.env.kubectl("get", "--raw", f"{CONSOLE_PROXY}/status", check=False, timeout=20)
        return json.loads(got.stdout) if got.returncode == 0 and got.stdout.startswith("{") else None

    doc = wait(status_via_proxy, 60, lambda: f"/status through the service proxy\n{p.diagnose()}", 1.0)
    assert doc["role"] == "leader", doc.get("message")

    with _kubectl_serving(p, tmp_path / "proxy.log", "proxy", "--port=0") as port:
        browser = Browser(tmp_path)
        try:
            browser.go(f"http://127.0.0.1:{port}{CONSOLE_PROXY}/")
            nodes_shown = "return [...document.querySelectorAll('[data-node]')].map(e => e.dataset.node)"
            try:
                wait_js(browser, nodes_shown + ".length >= 4", 30, "the 4 nodes on the page")
            except AssertionError as exc:
                probe = "return fetch('state').then(r => r.text())"  # what the page was given
                raise AssertionError(
                    f"{exc}; at {browser.js('return location.href')}; fetch('state'): "
                    f"{browser.js(probe)[:3000]}"
                ) from exc
            assert set(browser.js(nodes_shown)) >= {*KUBE_NODES, *GATEWAYS}
            assert browser.js("return location.pathname") == f"{CONSOLE_PROXY}/console/"
        finally:
            browser.close()


@contextlib.contextmanager
def _kubectl_serving(p: Platform, log: Path, *args: str) -> Iterator[int]:
    """``kubectl proxy`` / ``kubectl port-forward`` on a free local port: the port it printed."""
    cmd = [str(p.env.binaries.kubectl), f"--kubeconfig={p.env.kubeconfig}", *args]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        port = wait(lambda: _printed_port(log), 30, lambda: f"kubectl {args}: {log.read_text()}", 0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _printed_port(log: Path) -> int | None:
    found = re.search(r"(?:Starting to serve on|Forwarding from) 127\.0\.0\.1:(\d+)", log.read_text())
    return int(found.group(1)) if found else None
