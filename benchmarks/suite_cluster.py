"""Benchmark suite ``cluster``: the seed's thesis measured against real containers, in one run.

Through the product path, on one machine: an API server of its own with the flyslice CRDs, one real
kubelet + containerd node (``tools/kubeenv/nodes.py``), and a real ``flyslice agent --kube`` in the
node's network namespace (``tools/kubeenv/agentnode.py``, as tests/cluster/test_vnf_pod_on_node.py
runs it). Every instance is an NFInstance of examples/wildfire's broker created on the API server:

- the baseline, a VNF: the agent's pod driver creates a pod, the kubelet runs the NF-runner image
  (built here from this checkout) under containerd/runc. ``vnf_pod_start_ms_*``: NFInstance created
  -> pod Running as the kubelet reports it (its container started); ``vnf_nfinstance_running_ms_*``:
  -> the agent reports the NFInstance Running (after the pod's readiness probe, period 2 s).
  ``vnf_pod_rss_mib``: the idle runner container's memory.stat ``rss`` from its cgroup v1 memory
  controller (anonymous memory; ``vnf_pod_usage_mib`` is memory.usage_in_bytes, page cache
  included; ``vnf_pod_total_rss_mib`` the pod cgroup's total_rss, pause container included);
- the product, an fNF in the same agent process: ``fnf_deploy_ms_*``: NFInstance created -> the agent
  reports it Running; ``fnf_kib_per_instance``: least-squares slope of the agent's VmRSS over the
  number of fNFs loaded (checkpoints while N are created one after the other).

Times are taken from watch events this process receives (the watch is open before any create), so
they include the API server's and the agent's round trips, as a user sees them. The ratios compare
the two in this run; GNF's published figures (Cziva & Pezaros 2017: ~2.21 MB per idle container,
50 containers created and started in 10 s, i.e. ~0.2 s each, on their hardware) are printed beside
them as the external reference, not as a like-for-like measurement.

The run is bounded (``BUDGET_S``; SIGALRM backstop) and cleans up on return, error, Ctrl-C and
SIGTERM; after a SIGKILL the next run's ``nodes.reap_stale()`` removes what was left (the node, the
agent, etcd and the API server all live in owned directories under /run/flyslice). Root only, with
the binaries of tools/kubeenv/build.sh and build-node.sh.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools" / "kubeenv"))

import agentnode  # noqa: E402
import image  # noqa: E402
import kubeenv  # noqa: E402
import nodes  # noqa: E402

GROUP, VERSION, PLURAL = "flyslice.io", "v1alpha1", "nfinstances"
BUDGET_S = {True: 600.0, False: 1800.0}  # whole run, setup included (quick, full)
VNF_RUNS = {True: 3, False: 10}
FNF_COUNT = {True: 20, False: 100}
IDLE_S = 2.0  # a VNF runner counts as idle this long after the agent reports it Running
# Published by GNF (seed 002, section "Container vNFs", Fig. 2): external reference, their machine.
GNF_IDLE_CONTAINER_MB = 2.21
GNF_START_S = 10.0 / 50  # "50 container vNFs can be created and started in 10 seconds"


class Budget:
    """The run's deadline: every wait is cut to what is left, and says what it waited for."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def left(self, want: float) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"cluster benchmark: over its {self.seconds:.0f} s budget")
        return min(want, left)


