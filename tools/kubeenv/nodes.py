"""Real Kubernetes nodes on this machine for tests: kubelet + containerd, each in its own network namespace.

Given a running API server (``kubeenv.KubeEnv``), ``NodeCluster`` lays a host bridge on a private
/16 (``10.X.0.0/16``, X chosen free) and ``add_node()`` starts one node on it:

* a network namespace ``fs<id>-<node>`` joined to the host bridge by a veth pair (``eth0`` inside,
  node IP ``10.X.0.<10+i>``), with routes to every other node's pod range over the bridge;
* its own containerd v2 (own root, state, socket, runc root; NRI off) started inside that
  namespace, the CRI plugin's CNI config giving pods ``10.X.<i+1>.0/24`` on a ``cni0`` bridge
  (CNI plugins bridge + host-local + loopback; no portmap: this machine has no iptables);
* the pause (sandbox) image and any ``images`` imported with ``ctr -n k8s.io images import``;
* a kubelet in the same namespace with a client certificate ``system:node:<node>`` (group
  ``system:nodes``, bound to the built-in ``system:node`` ClusterRole: the test API server
  authorizes with RBAC only) and a KubeletConfiguration: cgroupfs driver under its own cgroup
  root (two kubelets on one host must not share ``/kubepods``), ``failCgroupV1: false`` (the
  hierarchy is v1 here), no swap check, no static pods, image GC off.

The API server listens on host loopback, which a network namespace cannot reach, so a small TCP
forwarder (this module run with ``--forward``) listens on the bridge address and relays to it; the
kubelets verify the server certificate under the name ``localhost``, one of its SANs.

For flyslice deployed as users do (tests/cluster/test_deploy_k3s.py): ``service_relay`` gives every
namespace the ``kubernetes`` Service's ClusterIP with a forwarder on :443 (in-cluster clients, no
kube-proxy); ``node_paths`` gives each node a private copy of host directories (hostPath volumes) in
a mount namespace of its own (``--hold`` keeps it); ``start_scheduler()`` runs kube-scheduler;
``add_host()`` adds a bare machine (a gateway without kubelet) on the bridge.

Processes are started with ``nsenter --net`` only, so they share the host's mount namespace: the
kubelet's volume mounts are visible to containerd, and stop() finds and unmounts what is left.
``stop()`` is bounded in time: kubelet, then the containers (every pid in the node's cgroups), their
shims, containerd; then mounts, cgroups, the namespace, veths, bridge and directories. A cluster
whose process died without stopping it is reaped by the next ``start()`` (``reap_stale``). Root only.

Side effects on the host a kubelet always has: it sets the sysctls ``vm.overcommit_memory=1``,
``kernel.panic=10`` and ``kernel.panic_on_oops=1`` (its "kernel defaults"); they are not restored.

Binaries come from ``tools/kubeenv/build-node.sh`` (cached under
``~/.cache/flyslice/node-k<k8s>-c<containerd>-cni<cni>/bin``) and Debian's ``runc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parent))

import image as oci_image
import kubeenv

CONTAINERD_VERSION = os.environ.get("FLYSLICE_CONTAINERD_VERSION", "2.2.9")
CNI_VERSION = os.environ.get("FLYSLICE_CNI_VERSION", "1.9.1")
BUILD_SCRIPT = Path(__file__).resolve().parent / "build-node.sh"
CGROUP_V1 = Path("/sys/fs/cgroup")
RUN_DIR = Path("/run/flyslice")  # short paths: unix socket paths are limited to 107 bytes
CRI_NAMESPACE = "k8s.io"
CNI_CACHE = Path("/var/lib/cni")  # libcni's fixed cache directory (containerd does not set another)
# What a KubeEnv needs for `kubectl logs`/`exec` on these nodes: the API server dials a kubelet by
# the first address type it finds, and the default order starts with Hostname, which no DNS here
# resolves (``KubeEnv(extra_apiserver_args=APISERVER_ARGS)``).
APISERVER_ARGS = ("--kubelet-preferred-address-types=InternalIP",)


class NodesUnavailable(RuntimeError):
    """Something a node needs is missing (binaries, runc, root); the message says what and how to fix it."""


class NodeError(RuntimeError):
    """A node failed to start or a command on it failed; carries the relevant log tail."""


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    containerd: Path
    ctr: Path
    shim_dir: Path  # holds containerd-shim-runc-v2 (containerd finds it on PATH)
    cni_dir: Path
    pause: Path
    runc: Path
    scheduler: Path | None = None  # kube-scheduler: only for pods not pinned to a node (start_scheduler)


def node_bin_dir() -> Path:
    return kubeenv.cache_dir() / f"node-k{kubeenv.K8S_VERSION}-c{CONTAINERD_VERSION}-cni{CNI_VERSION}" / "bin"


def find_node_binaries(bin_dir: Path | None = None) -> NodeBinaries:
    """The cached node binaries and runc, or ``NodesUnavailable`` naming what is missing."""
    bin_dir = bin_dir or node_bin_dir()
    needed = ["kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "pause"]
    needed += [f"cni/{p}" for p in ("bridge", "host-local", "loopback")]
    missing = [n for n in needed if not os.access(bin_dir / n, os.X_OK)]
    if missing:
        raise NodesUnavailable(
            f"{', '.join(missing)} not built in {bin_dir}; run `bash tools/kubeenv/build-node.sh` "
            "(kubelet, containerd and CNI plugins from Go modules, tens of minutes cold)"
        )
    runc = shutil.which("runc") or "/usr/sbin/runc"
    if not os.access(runc, os.X_OK):
        raise NodesUnavailable("runc is not installed (apt-get install -y runc)")
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            raise NodesUnavailable(f"{tool} is not installed (Debian packages iproute2, util-linux)")
    if os.geteuid() != 0:
        raise NodesUnavailable("real nodes need root (network namespaces, cgroups, mounts)")
    if not (CGROUP_V1 / "memory").is_dir():
        raise NodesUnavailable(f"no cgroup v1 memory hierarchy at {CGROUP_V1 / 'memory'}")
    scheduler = bin_dir / "kube-scheduler"
    return NodeBinaries(
        scheduler=scheduler if os.access(scheduler, os.X_OK) else None,
        kubelet=bin_dir / "kubelet",
        containerd=bin_dir / "containerd",
        ctr=bin_dir / "ctr",
        shim_dir=bin_dir,
        cni_dir=bin_dir / "cni",
        pause=bin_dir / "pause",
        runc=Path(runc),
    )


def build(quiet: bool = False) -> NodeBinaries:
    """Run ``build-node.sh`` (under a second when cached, tens of minutes cold) and find the binaries."""
    subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, capture_output=quiet)
    return find_node_binaries()


# --- small helpers --------------------------------------------------------------------------------


def _run(*cmd: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` exists (zombies of ours are reaped by Popen); those left."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [p for p in left if Path(f"/proc/{p}").exists() and _state(p) != "Z"]
        if left:
            time.sleep(0.05)
    return left


def _started_from(root: Path) -> list[int]:
    """Processes with an argument naming ``root`` or a path below it (their config, socket or tag)."""
    exact, below = str(root), str(root).rstrip("/") + "/"
    me = os.getpid()
    return [p for p in _pids() if p != me and any(a.endswith(exact) or below in a for a in _proc_cmdline(p))]


def _kill_started_from(root: Path, timeout: float) -> list[str]:
    """SIGKILL what ``_started_from(root)`` finds: a process whose start was interrupted (a signal
    inside ``Popen``, after the fork) is in no record, yet must not outlive its node."""
    pids = _started_from(root)
    for pid in pids:
        _kill(pid)
    return [f"pid {p} started from {root} survived SIGKILL" for p in wait_gone(pids, timeout)]


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[0]


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` in this mount namespace, deepest first."""
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(prefix):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def _unmount_all(root: Path) -> list[str]:
    """Unmount everything below ``root`` (lazily if busy); what could not be unmounted."""
    for _ in range(3):
        points = _mounts_under(root)
        if not points:
            return []
        for point in points:
            if _run("umount", point, check=False).returncode != 0:
                _run("umount", "-l", point, check=False)
    return _mounts_under(root)


