"""Benchmark suite ``agent``: the flyweight claim, measured against its baseline in the same run.

- fNF install-to-running time and RSS per fNF (1 .. 1000 fNFs, each count in a fresh process)
  against a VNF = the same NF code started as a runner process by the local-process driver;
- messages/s through a 3-fNF chain with the process pinned to one core, against the same three
  NF objects called directly (the platform's overhead), and the added latency per fNF hop;
- one agent-to-agent hop over loopback TCP (two processes): messages/s and latency;
- whole-agent RSS with 50 fNFs loaded;
- a shared broker + stream processor (issue 15) serving 1, 10 and 50 tenant slices: messages/s (the
  ratio to one tenant) and RSS per extra tenant, against the same slices each with a pair of their own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
WORKER = HERE / "agent_worker.py"


def worker(*args: str, timeout: float = 600) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=timeout, check=True
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def fnf_footprint(counts: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in counts:
        r = worker("footprint", str(n))
        rows.append(
            {
                "fnfs": n,
                "deploy_ms_p50": round(r["deploy_ms_p50"], 3),
                "deploy_ms_p99": round(r["deploy_ms_p99"], 3),
                "kib_per_fnf": round(r["kib_per_instance"], 1),
                "rss_mib": round(r["rss_after_bytes"] / 2**20, 1),
            }
        )
    return rows


def fnf_by_kind(n: int) -> list[dict[str, Any]]:
    rows = []
    for kind in ("broker", "stream_processor", "firewall", "rate_limiter", "storage"):
        r = worker("footprint", str(n), kind)
        rows.append(
            {
                "nf": kind,
                "deploy_ms_p50": round(r["deploy_ms_p50"], 3),
                "kib_per_fnf": round(r["kib_per_instance"], 1),
            }
        )
    return rows


def vnf_footprint(count: int) -> dict[str, Any]:
    """The baseline: the same NF (stream_processor) as a VNF process via the local-process driver."""
    from flyslice.nodeagent.runtime.drivers import LocalProcessDriver
    from flyslice.nodeagent.runtime.modules import module_digest
    from flyslice.nodeagent.spec import InstanceSpec

    digest = module_digest("builtin:stream_processor")
    times, rss, uss = [], [], []
    with tempfile.TemporaryDirectory() as d:
        uplink = Path(d) / "agent.addr"
        uplink.write_text("127.0.0.1:9")  # nothing listens: the runners only start and idle
        driver = LocalProcessDriver(Path(d), uplink)
        try:
            for i in range(count):
                spec = InstanceSpec(
                    name=f"vnf{i}", slice="s", role="sp", package="stream_processor", flavor="vnf",
                    module="builtin:stream_processor", digest=digest, image="nf-runner",
                    config={"filter": {"field": "v", "op": ">=", "value": 0}},
                )  # fmt: skip
                t0 = time.perf_counter()
                driver.ensure(spec)
                obs = driver.wait_ready(spec.name, 30)
                times.append((time.perf_counter() - t0) * 1000)
                if obs.state != "Running":
                    raise RuntimeError(f"VNF {spec.name} did not start: {obs.message}")
            time.sleep(0.5)
            for name in driver.names():
                p = psutil.Process(driver.procs[name].pid)  # type: ignore[arg-type]
                info = p.memory_full_info()
                rss.append(info.rss)
                uss.append(info.uss)
        finally:
            driver.remove_all()
    return {
        "vnf_deploy_ms_p50": statistics.median(times),
        "vnf_deploy_ms_p99": pct(times, 0.99),
        "vnf_kib_per_instance": statistics.mean(rss) / 1024,
        "vnf_uss_kib_per_instance": statistics.mean(uss) / 1024,
        "vnf_count": count,
    }


def agent_hop(n: int, paced: bool, tls: bool = False) -> dict[str, Any]:
    """Agent A (firewall fNF) -> TCP -> agent B (broker fNF, another process).

    ``tls``: the hop as ``flyslice up`` runs it -- mutual TLS 1.3 with certificates from a fresh CA, and
    the receiver checking each message's slice against the sender's certificate.
    """
    from flyslice.nodeagent.agent import Agent, AgentConfig
    from flyslice.nodeagent.dataplane.tls import CertificateAuthority
    from flyslice.nodeagent.gctune import tune_for_data_plane
    from flyslice.nodeagent.message import new_message
    from flyslice.nodeagent.runtime.modules import module_digest
    from flyslice.nodeagent.spec import InstanceSpec, NextHop

    tune_for_data_plane()  # as the agent CLI does
    pki = tempfile.TemporaryDirectory()
    tls_a = None
    peer_args: list[str] = []
    if tls:
        ca = CertificateAuthority.load_or_create(Path(pki.name) / "ca")
        tls_a = ca.issue_to(Path(pki.name) / "a", "agent a", node="a")
        ca.issue_to(Path(pki.name) / "b", "agent b", node="b")
        peer_args = [str(Path(pki.name) / "b")]
    peer = subprocess.Popen(
        [sys.executable, str(WORKER), "hop-peer", str(n), *peer_args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert peer.stdout is not None and peer.stdin is not None
        address = json.loads(peer.stdout.readline())["address"]
        with tempfile.TemporaryDirectory() as d:
            a = Agent(AgentConfig("a", Path(d), resync_s=3600, peers={"b": address}, tls=tls_a))
            a.converge(
                [
                    InstanceSpec(
                        name="a-fw",
                        slice="s",
                        role="fw",
                        package="firewall",
                        flavor="fnf",
                        module="builtin:firewall",
                        digest=module_digest("builtin:firewall"),
                        config={"default": "allow"},
                        next_hops=(NextHop("b-broker", "b"),),
                        node="a",
                    )
                ]
            )
            msgs = [new_message("s", "sensors/x", {"v": i}) for i in range(n)]
            t0 = time.time_ns()
            for m in msgs:
                a.plane.deliver(m, 5.0)
                if paced:
                    time.sleep(0.001)
            result = json.loads(peer.stdout.readline())
            a.stop()
        lat = result["lat_us"]
        return {
            "msgs_per_s": n / ((result["last_ns"] - t0) / 1e9),
            "latency_us_p50": pct(lat, 0.5),
            "latency_us_p99": pct(lat, 0.99),
            "received": result["received"],
        }
    finally:
        if peer.stdin:
            peer.stdin.close()
        peer.wait(10)
        pki.cleanup()


def shared_instances(n: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Shared broker + stream processor with 1, 10, 50 tenant slices, and the same slices with a pair of
    fNFs each (the baseline), each run in a fresh process pinned to one core."""
    rows: list[dict[str, Any]] = []
    by: dict[tuple[str, int], dict[str, Any]] = {}
    for tenants in (1, 10, 50):
        for mode in ("shared", "dedicated"):
            r = worker("shared", str(n), str(tenants), mode)
            if not r["finished"]:
                raise RuntimeError(f"shared benchmark ({mode}, {tenants} tenants) did not finish: {r}")
            by[(mode, tenants)] = r
    for (mode, tenants), r in by.items():
        one = by[(mode, 1)]
        rows.append(
            {
                "mode": mode,
                "tenants": tenants,
                "msgs_per_s": round(r["msgs_per_s"]),
                "ratio_vs_1": round(r["msgs_per_s"] / one["msgs_per_s"], 3),
                # Per CPU second of the (pinned) process: moves much less with what else the machine runs.
                "msgs_per_cpu_s": round(r["msgs_per_cpu_s"]),
                "cpu_ratio_vs_1": round(r["msgs_per_cpu_s"] / one["msgs_per_cpu_s"], 3),
                # One slice = two NFInstances (its broker and stream processor tenants).
                "kib_per_extra_slice": round(r["kib_per_extra_slice"], 1),
                "load_1m": round(max(r["load_avg_1m"]), 2),
            }
        )
    shared = {k: by[("shared", k)] for k in (1, 10, 50)}
    dedicated_50 = by[("dedicated", 50)]
    summary = {
        "shared_msgs_per_s_1_tenant": round(shared[1]["msgs_per_s"]),
        "shared_msgs_per_s_10_tenants": round(shared[10]["msgs_per_s"]),
        "shared_msgs_per_s_50_tenants": round(shared[50]["msgs_per_s"]),
        "shared_ratio_10_vs_1": round(shared[10]["msgs_per_s"] / shared[1]["msgs_per_s"], 3),
        "shared_ratio_50_vs_1": round(shared[50]["msgs_per_s"] / shared[1]["msgs_per_s"], 3),
        "shared_msgs_per_cpu_s_1_tenant": round(shared[1]["msgs_per_cpu_s"]),
        "shared_msgs_per_cpu_s_50_tenants": round(shared[50]["msgs_per_cpu_s"]),
        "shared_cpu_ratio_50_vs_1": round(shared[50]["msgs_per_cpu_s"] / shared[1]["msgs_per_cpu_s"], 3),
        "shared_vs_dedicated_cpu_ratio_50": round(
            shared[50]["msgs_per_cpu_s"] / dedicated_50["msgs_per_cpu_s"], 3
        ),
        "shared_kib_per_extra_tenant_at_50": round(shared[50]["kib_per_extra_slice"] / 2, 2),
        "dedicated_kib_per_extra_fnf_at_50": round(dedicated_50["kib_per_extra_slice"] / 2, 2),
        "shared_load_avg_1m": round(max(max(r["load_avg_1m"]) for r in by.values()), 2),
    }
    return rows, summary


