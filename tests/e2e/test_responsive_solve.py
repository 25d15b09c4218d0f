"""Issue 11, item 5 (the ILP half): while the placement ILP runs for seconds, ``/status`` and
``/healthz`` of a real ``flyslice up`` keep answering within 100 ms p99 (the solver runs in a worker
thread: HiGHS, the default, inside it with the GIL released; CBC in a child process)."""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from .harness import WILDFIRE
from .up_process import UpProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def hard_manifests(n_slices: int, n_nodes: int, seed: int = 1) -> list[dict[str, Any]]:
    """The wildfire catalog on a generated tree of nodes, with tight, uneven capacities and budgets:
    the baseline's warm start is far from optimal and CBC needs its whole time limit (about 30 s)."""
    rng = random.Random(seed)
    clouds, fogs = max(1, n_nodes // 50), max(2, n_nodes // 10)
    gateways = n_nodes - clouds - fogs

    def node(name: str, tier: str, runtimes: list[str], cpu: str, links: list[dict[str, Any]], cost: int) -> dict[str, Any]:  # fmt: skip
        return {
            "apiVersion": "flyslice.io/v1alpha1", "kind": "EdgeNode", "metadata": {"name": name},
            "spec": {"tier": tier, "runtimes": runtimes, "capacity": {"cpu": cpu, "memory": "64Gi"},
                     "availability": 0.99, "cost": cost, "links": links},
        }  # fmt: skip

    def link(to: str) -> dict[str, Any]:
        return {"node": to, "latencyMs": round(rng.uniform(0.5, 4), 1)}

    docs = [
        node(f"cloud-{c}", "cloud", ["vnf", "fnf"], "512", [link(f"fog-{f}") for f in range(fogs) if f % clouds == c], 1)
        for c in range(clouds)
    ]  # fmt: skip
    docs += [
        node(f"fog-{f}", "fog", ["vnf", "fnf"], f"{rng.randint(10, 20) * 100}m",
             [link(f"gw-{g}") for g in range(gateways) if g % fogs == f], 2)
        for f in range(fogs)
    ]  # fmt: skip
    docs += [
        node(f"gw-{g}", "gateway", ["fnf"], f"{rng.randint(1, 4) * 100}m", [], 4) for g in range(gateways)
    ]
    docs += [
        d
        for f in ("packages.yaml", "service.yaml")
        for d in yaml.safe_load_all((WILDFIRE / f).read_text())
        if d
    ]
    base = next(d for d in yaml.safe_load_all((WILDFIRE / "slice.yaml").read_text()) if d)
    for i in range(n_slices):
        s = copy.deepcopy(base)
        s["metadata"] = {"name": f"slice-{i}"}
        s["spec"]["attachments"] = [{"node": f"gw-{i % gateways}"}]
        s["spec"]["qos"]["maxLatencyMs"] = rng.choice([8, 9, 10, 12, 15])
        s["spec"].pop("lifetime", None)
        docs.append(s)
    return docs


def cbc_running(proc: psutil.Process) -> bool:
    """PuLP's CBC is a child process of `flyslice up` while it solves."""
    try:
        return any("cbc" in c.name().lower() for c in proc.children(recursive=True))
    except psutil.Error:
        return False


def worker_cpu(proc: psutil.Process) -> dict[int, float]:
    """CPU seconds of every thread but the main one (the event loop). HiGHS solves inside a worker
    thread of `up` (with the GIL released), so that thread's CPU time grows while it solves."""
    return {t.id: t.user_time + t.system_time for t in proc.threads() if t.id != proc.pid}


def solving(proc: psutil.Process) -> bool:
    """Whether the ILP runs now (samples 0.2 s when it is HiGHS)."""
    if cbc_running(proc):
        return True
    before = worker_cpu(proc)
    time.sleep(0.2)
    after = worker_cpu(proc)
    return any(after[t] - before.get(t, 0.0) > 0.05 for t in after)


def test_status_and_healthz_answer_while_the_ilp_runs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "all.yaml").write_text(yaml.safe_dump_all(hard_manifests(60, 30), sort_keys=False))
    with UpProcess(str(src), tmp_path / "state") as up:
        assert up.proc is not None
        proc = psutil.Process(up.proc.pid)
        # The status API first (start-up work in other threads must not pass for the solve), then
        # the solve of the first pass.
        up.wait(lambda doc: doc, 60, "the status API")
        deadline = time.monotonic() + 60
        while not solving(proc):
            assert time.monotonic() < deadline and up.proc.poll() is None, up.log.read_text()[-3000:]
            time.sleep(0.05)
        latencies: list[float] = []
        window_end = time.monotonic() + 6
        cbc_seen = 0
        cpu_before = worker_cpu(proc)
        while time.monotonic() < window_end:
            for path in ("/healthz", "/status"):
                t = time.perf_counter()
                code, _ = up.get(path)
                latencies.append(time.perf_counter() - t)
                assert code == 200, path
            cbc_seen += cbc_running(proc)
            time.sleep(0.02)
        # The whole window was spent solving (the first pass has not finished): the measurement
        # is of the ILP, not of an idle controller.
        doc = up.status()
        assert doc is not None and doc["passes"] == 0, doc
        cpu_after = worker_cpu(proc)
        busiest = max(cpu_after[t] - cpu_before.get(t, 0.0) for t in cpu_after)
        # CBC: its process was there at (nearly) every poll; HiGHS: one worker thread computed for
        # most of the window (a third of a core at least, on a machine shared with other jobs).
        assert solving(proc) and (cbc_seen >= len(latencies) // 2 * 0.9 or busiest >= 2.0), (
            cbc_seen,
            busiest,
        )
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        # Generous for a shared 2-core machine (the solver takes one); benchmarks/ has the precise figures.
        assert p99 < 0.1, (p99, latencies[-5:])
        assert len(latencies) >= 100
        # Nothing was placed yet, so no VNF runner exists: a kill leaves nothing behind and spares
        # waiting for the rest of the solve.
        up.proc.kill()
        up.proc.wait(10)
