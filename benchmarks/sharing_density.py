"""NF-sharing density on Raspberry-Pi-class gateways (issue 15 item 5): ``sharing_density`` of suite ``solver``.

How many wildfire-like slices 2-4 Pi-class gateways admit with and without NF sharing, how much of
their memory the admitted slices take and how long the solve takes, through the product path: each
case writes manifests (EdgeNodes, the NFPackages and NetworkService of examples/shared-gateways,
Slices) into a temporary directory and plans them with the pipeline ``plan()`` that ``flyslice plan``
calls, with the same default options (``SolveOptions()``: HiGHS, 30 s, 0.5 % gap). The "without
sharing" run plans the same manifests with ``spec.sharing: forbidden`` on every Slice
(``manifests_gen.forbid_sharing``), in the same run; the baseline heuristic (which joins open
instances of its pool) plans both too.

The scenario (numbers and why, also in docs/benchmarks.md):

* **Slices**: the chain of examples/shared-gateways/service.yaml (per tower a broker, which may be
  shared, and a filtering stream processor, which keeps windows per slice; in the cloud a broker and a
  database), sensors on two towers (slice ``i`` on towers ``i mod G`` and ``i+1 mod G``), 8 ms latency
  budget: 7.7 ms with the tower's NFs on its own gateway, 9.7 ms via another tower, so each tower's
  NFs stay on their tower as radio-attached sensors need. Equal priority; availability 0.9.
* **Footprints**: those the example packages declare (the solver plans with declared reservations,
  and the agent enforces an fNF's ``resources.memory`` as its budget): broker fNF 50m/8Mi per instance
  plus 5m/2Mi per tenant, at most 20 tenants and 40 Mbit/s (each tenant 2 Mbit/s); stream processor
  fNF 100m/16Mi per slice. The agent suite measures an idle fNF at 10-28 KiB of RSS: the declarations
  are budgets for a loaded NF (retained values, windows, queues), not idle footprints.
* **Gateways**: 4 cores and 512 MiB (Pi Zero 2 W, Pi 3A+) or 1 GiB (Pi 3B+, Pi 4 1 GB); the EdgeNode
  offers NFs what the OS and the agent leave (:func:`gateway_capacity`).
* **Cloud and fog** as in the example, the cloud enlarged (128 cores, 256 GiB) so that it never
  binds: what is measured is the gateways' density. The fog node relays (no role runs there).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from manifests_gen import forbid_sharing, write_documents

from flyslice import solver
from flyslice.operator.intake.catalog import Catalog
from flyslice.operator.intake.validation import validate_paths
from flyslice.operator.planning.pipeline import Plan, plan
from flyslice.solver import Placement

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "shared-gateways"
NAMESPACE = "density"
SERVICE = "forest-telemetry"

PI_CORES = 4
#: Kept by the OS on a Pi-class board: kernel, firmware/CMA reservation and Raspberry Pi OS Lite's
#: services. A chosen figure (typical `free` output after boot), not measured on a board here.
OS_RESERVE_MIB = 128
#: The agent process without its NFs: `agent_idle_rss_mib_50_fnfs` measured 32 MiB with 50 idle fNFs
#: of ~25 KiB each in it (docs/benchmarks.md), so 32 MiB is kept for the agent itself.
AGENT_RESERVE_MIB = 32
#: CPU kept for the OS and the agent's own data plane (TCP/TLS, JSON encoding and queue hand-offs run
#: on the agent's threads, outside what the NFs declare) and its telemetry.
CPU_RESERVE_MILLIS = 500
LATENCY_BUDGET_MS = 8.0


def gateway_capacity(memory_mib: int) -> tuple[int, int]:
    """(CPU millis, memory MiB) a Pi-class gateway of ``memory_mib`` offers NFs in its EdgeNode.

    fNFs run inside the agent process, so they get the board's memory less the OS and the agent. The
    shipped systemd unit (deploy/gateway/flyslice-agent.service) caps the agent with its fNFs at
    MemoryMax=384M; that cap is what binds on a 512 MiB board (512 - 128 = 384 anyway), while the
    1 GiB variant assumes the cap raised to what the OS leaves (896 MiB): with the shipped cap a
    1 GiB gateway offers NFs no more than a 512 MiB one.
    """
    if memory_mib <= OS_RESERVE_MIB + AGENT_RESERVE_MIB:
        raise ValueError(f"sharing_density: gateway_memory_mib={memory_mib} leaves nothing for NFs")
    return PI_CORES * 1000 - CPU_RESERVE_MILLIS, memory_mib - OS_RESERVE_MIB - AGENT_RESERVE_MIB


@dataclass(frozen=True)
class Case:
    gateways: int
    #: The board's memory (512 or 1024); the EdgeNode offers :func:`gateway_capacity` of it.
    gateway_memory_mib: int
    offered: int


QUICK = [Case(g, m, n) for g in (2, 4) for m in (512, 1024) for n in (10, 25)]
FULL = [Case(g, m, n) for g in (2, 4) for m in (512, 1024) for n in (10, 25, 50, 100)]


def _object(kind: str, name: str, spec: dict[str, Any], namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespaced:
        meta["namespace"] = NAMESPACE
    return {"apiVersion": "flyslice.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def _example(name: str) -> list[dict[str, Any]]:
    """The example's documents, moved into the benchmark's namespace (footprints untouched)."""
    with open(EXAMPLE / name, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        d["metadata"]["namespace"] = NAMESPACE
    return docs


def _nodes(gateways: int, memory_mib: int) -> list[dict[str, Any]]:
    cpu, mem = gateway_capacity(memory_mib)
    towers = [f"tower-{i + 1}" for i in range(gateways)]
    nodes = [
        _object(
            "EdgeNode",
            "region-cloud",
            {
                "tier": "cloud",
                "runtimes": ["vnf"],
                "capacity": {"cpu": "128", "memory": "256Gi"},
                "availability": 0.999,
                "cost": 1,
                "links": [{"node": "region-fog", "latencyMs": 4, "bandwidthMbps": 1000}],
            },
            namespaced=False,
        ),
        _object(
            "EdgeNode",
            "region-fog",
            {
                "tier": "fog",
                "runtimes": ["vnf", "fnf"],
                "capacity": {"cpu": "4", "memory": "4Gi"},
                "availability": 0.99,
                "cost": 2,
                "links": [{"node": t, "latencyMs": 1, "bandwidthMbps": 100} for t in towers],
            },
            namespaced=False,
        ),
    ]
    for t in towers:
        spec = {
            "tier": "gateway",
            "runtimes": ["fnf"],
            "capacity": {"cpu": f"{cpu}m", "memory": f"{mem}Mi"},
            "availability": 0.98,
            "cost": 4,
        }
        nodes.append(_object("EdgeNode", t, spec, namespaced=False))
    return nodes


def _slices(gateways: int, offered: int) -> list[dict[str, Any]]:
    out = []
    for i in range(offered):
        towers = sorted({i % gateways, (i + 1) % gateways})
        spec = {
            "services": [SERVICE],
            "qos": {"maxLatencyMs": LATENCY_BUDGET_MS, "availability": 0.9},
            "attachments": [{"node": f"tower-{t + 1}"} for t in towers],
        }
        out.append(_object("Slice", f"wf-{i:03d}", spec))
    return out


def write(out: Path, case: Case) -> None:
    """Write the case's manifests (sharing allowed, as the example's packages and service say)."""
    write_documents(
        out,
        {
            "nodes.yaml": _nodes(case.gateways, case.gateway_memory_mib),
            "packages.yaml": _example("packages.yaml"),
            "service.yaml": _example("service.yaml"),
            "slices.yaml": _slices(case.gateways, case.offered),
        },
    )


def plan_dir(path: Path, method: str) -> tuple[Plan, float]:
    """What ``flyslice plan PATH [--method baseline]`` computes, in-process: the Plan and wall seconds.

    Same calls and options as ``cmd_plan`` (validation, then ``plan()`` with ``SolveOptions()``), but
    an invalid input is an error here: a benchmark must not measure a plan of fewer objects.
    """
    result = validate_paths([str(path)])
    errors = [e for e in result.errors if e.severity == "error"]
    if errors:
        raise ValueError(f"sharing_density: {path}: {errors[0]}")
    start = time.perf_counter()
    done = plan(result.catalog, method=method, options=solver.SolveOptions())
    return done, time.perf_counter() - start


def _admitted(placement: Placement) -> int:
    return sum(1 for sp in placement.slices.values() if sp.admitted)


def _gateway_memory_mib(placement: Placement, catalog: Catalog) -> float:
    """Memory the placement reserves on the gateway-tier hosts, summed over them, in MiB."""
    gateways = [name for name, node in catalog.nodes.items() if node.tier == "gateway"]
    used: int = sum(placement.host_usage[g].memory_bytes for g in gateways if g in placement.host_usage)
    return round(used / 2**20, 2)


def _shared_tenants(placement: Placement) -> int:
    """Tenants in instances that serve more than one (0 when nothing is shared)."""
    return sum(len(i.tenants) for i in placement.instances.values() if len(i.tenants) > 1)


def run_case(case: Case) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="flyslice-density-") as tmp:
        shared_dir, unshared_dir = Path(tmp) / "shared", Path(tmp) / "unshared"
        write(shared_dir, case)
        forbid_sharing(shared_dir, unshared_dir)
        shared, shared_wall = plan_dir(shared_dir, "ilp")
        unshared, unshared_wall = plan_dir(unshared_dir, "ilp")
        base_shared, _ = plan_dir(shared_dir, "baseline")
        base_unshared, _ = plan_dir(unshared_dir, "baseline")
    ps, pu = shared.placement, unshared.placement
    cpu, mem = gateway_capacity(case.gateway_memory_mib)
    return {
        "gateways": case.gateways,
        "gateway_memory_mib": case.gateway_memory_mib,
        "offered": case.offered,
        "admitted_shared": _admitted(ps),
        "admitted_unshared": _admitted(pu),
        "baseline_admitted_shared": _admitted(base_shared.placement),
        "baseline_admitted_unshared": _admitted(base_unshared.placement),
        "gateway_memory_used_mib_shared": _gateway_memory_mib(ps, shared.catalog),
        "gateway_memory_used_mib_unshared": _gateway_memory_mib(pu, unshared.catalog),
        "seconds_shared": round(ps.seconds, 3),
        "seconds_unshared": round(pu.seconds, 3),
        "guarantee_shared": str(ps.guarantee),
        "gap_shared": ps.gap,
        # Beside the requested keys: what the figures above depend on.
        "guarantee_unshared": str(pu.guarantee),
        "gap_unshared": pu.gap,
        "gateway_nf_memory_mib": mem,
        "gateway_nf_cpu_millis": cpu,
        "shared_instances": len(ps.instances),
        "shared_tenants": _shared_tenants(ps),
        "baseline_gateway_memory_used_mib_shared": _gateway_memory_mib(base_shared.placement, shared.catalog),
        "plan_wall_s_shared": round(shared_wall, 3),
        "plan_wall_s_unshared": round(unshared_wall, 3),
    }


def run(quick: bool) -> dict[str, Any]:
    load_before = os.getloadavg()
    rows = [run_case(c) for c in (QUICK if quick else FULL)]
    return {
        "sharing_density": rows,
        "sharing_density_load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
    }