def cgroup_hierarchies(unified: bool = False) -> list[Path]:
    """Every mounted cgroup v1 hierarchy (cpu, memory, ..., name=systemd), and with ``unified`` the
    v2 one of a hybrid layout too (runc creates its container directories there as well)."""
    kinds = {"cgroup", "cgroup2"} if unified else {"cgroup"}
    hierarchies = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] in kinds:
            hierarchies.append(Path(fields[4]))
    return sorted(hierarchies)


def _make_cgroup(name: str) -> None:
    """Create ``/name`` in every v1 hierarchy; kubelet refuses a cgroupRoot that does not exist."""
    for hierarchy in cgroup_hierarchies():
        path = hierarchy / name
        path.mkdir(exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():
            # A new v1 cpuset starts empty and no task may join it until cpus and mems are set.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if not (path / knob).read_text().strip():
                    (path / knob).write_text((hierarchy / knob).read_text())


def _cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in cgroup_hierarchies(unified=True):
        root = hierarchy / name
        if not root.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(root):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split())
    return pids


def _remove_cgroup(name: str) -> list[str]:
    """rmdir the ``/name`` subtree in every hierarchy, leaves first; the directories left."""
    left = []
    for hierarchy in cgroup_hierarchies(unified=True):
        root = hierarchy / name
        if not root.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda w: w[0].count("/"), reverse=True):
            try:
                os.rmdir(dirpath)
            except OSError:
                left.append(dirpath)
    return left