@contextlib.contextmanager
def interruptible(budget: Budget) -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt and SIGALRM (budget + 60 s, for a wait stuck in a call that
    has no timeout of its own) TimeoutError in the main thread, so every ``finally`` below runs and
    stops what it started. One-shot: a second signal does not interrupt that cleanup."""
    fired = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        if fired.is_set():
            return
        fired.set()
        if signum == signal.SIGALRM:
            raise TimeoutError(f"cluster benchmark: still running {budget.seconds + 60:.0f} s after start")
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGALRM)}
    signal.alarm(int(budget.seconds + 60))
    try:
        yield
    finally:
        signal.alarm(0)
        for s, h in previous.items():
            signal.signal(s, h)


class Observer:
    """Watches the namespace's NFInstances and pods and records, per instance, when this process
    first saw: the pod Running (kubelet: phase Running, container started), the NFInstance's
    status.state Running (agent), the pod deleted. ``open()`` returns once both watches are
    established on the API server, so no event of a later create is missed."""

    def __init__(self, api_client: Any, namespace: str, budget_s: float) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.ns = namespace
        self.budget_s = budget_s
        self.cond = threading.Condition()
        self.nf_running: dict[str, float] = {}
        self.nf_state: dict[str, str] = {}
        self.pod_running: dict[str, float] = {}
        self.pod_ready: dict[str, float] = {}
        self.pod_gone: dict[str, float] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.explain: Callable[[], str] = lambda: ""
        self._stop = threading.Event()
        self._responses: list[Any] = []
        self._threads: list[threading.Thread] = []

    def open(self) -> Observer:
        for kind in ("nfinstances", "pods"):
            resp = self._watch(kind, None)
            thread = threading.Thread(target=self._read, args=(kind, resp), daemon=True, name=f"watch-{kind}")
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        self._stop.set()
        for resp in list(self._responses):
            with contextlib.suppress(Exception):
                resp.shutdown()  # unblocks the reading thread (urllib3 >= 2.3)
            with contextlib.suppress(Exception):
                resp.release_conn()
        for thread in self._threads:
            thread.join(5)

    def _watch(self, kind: str, resource_version: str | None) -> Any:
        args: dict[str, Any] = {
            "watch": True,
            "_preload_content": False,
            "timeout_seconds": int(self.budget_s) + 120,
            "allow_watch_bookmarks": False,
        }
        if resource_version:
            args["resource_version"] = resource_version
        resp: Any
        if kind == "pods":
            resp = self.core.list_namespaced_pod(self.ns, **args)
        else:
            resp = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, **args)
        self._responses.append(resp)
        return resp  # headers received: the watch is registered on the server

    def _read(self, kind: str, resp: Any) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        version: str | None = None
        while not self._stop.is_set():
            try:
                for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                    if not line:
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    self._record(kind, event.get("type", ""), obj, time.monotonic())
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.errors.append(f"{kind} watch: {exc}")
            if self._stop.is_set():
                return
            resp = self._watch(kind, version)  # the server ended the watch: resume where it stopped

    def _record(self, kind: str, event: str, obj: dict[str, Any], now: float) -> None:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        with self.cond:
            if kind == "nfinstances":
                name = meta.get("name", "")
                self.nf_state[name] = status.get("state", "")
                if status.get("state") == "Running":
                    self.nf_running.setdefault(name, now)
            else:
                name = (meta.get("labels") or {}).get("flyslice.io/instance", "")
                if event == "DELETED":
                    self.pod_gone.setdefault(name, now)
                else:
                    self.pods[name] = obj
                    statuses = status.get("containerStatuses") or []
                    started = bool(statuses) and "running" in (statuses[0].get("state") or {})
                    if status.get("phase") == "Running" and started:
                        self.pod_running.setdefault(name, now)
                    conditions = status.get("conditions") or []
                    if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                        self.pod_ready.setdefault(name, now)  # its readiness probe passed
            self.cond.notify_all()

    def wait(self, table: dict[str, float], name: str, timeout: float, what: str) -> float:
        """The time ``name`` entered ``table``, waiting at most ``timeout``; on timeout the error
        says ``what`` and ``explain()`` (states seen, the agent's log)."""
        with self.cond:
            if name in table or self.cond.wait_for(lambda: name in table, timeout):
                return table[name]
        raise TimeoutError(f"cluster benchmark: {what} not seen in {timeout:.0f} s {self.explain()}")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of y over x."""
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def _rss(agent: agentnode.AgentProcess, samples: int = 5) -> int:
    """The agent's VmRSS, median of a few readings 0.1 s apart (its sync loop allocates transiently)."""
    values = []
    for _ in range(samples):
        values.append(agent.rss_bytes())
        time.sleep(0.1)
    return int(statistics.median(values))


def measure_vnfs(
    ctx: dict[str, Any], runner: image.Image, runs: int, budget: Budget, loads: list[float]
) -> list[dict[str, Any]]:
    """Create, measure and delete ``runs`` VNF NFInstances one after the other."""
    obs: Observer = ctx["observer"]
    node: nodes.Node = ctx["node"]
    custom, ns = ctx["custom"], ctx["ns"]
    rows = []
    for i in range(runs):
        name = f"vnf-{i}"
        body = agentnode.broker_nfinstance(name, node.name, runner.by_digest)
        t0 = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        pod_t = obs.wait(obs.pod_running, name, budget.left(120), f"{name}'s pod Running")
        nf_t = obs.wait(obs.nf_running, name, budget.left(60), f"{name} Running")
        ready_t = obs.wait(obs.pod_ready, name, budget.left(10), f"{name}'s pod Ready")
        time.sleep(IDLE_S)
        with obs.cond:
            pod = obs.pods[name]
        (status,) = pod["status"]["containerStatuses"]
        cgroup = node.container_cgroup(status["containerID"])
        container = agentnode.container_memory(cgroup)
        pod_level = agentnode.container_memory(cgroup.parent)  # the pod's cgroup: runner + pause
        loads.append(os.getloadavg()[0])
        rows.append(
            {
                "run": i,
                "pod_running_ms": round((pod_t - t0) * 1000, 1),
                "pod_ready_ms": round((ready_t - t0) * 1000, 1),
                "nfinstance_running_ms": round((nf_t - t0) * 1000, 1),
                "rss_mib": round(container["rss"] / 2**20, 2),
                "usage_mib": round(container["usage"] / 2**20, 2),
                "pod_total_rss_mib": round(pod_level["total_rss"] / 2**20, 2),
            }
        )
        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        # The next run starts on a node without this pod (the runner drains on SIGTERM).
        obs.wait(obs.pod_gone, name, budget.left(90), f"{name}'s pod deleted")
    return rows


def measure_fnfs(
    ctx: dict[str, Any], count: int, budget: Budget, loads: list[float]
) -> tuple[list[float], list[float], list[dict[str, Any]]]:
    """Create ``count`` fNF NFInstances one after the other: each one's create -> Running time and
    the create request's own round trip; at ``count // 5`` steps the agent's RSS and the median
    deploy time of the fNFs created since the previous step (it grows with the fNFs loaded)."""
    obs: Observer = ctx["observer"]
    agent: agentnode.AgentProcess = ctx["agent"]
    node: nodes.Node = ctx["node"]
    custom, ns = ctx["custom"], ctx["ns"]
    step = max(1, count // 5)
    time.sleep(1.0)  # let the agent settle after the VNF runs before the first reading
    memory: list[dict[str, Any]] = [{"fnfs": 0, "agent_rss_kib": _rss(agent) // 1024, "deploy_ms_p50": 0.0}]
    times, create_calls = [], []
    for i in range(count):
        name = f"fnf-{i}"
        t0 = time.monotonic()
        custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, agentnode.broker_nfinstance(name, node.name, None)
        )
        create_calls.append((time.monotonic() - t0) * 1000)
        t = obs.wait(obs.nf_running, name, budget.left(60), f"{name} Running")
        times.append((t - t0) * 1000)
        if (i + 1) % step == 0 or i + 1 == count:
            time.sleep(0.5)
            since = times[memory[-1]["fnfs"] :]  # the fNFs created since the last checkpoint
            memory.append(
                {
                    "fnfs": i + 1,
                    "agent_rss_kib": _rss(agent) // 1024,
                    "deploy_ms_p50": statistics.median(since),
                }
            )
            loads.append(os.getloadavg()[0])
    rounded = [{k: round(v, 2) if isinstance(v, float) else v for k, v in m.items()} for m in memory]
    return times, create_calls, rounded


def _positive(value: float, key: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise RuntimeError(f"cluster benchmark: {key} = {value}, not a positive finite figure")
    return value


def run(quick: bool) -> dict[str, Any]:
    budget = Budget(BUDGET_S[quick])
    try:
        nodes.find_node_binaries()
        kube_binaries = kubeenv.find_binaries()
    except (nodes.NodesUnavailable, kubeenv.KubeEnvUnavailable) as exc:
        raise SystemExit(f"cluster benchmark: {exc}") from None
    loads = [os.getloadavg()[0]]
    t_setup = time.monotonic()
    with interruptible(budget):
        reaped = nodes.reap_stale()
        _app, runner = image.flyslice_images()
        with (
            agentnode.control_plane(kube_binaries) as env,
            nodes.NodeCluster(env, images=[runner]) as cluster,
        ):
            node = cluster.add_node(f"bench-{cluster.id}")
            # What cleanup must remove (tests/cluster/test_cluster_benchmark.py checks it is gone).
            left_behind = {"cluster_id": cluster.id, "dirs": [str(cluster.dir), str(env.workdir)]}
            vnf_rows, fnf_times, fnf_memory, fnf_requests, setup_s = _measure(
                env, cluster, node, runner, quick, budget, loads, t_setup
            )
    loads.append(os.getloadavg()[0])

    starts = [r["pod_running_ms"] for r in vnf_rows]
    nf_starts = [r["nfinstance_running_ms"] for r in vnf_rows]
    rss = statistics.median(r["rss_mib"] for r in vnf_rows)
    kib_per_fnf = slope([(m["fnfs"], m["agent_rss_kib"]) for m in fnf_memory])
    fnf_p50 = statistics.median(fnf_times)
    result: dict[str, Any] = {
        "vnf_pod_start_ms_p50": round(statistics.median(starts), 1),
        "vnf_pod_start_ms_p90": round(pct(starts, 0.9), 1),
        "vnf_nfinstance_running_ms_p50": round(statistics.median(nf_starts), 1),
        "vnf_nfinstance_running_ms_p90": round(pct(nf_starts, 0.9), 1),
        "vnf_pod_rss_mib": round(rss, 2),
        "vnf_pod_usage_mib": round(statistics.median(r["usage_mib"] for r in vnf_rows), 2),
        "vnf_pod_total_rss_mib": round(statistics.median(r["pod_total_rss_mib"] for r in vnf_rows), 2),
        "vnf_memory_source": "cgroup v1 memory.stat rss of the runner (usage: memory.usage_in_bytes)",
        "fnf_deploy_ms_p50": round(fnf_p50, 2),
        "fnf_deploy_ms_p90": round(pct(fnf_times, 0.9), 2),
        "fnf_kib_per_instance": round(kib_per_fnf, 1),
        # Where an fNF's deploy time goes: this process's create request, and the API requests
        # per fNF created (the agent's lists and status patches, the heartbeats meanwhile).
        "fnf_create_request_ms_p50": round(statistics.median(fnf_requests["create_ms"]), 2),
        "fnf_api_requests_per_instance": fnf_requests["per_instance"],
        "fnf_nfinstance_lists_per_instance": fnf_requests["per_instance"].get("LIST nfinstances", 0.0),
        "fnf_count": len(fnf_times),
        "vnf_runs": len(vnf_rows),
        # The baseline (a VNF pod) over the product (an fNF), same agent, same run.
        "start_ratio_vnf_pod_vs_fnf": round(statistics.median(starts) / fnf_p50, 1),
        "start_ratio_vnf_nfinstance_vs_fnf": round(statistics.median(nf_starts) / fnf_p50, 1),
        "memory_ratio_vnf_pod_vs_fnf": round(rss * 1024 / kib_per_fnf, 1),
        # External reference (their hardware, their containers): printed beside, not compared as equals.
        "gnf_published_idle_container_mb": GNF_IDLE_CONTAINER_MB,
        "gnf_published_start_ms": round(GNF_START_S * 1000),
        "gnf_container_mb_vs_fnf_kib": round(GNF_IDLE_CONTAINER_MB * 1e6 / 1024 / kib_per_fnf, 1),
        "setup_s": round(setup_s, 1),
        "load_average_1m": {
            "start": round(loads[0], 2),
            "end": round(loads[-1], 2),
            "max": round(max(loads), 2),
        },
        "load_average_1m_max": round(max(loads), 2),
        "reaped_stale_clusters": reaped,
        "cleaned_up": left_behind,
        "vnf_pod_runs": vnf_rows,
        "fnf_steps": fnf_memory,
    }
    for key in ("vnf_pod_start_ms_p50", "vnf_pod_rss_mib", "fnf_deploy_ms_p50", "fnf_kib_per_instance"):
        _positive(result[key], key)
    _print_comparison(result)
    return result


def _measure(
    env: kubeenv.KubeEnv,
    cluster: nodes.NodeCluster,
    node: nodes.Node,
    runner: image.Image,
    quick: bool,
    budget: Budget,
    loads: list[float],
    t_setup: float,
) -> tuple[list[dict[str, Any]], list[float], list[dict[str, Any]], dict[str, Any], float]:
    from kubernetes import client, config

    from tests.kube.operator_harness import agent_kubeconfig

    ns = f"bench-{uuid.uuid4().hex[:8]}"
    env.kubectl("create", "namespace", ns)
    env.kubectl("apply", "-f", "-", input=json.dumps(agentnode.edgenode(node.name)))
    admin = config.new_client_from_config(config_file=str(env.kubeconfig))  # type: ignore[no-untyped-call]
    custom = client.CustomObjectsApi(admin)
    observer = Observer(admin, ns, budget.seconds).open()
    # The CLI's own heartbeat and sync intervals: changes reach the agent by its watch either way.
    agent = agentnode.start_agent(
        cluster, node, agent_kubeconfig(env, node.name, ns), ns, heartbeat_s=None, interval_s=None
    )

    def why() -> str:
        with observer.cond:
            states = dict(observer.nf_state)
        return f"(states {states}; watch errors {observer.errors})\nagent:\n{agent.log_tail(1500)}"

    observer.explain = why
    ctx = {"observer": observer, "node": node, "custom": custom, "ns": ns, "agent": agent}
    try:
        agentnode.wait_heartbeat(env, agent, budget.left(60))
        setup_s = time.monotonic() - t_setup
        loads.append(os.getloadavg()[0])
        vnf_rows = measure_vnfs(ctx, runner, VNF_RUNS[quick], budget, loads)
        before = env.api_requests()
        fnf_times, create_ms, fnf_memory = measure_fnfs(ctx, FNF_COUNT[quick], budget, loads)
        after = env.api_requests()
        per_instance = {
            f"{verb} {resource}": round((after[key] - before.get(key, 0.0)) / len(fnf_times), 2)
            for key in sorted(after)
            if (verb := key[0]) != "WATCH" and (resource := key[1]) and after[key] > before.get(key, 0.0)
        }
        fnf_requests = {"create_ms": create_ms, "per_instance": per_instance}
        if agent.popen.poll() is not None:
            raise RuntimeError(f"the agent exited ({agent.popen.returncode}):\n{agent.log_tail()}")
    finally:
        agent.stop()
        observer.close()
    return vnf_rows, fnf_times, fnf_memory, fnf_requests, setup_s


def _print_comparison(r: dict[str, Any]) -> None:
    """The thesis in one table: the product (fNF), the baseline (VNF pod) measured in this run, their
    ratio, and GNF's published container figures beside them."""
    rows = [
        ("", "fNF (in the agent)", "VNF (pod)", "VNF/fNF", "GNF, published"),
        (
            "create -> running",
            f"{r['fnf_deploy_ms_p50']:.1f} ms",
            f"{r['vnf_pod_start_ms_p50']:.0f} ms",
            f"{r['start_ratio_vnf_pod_vs_fnf']:.1f}x",
            f"~{r['gnf_published_start_ms']} ms",
        ),
        (
            "  VNF: -> NFInstance Running",
            "",
            f"{r['vnf_nfinstance_running_ms_p50']:.0f} ms",
            f"{r['start_ratio_vnf_nfinstance_vs_fnf']:.1f}x",
            "",
        ),
        (
            "memory per idle instance",
            f"{r['fnf_kib_per_instance']:.1f} KiB",
            f"{r['vnf_pod_rss_mib']:.2f} MiB rss",
            f"{r['memory_ratio_vnf_pod_vs_fnf']:.1f}x",
            f"{r['gnf_published_idle_container_mb']} MB",
        ),
    ]
    print()
    for row in rows:
        print(f"{row[0]:<30}" + "".join(f"{cell:>20}" for cell in row[1:]))
    print(f"load average (1 min): {r['load_average_1m']}", flush=True)
