"""Shared fNF instances (issue 15): NFInstances of several slices with one ``sharedInstance.name`` are ONE
running NF. A real agent, real NF modules, real threads; nothing is mocked.

What each test pins down: joining and leaving never restart the instance nor lose the other tenants'
messages; a tenant that does not fit is refused without touching the running ones; each tenant has its
own state, config and counters; a tenant's failure stays its own while a broken NF object takes every
tenant down and is rebuilt once; a code update hands each tenant its own state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from flyslice.nodeagent.agent import Agent
from flyslice.nodeagent.dataplane.tenancy import WORKER_PREFIX, TenantNF
from flyslice.nodeagent.message import new_message
from flyslice.nodeagent.runtime.modules import module_digest
from flyslice.nodeagent.spec import InstanceSpec, SharedInstance, SpecError

from .conftest import make_spec, wait_for

MakeAgent = Callable[..., Agent]
SP = "stream_processor@n1#0"
BROKER = "broker@n1#0"


def tenant(
    name: str,
    module: str,
    shared: str,
    config: dict[str, Any] | None = None,
    hops: tuple[str, ...] = (),
    *,
    slice_: str,
    per_tenant_config: bool = False,
    memory: str = "",
    **kw: Any,
) -> InstanceSpec:
    spec = make_spec(name, module, config, hops, slice_=slice_, memory=memory, **kw)
    return replace(spec, shared=SharedInstance(shared, per_tenant_config, "5m", "64Ki"))


def slice_specs(s: str, sp_config: dict[str, Any] | None = None, **kw: Any) -> list[InstanceSpec]:
    """A slice's chain: shared broker -> shared stream processor -> its own sink (an fNF of its own)."""
    return [
        tenant(f"{s}-broker", "broker", BROKER, {}, (f"{s}-sp",), slice_=s),
        tenant(f"{s}-sp", "stream_processor", SP, sp_config or {}, (f"{s}-sink",), slice_=s, **kw),
        make_spec(f"{s}-sink", "firewall", {"default": "allow"}, slice_=s),
    ]


class Sinks:
    """What reached each sink, by sink instance name."""

    def __init__(self, agent: Agent) -> None:
        self.got: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        agent.on_sink(self)

    def __call__(self, inst: Any, msgs: list[dict[str, Any]]) -> None:
        with self._lock:
            self.got.setdefault(inst.name, []).extend(msgs)

    def seqs(self, sink: str) -> list[int]:
        with self._lock:
            return [m["payload"]["seq"] for m in self.got.get(sink, []) if "seq" in (m["payload"] or {})]


class Feeder:
    """Keeps sending numbered messages into a slice from its own thread (with backpressure, so that a
    full queue slows it down instead of dropping: any gap in the sequence is a lost message)."""

    def __init__(self, agent: Agent, slice_: str) -> None:
        self.agent, self.slice = agent, slice_
        self.sent = 0
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ok = self.agent.plane.deliver(new_message(self.slice, "sensors/t", {"seq": self.sent}), 5.0)
            self.sent += 1
            self.refused += 0 if ok else 1
            if self.sent % 50 == 0:
                self._stop.wait(0.001)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.sent


def test_later_tenants_join_and_leave_without_restarting_it_or_losing_messages(agents: MakeAgent) -> None:
    agent = agents()
    sinks = Sinks(agent)
    status = agent.converge(slice_specs("a"))
    assert {s.state for s in status.values()} == {"Running"}
    sp = agent.platform.shared[SP]
    nf_object, a_tenant = sp.nf, agent.platform.instances["a-sp"]
    started_at = status["a-sp"].started_at
    executions = agent.loader.executions
    feed = Feeder(agent, "a")
    wait_for(lambda: len(sinks.seqs("a-sink")) > 200)

    # b and c join while a's traffic flows.
    status = agent.converge(slice_specs("a") + slice_specs("b") + slice_specs("c"))
    assert {n: s.state for n, s in status.items() if n.endswith("-sp")} == dict.fromkeys(
        ("a-sp", "b-sp", "c-sp"), "Running"
    )
    assert agent.platform.shared[SP] is sp and sp.nf is nf_object  # the same running NF object ...
    assert agent.platform.shared_builds == {BROKER: 1, SP: 1}  # ... built once, never rebuilt
    assert agent.loader.executions == executions  # no module executed again
    assert agent.platform.instances["a-sp"] is a_tenant and status["a-sp"].started_at == started_at
    assert sorted(sp.tenants) == ["a-sp", "b-sp", "c-sp"]
    assert status["b-sp"].shared_instance == SP
    # One worker thread for the shared instance, whichever slices feed it.
    assert agent.plane.where["a-sp"] is agent.plane.where["c-sp"] is agent.plane.workers[WORKER_PREFIX + SP]
    agent.plane.deliver(new_message("b", "sensors/t", {"only": "b"}))
    wait_for(lambda: [m["payload"] for m in sinks.got.get("b-sink", [])] == [{"only": "b"}])

    # b leaves, still while a's traffic flows; then c.
    agent.converge(slice_specs("a") + slice_specs("c"))
    assert "b-sp" not in agent.platform.instances and sorted(sp.tenants) == ["a-sp", "c-sp"]
    agent.converge(slice_specs("a"))
    assert agent.platform.shared[SP] is sp and sp.nf is nf_object and agent.platform.shared_builds[SP] == 1
    sent = feed.stop()
    wait_for(lambda: len(sinks.seqs("a-sink")) == sent, timeout=20)
    assert sinks.seqs("a-sink") == list(range(sent))  # every message of a, once, in order
    assert feed.refused == 0
    counters = agent.status()["a-sp"].counters
    assert counters["in"] == counters["out"] == sent  # a's own counters: only a's traffic

    # The last tenant leaving stops the instance and its worker.
    agent.converge([s for s in slice_specs("a") if s.shared is None])
    assert agent.platform.shared == {} and "a-sp" not in agent.platform.instances
    assert WORKER_PREFIX + SP not in agent.plane.workers
    assert any(e.instance == "a-sp" and e.reason == "Removed" for e in agent.events)


