"""Scale-out of overloaded shared instances (issue 15; docs/sharing.md, "Scale-out").

The end-to-end tests run the embedded controller as ``flyslice up`` does (the real reconcile core,
the real solver, one real in-process agent per EdgeNode), with a shared fNF that really is slow and
agents whose queues are tiny, so that flooding one slice makes the real agent report the shared
instance overloaded. Nothing is mocked. The timing rules (sustain window, cool-down, what stays
derated) are also checked pass by pass on the real reconcile core and solver, with observations
written as the agents write them, where a real overload cannot be timed to the second.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from flyslice.nodeagent.message import new_message
from flyslice.nodeagent.runtime.modules import module_digest
from flyslice.operator.embedded.agent_runtime import LocalAgentFleet
from flyslice.operator.embedded.controller import EmbeddedController
from flyslice.operator.gitops.sources import DirectorySource
from flyslice.operator.intake.catalog import Catalog
from flyslice.operator.intake.validation import validate_paths
from flyslice.operator.kube.cluster import event_for, observe
from flyslice.operator.planning import expansion
from flyslice.operator.planning.pipeline import plan
from flyslice.operator.planning.reoptimize import objective_of
from flyslice.operator.planning.scale_out import ScaleOutSettings, ScaleOutState, split_capacity
from flyslice.operator.reconcile import (
    ControllerState,
    InstanceObservation,
    Observation,
    Outcome,
    reconcile,
    reoptimization_job,
)

pytestmark = pytest.mark.timeout(180)

SLOW = """
import time
from flyslice.nodeagent.sdk import NetworkFunction
class NF(NetworkFunction):
    def process(self, msg):
        time.sleep(0.002)   # about 500 messages/s for the whole instance: far below a flood
        return msg
"""
SINK = """
from flyslice.nodeagent.sdk import NetworkFunction
class NF(NetworkFunction):
    def process(self, msg):
        return None
