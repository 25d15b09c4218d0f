"""Incremental admission through the reconcile core (issue 13, item 1).

One new slice into a loaded state, measured through ``flyslice.operator.reconcile.reconcile`` -- the
function ``flyslice up`` and the operator run every pass -- not through the solver alone: service
choice, expansion, the solve, the independent re-check, NFInstance actions and every slice's status
are in the figure. The baseline in the same run is the same pass with ``admission="full"`` (every slice
re-planned with the whole model, what the reconcile core did before).

Catalog: generated manifests validated like git YAML -- a tiered tree like
``solver_instances.tree_topology`` (1 % clouds in a ring, 10 % fogs meshed with their neighbours,
the rest gateways, dual-homed, 20 % of them able to run VNFs), the wildfire NF packages and a
five-role chain service (gateway ingest, three free-tier stages, a cloud store); slices with one or
two gateway attachments, 12-25 ms budgets and priorities 0-2. The loaded state is built as a
controller would build it: the slices arrive in batches of 25, each admitted incrementally. Slices
the loading did not admit stay pending and are re-tried by every re-plan (a solve over them too), so
``incremental_pending_slices`` is reported next to the figure.

Keys: ``incremental_new_slice_ms`` (median wall time over repeats; ``..._cpu_ms`` the process CPU time,
which other processes on a shared machine do not inflate), ``full_replan_ms`` (median),
``moved_running_nfs`` (running NFs the incremental pass moved: must be 0) and
``full_moved_running_nfs`` (what the full re-plan moved), with the sizes and the solver used.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
WILDFIRE = REPO / "examples" / "wildfire"
NAMESPACE = "bench"
BATCH = 25


def manifests(hosts: int, slices: int, seed: int = 13) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(EdgeNodes + packages + the chain service, ``slices`` + 1 Slices: the last one is the newcomer)."""
    rng = random.Random(f"incremental/{hosts}/{slices}/{seed}")
    n_cloud, n_fog = max(1, hosts // 100), max(2, hosts // 10)
    n_gw = hosts - n_cloud - n_fog
    links: dict[str, list[dict[str, Any]]] = {}

    def link(a: str, b: str, latency: float) -> None:
        links.setdefault(a, []).append({"node": b, "latencyMs": round(latency, 2)})

    for i in range(n_cloud):
        if n_cloud > 1 and (i + 1) % n_cloud != i:
            link(f"cloud-{i}", f"cloud-{(i + 1) % n_cloud}", 2.0)
    for f in range(n_fog):
        link(f"fog-{f}", f"cloud-{f % n_cloud}", rng.uniform(3.0, 6.0))
        link(f"fog-{f}", f"fog-{(f + 1) % n_fog}", rng.uniform(1.0, 3.0))
    for g in range(n_gw):
        home = g % n_fog
        link(f"gw-{g}", f"fog-{home}", rng.uniform(0.5, 2.0))
        link(f"gw-{g}", f"fog-{(home + 1) % n_fog}", rng.uniform(1.0, 3.0))

    def node(name: str, tier: str, runtimes: list[str], cpu: str, memory: str, cost: int) -> dict[str, Any]:
        return {
            "apiVersion": "flyslice.io/v1alpha1",
            "kind": "EdgeNode",
            "metadata": {"name": name},
            "spec": {"tier": tier, "runtimes": runtimes, "capacity": {"cpu": cpu, "memory": memory},
                     "availability": round(0.999 - rng.random() * 0.01, 4), "cost": cost,
                     "links": links.get(name, [])},
        }  # fmt: skip

    docs = [node(f"cloud-{i}", "cloud", ["vnf"], "64", "128Gi", 1) for i in range(n_cloud)]
    docs += [node(f"fog-{f}", "fog", ["vnf", "fnf"], "8", "16Gi", 2) for f in range(n_fog)]
    docs += [
        node(f"gw-{g}", "gateway", ["vnf", "fnf"] if rng.random() < 0.2 else ["fnf"], "1", "1Gi", 4)
        for g in range(n_gw)
    ]
    docs += [d for d in yaml.safe_load_all((WILDFIRE / "packages.yaml").read_text()) if d]
    docs.append(
        {
            "apiVersion": "flyslice.io/v1alpha1",
            "kind": "NetworkService",
            "metadata": {"name": "chain"},
            "spec": {
                "provides": ["chain"],
                "graph": {
                    "roles": [
                        {"name": "ingest", "package": "broker", "scope": "perAttachment", "tiers": ["gateway"]},
                        {"name": "filter", "package": "stream-processor", "scope": "perSlice"},
                        {"name": "window", "package": "stream-processor", "scope": "perSlice"},
                        {"name": "relay", "package": "broker", "scope": "perSlice"},
                        {"name": "store", "package": "storage", "scope": "perSlice", "tiers": ["cloud"]},
                    ],
                    "edges": [
                        {"from": a, "to": b, "bandwidthMbps": 1}
                        for a, b in [("ingest", "filter"), ("filter", "window"), ("window", "relay"), ("relay", "store")]
                    ],
                },
            },
        }
    )  # fmt: skip
    out = []
    for i in range(slices + 1):
        attachments = rng.sample(range(n_gw), k=1 if rng.random() < 0.7 else 2)
        out.append(
            {
                "apiVersion": "flyslice.io/v1alpha1",
                "kind": "Slice",
                "metadata": {"name": f"s{i:04d}"},
                "spec": {
                    "networkServiceRef": {"name": "chain"},
                    "qos": {"maxLatencyMs": rng.choice([12, 15, 20, 25]), "availability": 0.9},
                    "attachments": [{"node": f"gw-{g}"} for g in attachments],
                    "priority": rng.choice([0, 0, 1, 2]),
                },
            }
        )
    return docs, out


def catalog(docs: list[dict[str, Any]]) -> Any:
    """The catalog ``flyslice up`` would build from these manifests (validated like git YAML)."""
    from flyslice.operator.intake.manifests import Manifest
    from flyslice.operator.intake.validation import validate

    namespaced = [
        d if d["kind"] == "EdgeNode" else {**d, "metadata": {**d["metadata"], "namespace": NAMESPACE}}
        for d in docs
    ]
    result = validate(Manifest("bench.yaml", i, d) for i, d in enumerate(namespaced))
    errors = [str(e) for e in result.errors if e.severity == "error"]
    if errors:
        raise SystemExit(f"benchmark manifests do not validate: {errors[:3]}")
    return result.catalog


def _moved(before: Any, after: Any) -> int:
    """Running NFs (admitted in ``before``) whose host or flavour differs in ``after``."""
    return sum(
        1
        for key, rec in before.slices.items()
        if rec.admitted and key in after.slices
        for nf, where in rec.assignments.items()
        if after.slices[key].assignments.get(nf, where) != where or not after.slices[key].admitted
    )


def measure(hosts: int, slices: int, repeats: int, full_repeats: int) -> dict[str, Any]:
    from flyslice import solver
    from flyslice.operator.reconcile import ControllerState, Observation, reconcile

    # What `flyslice up` and the operator run: the default options (the solver they pick, 30 s).
    options = solver.SolveOptions()
    name = options.solver
    infra, slice_docs = manifests(hosts, slices)
    obs = Observation()
    state = ControllerState()
    now = 1_000_000.0
    load_started = time.perf_counter()
    # Loading is not measured; a batch of 25 newcomers solves well within 10 s.
    loading = replace(options, time_limit_s=10)
    for end in range(BATCH, slices + BATCH, BATCH):
        loaded = catalog(infra + slice_docs[: min(end, slices)])
        state = reconcile(loaded, state, obs, now=now, options=loading).state
    load_s = time.perf_counter() - load_started
    admitted = sum(1 for r in state.slices.values() if r.admitted)
    grown = catalog(infra + slice_docs)
    new_key = f"{NAMESPACE}/s{slices:04d}"

    def timed(admission: str, n: int) -> tuple[float, float, Any]:
        times, cpu, out = [], [], None
        for _ in range(n):
            started, started_cpu = time.perf_counter(), time.process_time()
            out = reconcile(grown, state, obs, now=now + 1, options=options, admission=admission)  # type: ignore[arg-type]
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        return statistics.median(times) * 1000, statistics.median(cpu) * 1000, out

    inc_ms, inc_cpu_ms, inc = timed("incremental", repeats)
    full_ms, full_cpu_ms, full = timed("full", full_repeats)
    return {
        "incremental_hosts": hosts,
        "incremental_loaded_slices": admitted,
        "incremental_solver": name,
        "incremental_load_seconds": round(load_s, 2),
        "incremental_pending_slices": slices - admitted,
        "incremental_new_slice_ms": round(inc_ms, 1),
        "incremental_new_slice_cpu_ms": round(inc_cpu_ms, 1),
        "incremental_new_slice_admitted": inc.state.slices[new_key].admitted,
        "moved_running_nfs": _moved(state, inc.state),
        "full_replan_ms": round(full_ms, 1),
        "full_replan_cpu_ms": round(full_cpu_ms, 1),
        "full_new_slice_admitted": full.state.slices[new_key].admitted,
        "full_moved_running_nfs": _moved(state, full.state),
        "full_replan_gap": full.state.solve_gap,
    }


def run(quick: bool) -> dict[str, Any]:
    if quick:
        return measure(200, 100, repeats=3, full_repeats=1)
    return measure(500, 250, repeats=5, full_repeats=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 hosts / 100 slices instead of 500 / 250")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