def test_a_restarted_agent_builds_each_shared_instance_once_from_its_cache(agents: MakeAgent) -> None:
    agent = agents(state="shared")
    agent.converge(slice_specs("a") + slice_specs("b"))
    agent.stop()
    again = agents(state="shared")  # no converge call: the cached desired state alone
    assert {s.state for s in again.status().values()} == {"Running"}
    assert again.platform.shared_builds == {BROKER: 1, SP: 1}
    assert sorted(again.platform.shared[SP].tenants) == ["a-sp", "b-sp"]
    assert again.loader.executions == 3  # broker, stream processor, firewall: once each


def test_a_tenant_that_does_not_fit_is_refused_and_the_running_ones_are_untouched(
    agents: MakeAgent, tmp_path: Path
) -> None:
    agent = agents()
    agent.converge(slice_specs("a", {"filter": {"field": "v", "op": ">", "value": 0}}))
    sp = agent.platform.shared[SP]
    feed = Feeder(agent, "a")
    other_code = tmp_path / "other.py"
    other_code.write_text(
        "from flyslice.nodeagent.sdk import NetworkFunction\nclass NF(NetworkFunction):\n    pass\n"
    )
    bad_config = slice_specs("b", {"filter": {"field": "v", "op": "<", "value": 0}})  # not per tenant
    bad_code = tenant("c-sp", f"file:{other_code}", SP, {}, slice_="c")
    status = agent.converge(
        slice_specs("a", {"filter": {"field": "v", "op": ">", "value": 0}}) + bad_config + [bad_code]
    )
    assert status["b-sp"].state == "Failed"
    assert status["b-sp"].message.startswith(
        f"instance b-sp: cannot join shared instance {SP} (1 tenant(s)): config"
    )
    assert "the running tenants are not disturbed" in status["b-sp"].message
    assert status["c-sp"].state == "Failed" and "package" in status["c-sp"].message
    assert status["b-broker"].state == "Running"  # b's other tenancy fits and runs
    assert agent.platform.shared[SP] is sp and sorted(sp.tenants) == ["a-sp"]
    assert agent.platform.shared_builds[SP] == 1
    sent = feed.stop()
    wait_for(lambda: agent.status()["a-sp"].counters["in"] == sent, timeout=20)  # a lost nothing
    assert (
        status["a-sp"].state == "Running" and agent.status()["a-sp"].started_at == status["a-sp"].started_at
    )


