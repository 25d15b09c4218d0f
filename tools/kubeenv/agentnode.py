"""A real ``flyslice agent --kube`` on a real kubelet node: the setup tests/cluster and the ``cluster``
benchmark share.

* ``control_plane()`` — an API server of its own (``kubeenv.KubeEnv``, with ``nodes.APISERVER_ARGS``)
  with the flyslice CRDs, whose work directory is an *owned* directory under ``nodes.RUN_DIR``
  (``owner.pid`` inside), so when this process is killed without running its ``finally`` blocks
  (SIGKILL, a CI timeout), the next ``nodes.reap_stale()`` kills etcd and kube-apiserver too;
* ``start_agent()`` — the agent as a process in a node's network namespace, as the bare-gateway form
  runs it (deploy/gateway), through the cluster's API server forwarder; its state directory lives in
  the node's directory, so ``reap_stale()`` finds and kills it too;
* ``broker_nfinstance()`` / ``edgenode()`` — objects of examples/wildfire's broker for one node;
* ``container_memory()`` — a container's memory as its cgroup v1 controller counts it;
* ``wait_until()`` — poll with a bound, failing with a message that says what was awaited.

Root only, like ``nodes``; nothing here mocks anything.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kubeenv
import nodes

REPO = Path(__file__).resolve().parents[2]
AGENT_PORT = 7100  # the agent's data plane on the node IP; the pods' runners listen on 7000
T = TypeVar("T")


def wait_until(
    check: Callable[[], T | None], timeout: float, what: str | Callable[[], str], interval: float = 0.05
) -> T:
    """Poll ``check`` until truthy and return it; after ``timeout`` raise ``AssertionError`` naming
    ``what`` (a callable is called only then, so it may gather logs)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:g}s waiting for {what() if callable(what) else what} (last: {last!r})"
    )


def owned_dir(tag: str) -> Path:
    """A new directory ``nodes.RUN_DIR/<tag><hex>-dir`` recording this process as its owner, so that
    ``nodes.reap_stale()`` in a later run kills every process whose command line names it and
    removes it once this process is gone. ``tag`` keeps it apart from NodeCluster ids (4 hex digits):
    its reaping looks for cgroups, namespaces and links named after that id, and finds none."""
    if not tag.isalpha():
        raise ValueError(f"owned_dir tag {tag!r}: letters only")
    nodes.RUN_DIR.mkdir(parents=True, exist_ok=True)
    path = nodes.RUN_DIR / f"{tag}{secrets.token_hex(3)}-dir"
    path.mkdir()
    (path / "owner.pid").write_text(str(os.getpid()))
    return path


@contextlib.contextmanager
def control_plane(
    binaries: kubeenv.Binaries | None = None, start_timeout: float = 90.0
) -> Iterator[kubeenv.KubeEnv]:
    """etcd + kube-apiserver (+ controller manager when built) of their own, reachable by kubelets
    (``nodes.APISERVER_ARGS``), with crds/ installed; stopped and removed on exit. Without
    ``binaries``, the cached ones (``KubeEnvUnavailable`` names the build command)."""
    binaries = binaries or kubeenv.find_binaries()
    workdir = owned_dir("kube")
    try:
        with kubeenv.KubeEnv(
            binaries,
            workdir=workdir,
            start_timeout=start_timeout,
            extra_apiserver_args=nodes.APISERVER_ARGS,
        ) as env:
            env.install_crds(sorted((REPO / "crds").glob("*.yaml")))
            yield env
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def broker_nfinstance(
    name: str, node: str, image: str | None, next_hops: tuple[str, ...] = (), slice_name: str = "s1"
) -> dict[str, Any]:
    """An NFInstance of examples/wildfire's broker on ``node``: the VNF flavour running ``image``
    (a reference by digest), or the fNF flavour (in the agent's process) when ``image`` is None."""
    pkg = next(
        d
        for d in yaml.safe_load_all((REPO / "examples" / "wildfire" / "packages.yaml").read_text())
        if d and d["metadata"]["name"] == "broker"
    )
    kind = "fnf" if image is None else "vnf"
    flavor = pkg["spec"]["flavors"][kind]
    spec: dict[str, Any] = {
        "slice": slice_name, "role": name, "package": "broker", "flavor": kind, "node": node,
        "module": flavor["module"], "digest": flavor["digest"], "resources": flavor["resources"],
        "config": {}, "nextHops": [{"instance": hop, "node": node} for hop in next_hops],
    }  # fmt: skip
    if image is not None:
        spec["image"] = image
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "NFInstance",
        "metadata": {"name": name, "labels": {"flyslice.io/node": node, "flyslice.io/slice": slice_name}},
        "spec": spec,
    }


