"""Subprocess side of the agent benchmark (``suite_agent``): each measurement runs in a fresh
process so RSS deltas and CPU pinning are not disturbed by the previous one.

    python benchmarks/agent_worker.py footprint N      fNF deploy times and RSS for N fNFs
    python benchmarks/agent_worker.py chain N           3-fNF chain throughput and per-hop latency, one core
    python benchmarks/agent_worker.py hop-peer N [TLS_DIR]  receiving agent for the agent-to-agent hop
    python benchmarks/agent_worker.py shared N TENANTS MODE   N messages over TENANTS slices through a
                                                    broker and a stream processor, shared (MODE shared) or
                                                    one pair per slice (MODE dedicated); one core
Each prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from flyslice.nodeagent.agent import Agent, AgentConfig
from flyslice.nodeagent.dataplane.chains import DataPlane
from flyslice.nodeagent.gctune import tune_for_data_plane
from flyslice.nodeagent.message import new_message
from flyslice.nodeagent.runtime.modules import ModuleLoader, module_digest
from flyslice.nodeagent.runtime.platform import ModularPlatform
from flyslice.nodeagent.spec import InstanceSpec, NextHop, SharedInstance

PROC = psutil.Process()
NFS = ["broker", "stream_processor", "firewall", "rate_limiter", "storage"]
CONFIGS: dict[str, dict[str, Any]] = {
    "broker": {"retain": True},
    "stream_processor": {"filter": {"field": "v", "op": ">=", "value": 0}},
    "firewall": {"rules": [{"match": {"topic": "sensors/#"}, "action": "allow"}], "default": "drop"},
    "rate_limiter": {"rate": 1e9, "burst": 1e9},
    "storage": {},
}


def spec(
    name: str, nf: str, slice_: str, hops: tuple[str, ...] = (), node: str = "n1", hop_node: str = "n1"
) -> InstanceSpec:
    ref = f"builtin:{nf}"
    return InstanceSpec(
        name=name, slice=slice_, role=nf, package=nf, flavor="fnf", module=ref, digest=module_digest(ref),
        config=CONFIGS[nf], next_hops=tuple(NextHop(h, hop_node) for h in hops), node=node,
    )  # fmt: skip


def rss() -> int:
    gc.collect()
    return int(PROC.memory_info().rss)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def footprint(n: int, kinds: list[str]) -> dict[str, Any]:
    """Install+start n fNFs (round robin over ``kinds``, chains of len(kinds) per slice)."""
    with tempfile.TemporaryDirectory() as d:
        agent = Agent(AgentConfig("n1", Path(d), resync_s=3600))
        # Warm: one instance of each kind, so module code is loaded once and not charged per instance.
        for k in kinds:
            s = spec(f"warm-{k}", k, "warm")
            agent.platform.install(s)
            agent.platform.start(s.name)
        time.sleep(0.2)
        base = rss()
        times = []
        specs = [spec(f"i{i}", kinds[i % len(kinds)], f"slice{i // len(kinds)}") for i in range(n)]
        for s in specs:
            t0 = time.perf_counter()
            agent.platform.install(s)
            agent.platform.start(s.name)
            times.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.3)
        after = rss()
        assert all(i.running for i in agent.platform.instances.values())
        # Also the whole converge path (cache write, status) for n instances at once, in the same agent.
        t0 = time.perf_counter()
        agent.converge(specs)
        converge_same_ms = (time.perf_counter() - t0) * 1000
        agent.stop()
    return {
        "n": n,
        "kinds": kinds,
        "deploy_ms_p50": statistics.median(times),
        "deploy_ms_p99": pct(times, 0.99),
        "rss_base_bytes": base,
        "rss_after_bytes": after,
        "kib_per_instance": (after - base) / n / 1024,
        "converge_noop_ms": converge_same_ms,
    }


def idle_agent_rss(n: int) -> dict[str, Any]:
    """Whole-process RSS of an agent with n fNFs installed through converge (nothing warmed)."""
    with tempfile.TemporaryDirectory() as d:
        agent = Agent(AgentConfig("n1", Path(d), resync_s=3600, http_listen="127.0.0.1:0"))
        specs = [spec(f"i{i}", NFS[i % 4], f"slice{i // 5}") for i in range(n)]
        t0 = time.perf_counter()
        agent.converge(specs)  # GNF's figure: 50 containers in 10 s
        converge_all_ms = (time.perf_counter() - t0) * 1000
        time.sleep(0.5)
        value = rss()
        cpu0, t0 = PROC.cpu_times(), time.perf_counter()
        time.sleep(2.0)  # idle: only the NFs' own timers (rate limiter refills, firewall expiry) run
        cpu1, t1 = PROC.cpu_times(), time.perf_counter()
        idle_cpu = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (t1 - t0) * 100
        # The whole SCi path for one more fNF on this loaded agent: desired list in, cache written
        # (fsync), diff, install, start, status out.
        times = []
        for i in range(20):
            specs.append(spec(f"extra{i}", NFS[i % 4], "extra"))
            t0 = time.perf_counter()
            status = agent.converge(specs)
            times.append((time.perf_counter() - t0) * 1000)
            assert status[f"extra{i}"].state == "Running"
        agent.stop()
    return {
        "n": n,
        "rss_bytes": value,
        "converge_all_ms": converge_all_ms,
        "idle_cpu_percent": idle_cpu,
        "converge_one_more_ms_p50": statistics.median(times),
    }


def chain(n: int) -> dict[str, Any]:
    """3-fNF chain on ONE core (the process is pinned): throughput and per-hop latency."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    plane = DataPlane("n1", queue_size=n + 10)
    platform = ModularPlatform(plane, ModuleLoader())
    for s in (
        spec("fw", "firewall", "s", ("rl",)),
        spec("rl", "rate_limiter", "s", ("sp",)),
        spec("sp", "stream_processor", "s"),
    ):
        platform.install(s)
        platform.start(s.name)
    done = threading.Event()
    count = [0]
    target = [n]
    last: list[dict[str, Any]] = []

    def sink(inst: Any, msgs: list[dict[str, Any]]) -> None:
        count[0] += len(msgs)
        if len(last) < 2000:
            last.extend(msgs[: 2000 - len(last)])
        if count[0] >= target[0]:
            done.set()

    plane.sinks.append(sink)
    msgs = [new_message("s", "sensors/gw1/temp", {"v": i}) for i in range(n)]
    t0 = time.perf_counter()
    for m in msgs:
        plane.deliver(m)
    done.wait(120)
    throughput = n / (time.perf_counter() - t0)
    # Baseline in the same process: the same three NF objects called directly, no platform at all.
    fns = [platform.instances[x].nf.process for x in ("fw", "rl", "sp")]
    msgs2 = [new_message("s", "sensors/gw1/temp", {"v": i}) for i in range(n)]
    t0 = time.perf_counter()
    for m in msgs2:
        r = fns[0](m)
        if r is not None:
            r = fns[1](r)
            if r is not None:
                fns[2](r)
    direct = n / (time.perf_counter() - t0)

    # Latency: one message at a time (no batching), stamps at every fNF.
    hops_us: list[float] = []
    ingress_us: list[float] = []
    samples = min(5000, n)
    last.clear()
    for i in range(samples):
        done.clear()
        count[0] = 0
        target[0] = 1
        m = new_message("s", "sensors/gw1/temp", {"v": i})
        plane.deliver(m)
        done.wait(5)
        stamps = [t for _, t in m["trace"]["hops"]]
        ingress_us.append((stamps[0] - m["trace"]["t0"]) / 1000)
        hops_us.extend((b - a) / 1000 for a, b in itertools.pairwise(stamps))
    plane.stop()
    return {
        "n": n,
        "chain3_msgs_per_s": throughput,
        "direct_calls_msgs_per_s": direct,
        "hop_latency_us_p50": pct(hops_us, 0.5),
        "hop_latency_us_p99": pct(hops_us, 0.99),
        "ingress_latency_us_p50": pct(ingress_us, 0.5),
        "ingress_latency_us_p99": pct(ingress_us, 0.99),
    }