"""
SLICES = ("a", "b", "c", "d")


# -- manifests ------------------------------------------------------------------------------------


def _node(name: str, cpu: str, links: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "EdgeNode",
        "metadata": {"name": name},
        "spec": {
            "tier": "gateway",
            "runtimes": ["fnf"],
            "capacity": {"cpu": cpu, "memory": "1Gi"},
            "availability": 0.99,
            "cost": 1,
            "links": [{"node": n, "latencyMs": 1} for n in links],
        },
    }


def _package(name: str, module: Path, cpu: str, sharing: dict[str, Any] | None) -> dict[str, Any]:
    ref = f"file:{module}"
    flavor: dict[str, Any] = {
        "module": ref,
        "digest": module_digest(ref),
        "resources": {"cpu": cpu, "memory": "16Mi"},
        "processingLatencyMs": 0.5,
    }
    if sharing is not None:
        flavor["sharing"] = sharing
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "NFPackage",
        "metadata": {"name": name},
        "spec": {"function": name, "flavors": {"fnf": flavor}},
    }


def write_manifests(
    root: Path,
    modules: Path,
    *,
    slow_cpu: str = "100m",
    nodes: tuple[tuple[str, str], ...] = (("gw-1", "2"),),
) -> None:
    """Four slices a..d at gw-1, each ``ingest`` (the slow shared fNF, 10 Mbit/s per tenant, instances of
    100 Mbit/s) -> ``sink`` (an fNF of its own); ``nodes``: (name, CPU) of each gateway."""
    modules.mkdir(exist_ok=True)
    (modules / "slow.py").write_text(SLOW)
    (modules / "sink.py").write_text(SINK)
    names = [n for n, _ in nodes]
    docs: list[dict[str, Any]] = [_node(n, cpu, [m for m in names if m != n]) for n, cpu in nodes]
    docs.append(
        _package(
            "slow",
            modules / "slow.py",
            slow_cpu,
            {"capacityMbps": 100, "perTenant": {"cpu": "5m", "memory": "1Mi"}},
        )
    )
    docs.append(_package("sink", modules / "sink.py", "10m", None))
    docs.append(
        {
            "apiVersion": "flyslice.io/v1alpha1",
            "kind": "NetworkService",
            "metadata": {"name": "chain"},
            "spec": {
                "provides": ["chain"],
                "graph": {
                    "roles": [
                        {"name": "ingest", "package": "slow", "scope": "perSlice"},
                        {"name": "sink", "package": "sink", "scope": "perSlice"},
                    ],
                    "edges": [{"from": "ingest", "to": "sink", "bandwidthMbps": 10}],
                },
            },
        }
    )
    for s in SLICES:
        docs.append(
            {
                "apiVersion": "flyslice.io/v1alpha1",
                "kind": "Slice",
                "metadata": {"name": s},
                "spec": {
                    "services": ["chain"],
                    "qos": {"maxLatencyMs": 50, "availability": 0.5},
                    "attachments": [{"node": "gw-1"}],
                },
            }
        )
    root.mkdir(exist_ok=True)
    (root / "all.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))


# -- a real embedded controller -------------------------------------------------------------------


class Up:
    """The embedded controller of ``flyslice up`` on a directory, with real agents, in a thread."""

    def __init__(self, tmp: Path, settings: ScaleOutSettings) -> None:
        # Tiny queues and a fast overload sampling: a flood overloads the slow instance in a second.
        self.fleet = LocalAgentFleet(
            tmp / "agents", module_dirs=(tmp / "modules",), agent_options={"queue_size": 20, "resync_s": 0.2}
        )
        self.controller = EmbeddedController(DirectorySource(tmp / "src"), self.fleet, scale_out=settings)
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def run() -> None:
            self.stop_event = asyncio.Event()
            await self.controller.run(self.stop_event, interval_s=0.2)

        self.loop.run_until_complete(run())

    def __enter__(self) -> Up:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)

    def status(self) -> dict[str, Any]:
        return self.controller.snapshot()

    def wait(self, cond: Callable[[dict[str, Any]], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond(self.status())
            if value:
                return value
            time.sleep(0.1)
        doc = self.status()
        phases = {
            s["name"]: (s["phase"], s["reasons"], [(i["instance"], i["state"]) for i in s["instances"]])
            for s in doc["slices"]
        }
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}: {phases}; events {doc['events']}"
        )

    def all_ready(self) -> dict[str, Any]:
        return self.wait(
            lambda d: (
                d if len(d["slices"]) == 4 and all(s["phase"] == "Ready" for s in d["slices"]) else None
            ),
            60,
            "every slice Ready",
        )

    def all_running(self, instances: int) -> dict[str, Any]:
        """Every NF Running in ``instances`` shared instances (a slice sharing the flooded instance may
        be Degraded: its latency)."""

        def running(d: dict[str, Any]) -> dict[str, Any] | None:
            nfs = [i for s in d["slices"] for i in s["instances"]]
            shared = {i["sharedInstance"] for i in nfs if i.get("sharedInstance")}
            ok = (
                len(d["slices"]) == 4
                and len(shared) == instances
                and all(i["state"] == "Running" for i in nfs)
            )
            return d if ok else None

        return self.wait(running, 60, f"every NF Running in {instances} shared instances")

    def tenancy(self) -> dict[str, tuple[str, str]]:
        """Slice -> (node, shared instance) of its ingest tenant, as the status says."""
        out = {}
        for s in self.status()["slices"]:
            for i in s["instances"]:
                if i["role"] == "ingest":
                    out[s["name"]] = (i["node"], i.get("sharedInstance", ""))
        return out

    def agent(self, node: str) -> Any:
        return self.fleet.runtimes[node].agent

    def sink_in(self, slice_: str) -> int:
        """Messages the slice's sink received, wherever it runs (its agent's own counter)."""
        for runtime in self.fleet.runtimes.values():
            agent = runtime.agent
            st = agent.status().get(f"{slice_}-sink") if agent is not None else None
            if st is not None:
                return int(st.counters.get("in", 0))
        return 0


class Traffic:
    """Messages into slices at gw-1 from threads: ``flood`` as fast as the queue takes them (a full queue
    drops), the others at a trickle the slow NF easily keeps up with."""

    def __init__(self, up: Up, flood: tuple[str, ...], trickle: tuple[str, ...] = ()) -> None:
        self.up = up
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(s, 0.0002), daemon=True) for s in flood]
        self.threads += [threading.Thread(target=self._run, args=(s, 0.02), daemon=True) for s in trickle]

    def _run(self, slice_: str, pause: float) -> None:
        while not self.stop.is_set():
            agent = self.up.agent("gw-1")
            if agent is not None:
                agent.plane.deliver(new_message(slice_, "t", 1))
            self.stop.wait(pause)

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)


def scaled_out(doc: dict[str, Any]) -> list[str]:
    return [e for e in doc["events"] if e.startswith("ScaledOut: ")]


# -- end to end: real agents ----------------------------------------------------------------------


@pytest.mark.slow
def test_an_overloaded_instance_gets_a_second_instance_and_its_tenants_keep_receiving(tmp_path: Path) -> None:
    write_manifests(tmp_path / "src", tmp_path / "modules")
    with Up(tmp_path, ScaleOutSettings(cooldown_s=300, sustain_s=1.0)) as up:
        up.all_ready()
        before = up.tenancy()
        # One instance on gw-1 serves the four slices (the solver shares it: 40 of 100 Mbit/s).
        assert len({iid for _, iid in before.values()}) == 1 and {n for n, _ in before.values()} == {"gw-1"}
        (first,) = {iid for _, iid in before.values()}
        with Traffic(up, flood=("a",), trickle=("b", "c", "d")):
            doc = up.wait(lambda d: d if scaled_out(d) else None, 60, "a scale-out")
            (line,) = scaled_out(doc)
            pool = first.rpartition("@")[0]
            assert line.startswith(
                f"ScaledOut: pool {pool} on node gw-1: 1 -> 2 instance(s) ({first} overloaded"
            )
            assert "capacity there derated to 20 Mbit/s" in line, line
            derating = doc["controller"]["scaleOut"]["deratings"]
            assert [(d["pool"], d["node"], d["capacityMbps"], d["applied"]) for d in derating] == [
                (pool, "gw-1", 20.0, True)
            ]
            up.all_running(2)
            after = up.tenancy()
            # Split 2 + 2 over two instances of the pool on gw-1; the half that keeps tenants keeps the id.
            groups: dict[str, list[str]] = {}
            for s, (node, iid) in after.items():
                assert node == "gw-1"
                groups.setdefault(iid, []).append(s)
            assert sorted(len(g) for g in groups.values()) == [2, 2] and first in groups, after
            moved = sorted(s for s, (_, iid) in after.items() if iid != first)
            assert len(moved) == 2 and all(f"default/{s} ingest -> " in line for s in moved), line
            # Away from the flooded slice a, the other instance's slices meet their latency budget (Ready).
            apart = [s for s, (_, iid) in after.items() if iid != after["a"][1]]
            up.wait(
                lambda d: all(x["phase"] == "Ready" for x in d["slices"] if x["name"] in apart),
                30,
                "the slices apart from a Ready",
            )
            # The agent really runs two instances now, each with its tenants.
            shared = up.agent("gw-1").shared_instances()
            assert sorted(len(v["tenants"]) for v in shared.values()) == [2, 2], shared
            # Every slice keeps receiving: its sink counts new messages after the scale-out.
            counts = {s: up.sink_in(s) for s in SLICES}
            up.wait(
                lambda _d: all(up.sink_in(s) >= counts[s] + 20 for s in SLICES),
                30,
                "messages through every slice after the scale-out",
            )
        # The moved tenants' slices say why they moved.
        events = up.status()["events"]
        for s in moved:
            assert any(
                e.startswith(f"slice default/{s}: scale-out of pool {pool} on node gw-1") for e in events
            )


@pytest.mark.slow
def test_the_cool_down_holds_a_second_scale_out_until_it_ends(tmp_path: Path) -> None:
    write_manifests(tmp_path / "src", tmp_path / "modules")
    cooldown = 8.0
    with Up(tmp_path, ScaleOutSettings(cooldown_s=cooldown, sustain_s=0.5)) as up:
        up.all_ready()
        with Traffic(up, flood=("a",)):
            doc = up.wait(lambda d: d if scaled_out(d) else None, 60, "the first scale-out")
            first_at = time.monotonic()
            assert "1 -> 2 instance(s)" in scaled_out(doc)[0]
            # a's instance (two tenants) stays overloaded: the controller says it waits for the cool-down.
            doc = up.wait(
                lambda d: d if any(e.startswith("ScaleOutHeld: ") for e in d["events"]) else None,
                cooldown,
                "the held scale-out",
            )
            assert time.monotonic() - first_at < cooldown
            assert len(scaled_out(doc)) == 1
            assert len({iid for _, iid in up.tenancy().values()}) == 2
            # After the cool-down the still-overloaded instance scales out once more, from 20 down to 10.
            # The derating is the pool's on the node (Problem.derated), so the other instance, which the
            # predicted loads say carries as much (2 x 10 Mbit/s), is planned with it too: 4 instances.
            doc = up.wait(
                lambda d: d if len(scaled_out(d)) == 2 else None, cooldown + 30, "a second scale-out"
            )
            # first_at is when the test saw the first scale-out in /status, up to a pass after the controller
            # made it (and started the cool-down): seen 0.2 ms short of 8 s in CI. Without a cool-down the
            # second would follow within a second or two (sustain 0.5 s).
            assert time.monotonic() - first_at >= cooldown - 1.0
            second = scaled_out(doc)[1]
            assert ": 2 -> 4 instance(s)" in second and "derated to 10 Mbit/s" in second, second
            up.all_running(4)
            alone = next(iid for s, (_, iid) in up.tenancy().items() if s == "a")
            assert [s for s, (_, iid) in up.tenancy().items() if iid == alone] == ["a"]


@pytest.mark.slow
def test_a_scale_out_without_room_for_another_instance_leaves_everything_running(tmp_path: Path) -> None:
    # gw-1 has room for one slow instance (600m) and the sinks, not for a second: the only node.
    write_manifests(tmp_path / "src", tmp_path / "modules", slow_cpu="600m", nodes=(("gw-1", "700m"),))
    with Up(tmp_path, ScaleOutSettings(cooldown_s=300, sustain_s=0.5)) as up:
        up.all_ready()
        before = up.tenancy()
        (only,) = {iid for _, iid in before.values()}
        with Traffic(up, flood=("a",), trickle=("b",)):
            doc = up.wait(
                lambda d: d if any(e.startswith("ScaleOutNotApplied: ") for e in d["events"]) else None,
                60,
                "the refused scale-out",
            )
            line = next(e for e in doc["events"] if e.startswith("ScaleOutNotApplied: "))
            assert f"on node gw-1: {only} overloaded" in line and "everything keeps running as it is" in line
            assert not scaled_out(doc)
            (derating,) = doc["controller"]["scaleOut"]["deratings"]
            # Only the cool-down is kept: the capacity is not derated (nothing could use it).
            assert (
                derating["applied"] is False and derating["capacityMbps"] is None and derating["coolingDown"]
            )
            # Nothing moved, nothing restarted, every NF still Running (a slow slice is Degraded by its
            # observed latency, nothing else), traffic still flows.
            assert up.tenancy() == before
            for s in doc["slices"]:
                assert all(i["state"] == "Running" for i in s["instances"]), s
                assert all(r.startswith("observed latency") for r in s["reasons"]), s
            assert up.agent("gw-1").shared_instances()[only]["builds"] == 1
            count = up.sink_in("b")
            up.wait(lambda _d: up.sink_in("b") >= count + 20, 30, "messages through b")
            # Not retried every pass while the cool-down runs.
            time.sleep(2)
            assert sum(e.startswith("ScaleOutNotApplied: ") for e in up.status()["events"]) == 1


# -- the rules, pass by pass, on the real reconcile core and solver -------------------------------


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    root = tmp_path_factory.mktemp("scale-out")
    write_manifests(root / "src", root / "modules")
    result = validate_paths([str(root / "src")])
    assert result.ok, [str(e) for e in result.errors]
    return result.catalog


def observed(state: ControllerState, hot: set[str]) -> Observation:
    """What the agents report: every NFInstance Running; tenants of ``hot`` instances overloaded."""
    instances = {}
    for rec in state.slices.values():
        for a in rec.actions:
            shared = a.spec.get("sharedInstance") or {}
            iid = str(shared.get("name", ""))
            instances[(a.namespace, a.name)] = InstanceObservation(
                "Running", a.node, shared_instance=iid, shared_overloaded=iid in hot
            )
    return Observation(instances=instances)


class Passes:
    """Reconcile passes at chosen times, each observing what the previous one left."""

    def __init__(self, catalog: Catalog, settings: ScaleOutSettings) -> None:
        self.catalog, self.settings = catalog, settings
        self.state = ControllerState()
        self.events: list[str] = []

    def run(self, now: float, hot: set[str] | None = None, catalog: Catalog | None = None) -> Outcome:
        out = reconcile(
            catalog or self.catalog,
            self.state,
            observed(self.state, hot or set()),
            now=now,
            scale_out=self.settings,
        )
        self.state = out.state
        self.events += out.events
        return out

    def instances(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key, rec in self.state.slices.items():
            for a in rec.actions:
                if "sharedInstance" in a.spec:
                    out.setdefault(a.spec["sharedInstance"]["name"], []).append(key)
        return {k: sorted(v) for k, v in out.items()}


def test_overload_shorter_than_the_sustain_window_moves_nothing(catalog: Catalog) -> None:
    p = Passes(catalog, ScaleOutSettings(cooldown_s=300, sustain_s=10))
    p.run(0)
    (iid,) = p.instances()
    # Reported at 1 s and 9 s but not at 5 s: never 10 s in a row, so no scale-out.
    for t, hot in ((1, {iid}), (5, set()), (9, {iid}), (14, set()), (15, {iid}), (24, {iid})):
        out = p.run(t, hot)
        assert not out.replanned and list(p.instances()) == [iid], (t, out.events)
        assert p.state.scale_out.in_force() == {}
    # Reported at 15 s and still at 25 s: sustained for 10 s, it scales out.
    out = p.run(25, {iid})
    assert out.replanned and len(p.instances()) == 2
    assert any(e.startswith("ScaledOut: ") and "overloaded for 10s" in e for e in out.events)


def test_without_room_on_its_node_the_new_instance_opens_on_another_node(tmp_path: Path) -> None:
    # gw-1 (where the slices attach) holds one slow instance (600m) but not two; gw-2, 1 ms away, has room.
    write_manifests(
        tmp_path / "src", tmp_path / "modules", slow_cpu="600m", nodes=(("gw-1", "700m"), ("gw-2", "2"))
    )
    result = validate_paths([str(tmp_path / "src")])
    assert result.ok, [str(e) for e in result.errors]
    p = Passes(result.catalog, ScaleOutSettings(cooldown_s=300, sustain_s=0))
    p.run(0)
    (iid,) = p.instances()
    assert iid.endswith("@gw-1#0")
    before = {k: dict(rec.assignments) for k, rec in p.state.slices.items()}
    out = p.run(1, {iid})
    line = next(e for e in out.events if e.startswith("ScaledOut: "))
    assert ": 1 -> 2 instance(s), 1 of them on node gw-2 (" in line, line
    split = p.instances()
    assert sorted(len(v) for v in split.values()) == [2, 2] and iid in split
    (other,) = set(split) - {iid}
    assert other.rpartition("@")[2].startswith("gw-2#")
    for key in split[other]:
        assert p.state.slices[key].assignments["ingest"].host == "gw-2"
        assert f"{key} ingest -> {other} on node gw-2" in line
    # The tenants that stay are not disturbed: same node, same instance, their slices unmoved.
    for key in split[iid]:
        assert dict(p.state.slices[key].assignments) == before[key]


def test_the_derating_stays_after_the_cool_down_so_instances_are_not_merged_again(catalog: Catalog) -> None:
    p = Passes(catalog, ScaleOutSettings(cooldown_s=60, sustain_s=0))
    p.run(0)
    (iid,) = p.instances()
    p.run(1, {iid})
    split = p.instances()
    assert sorted(len(v) for v in split.values()) == [2, 2]
    group = (iid.rpartition("@")[0], "gw-1")
    assert p.state.scale_out.in_force() == {group: 20.0}
    # The overload is gone; the cool-down ends; a slice joins, so the pass re-plans: the instances stay
    # split (merging them would save an instance, and recreate the overload the derating cured).
    extra = replace(
        catalog,
        slices={**catalog.slices, ("default", "e"): replace(catalog.slices[("default", "a")], name="e")},
    )
    out = p.run(120, set(), catalog=extra)
    assert out.replanned and p.state.scale_out.in_force() == {group: 20.0}
    assert all(len(v) <= 2 for v in p.instances().values()) and sum(map(len, p.instances().values())) == 5
    # The global re-optimisation is bound by it too: the model it solves carries the derating, so it
    # finds nothing to gain; without it, merging instances would look like an improvement.
    bound = reoptimization_job(extra, p.state, observed(p.state, set()), now=121)
    free = reoptimization_job(
        extra, replace(p.state, scale_out=ScaleOutState()), observed(p.state, set()), now=121
    )
    assert bound is not None and free is not None
    assert bound().improvement == pytest.approx(0.0, abs=1e-9)
    assert free().improvement > 0
    # When no tenant of the pool runs on the node any more, the derating goes.
    empty = replace(catalog, slices={})
    out = p.run(200, set(), catalog=empty)
    assert p.state.scale_out.deratings == {}
    assert any(
        e.startswith(f"ScaleOutReleased: pool {group[0]} on node gw-1: no tenant runs there")
        for e in out.events
    )


def test_a_single_tenant_or_unsplittable_load_is_reported_not_scaled(catalog: Catalog) -> None:
    one = replace(catalog, slices={k: v for k, v in catalog.slices.items() if v.name == "a"})
    p = Passes(one, ScaleOutSettings(cooldown_s=60, sustain_s=0))
    p.run(0)
    (iid,) = p.instances()
    out = p.run(1, {iid})
    assert not out.replanned
    said = [e for e in out.events if e.startswith("ScaleOutSkipped: ")]
    assert len(said) == 1 and "single tenant" in said[0]
    assert not [e for e in p.run(2, {iid}).events if e.startswith("ScaleOut")]  # said once per overload


def test_split_capacity_is_the_most_even_split_into_two_instances() -> None:
    assert split_capacity([10, 10, 10, 10]) == 20
    assert split_capacity([10, 10, 10]) == 20
    assert split_capacity([30, 5, 5]) == 30
    assert split_capacity([7, 5, 4, 3, 3]) == 11  # 7+4 | 5+3+3
    assert split_capacity([0, 0]) == 0 and split_capacity([12]) == 12
    # Beyond the exact search, the greedy split: still below the total.
    many = [float(i % 5 + 1) for i in range(40)]
    assert sum(many) / 2 <= split_capacity(many) < sum(many)


def test_objective_of_judges_the_solver_s_own_instances(catalog: Catalog) -> None:
    the_plan = plan(catalog)
    demands = [sp.demand for sp in the_plan.slices if sp.demand is not None]
    problem = expansion.problem(catalog, demands)
    admitted = {k: dict(sp.assignments) for k, sp in the_plan.placement.slices.items() if sp.admitted}
    one = {k: dict(sp.instance_of) for k, sp in the_plan.placement.slices.items()}
    (iid,) = {i for ids in one.values() for i in ids.values()}
    other = iid.replace("#0", "#1")
    two = {
        k: {nf: (other if k.endswith(("/c", "/d")) else i) for nf, i in ids.items()} for k, ids in one.items()
    }
    # The same hosts and flavours, packed into one instance or two: the second pays one more instance.
    assert objective_of(problem, admitted, two) > objective_of(problem, admitted, one)
    assert objective_of(problem, admitted, one) == pytest.approx(the_plan.placement.objective)


def test_the_cluster_reads_the_overload_from_the_tenants_status_and_posts_node_events() -> None:
    def nfi(name: str, overloaded: int, generation: int = 1, observed_gen: int = 1) -> dict[str, Any]:
        return {
            "metadata": {"namespace": "default", "name": name, "generation": generation},
            "spec": {"node": "gw-1", "sharedInstance": {"name": "p@gw-1#0"}},
            "status": {
                "state": "Running",
                "observedGeneration": observed_gen,
                "counters": {"sharedOverloaded": overloaded, "sharedQueueDropped": 7},
            },
        }

    obs = observe([], [nfi("a-ingest", 1), nfi("b-ingest", 0), nfi("c-ingest", 1, 2, 1)])
    got = {k[1]: (o.shared_instance, o.shared_overloaded) for k, o in obs.instances.items()}
    # A status written for an older generation describes what ran before: its overload does not count.
    assert got == {
        "a-ingest": ("p@gw-1#0", True),
        "b-ingest": ("p@gw-1#0", False),
        "c-ingest": ("p@gw-1#0", False),
    }
    spec = event_for("ScaledOut: pool ns/slow/fnf/abc on node gw-1: 1 -> 2 instance(s) (...)")
    assert spec is not None and (spec.kind, spec.name, spec.reason, spec.type) == (
        "EdgeNode",
        "gw-1",
        "ScaledOut",
        "Normal",
    )
    spec = event_for("ScaleOutNotApplied: pool ns/slow/fnf/abc on node gw-1: ...")
    assert spec is not None and (spec.reason, spec.type) == ("ScaleOutNotApplied", "Warning")
    spec = event_for("slice default/b: scale-out of pool p on node gw-1: ingest moved from x to y")
    assert spec is not None and (spec.kind, spec.name, spec.reason) == ("Slice", "b", "ScaledOut")
