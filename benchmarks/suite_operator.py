"""Benchmark suite ``operator``: many slices applied at once to a real API server.

A fresh etcd + kube-apiserver (tools/kubeenv) with an audit log; ``flyslice operator`` runs as its own
process with its own user, so every HTTP request it makes (its cache's lists and watches, kopf's,
the finalizer patches included) is counted from the server's audit log (``api_requests_by_verb``
says where they go), and its RSS is sampled with psutil. The EdgeNodes, packages and the service
exist first; then all slices are created at once with ``kubectl create`` and the clock runs until
every Slice has the condition ``Placed=True`` on the server. The full run adds 1000 slices / 500
nodes, reported even when not all are Placed within its timeout (``placed``).

Baseline, measured in the same run: the same catalog placed offline by the same planning code
(``offline_plan_seconds``), so ``operator_overhead_ratio`` is what the API round trips add on top of
the placement itself. No agents run: the slices are Placed (their NFInstances exist), not Ready.

Topology: 2 % cloud nodes, 10 % fog nodes, the rest fNF-only gateways; every slice is the wildfire
slice attached to one gateway (7 NFs per slice).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "kubeenv"))
WILDFIRE = REPO / "examples" / "wildfire"
OPERATOR_USER = "flyslice-bench-operator"
NAMESPACE = "bench"


def topology(n_slices: int, n_nodes: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(EdgeNodes + packages + service, slices)."""
    clouds = max(1, n_nodes // 50)
    fogs = max(2, n_nodes // 10)
    gateways = n_nodes - clouds - fogs

    def node(name: str, tier: str, runtimes: list[str], cpu: str, memory: str, links: list[dict[str, Any]], cost: int) -> dict[str, Any]:  # fmt: skip
        return {
            "apiVersion": "flyslice.io/v1alpha1",
            "kind": "EdgeNode",
            "metadata": {"name": name},
            "spec": {"tier": tier, "runtimes": runtimes, "capacity": {"cpu": cpu, "memory": memory},
                     "availability": 0.99, "cost": cost, "links": links},
        }  # fmt: skip

    nodes = [
        node(f"cloud-{c}", "cloud", ["vnf", "fnf"], "512", "1Ti",
             [{"node": f"fog-{f}", "latencyMs": 4} for f in range(fogs) if f % clouds == c], 1)
        for c in range(clouds)
    ]  # fmt: skip
    nodes += [
        node(f"fog-{f}", "fog", ["vnf", "fnf"], "64", "128Gi",
             [{"node": f"gw-{g}", "latencyMs": 1} for g in range(gateways) if g % fogs == f], 2)
        for f in range(fogs)
    ]  # fmt: skip
    nodes += [node(f"gw-{g}", "gateway", ["fnf"], "2", "1Gi", [], 4) for g in range(gateways)]
    catalog = [
        d
        for f in ("packages.yaml", "service.yaml")
        for d in yaml.safe_load_all((WILDFIRE / f).read_text())
        if d
    ]
    base = next(d for d in yaml.safe_load_all((WILDFIRE / "slice.yaml").read_text()) if d)
    slices = []
    for i in range(n_slices):
        s = copy.deepcopy(base)
        s["metadata"] = {"name": f"slice-{i}"}
        s["spec"]["attachments"] = [{"node": f"gw-{i % gateways}"}]
        s["spec"].pop("lifetime", None)
        slices.append(s)
    return nodes + catalog, slices


def offline_plan_seconds(docs: list[dict[str, Any]]) -> float:
    from flyslice.operator.intake.manifests import Manifest
    from flyslice.operator.intake.validation import validate
    from flyslice.operator.planning.pipeline import plan

    namespaced = [
        d if d["kind"] == "EdgeNode" else dict(d, metadata={**d["metadata"], "namespace": NAMESPACE})
        for d in docs
    ]
    result = validate(Manifest("bench", 0, d) for d in namespaced)
    started = time.perf_counter()
    the_plan = plan(result.catalog)
    took = time.perf_counter() - started
    assert all(sp.placement.admitted for sp in the_plan.slices), (
        "the benchmark topology must admit every slice"
    )
    return took


def _placed(custom: Any) -> int:
    doc = custom.list_namespaced_custom_object("flyslice.io", "v1alpha1", NAMESPACE, "slices")
    return sum(
        1
        for s in doc["items"]
        if any(
            c.get("type") == "Placed" and c.get("status") == "True"
            for c in (s.get("status") or {}).get("conditions", [])
        )
    )


def _audit_count(log: Path, user: str) -> tuple[int, dict[str, int]]:
    """The user's completed requests, and how many per ``verb resource[/subresource]`` (where they go)."""
    count = 0
    by_kind: dict[str, int] = {}
    with log.open() as f:
        for line in f:
            entry = json.loads(line)
            if entry.get("user", {}).get("username") == user and entry.get("stage") == "ResponseComplete":
                count += 1
                ref = entry.get("objectRef") or {}
                what = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
                key = f"{entry.get('verb', '?')} {what}"
                by_kind[key] = by_kind.get(key, 0) + 1
    return count, dict(sorted(by_kind.items(), key=lambda kv: -kv[1]))


def measure(n_slices: int, n_nodes: int, timeout_s: float, *, must_place: bool = True) -> dict[str, Any]:
    import kubeenv
    from kubernetes import client, config

    setup, slices = topology(n_slices, n_nodes)
    baseline = offline_plan_seconds(setup + slices)
    with tempfile.TemporaryDirectory(prefix="flyslice-bench-op-") as tmp:
        work = Path(tmp)
        policy = work / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
            "omitStages": ["RequestReceived", "ResponseStarted"],
            "rules": [{"level": "Metadata", "users": [OPERATOR_USER]}, {"level": "None"}],
        }))  # fmt: skip
        audit = work / "audit.log"
        env = kubeenv.KubeEnv(
            controller_manager=False,
            extra_apiserver_args=[
                f"--audit-policy-file={policy}",
                f"--audit-log-path={audit}",
                "--audit-log-maxsize=0",
            ],
        )
        with env:
            env.install_crds(sorted((REPO / "crds").glob("*.yaml")))
            env.kubectl("create", "namespace", NAMESPACE)
            env.kubectl("create", "namespace", "flyslice-system")
            env.kubectl(
                "-n", NAMESPACE, "create", "-f", "-", input="---\n".join(yaml.safe_dump(d) for d in setup)
            )
            op_config = env.user_kubeconfig(OPERATOR_USER, groups=["system:masters"])
            custom = client.CustomObjectsApi(config.new_client_from_config(str(env.kubeconfig)))  # type: ignore[no-untyped-call]
            log = work / "operator.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "flyslice.operator.cli", "operator", "--kubeconfig", str(op_config),
                     "--namespace", NAMESPACE, "--liveness", "off", "--git-cache", str(work / "git")],
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            peak = [0]
            done = threading.Event()

            def sample() -> None:
                p = psutil.Process(proc.pid)
                while not done.wait(0.2):
                    try:
                        peak[0] = max(peak[0], p.memory_info().rss)
                    except psutil.Error:
                        return

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                # The operator is up, leader, has made its first pass and is idle before the burst
                # (a fixed sleep measured its start-up too when the machine was loaded).
                deadline = time.monotonic() + 120
                while "adopted " not in log.read_text(errors="replace") and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1)
                idle_rss = psutil.Process(proc.pid).memory_info().rss
                cpu = {
                    "operator": psutil.Process(proc.pid),
                    **{n: psutil.Process(p) for n, p in env.pids().items()},
                }
                cpu_before = {n: _cpu(p) for n, p in cpu.items()}
                started = time.monotonic()
                env.kubectl(
                    "-n",
                    NAMESPACE,
                    "create",
                    "-f",
                    "-",
                    input="---\n".join(yaml.safe_dump(s) for s in slices),
                    timeout=600,
                )
                applied = time.monotonic() - started
                placed = 0
                while time.monotonic() - started < timeout_s:
                    placed = _placed(custom)
                    if placed == n_slices:
                        break
                    time.sleep(0.5)
                took = time.monotonic() - started
                cpu_used = {n: round(_cpu(p) - cpu_before[n], 1) for n, p in cpu.items()}
                instances = len(
                    custom.list_namespaced_custom_object("flyslice.io", "v1alpha1", NAMESPACE, "nfinstances")[
                        "items"
                    ]
                )
            finally:
                done.set()
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            time.sleep(1)  # the audit backend flushes the watches that ended with the operator
            requests, by_request = _audit_count(audit, OPERATOR_USER)
            passes = [line for line in log.read_text(errors="replace").splitlines() if " pass " in line]
    if placed != n_slices and must_place:
        raise RuntimeError(f"only {placed}/{n_slices} slices placed after {timeout_s}s; see {log}")
    return {
        "slices": n_slices,
        "nodes": n_nodes,
        "nfinstances": instances,
        "placed": placed,
        # None: not all Placed within the timeout (``placed`` says how many were).
        "seconds_to_all_placed": round(took, 2) if placed == n_slices else None,
        "seconds_to_create_slices": round(applied, 2),
        "offline_plan_seconds": round(baseline, 3),
        "operator_overhead_ratio": round(took / baseline, 1) if baseline > 0 else None,
        "operator_rss_mb": round(peak[0] / 2**20, 1),
        "operator_idle_rss_mb": round(idle_rss / 2**20, 1),
        "api_requests": requests,
        "api_requests_per_slice": round(requests / n_slices, 2),
        "api_requests_by_verb": by_request,
        # What a slice costs by itself (its NFInstance creates, finalizer patch, status patch), and the
        # rest: Lease renewals, watches, lists, Events, the CSR signer -- mostly per second, not per slice.
        "api_requests_per_slice_own": round(sum(by_request.get(k, 0) for k in _PER_SLICE) / n_slices, 2),
        "api_requests_other": requests - sum(by_request.get(k, 0) for k in _PER_SLICE),
        "reconcile_passes_with_changes": len(passes),
        # CPU seconds each process used from the burst to all Placed (where the 2 cores went).
        "cpu_seconds": cpu_used,
        "slowest_pass": max(passes, key=_pass_seconds).split("flyslice.operator: ", 1)[-1] if passes else "",
    }


_PER_SLICE = ("create nfinstances", "patch slices", "patch slices/status")


def _cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)
    except psutil.Error:
        return 0.0


def _pass_seconds(line: str) -> float:
    try:
        return float(line.split("(", 1)[1].split("s", 1)[0])
    except (IndexError, ValueError):
        return 0.0


CASE_KEYS = (
    "slices",
    "nodes",
    "placed",
    "seconds_to_all_placed",
    "operator_rss_mb",
    "api_requests_per_slice",
)


def run(quick: bool) -> dict[str, Any]:
    """The 500/200 case's figures at the top level (the keys the issue tracks); the full run adds
    1000 slices / 500 nodes, reported even when it misses (``placed`` says how far it got)."""
    if quick:
        return measure(50, 20, timeout_s=120)
    main = measure(500, 200, timeout_s=900)
    larger = measure(1000, 500, timeout_s=600, must_place=False)
    return {**main, "cases": [{k: r.get(k) for k in CASE_KEYS} for r in (main, larger)], "larger": larger}