def test_per_tenant_config_and_state_are_each_tenants_own(agents: MakeAgent) -> None:
    """perTenantConfig: each tenant's filter applies to its messages only; the tumbling window (a
    timer) aggregates each tenant's messages apart and emits into that tenant's slice only."""
    agent = agents()
    sinks = Sinks(agent)

    def specs(s: str, op: str) -> list[InstanceSpec]:
        config = {
            "filter": {"field": "v", "op": op, "value": 0},
            "window": {"seconds": 0.2, "field": "v", "agg": "sum", "topic": f"{s}/sum"},
        }
        return slice_specs(s, config, per_tenant_config=True)

    agent.converge(specs("a", ">") + specs("b", "<"))
    sp = agent.platform.shared[SP]
    assert sorted(sp.tenants) == ["a-sp", "b-sp"]
    for v in (1, 2, 3, -1):
        agent.plane.deliver(new_message("a", "t", {"v": v}))
    for v in (-10, -20, 5):
        agent.plane.deliver(new_message("b", "t", {"v": v}))

    def sums(sink: str) -> list[float]:
        return [m["payload"]["value"] for m in sinks.got.get(sink, []) if m["topic"].endswith("/sum")]

    # A window may close between two messages, so a slice's sum may come in parts; never over both.
    wait_for(lambda: sum(sums("a-sink")) == 6.0 and sum(sums("b-sink")) == -30.0)
    time.sleep(0.5)  # later windows add nothing (each tenant's window was flushed once)
    assert sum(sums("a-sink")) == 6.0 and sum(sums("b-sink")) == -30.0
    passed = {k: [m["payload"]["v"] for m in v if "v" in m["payload"]] for k, v in sinks.got.items()}
    assert passed == {"a-sink": [1, 2, 3], "b-sink": [-10, -20]}
    assert all(m["slice"] == "a" for m in sinks.got["a-sink"]) and all(
        m["slice"] == "b" for m in sinks.got["b-sink"]
    )
    st = agent.status()
    assert (st["a-sp"].counters["in"], st["b-sp"].counters["in"]) == (4, 3)
    assert st["a-sp"].latency_ms is not None and st["b-sp"].latency_ms is not None


WHO = """
from flyslice.nodeagent.sdk import NetworkFunction
class NF(NetworkFunction):
    def configure(self, config):
        self.seen = getattr(self, "seen", [])
    def process(self, msg):
        if msg["payload"] == "poison":
            raise ValueError("poison for " + self.ctx.instance)
        if msg["payload"] == "hang":
            while True:
                pass
        self.seen.append([self.ctx.instance, self.ctx.slice, self.ctx.shared, msg["slice"]])
        return msg
    def export_state(self):
        return {"seen": self.seen}
    def import_state(self, state):
        self.seen = list(state["seen"]) + [["imported", self.ctx.instance, "", ""]]
"""


def who_specs(path: Path, *slices: str, digest: str | None = None) -> list[InstanceSpec]:
    return [tenant(f"{s}-who", f"file:{path}", "who@n1#0", {}, slice_=s, digest=digest) for s in slices]


def test_the_nf_sees_the_tenant_of_each_call_and_a_tenants_failure_stays_its_own(
    agents: MakeAgent, tmp_path: Path
) -> None:
    who = tmp_path / "who.py"
    who.write_text(WHO)
    agent = agents(error_limit=1, deadline_s=0.3)
    agent.converge(who_specs(who, "a", "b"))
    shared = agent.platform.shared["who@n1#0"]
    a, b = agent.platform.instances["a-who"], agent.platform.instances["b-who"]
    assert isinstance(a, TenantNF) and isinstance(b, TenantNF)
    agent.plane.deliver(new_message("a", "t", 1))
    agent.plane.deliver(new_message("b", "t", 2))
    wait_for(lambda: a.counters.out == 1 and b.counters.out == 1)
    # Each tenant's state holds its own calls only, with its own identity.
    assert a.attrs["seen"] == [["a-who", "a", "who@n1#0", "a"]]
    assert b.attrs["seen"] == [["b-who", "b", "who@n1#0", "b"]]

    # a's poison fails a only; b keeps flowing; the agent re-attaches a to the same NF object.
    agent.plane.deliver(new_message("a", "t", "poison"))
    wait_for(lambda: agent.platform.instances.get("a-who") is not a)
    agent.plane.deliver(new_message("b", "t", 3))
    wait_for(lambda: b.counters.out == 2)
    assert agent.platform.shared["who@n1#0"] is shared and agent.platform.shared_builds["who@n1#0"] == 1
    wait_for(lambda: agent.status()["a-who"].state == "Running")
    assert agent.status()["a-who"].restarts == 1 and agent.status()["b-who"].restarts == 0
    assert any(e.instance == "a-who" and "ValueError: poison for a-who" in e.message for e in agent.events)

    # A call that never returns breaks the object itself: every tenant fails, it is rebuilt once.
    agent.plane.deliver(new_message("b", "t", "hang"))
    wait_for(lambda: shared.failed)
    assert "blocked" in shared.lifecycle.message
    wait_for(lambda: agent.platform.shared.get("who@n1#0") not in (None, shared))
    wait_for(lambda: {s.state for s in agent.status().values()} == {"Running"})
    assert agent.platform.shared_builds["who@n1#0"] == 2
    st = agent.status()
    assert (st["a-who"].restarts, st["b-who"].restarts) == (2, 1)
    agent.plane.deliver(new_message("a", "t", 4))
    wait_for(lambda: agent.status()["a-who"].counters.get("out") == 1)