# --- the API server forwarder -------------------------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _forward(listen_host: str, listen_port: int, target_host: str, target_port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, listen_host, listen_port)
    print("forwarding", flush=True)
    parent = os.getppid()
    async with server:
        while os.getppid() == parent:  # the test process died: stop relaying
            await asyncio.sleep(1.0)


# --- nodes ----------------------------------------------------------------------------------------


class _Proc(kubeenv._Proc):
    """kubeenv's process record; node failures show a longer log tail."""

    def tail(self, lines: int = 40) -> str:
        return super().tail(lines)


def _spawn(name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> _Proc:
    with log.open("ab") as out:
        popen = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    return _Proc(name, popen, log)


@dataclass(kw_only=True)
class _Machine:
    """A network namespace on the cluster's bridge (``eth0``, ``ip``) and the processes run in it."""

    cluster: NodeCluster
    name: str
    ip: str
    dir: Path
    netns: str
    host_veth: str
    procs: list[_Proc] = field(default_factory=list)

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    def in_netns(self, *cmd: str) -> list[str]:
        return ["nsenter", f"--net={self.netns_path}", "--", *cmd]

    def logs(self, name: str, lines: int = 40) -> str:
        for proc in self.procs:
            if proc.name == name:
                return proc.tail(lines)
        return ""

    def _join_bridge(self) -> None:
        c = self.cluster
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.host_veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _run("ip", "link", "set", self.host_veth, "master", c.bridge, "up")
        ns = ["ip", "-n", self.netns]
        _run(*ns, "link", "set", "lo", "up")
        _run(*ns, "addr", "add", f"{self.ip}/24", "dev", "eth0")
        _run(*ns, "link", "set", "eth0", "up")
        for node in c.nodes:  # every node's pods are reachable from here (no NAT anywhere)
            if node is not self:
                _run(*ns, "route", "add", node.pod_cidr, "via", node.ip)

    def _start_service_relay(self) -> None:
        """The ``kubernetes`` Service's ClusterIP as a local address with a forwarder on :443 to the
        API server: what kube-proxy would provide. Pods route to it via their node. On ``lo``: this
        kernel has no ``dummy`` link type, and a local address is accepted from any interface."""
        c = self.cluster
        _run("ip", "-n", self.netns, "addr", "add", f"{kubeenv.SERVICE_IP}/32", "dev", "lo")
        self.procs.append(
            c._relay(
                "service-relay",
                self.in_netns,
                kubeenv.SERVICE_IP,
                443,
                self.dir / "service-relay.log",
                self.dir,
            )
        )

    def _stop_common(self, timeout: float) -> list[str]:
        """Stop the processes left (newest first), remove the namespace and veth; problems left behind."""
        problems: list[str] = []
        for proc in reversed(self.procs):
            kubeenv._stop(proc, timeout)
        self.procs.clear()
        problems += _kill_started_from(self.dir, timeout)
        if Path(self.netns_path).exists():
            result = _run("ip", "netns", "del", self.netns, check=False)
            if result.returncode:
                problems.append(f"ip netns del {self.netns}: {result.stderr.strip()}")
        _run("ip", "link", "del", self.host_veth, check=False)  # gone with the namespace, normally
        return problems


@dataclass(kw_only=True)
class Host(_Machine):
    """A machine without kubelet or containers (a bare gateway), made by ``NodeCluster.add_host``: its
    own network namespace on the bridge with routes to every node's pods and, with the cluster's
    ``service_relay``, the API server at the ClusterIP. ``spawn`` runs processes in it; ``stop`` (or
    the cluster's) stops them."""

    def spawn(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> _Proc:
        """Start ``args`` in this host's network namespace, logging to ``<dir>/<name>.log``."""
        proc = _spawn(name, self.in_netns(*args), self.dir / f"{name}.log", env=env)
        self.procs.append(proc)
        return proc

    def stop(self, timeout: float = 10.0) -> list[str]:
        return self._stop_common(timeout)


@dataclass(kw_only=True)
class Node(_Machine):
    """One kubelet + containerd node; made by ``NodeCluster.add_node``."""

    index: int
    pod_cidr: str
    cgroup_root: str  # e.g. "flyslice-ab12-cloud" under each hierarchy
    #: The mount namespace of containerd and kubelet when the cluster has ``node_paths`` (else None:
    #: they share the host's).
    mount_ns: str | None = None

    @property
    def socket(self) -> Path:
        return self.dir / "containerd.sock"

    def in_node(self, *cmd: str) -> list[str]:
        """``cmd`` in this node's network namespace and, with ``node_paths``, its mount namespace."""
        mount = [f"--mount={self.mount_ns}"] if self.mount_ns else []
        return ["nsenter", f"--net={self.netns_path}", *mount, "--", *cmd]

    def tag_image(self, img: oci_image.Image, name: str) -> None:
        """Give an imported image another name in this node's containerd, as an air-gapped node is
        given the image a manifest names (``IfNotPresent`` then finds it without a registry)."""
        self.ctr("images", "tag", "--force", img.by_tag, name)

    def ctr(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``ctr`` against this node's containerd in the CRI namespace; its stdout."""
        b = self.cluster.binaries
        return _run(
            str(b.ctr), f"--address={self.socket}", f"--namespace={CRI_NAMESPACE}", *args, timeout=timeout
        ).stdout

    def import_image(self, img: oci_image.Image) -> None:
        """Load an OCI layout tarball into this node's containerd, where the kubelet finds it."""
        self.ctr("images", "import", "--local", "--snapshotter=overlayfs", str(img.path))

    def logs(self, name: str = "kubelet", lines: int = 40) -> str:
        return super().logs(name, lines)

    def container_cgroup(self, container_id: str, controller: str = "memory") -> Path:
        """The v1 cgroup directory of a running container (``containerd://<id>`` or the bare id)."""
        cid = container_id.split("://", 1)[-1]
        root = CGROUP_V1 / controller / self.cgroup_root
        for dirpath, dirs, _files in os.walk(root):
            if cid in dirs:
                return Path(dirpath) / cid
        raise NodeError(f"node {self.name}: no {controller} cgroup for container {cid} under {root}")

    def running(self) -> bool:
        return bool(self.procs) and all(p.popen.poll() is None for p in self.procs)

    # -- lifecycle --

    def start(self, images: Sequence[oci_image.Image], timeout: float) -> None:
        c = self.cluster
        for sub in ("containerd-root", "containerd-state", "kubelet", "pod-logs", "cni", "ipam", "pki"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._network()
        if c.service_relay:
            self._start_service_relay()
        if c.node_paths:
            self._private_paths(c.node_paths, timeout)
        _make_cgroup(self.cgroup_root)
        self._write_containerd_config()
        path_env = {
            **os.environ,
            "PATH": f"{c.binaries.shim_dir}:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
        containerd = _spawn(
            "containerd",
            self.in_node(str(c.binaries.containerd), f"--config={self.dir / 'containerd.toml'}"),
            self.dir / "containerd.log",
            env=path_env,
        )
        self.procs.append(containerd)
        deadline = time.monotonic() + timeout
        while (
            not self.socket.exists()
            or _run(
                str(c.binaries.ctr), f"--address={self.socket}", "version", check=False, timeout=10
            ).returncode
        ):
            if containerd.popen.poll() is not None or time.monotonic() > deadline:
                raise NodeError(f"node {self.name}: containerd did not start:\n{containerd.tail()}")
            time.sleep(0.2)
        for img in [c.pause, *images]:
            self.import_image(img)
        self._write_kubelet_files()
        kubelet = _spawn(
            "kubelet",
            self.in_node(
                str(c.binaries.kubelet),
                f"--config={self.dir / 'kubelet.yaml'}",
                f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.ip}",
                f"--root-dir={self.dir / 'kubelet'}",
                f"--cert-dir={self.dir / 'pki'}",
                f"--node-labels=flyslice.io/test-cluster={c.id}",
                "--v=1",
            ),
            self.dir / "kubelet.log",
            env=path_env,
        )
        self.procs.append(kubelet)
        self.wait_ready(max(1.0, deadline - time.monotonic()))

    def wait_ready(self, timeout: float) -> None:
        """Wait until the Node object reports condition Ready=True (as its kubelet posts it)."""
        deadline = time.monotonic() + timeout
        last = "no Node object yet"
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.popen.poll() is not None:
                    raise NodeError(
                        f"node {self.name}: {proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}"
                    )
            result = self.cluster.env.kubectl("get", "node", self.name, "-o", "json", check=False)
            if result.returncode == 0:
                conditions = json.loads(result.stdout).get("status", {}).get("conditions", [])
                ready = [cond for cond in conditions if cond["type"] == "Ready"]
                if ready and ready[0]["status"] == "True":
                    return
                if ready:
                    last = f"Ready={ready[0]['status']}: {ready[0].get('message', '')}"
            time.sleep(0.5)
        raise NodeError(f"node {self.name} not Ready in {timeout:.0f}s ({last}):\n{self.logs('kubelet')}")

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Stop everything this node started and remove what it created; problems left behind."""
        problems: list[str] = []
        containers: list[str] = []
        if self.running():
            with contextlib.suppress(NodeError, subprocess.TimeoutExpired):
                containers = self.ctr("containers", "ls", "-q", timeout=10).split()
        kubelet = [p for p in self.procs if p.name == "kubelet"]
        for proc in kubelet:
            kubeenv._stop(proc, timeout)
        # Containers and sandboxes: every process in this node's cgroups (no other process is there).
        pids = _cgroup_pids(self.cgroup_root)
        for pid in pids:
            _kill(pid)
        problems += [
            f"pid {p} in {self.cgroup_root} survived SIGKILL" for p in wait_gone(list(pids), timeout)
        ]
        # Shims outlive containerd by design; ours are those started with our socket address.
        shims = [
            p
            for p in _pids()
            if str(self.socket) in _proc_cmdline(p) and "containerd-shim" in " ".join(_proc_cmdline(p)[:1])
        ]
        for pid in shims:
            _kill(pid, signal.SIGTERM)
        for pid in wait_gone(shims, 3.0):
            _kill(pid)
        # containerd, then the relay and the mount-namespace holder (the namespace goes with it).
        problems += self._stop_common(timeout)
        problems += [f"mount {m} is still mounted" for m in _unmount_all(self.dir)]
        problems += [f"cgroup {d} could not be removed" for d in _remove_cgroup(self.cgroup_root)]
        self._remove_host_leftovers(containers)
        return problems

    def _remove_host_leftovers(self, containers: Sequence[str]) -> None:
        """Files kubelet and containerd write to fixed host paths whatever their configured dirs:
        the CNI result cache of each sandbox never torn down by CNI DEL (its processes were
        killed), and /var/log/containers links into this node's pod log directory."""
        results = CNI_CACHE / "results"
        if containers and results.is_dir():
            ids = set(containers)
            for entry in results.iterdir():
                if any(part in ids for part in entry.name.split("-")):
                    entry.unlink(missing_ok=True)
        links = Path("/var/log/containers")
        if links.is_dir():
            for link in links.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(f"{self.dir}/"):
                    link.unlink(missing_ok=True)

    # -- setup --

    def _network(self) -> None:
        c = self.cluster
        self._join_bridge()
        # The node forwards between its pods (cni0) and the other nodes (eth0).
        _run(*self.in_netns("sysctl", "-qw", "net.ipv4.ip_forward=1"))
        for other in [*c.nodes, *c.hosts]:
            # A stopped machine's namespace is gone (a node added after a power cut): nothing to route.
            if other is not self and Path(other.netns_path).exists():
                _run("ip", "-n", other.netns, "route", "add", self.pod_cidr, "via", self.ip)
        # The host reaches pods too (tests, the API server's kubelet proxy needs only node IPs).
        _run("ip", "route", "add", self.pod_cidr, "via", self.ip)

    def _private_paths(self, paths: Sequence[str], timeout: float) -> None:
        """A mount namespace for containerd and kubelet in which each host path of ``paths`` is this
        node's own directory (``<dir>/paths/...`` bind-mounted over it): hostPath volumes of two
        nodes on one machine must not be one directory. Propagation from the host is kept (slave),
        so mounts made here stay here; the namespace ends with its last process."""
        holder = _spawn(
            "mount-ns",
            self.in_netns(
                "unshare", "--mount", "--propagation", "slave", "--",
                sys.executable, str(Path(__file__).resolve()), "--hold", str(self.dir),
            ),
            self.dir / "mount-ns.log",
        )  # fmt: skip
        self.procs.append(holder)
        deadline = time.monotonic() + timeout
        while "holding" not in holder.tail():
            if holder.popen.poll() is not None or time.monotonic() > deadline:
                raise NodeError(f"node {self.name}: mount namespace holder did not start:\n{holder.tail()}")
            time.sleep(0.05)
        self.mount_ns = f"/proc/{holder.popen.pid}/ns/mnt"
        for path in paths:
            own = self.dir / "paths" / path.strip("/")
            own.mkdir(parents=True, exist_ok=True)
            self.cluster._host_mountpoint(Path(path))
            _run("nsenter", f"--mount={self.mount_ns}", "--", "mount", "--bind", str(own), path)

    def _write_containerd_config(self) -> None:
        c = self.cluster
        state = self.dir / "containerd-state"
        config = f"""\
version = 3
root = "{self.dir / "containerd-root"}"
state = "{state}"

[grpc]
  address = "{self.socket}"

[plugins.'io.containerd.nri.v1.nri']
  # Its socket path is fixed and host-wide: two containerds on one host cannot both serve it.
  disable = true

[plugins.'io.containerd.internal.v1.opt']
  path = "{self.dir / "opt"}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{c.pause.by_tag}"

[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # Without CAP_SYS_RESOURCE (this machine's root lacks it) no process may lower its oom_score_adj,
  # and runc fails the sandbox's -998: clamp every container to containerd's own value instead.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{c.binaries.runc}"
        Root = "{state / "runc"}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{c.binaries.cni_dir}"]
    conf_dir = "{self.dir / "cni"}"
"""
        (self.dir / "containerd.toml").write_text(config)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "flyslice",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,  # pods are addressed by their own IPs across nodes: no NAT
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_cidr}]],
                        # The cluster's network; with the service relay also the Service range, whose
                        # ClusterIP is a local address of the node (_start_service_relay).
                        "routes": [{"dst": str(c.network)}]
                        + ([{"dst": kubeenv.SERVICE_CIDR}] if c.service_relay else []),
                        "dataDir": str(self.dir / "ipam"),
                    },
                }
            ],
        }
        (self.dir / "cni" / "10-flyslice.conflist").write_text(json.dumps(conflist, indent=2))

    def _write_kubelet_files(self) -> None:
        c = self.cluster
        env = c.env
        assert env.ca is not None, "KubeEnv is not started"
        cert, key = env.ca.issue(f"system:node:{self.name}", organizations=["system:nodes"])
        pki = self.dir / "pki"
        (pki / "ca.crt").write_bytes(env.ca.cert.public_bytes(serialization.Encoding.PEM))
        (pki / "kubelet-client.crt").write_bytes(cert)
        (pki / "kubelet-client.key").write_bytes(key)
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "flyslice-test",
                    "cluster": {
                        "server": f"https://{c.gateway}:{c.api_port}",
                        "certificate-authority": str(pki / "ca.crt"),
                        # The serving certificate names 127.0.0.1 and localhost, not the bridge address.
                        "tls-server-name": "localhost",
                    },
                }
            ],
            "users": [
                {
                    "name": self.name,
                    "user": {
                        "client-certificate": str(pki / "kubelet-client.crt"),
                        "client-key": str(pki / "kubelet-client.key"),
                    },
                }
            ],
            "contexts": [{"name": self.name, "context": {"cluster": "flyslice-test", "user": self.name}}],
            "current-context": self.name,
        }
        (self.dir / "kubelet.kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_root}",
            "failCgroupV1": False,  # this machine's hierarchy is cgroup v1
            "failSwapOn": False,
            "staticPodPath": "",
            "imageGCHighThresholdPercent": 100,  # 100 turns image garbage collection off
            "imageGCLowThresholdPercent": 99,
            "address": self.ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            # Only the API server (over the test bridge) calls the kubelet API, for logs and exec; it
            # presents no client certificate here, so the kubelet serves it anonymously.
            "authentication": {
                "anonymous": {"enabled": True},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(self.dir / "pod-logs"),
            "resolvConf": "",
            "makeIPTablesUtilChains": False,  # no iptables on this machine
            "registerNode": True,
            "serializeImagePulls": False,
        }
        (self.dir / "kubelet.yaml").write_text(yaml.safe_dump(config))


class NodeCluster:
    """A host bridge, an API server forwarder and kubelet nodes on them; see the module docstring.

    ``service_relay``: every node and host gets the ``kubernetes`` Service's ClusterIP as a local
    address with a forwarder to the API server on :443 (in-cluster clients without kube-proxy).
    ``node_paths``: host directories (hostPath volumes) each node gets a private copy of, through a
    mount namespace of its own for containerd and kubelet.
    """

    def __init__(
        self,
        env: kubeenv.KubeEnv,
        binaries: NodeBinaries | None = None,
        *,
        images: Sequence[oci_image.Image] = (),
        start_timeout: float = 120.0,
        service_relay: bool = False,
        node_paths: Sequence[str] = (),
    ) -> None:
        self.binaries = binaries or find_node_binaries()
        self.env = env
        self.id = secrets.token_hex(2)
        self.images = list(images)
        self.start_timeout = start_timeout
        self.service_relay = service_relay
        self.node_paths = [str(Path(p)) for p in node_paths]
        if any(not Path(p).is_absolute() or p == "/" for p in self.node_paths):
            raise NodeError(f"node_paths {self.node_paths}: want absolute directories other than /")
        self.nodes: list[Node] = []
        self.hosts: list[Host] = []
        self._procs: list[_Proc] = []  # cluster-wide: kube-scheduler
        self._made_mountpoints: list[Path] = []
        self.bridge = f"fsbr{self.id}"
        self.network = ipaddress.IPv4Network("10.0.0.0/16")  # chosen in start()
        self.gateway = ""
        self.api_port = 0
        self.dir = Path()
        self.pause = oci_image.pause_image(self.binaries.pause)
        self._forwarder: _Proc | None = None
        self._started = False

    def __enter__(self) -> NodeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> NodeCluster:
        import atexit

        atexit.register(self.stop)
        self._started = True
        try:
            RUN_DIR.mkdir(parents=True, exist_ok=True)
            reap_stale()
            self.dir = Path(tempfile.mkdtemp(prefix=f"{self.id}-", dir=RUN_DIR))
            (self.dir / "owner.pid").write_text(str(os.getpid()))
            self.network = _free_network()
            self.gateway = str(self.network.network_address + 1)
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            self._start_forwarder()
            # The test API server authorizes with RBAC only (no Node authorizer): bind the built-in
            # system:node role to the nodes' group, as kubeadm did before the Node authorizer.
            binding = {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "flyslice-test-nodes"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:node",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}
                ],
            }
            self.env.kubectl("apply", "-f", "-", input=json.dumps(binding))
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, name: str) -> Node:
        """Start one node and wait until the API server shows it Ready (``start_timeout``)."""
        if not self._started:
            raise NodeError("NodeCluster.add_node before start()")
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", name):
            raise NodeError(f"node name {name!r}: want a DNS label of at most 40 characters (a-z, 0-9, '-')")
        if any(n.name == name for n in self.nodes):
            raise NodeError(f"node name {name!r}: already in this cluster")
        index = len(self.nodes)
        if index >= 200:
            raise NodeError("at most 200 nodes per cluster")
        base = self.network.network_address
        node = Node(
            cluster=self,
            name=name,
            index=index,
            ip=str(base + 10 + index),
            pod_cidr=str(ipaddress.ip_network(f"{base + 256 * (index + 1)}/24")),
            dir=self.dir / name,
            netns=f"fs{self.id}-{name}",
            host_veth=f"fs{self.id}v{index}",
            cgroup_root=f"flyslice-{self.id}-{name}",
        )
        self.nodes.append(node)
        try:
            node.start(self.images, self.start_timeout)
        except BaseException:
            node.stop()
            self.nodes.remove(node)
            raise
        return node

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def add_host(self, name: str) -> Host:
        """A bare machine (no kubelet): a network namespace on the bridge at ``10.X.0.<100+i>`` with
        routes to the nodes' pods and, with ``service_relay``, the API server at the ClusterIP."""
        if not self._started:
            raise NodeError("NodeCluster.add_host before start()")
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", name):
            raise NodeError(f"host name {name!r}: want a DNS label of at most 40 characters (a-z, 0-9, '-')")
        if any(m.name == name for m in [*self.nodes, *self.hosts]):
            raise NodeError(f"host name {name!r}: already in this cluster")
        index = len(self.hosts)
        if index >= 100:
            raise NodeError("at most 100 hosts per cluster")
        host = Host(
            cluster=self,
            name=name,
            ip=str(self.network.network_address + 100 + index),
            dir=self.dir / f"host-{name}",
            netns=f"fs{self.id}-{name}",
            host_veth=f"fs{self.id}h{index}",
        )
        host.dir.mkdir(parents=True)
        self.hosts.append(host)
        try:
            host._join_bridge()
            if self.service_relay:
                host._start_service_relay()
        except BaseException:
            host.stop()
            self.hosts.remove(host)
            raise
        return host

    def start_scheduler(self, timeout: float = 60.0) -> None:
        """kube-scheduler (user ``system:kube-scheduler``, the built-in RBAC): Deployments' and
        DaemonSets' pods are bound by it; pods with ``spec.nodeName`` never need it."""
        if self.binaries.scheduler is None:
            raise NodesUnavailable(
                f"kube-scheduler not built in {node_bin_dir()}; run `bash tools/kubeenv/build-node.sh`"
            )
        kubeconfig = self.env.user_kubeconfig("system:kube-scheduler", name=f"scheduler-{self.id}")
        sched_dir = self.dir / "scheduler"
        sched_dir.mkdir(exist_ok=True)
        proc = _spawn(
            "kube-scheduler",
            [
                str(self.binaries.scheduler),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={kubeenv.free_port()}",
                f"--cert-dir={sched_dir}",  # also what reap_stale finds it by
                "--v=1",
            ],
            self.dir / "kube-scheduler.log",
        )
        self._procs.append(proc)
        deadline = time.monotonic() + timeout
        # Serving once it has a lease-free informer sync; its log says so ("Starting Kubernetes Scheduler").
        while "Starting Kubernetes Scheduler" not in proc.tail(200):
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise NodeError(f"kube-scheduler did not start:\n{proc.tail()}")
            time.sleep(0.2)

    def _host_mountpoint(self, path: Path) -> None:
        """The directory a node's private copy is mounted over must exist on the host; one this
        cluster creates is removed again by ``stop()`` (if still empty)."""
        if path.exists():
            return
        missing = [p for p in [path, *path.parents] if not p.exists()]
        path.mkdir(parents=True)
        self._made_mountpoints += [p for p in missing if p not in self._made_mountpoints]

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Stop every node, then the forwarder; remove bridge, Node objects and directories."""
        import atexit

        problems: list[str] = []
        for proc in reversed(self._procs):
            kubeenv._stop(proc, timeout)
        self._procs.clear()
        for host in reversed(self.hosts):
            problems += host.stop(timeout)
        self.hosts.clear()
        for node in reversed(self.nodes):
            problems += node.stop(timeout)
            self.env.kubectl("delete", "node", node.name, "--wait=false", check=False)
        self.nodes.clear()
        for made in self._made_mountpoints:  # deepest first; not if anything was put there meanwhile
            with contextlib.suppress(OSError):
                made.rmdir()
        self._made_mountpoints.clear()
        if self._forwarder is not None:
            kubeenv._stop(self._forwarder, timeout)
            self._forwarder = None
        if self._started:
            _run("ip", "link", "del", self.bridge, check=False)
            if self.dir != Path() and self.dir.exists():
                problems += _kill_started_from(self.dir, timeout)
                problems += [f"mount {m} is still mounted" for m in _unmount_all(self.dir)]
                shutil.rmtree(self.dir, ignore_errors=True)
        self._started = False
        atexit.unregister(self.stop)
        return problems

    def _start_forwarder(self) -> None:
        self.api_port = int(self.env.server.rsplit(":", 1)[1])
        self._forwarder = self._forwarder_proc(
            "forwarder", lambda *cmd: list(cmd), self.gateway, self.api_port, self.dir / "forwarder.log",
            self.dir, target=("127.0.0.1", self.api_port),
        )  # fmt: skip

    def _relay(self, name: str, wrap: Any, host: str, port: int, log: Path, tag: Path) -> _Proc:
        """A forwarder to the API server through the bridge forwarder, run with ``wrap`` (a namespace)."""
        return self._forwarder_proc(name, wrap, host, port, log, tag, target=(self.gateway, self.api_port))

    def _forwarder_proc(
        self, name: str, wrap: Any, host: str, port: int, log: Path, tag: Path, *, target: tuple[str, int]
    ) -> _Proc:
        proc = _spawn(
            name,
            wrap(
                sys.executable, str(Path(__file__).resolve()), "--forward", host, str(port),
                target[0], str(target[1]),
                str(tag),  # unused by the forwarder; lets reap_stale() find it
            ),
            log,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while "forwarding" not in proc.tail():
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise NodeError(f"{name} ({host}:{port}) did not start:\n{proc.tail()}")
            time.sleep(0.05)
        return proc


def reap_stale() -> list[str]:
    """Remove clusters whose owning process died without ``stop()`` (a killed test run): kill the
    processes started from their directory, unmount, remove their cgroups, namespaces, links and
    directory. Returns the cluster ids reaped."""
    reaped = []
    for cdir in sorted(RUN_DIR.glob("*-*")) if RUN_DIR.is_dir() else []:
        try:
            owner = int((cdir / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{owner}").exists():
            continue
        cid = cdir.name.split("-", 1)[0]
        roots = {d.name for h in cgroup_hierarchies(unified=True) for d in h.glob(f"flyslice-{cid}-*")}
        pids = _started_from(cdir)
        for root in roots:
            pids += _cgroup_pids(root)
        for pid in pids:
            _kill(pid)
        wait_gone(pids, 10.0)
        _unmount_all(cdir)
        for root in roots:
            _remove_cgroup(root)
        for ns in _run("ip", "netns", "list", check=False).stdout.split("\n"):
            if ns.startswith(f"fs{cid}-"):
                _run("ip", "netns", "del", ns.split()[0], check=False)
        _run("ip", "link", "del", f"fsbr{cid}", check=False)
        shutil.rmtree(cdir, ignore_errors=True)
        reaped.append(cid)
    return reaped


def _free_network() -> ipaddress.IPv4Network:
    """A 10.X.0.0/16 no host interface or route uses yet (several clusters may run at once)."""
    used = _run("ip", "-4", "route", "show", "table", "all").stdout + _run("ip", "-4", "addr").stdout
    for x in range(213, 250):
        if f"10.{x}." not in used:
            return ipaddress.IPv4Network(f"10.{x}.0.0/16")
    raise NodeError("no free 10.X.0.0/16 (X in 213..249) for a test cluster")


def _hold() -> None:
    """Keep a node's mount namespace alive (``unshare --mount`` runs this) until the test process dies."""
    parent = os.getppid()
    print("holding", flush=True)
    while os.getppid() == parent:
        time.sleep(1.0)


if __name__ == "__main__":
    if len(sys.argv) in (6, 7) and sys.argv[1] == "--forward":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_forward(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])))
    elif len(sys.argv) == 3 and sys.argv[1] == "--hold":  # argv[2]: the node's directory, for reap_stale
        with contextlib.suppress(KeyboardInterrupt):
            _hold()
    else:
        print(
            "usage: nodes.py --forward LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT [TAG] | --hold DIR",
            file=sys.stderr,
        )
        sys.exit(2)