def edgenode(name: str) -> dict[str, Any]:
    """The EdgeNode an agent heartbeats to (cluster-scoped: one per test cluster's node name)."""
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "EdgeNode",
        "metadata": {"name": name},
        "spec": {
            "tier": "fog",
            "runtimes": ["vnf", "fnf"],
            "capacity": {"cpu": "2", "memory": "2Gi"},
            "availability": 0.99,
        },
    }


def node_kubeconfig(cluster: nodes.NodeCluster, kubeconfig: Path) -> Path:
    """The same credentials, reaching the API server from inside a node's network namespace: through
    the cluster's forwarder on the bridge, verifying the serving certificate as ``localhost``."""
    doc = yaml.safe_load(kubeconfig.read_text())
    for entry in doc["clusters"]:
        entry["cluster"]["server"] = f"https://{cluster.gateway}:{cluster.api_port}"
        entry["cluster"]["tls-server-name"] = "localhost"
    out = kubeconfig.with_name(kubeconfig.stem + "-node.kubeconfig")
    out.write_text(yaml.safe_dump(doc))
    return out


@dataclass
class AgentProcess:
    """A running ``flyslice agent --kube`` (``start_agent``)."""

    node: nodes.Node
    popen: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def rss_bytes(self) -> int:
        """The agent process's resident set (VmRSS). ``nsenter --net`` execs the agent in place
        (it forks only for a PID namespace), so the Popen pid is the Python process itself."""
        status = Path(f"/proc/{self.popen.pid}/status").read_text()
        cmdline = Path(f"/proc/{self.popen.pid}/cmdline").read_bytes()
        if b"flyslice.operator.cli" not in cmdline:
            raise RuntimeError(f"pid {self.popen.pid} is not the agent: {cmdline!r}")
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kib) * 1024

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (the agent drains and exits 0), SIGKILL after ``timeout``; its exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def start_agent(
    cluster: nodes.NodeCluster,
    node: nodes.Node,
    kubeconfig: Path,
    namespace: str,
    *,
    heartbeat_s: float | None = 1.0,
    interval_s: float | None = 1.0,
) -> AgentProcess:
    """``flyslice agent --kube`` for ``node`` in its network namespace, listening on the node IP,
    watching NFInstances and creating VNF pods in ``namespace``. ``kubeconfig`` is a host
    kubeconfig (e.g. tests/kube/operator_harness.agent_kubeconfig); it is rewritten to go through
    the cluster's forwarder. No operator runs beside it, so no signer: plain TCP, asked for with
    ``--insecure-plaintext``. ``heartbeat_s``/``interval_s`` None: the CLI's defaults (10 s, 5 s;
    tests shorten them). Its state, log and HOME live in ``node.dir/agent``."""
    home = node.dir / "agent"
    home.mkdir(exist_ok=True)
    node_config = node_kubeconfig(cluster, kubeconfig)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["HOME"] = str(home)  # the kubeconfig given is all it has
    log = home / "agent.log"
    timing = [] if heartbeat_s is None else ["--heartbeat", f"{heartbeat_s:g}"]
    timing += [] if interval_s is None else ["--interval", f"{interval_s:g}"]
    with log.open("ab") as out:
        popen = subprocess.Popen(
            node.in_netns(
                sys.executable, "-m", "flyslice.operator.cli", "agent", "--kube", "--node", node.name,
                "--state-dir", str(home / "state"), "--kubeconfig", str(node_config),
                "--namespace", namespace, "--pod-namespace", namespace,
                "--listen", f"{node.ip}:{AGENT_PORT}", *timing, "--insecure-plaintext",
            ),
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    return AgentProcess(node, popen, log)


def wait_heartbeat(env: kubeenv.KubeEnv, agent: AgentProcess, timeout: float = 60.0) -> None:
    """Until the agent's first heartbeat is in its EdgeNode's status (it reached the API server
    from inside the node's namespace, through the forwarder)."""

    def beat() -> Any:
        if agent.popen.poll() is not None:
            raise RuntimeError(f"agent exited ({agent.popen.returncode}):\n{agent.log_tail()}")
        return env.kubectl_json("get", "edgenode", agent.node.name).get("status", {}).get("heartbeatTime")

    wait_until(beat, timeout, lambda: f"the agent's first heartbeat\n{agent.log_tail()}", interval=0.3)


def container_memory(cgroup: Path) -> dict[str, int]:
    """A container's memory in bytes from its cgroup v1 memory controller: ``usage`` is
    memory.usage_in_bytes (anonymous + page cache + kernel memory charged to it), ``rss`` and
    ``cache`` are memory.stat's (anonymous memory, and page cache such as the image files read)."""
    stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
    return {
        "usage": int((cgroup / "memory.usage_in_bytes").read_text()),
        "rss": int(stat["rss"]),
        "cache": int(stat["cache"]),
        "total_rss": int(stat.get("total_rss", stat["rss"])),
    }