def test_a_code_update_of_the_shared_instance_hands_each_tenant_its_own_state(
    agents: MakeAgent, tmp_path: Path
) -> None:
    v1, v2 = tmp_path / "v1.py", tmp_path / "v2.py"
    v1.write_text(WHO)
    v2.write_text(WHO + "\n# v2\n")
    agent = agents()
    agent.converge(who_specs(v1, "a", "b"))
    old = agent.platform.shared["who@n1#0"]
    agent.plane.deliver(new_message("a", "t", 1))
    agent.plane.deliver(new_message("b", "t", 2))
    wait_for(lambda: sum(t.counters.out for t in old.tenants.values()) == 2)
    status = agent.converge(who_specs(v2, "a", "b", digest=module_digest(f"file:{v2}")))
    assert {s.state for s in status.values()} == {"Running"}, status
    new = agent.platform.shared["who@n1#0"]
    assert new is not old and new.spec.digest == module_digest(f"file:{v2}")
    a, b = new.tenants["a-who"], new.tenants["b-who"]
    assert a.attrs["seen"] == [["a-who", "a", "who@n1#0", "a"], ["imported", "a-who", "", ""]]
    assert b.attrs["seen"] == [["b-who", "b", "who@n1#0", "b"], ["imported", "b-who", "", ""]]
    assert (a.counters.out, b.counters.out) == (1, 1)  # counters are the tenants', kept over versions


def test_a_config_change_every_tenant_carries_is_applied_in_place(agents: MakeAgent) -> None:
    agent = agents()
    sinks = Sinks(agent)
    keep_positive = {"filter": {"field": "v", "op": ">", "value": 0}}
    agent.converge(slice_specs("a", keep_positive) + slice_specs("b", keep_positive))
    sp = agent.platform.shared[SP]
    a_attrs = sp.tenants["a-sp"].attrs
    a_attrs["marker"] = "state kept"
    keep_negative = {"filter": {"field": "v", "op": "<", "value": 0}}
    status = agent.converge(slice_specs("a", keep_negative) + slice_specs("b", keep_negative))
    assert {s.state for s in status.values()} == {"Running"} and all(not s.message for s in status.values())
    assert agent.platform.shared[SP] is sp and agent.platform.shared_builds[SP] == 1
    assert sp.tenants["a-sp"].attrs is a_attrs and a_attrs["marker"] == "state kept"
    for v in (5, -5):
        agent.plane.deliver(new_message("a", "t", {"v": v}))
        agent.plane.deliver(new_message("b", "t", {"v": v}))
    wait_for(lambda: len(sinks.got.get("a-sink", [])) == 1 and len(sinks.got.get("b-sink", [])) == 1)
    assert sinks.got["a-sink"][0]["payload"] == {"v": -5} == sinks.got["b-sink"][0]["payload"]
    # A config the NF refuses, carried by every tenant: nothing changes, each status says why.
    refused = {"filter": {"field": "v", "op": "~", "value": 0}}
    status = agent.converge(slice_specs("a", refused) + slice_specs("b", refused))
    for name in ("a-sp", "b-sp"):
        assert status[name].state == "Running"
        assert status[name].message.startswith(f"new spec not applied to shared instance {SP}: instance ")
        assert "config.filter.op" in status[name].message
    assert agent.platform.shared[SP] is sp and sp.spec.config == keep_negative


def test_shared_instance_field_is_parsed_tolerantly_and_errors_name_the_field() -> None:
    base = make_spec("x", "broker").to_dict()
    assert InstanceSpec.from_dict(base).shared is None
    assert InstanceSpec.from_dict({**base, "sharedInstance": None}).shared is None
    spec = InstanceSpec.from_object(
        {
            "metadata": {"name": "x", "namespace": "ns"},
            "spec": {
                **base,
                "sharedInstance": {"name": "p@n1#0", "perTenant": {"cpu": "5m", "memory": "2Mi"}},
            },
        }
    )
    assert spec.shared == SharedInstance("p@n1#0", False, "5m", "2Mi")
    assert spec.shared.per_tenant_memory_bytes == 2 * 2**20
    assert InstanceSpec.from_dict(spec.to_dict()) == spec  # the agent's cache keeps it
    assert spec.fingerprint != InstanceSpec.from_dict(base).fingerprint
    for bad, field in (
        ({"perTenantConfig": True}, "'sharedInstance.name'"),
        ({"name": "p", "perTenantConfig": "yes"}, "'sharedInstance.perTenantConfig'"),
        ({"name": "p", "perTenant": {"memory": "lots"}}, "sharedInstance.perTenant.memory"),
    ):
        try:
            InstanceSpec.from_object({"metadata": {"name": "x"}, "spec": {**base, "sharedInstance": bad}})
        except SpecError as exc:
            assert str(exc).startswith("NFInstance: instance x:") and field in str(exc), exc
        else:
            raise AssertionError(f"{bad} was accepted")