def shared_specs(tenants: int, mode: str) -> list[InstanceSpec]:
    """Per slice: broker -> stream processor, as tenants of two shared instances or as fNFs of its own."""
    out = []
    for i in range(tenants):
        s = f"t{i}"
        broker = spec(f"{s}-broker", "broker", s, (f"{s}-sp",))
        sp = spec(f"{s}-sp", "stream_processor", s)
        if mode == "shared":
            broker = replace(broker, shared=SharedInstance("broker@n1#0"))
            sp = replace(sp, shared=SharedInstance("stream_processor@n1#0"))
        out += [broker, sp]
    return out


def shared(n: int, tenants: int, mode: str) -> dict[str, Any]:
    """Throughput of n messages spread round robin over ``tenants`` slices, and the memory each slice
    beyond the first adds (RSS with ``tenants`` slices minus RSS with one, in the same process)."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        agent = Agent(AgentConfig("n1", Path(d), resync_s=3600, queue_size=n + 10))
        status = agent.converge(shared_specs(1, mode))
        assert {st.state for st in status.values()} == {"Running"}, status
        time.sleep(0.2)
        rss_one = rss()
        status = agent.converge(shared_specs(tenants, mode))
        assert {st.state for st in status.values()} == {"Running"}, status
        if mode == "shared":
            assert agent.platform.shared_builds == {"broker@n1#0": 1, "stream_processor@n1#0": 1}
        time.sleep(0.3)
        rss_all = rss()
        done = threading.Event()
        count = [0]

        def sink(inst: Any, msgs: list[dict[str, Any]]) -> None:
            count[0] += len(msgs)
            if count[0] >= n:
                done.set()

        agent.on_sink(sink)
        msgs = [new_message(f"t{i % tenants}", "sensors/gw1/temp", {"v": i}) for i in range(n)]
        cpu0, t0 = PROC.cpu_times(), time.perf_counter()
        for m in msgs:
            agent.plane.deliver(m)
        finished = done.wait(300)
        elapsed = time.perf_counter() - t0
        cpu1 = PROC.cpu_times()
        # CPU seconds of this process (every thread): what the figure costs, whatever else the
        # shared machine runs meanwhile (wall-clock throughput moves with the load, this much less).
        cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        st = agent.status()
        per_tenant_in = sorted(st[f"t{i}-sp"].counters["in"] for i in range(tenants))
        agent.stop()
    return {
        "mode": mode,
        "tenants": tenants,
        "n": n,
        "finished": finished,
        "msgs_per_s": n / elapsed,
        "msgs_per_cpu_s": n / max(cpu_s, 1e-9),
        "rss_one_bytes": rss_one,
        "rss_all_bytes": rss_all,
        "kib_per_extra_slice": (rss_all - rss_one) / max(tenants - 1, 1) / 1024,
        "per_tenant_in_min_max": [per_tenant_in[0], per_tenant_in[-1]],
        "load_avg_1m": [load_before, os.getloadavg()[0]],
    }


def hop_peer(n: int, tls_dir: str | None = None) -> None:
    """The receiving agent: prints its address, then a JSON line when n messages have arrived.

    ``tls_dir``: its data-plane credentials (ca.pem, cert.pem, key.pem) -- mutual TLS, as ``up`` runs it.
    """
    tls = None
    if tls_dir:
        from flyslice.nodeagent.dataplane.tls import TlsFiles

        tls = TlsFiles.in_dir(Path(tls_dir))
    with tempfile.TemporaryDirectory() as d:
        agent = Agent(AgentConfig("b", Path(d), resync_s=3600, tls=tls))
        agent.converge([spec("b-broker", "broker", "s", node="b")])
        got: list[int] = []
        lat: list[float] = []
        done = threading.Event()

        def sink(inst: Any, msgs: list[dict[str, Any]]) -> None:
            got.append(time.time_ns())
            for m in msgs:
                hops = m["trace"]["hops"]
                if len(hops) >= 2:
                    lat.append((hops[-1][1] - hops[-2][1]) / 1000)
            if sum(1 for _ in lat) >= n:
                done.set()

        agent.on_sink(sink)
        print(json.dumps({"address": agent.address}), flush=True)
        done.wait(120)
        print(json.dumps({"last_ns": got[-1], "received": len(lat), "lat_us": lat}), flush=True)
        sys.stdin.read()  # stay up until the parent closes our stdin
        agent.stop()


def main() -> None:
    cmd, n = sys.argv[1], int(sys.argv[2])
    if cmd != "footprint":  # as the agent CLI and the runner do (footprint measures the library as is)
        tune_for_data_plane()
    if cmd == "footprint":
        kinds = sys.argv[3].split(",") if len(sys.argv) > 3 else NFS
        print(json.dumps(footprint(n, kinds)))
    elif cmd == "idle":
        print(json.dumps(idle_agent_rss(n)))
    elif cmd == "chain":
        print(json.dumps(chain(n)))
    elif cmd == "shared":
        print(json.dumps(shared(n, int(sys.argv[3]), sys.argv[4])))
    elif cmd == "hop-peer":
        hop_peer(n, sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