def run(quick: bool) -> dict[str, Any]:
    counts = [1, 10, 100] if quick else [1, 10, 100, 1000]
    fnf_rows = fnf_footprint(counts)
    largest = fnf_rows[-1]
    vnf = vnf_footprint(3 if quick else 8)
    chain = worker("chain", str(50_000 if quick else 300_000))
    idle = worker("idle", "50")
    hop_load = agent_hop(20_000 if quick else 100_000, paced=False)
    hop_idle = agent_hop(300 if quick else 1000, paced=True)
    # The same hop on mutual TLS (as `flyslice up` runs it), measured in the same run: the cost of security.
    hop_load_tls = agent_hop(20_000 if quick else 100_000, paced=False, tls=True)
    hop_idle_tls = agent_hop(300 if quick else 1000, paced=True, tls=True)
    shared_rows, shared_summary = shared_instances(30_000 if quick else 150_000)
    result: dict[str, Any] = {
        "fnf_deploy_ms_p50": largest["deploy_ms_p50"],
        "fnf_deploy_ms_p99": largest["deploy_ms_p99"],
        "fnf_kib_per_instance": largest["kib_per_fnf"],
        "vnf_deploy_ms_p50": round(vnf["vnf_deploy_ms_p50"], 2),
        "vnf_kib_per_instance": round(vnf["vnf_kib_per_instance"], 1),
        "vnf_uss_kib_per_instance": round(vnf["vnf_uss_kib_per_instance"], 1),
        "deploy_speedup_fnf_vs_vnf": round(vnf["vnf_deploy_ms_p50"] / max(largest["deploy_ms_p50"], 1e-6), 1),
        "memory_ratio_vnf_vs_fnf": round(vnf["vnf_kib_per_instance"] / max(largest["kib_per_fnf"], 1e-6), 1),
        "chain3_msgs_per_s": round(chain["chain3_msgs_per_s"]),
        "chain3_direct_calls_msgs_per_s": round(chain["direct_calls_msgs_per_s"]),
        "chain3_platform_efficiency": round(chain["chain3_msgs_per_s"] / chain["direct_calls_msgs_per_s"], 3),
        "hop_latency_us_p50": round(chain["hop_latency_us_p50"], 2),
        "hop_latency_us_p99": round(chain["hop_latency_us_p99"], 2),
        "ingress_latency_us_p50": round(chain["ingress_latency_us_p50"], 2),
        "ingress_latency_us_p99": round(chain["ingress_latency_us_p99"], 2),
        "agent_hop_msgs_per_s": round(hop_load["msgs_per_s"]),
        "agent_hop_latency_us_p50": round(hop_idle["latency_us_p50"], 1),
        "agent_hop_latency_us_p99": round(hop_idle["latency_us_p99"], 1),
        "agent_hop_tls_msgs_per_s": round(hop_load_tls["msgs_per_s"]),
        "agent_hop_tls_latency_us_p50": round(hop_idle_tls["latency_us_p50"], 1),
        "agent_hop_tls_latency_us_p99": round(hop_idle_tls["latency_us_p99"], 1),
        "agent_hop_tls_throughput_ratio": round(hop_load_tls["msgs_per_s"] / hop_load["msgs_per_s"], 3),
        "agent_idle_rss_mib_50_fnfs": round(idle["rss_bytes"] / 2**20, 1),
        "fnf_converge_one_more_ms_p50_at_50": round(idle["converge_one_more_ms_p50"], 2),
        "fnf_50_from_nothing_ms": round(idle["converge_all_ms"], 1),
        "agent_idle_cpu_percent_50_fnfs": round(idle["idle_cpu_percent"], 2),
        **shared_summary,
        "fnf_footprint": fnf_rows,
        "shared_instance": shared_rows,
    }
    if not quick:
        result["fnf_footprint_by_nf"] = fnf_by_kind(100)
    return result
