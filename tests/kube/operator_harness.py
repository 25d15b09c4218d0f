"""Helpers for the operator and cluster-agent tests: the wildfire example under per-test node names,
the operator as a real ``flyslice operator`` process, and the deploy/ RBAC on the test server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kubeenv
import yaml

from flyslice.nodeagent.agent import AgentConfig
from flyslice.nodeagent.kube.agent import ClusterAgent, api_client_for
from flyslice.nodeagent.kube.dataplane_certs import obtain_node_tls

REPO = Path(__file__).resolve().parents[2]
WILDFIRE = REPO / "examples" / "wildfire"
WILDFIRE_NODES = ("cloud", "fog-1", "gw-1", "gw-2")
T = TypeVar("T")


def wildfire_docs(prefix: str) -> list[dict[str, Any]]:
    """The wildfire example with its EdgeNodes renamed ``<prefix>-<node>``: EdgeNodes are cluster-scoped,
    so each test gets its own and never sees another test's heartbeats."""
    rename = {n: f"{prefix}-{n}" for n in WILDFIRE_NODES}
    docs = []
    for path in sorted(WILDFIRE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            spec = doc.get("spec", {})
            if doc["kind"] == "EdgeNode":
                doc["metadata"]["name"] = rename[doc["metadata"]["name"]]
                for link in spec.get("links", []):
                    link["node"] = rename[link["node"]]
            if doc["kind"] == "Slice":
                for att in spec.get("attachments", []):
                    att["node"] = rename[att["node"]]
            docs.append(doc)
    return docs


def apply_docs(env: kubeenv.KubeEnv, namespace: str, docs: list[dict[str, Any]]) -> None:
    text = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    env.kubectl("-n", namespace, "apply", "-f", "-", input=text)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


_rbac_lock = threading.Lock()
_rbac_done: set[str] = set()


def install_flyslice_rbac(env: kubeenv.KubeEnv) -> None:
    """The deploy/k3s namespace, service accounts and least-privilege RBAC (once per server)."""
    with _rbac_lock:
        if env.server in _rbac_done:
            return
        k3s = REPO / "deploy" / "k3s"
        files = [k3s / "namespace.yaml", k3s / "rbac-operator.yaml", k3s / "rbac-agent.yaml"]
        env.kubectl("apply", *[a for f in files for a in ("-f", str(f))])
        _rbac_done.add(env.server)


def operator_kubeconfig(env: kubeenv.KubeEnv) -> Path:
    """Credentials of the operator's service account (deploy/k3s/rbac-operator.yaml), not admin."""
    install_flyslice_rbac(env)
    return env.service_account_kubeconfig("flyslice-system", "flyslice-operator", create=False)


def agent_kubeconfig(env: kubeenv.KubeEnv, node: str, pod_namespace: str) -> Path:
    """A bare gateway's credentials: user ``system:flyslice-agent:<node>`` in ``system:flyslice-agents``,
    allowed to manage VNF pods in ``pod_namespace`` (the deploy/ Role, bound there)."""
    install_flyslice_rbac(env)
    rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
    ]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "flyslice-agent-vnf-pods", "namespace": pod_namespace},
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "flyslice-agent-vnf-pods", "namespace": pod_namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "flyslice-agent-vnf-pods",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:flyslice-agents"}
        ],
    }
    env.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [role, binding]})
    )
    return env.user_kubeconfig(f"system:flyslice-agent:{node}", groups=["system:flyslice-agents"])


@contextlib.contextmanager
def cluster_agents(
    env: kubeenv.KubeEnv,
    namespace: str,
    nodes: list[str],
    tmp: Path,
    mqtt: dict[str, tuple[str, int]] | None = None,
    *,
    tls: bool = True,
    pods: bool = True,
) -> Iterator[dict[str, ClusterAgent]]:
    """One cluster-mode agent per node, in threads, each with only its own node's credentials;
    ``mqtt`` gives some of them an MQTT broker (``--mqtt``). As ``flyslice agent --kube`` by default,
    each serves mutual TLS with a certificate from the running operator's signer (a CSR, renewed like
    the real agent's); ``tls=False`` is ``--insecure-plaintext``; ``pods=False`` is ``--no-pods`` (a bare
    gateway: VNFs run as runner processes beside the agent)."""
    agents: dict[str, ClusterAgent] = {}
    stop = threading.Event()
    threads = []
    try:
        for node in nodes:
            api = api_client_for(str(agent_kubeconfig(env, node, namespace)))
            # The operator may still be electing its leader (the signer runs on the leader): wait.
            files = obtain_node_tls(api, node, tmp / node / "tls", timeout_s=60) if tls else None
            agents[node] = ClusterAgent(
                AgentConfig(node=node, state_dir=tmp / node, mqtt=(mqtt or {}).get(node), tls=files), api,
                pod_namespace=namespace if pods else None, instance_namespace=namespace, heartbeat_s=1.0, report_load=False,
                tls_renewal="csr" if tls else None,
            )  # fmt: skip
            t = threading.Thread(target=agents[node].run, args=(stop, 2.0), daemon=True)
            t.start()
            threads.append(t)
        yield agents
    finally:
        stop.set()
        for a in agents.values():
            # A bare gateway's VNFs are runner processes that outlive a stopped agent (by design: a
            # restarted agent adopts them); the test is over, so they go too. Pods go with the namespace.
            a.stop(stop_vnfs=not pods)
        for t in threads:
            t.join(10)


class OperatorProcess:
    """``flyslice operator`` in its own process, with fast leader-election timings for tests."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        workdir: Path,
        *,
        identity: str,
        lease_name: str,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.identity = identity
        #: /status, /metrics, the console (--status-addr); the probes have a port of their own.
        self.port = kubeenv.free_port()
        self.probe_port = kubeenv.free_port()
        self.log = workdir / f"operator-{identity}.log"
        args = [
            sys.executable, "-m", "flyslice.operator.cli", "operator",
            "--kubeconfig", str(kubeconfig), "--namespace", namespace,
            "--lease-namespace", "flyslice-system", "--lease-name", lease_name, "--identity", identity,
            "--liveness", f"127.0.0.1:{self.probe_port}", "--status-addr", f"127.0.0.1:{self.port}", "--debounce", "0.2", "--resync", "1",
            "--lease-duration", "4", "--renew", "1", "--git-cache", str(workdir / f"git-{identity}"), *extra,
        ]  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **env} if env else None,
            )  # fmt: skip

    def status(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=2) as resp:
                doc: dict[str, Any] = json.loads(resp.read())
                return doc
        except OSError:
            return None

    def healthz(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.probe_port}/healthz", timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


@contextlib.contextmanager
def operators(*procs: OperatorProcess) -> Iterator[tuple[OperatorProcess, ...]]:
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


def kubectl_items(
    env: kubeenv.KubeEnv, namespace: str, resource: str, *selector: str
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = env.kubectl_json("-n", namespace, "get", resource, *selector)["items"]
    return items
