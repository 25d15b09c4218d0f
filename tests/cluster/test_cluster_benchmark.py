"""``python benchmarks/run.py cluster --quick --json F`` runs end to end and leaves nothing behind.

The suite measures a real agent's fNFs against VNF pods under a real kubelet (benchmarks/
suite_cluster.py). This test runs the entry point users run, as a subprocess, and checks the
contract of its result, not the speed: every headline figure exists and is a positive finite
number, the ratios are the quotients of the figures they compare, the per-run rows and memory
checkpoints have the shape the docs describe, GNF's published figures are carried beside them, and
no node, namespace, cgroup or process of the run is left on the host. Speed targets live in the
benchmark, never here. Two more runs are interrupted once the agent runs: by SIGTERM (the run's
own cleanup removes everything) and by SIGKILL (nothing of the run's own code runs: the next
``nodes.reap_stale()`` must remove the node, the agent, etcd and the API server). Skips like the
other tests/cluster tests without ``FLYSLICE_REQUIRE_KUBE=1`` or the node binaries.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "kubeenv"))

import kubeenv  # noqa: E402
import nodes  # noqa: E402

pytestmark = [pytest.mark.kube, pytest.mark.slow, pytest.mark.timeout(900)]

HEADLINE = (
    "vnf_pod_start_ms_p50",
    "vnf_pod_start_ms_p90",
    "vnf_nfinstance_running_ms_p50",
    "vnf_nfinstance_running_ms_p90",
    "vnf_pod_rss_mib",
    "vnf_pod_usage_mib",
    "fnf_deploy_ms_p50",
    "fnf_deploy_ms_p90",
    "fnf_kib_per_instance",
    "start_ratio_vnf_pod_vs_fnf",
    "start_ratio_vnf_nfinstance_vs_fnf",
    "memory_ratio_vnf_pod_vs_fnf",
    "gnf_published_idle_container_mb",
    "gnf_published_start_ms",
)


def _positive_finite(result: dict[str, Any], key: str) -> float:
    value = result.get(key)
    assert isinstance(value, int | float) and not isinstance(value, bool), f"{key}: {value!r}"
    assert math.isfinite(value) and value > 0, f"{key}: {value!r}"
    return float(value)


def _assert_removed(cluster_id: str, dirs: list[str]) -> None:
    """No network namespace, link, cgroup, directory or process of the run's node cluster and
    control plane is left on the host."""
    assert (
        f"fs{cluster_id}-"
        not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"fsbr{cluster_id}" not in links and f"fs{cluster_id}v" not in links
    assert not [h for h in nodes.cgroup_hierarchies(unified=True) if list(h.glob(f"flyslice-{cluster_id}-*"))]
    mounts = Path("/proc/self/mountinfo").read_text()
    for d in dirs:
        assert d.startswith(str(nodes.RUN_DIR) + "/"), d  # reap_stale() can find it after a SIGKILL
        assert not Path(d).exists() and d not in mounts, d
        procs = [p for p in os.listdir("/proc") if p.isdigit() and d.encode() in _cmdline(p)]
        assert procs == [], f"processes left naming {d}: {procs}"


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _require_nodes() -> None:
    if os.environ.get("FLYSLICE_REQUIRE_KUBE") != "1":
        pytest.skip(
            "real nodes run only with FLYSLICE_REQUIRE_KUBE=1 (and after tools/kubeenv/build-node.sh)"
        )
    try:
        nodes.find_node_binaries()
    except nodes.NodesUnavailable as exc:
        pytest.skip(str(exc))
    try:
        kubeenv.find_binaries()
    except kubeenv.KubeEnvUnavailable as exc:
        pytest.fail(str(exc))


def _owned_by(pid: int) -> list[Path]:
    """The directories under /run/flyslice whose owner.pid names ``pid``."""
    found = []
    for d in nodes.RUN_DIR.glob("*-*") if nodes.RUN_DIR.is_dir() else []:
        try:
            if int((d / "owner.pid").read_text()) == pid:
                found.append(d)
        except (OSError, ValueError):
            continue
    return found


def _start_and_wait_for_agent(tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[Path]]:
    """Start a quick run and return once its agent process runs (the node, the control plane and
    the agent all exist then); its output goes to tmp_path/run.log."""
    with (tmp_path / "run.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / "run.py"), "cluster", "--quick"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        dirs = _owned_by(proc.pid)
        agents = [
            p
            for p in os.listdir("/proc")
            if p.isdigit() and b"--kube" in (cmd := _cmdline(p)) and any(str(d).encode() in cmd for d in dirs)
        ]
        if len(dirs) == 2 and agents:
            return proc, dirs
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"no agent of the run after 400 s:\n{(tmp_path / 'run.log').read_text()[-3000:]}")


def _cluster_id(dirs: list[Path]) -> str:
    """The NodeCluster's id: its directory is ``<4 hex digits>-...`` (the control plane's ``kube...``)."""
    (cluster_dir,) = [d for d in dirs if not d.name.startswith("kube")]
    return cluster_dir.name.split("-", 1)[0]


def test_sigterm_mid_run_cleans_up(tmp_path: Path) -> None:
    _require_nodes()
    proc, dirs = _start_and_wait_for_agent(tmp_path)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"no exit within 120 s of SIGTERM:\n{(tmp_path / 'run.log').read_text()[-3000:]}")
    assert proc.returncode != 0  # interrupted: no result
    assert "KeyboardInterrupt" in (tmp_path / "run.log").read_text()  # the handler, not a crash
    _assert_removed(_cluster_id(dirs), [str(d) for d in dirs])


def test_sigkill_mid_run_is_reaped_by_the_next_run(tmp_path: Path) -> None:
    _require_nodes()
    proc, dirs = _start_and_wait_for_agent(tmp_path)
    proc.kill()  # no finally, no atexit: everything it started is orphaned
    proc.wait(10)
    assert all(d.exists() for d in dirs)
    reaped = nodes.reap_stale()
    assert {d.name.split("-", 1)[0] for d in dirs} <= set(reaped)
    _assert_removed(_cluster_id(dirs), [str(d) for d in dirs])


def test_quick_cluster_benchmark(tmp_path: Path) -> None:
    _require_nodes()
    out = tmp_path / "cluster.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "cluster", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(out.read_text())

    assert result["suite"] == "cluster" and result["quick"] is True
    assert {"python", "cpus", "memory_gib"} <= set(result["machine"])
    for key in HEADLINE:
        _positive_finite(result, key)
    # The ratios are those of the figures measured in this run (one decimal).
    fnf = result["fnf_deploy_ms_p50"]
    assert result["start_ratio_vnf_pod_vs_fnf"] == pytest.approx(
        result["vnf_pod_start_ms_p50"] / fnf, abs=0.1
    )
    assert result["memory_ratio_vnf_pod_vs_fnf"] == pytest.approx(
        result["vnf_pod_rss_mib"] * 1024 / result["fnf_kib_per_instance"], rel=0.02
    )
    assert result["vnf_pod_start_ms_p90"] >= result["vnf_pod_start_ms_p50"]
    # A VNF is Running for the agent only after its pod runs (and passes its readiness probe).
    assert result["vnf_nfinstance_running_ms_p50"] >= result["vnf_pod_start_ms_p50"]
    assert result["gnf_published_idle_container_mb"] == 2.21 and result["gnf_published_start_ms"] == 200
    assert "memory.stat rss" in result["vnf_memory_source"]

    runs = result["vnf_pod_runs"]
    assert len(runs) == result["vnf_runs"] >= 3
    for row in runs:
        for key in ("pod_running_ms", "pod_ready_ms", "nfinstance_running_ms", "rss_mib", "usage_mib"):
            _positive_finite(row, key)
        _positive_finite(row, "pod_total_rss_mib")
        assert row["pod_running_ms"] <= row["pod_ready_ms"]
        # A Python runner with flyslice imported: megabytes of anonymous memory, not an empty cgroup.
        assert row["rss_mib"] > 5
    memory = result["fnf_steps"]
    counts = [m["fnfs"] for m in memory]  # checkpoints of the slope, from no fNF to all of them
    assert counts[0] == 0 and counts == sorted(set(counts)) and counts[-1] == result["fnf_count"] >= 20
    assert all(m["agent_rss_kib"] > 10 * 1024 for m in memory)  # a Python process with flyslice loaded
    assert all(m["deploy_ms_p50"] > 0 for m in memory[1:])
    # This run created exactly one NFInstance per fNF (the API server's own request count).
    assert result["fnf_api_requests_per_instance"].get("POST nfinstances") == pytest.approx(1.0)
    load = result["load_average_1m"]
    assert {"start", "end", "max"} <= set(load) and load["max"] >= 0

    # Cleaned up: the node (namespace, bridge, cgroups, containerd, kubelet, the agent in its
    # directory), etcd and the API server, all in directories reap_stale() would find.
    cleaned = result["cleaned_up"]
    assert len(cleaned["dirs"]) == 2
    _assert_removed(cleaned["cluster_id"], cleaned["dirs"])
