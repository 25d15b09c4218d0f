"""Isolation between the tenants of a shared instance (issue 15): a slice's traffic never reaches another
slice's consumers, whatever a sender or the shared NF itself writes into a message; and the NF's calls are
serialised although different slice workers feed it. Real mosquitto, real TCP, real HTTP; no mocks.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from flyslice.nodeagent.agent import Agent
from flyslice.nodeagent.dataplane.transport import send_lines
from flyslice.nodeagent.message import new_message

from .conftest import make_spec, wait_for
from .test_shared_instance import BROKER, SP, Sinks, slice_specs, tenant

MakeAgent = Callable[..., Agent]


def cross_deliveries(sinks: Sinks, slices: list[str]) -> int:
    """Messages at one slice's sink that belong to or came from another slice."""
    bad = 0
    for s in slices:
        for m in sinks.got.get(f"{s}-sink", []):
            origin = (m.get("payload") or {}).get("origin", s) if isinstance(m.get("payload"), dict) else s
            bad += m["slice"] != s or origin not in (s, f"forged-into-{s}")
    return bad


@pytest.mark.mqtt
def test_two_slices_share_broker_and_stream_processor_and_never_see_each_others_traffic(
    agents: MakeAgent, mosquitto: int
) -> None:
    agent = agents(mqtt=("127.0.0.1", mosquitto), http_listen="127.0.0.1:0")
    sinks = Sinks(agent)
    status = agent.converge(slice_specs("a") + slice_specs("b"))
    assert {s.state for s in status.values()} == {"Running"}
    assert sorted(agent.platform.shared[BROKER].tenants) == ["a-broker", "b-broker"]
    assert agent.mqtt is not None
    wait_for(lambda: agent.mqtt.subscribed)  # type: ignore[union-attr]
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sensors")
    device.connect("127.0.0.1", mosquitto)
    device.loop_start()
    try:
        for i in range(20):
            for s in ("a", "b"):
                device.publish(
                    f"flyslice/{s}/sensors/t", json.dumps({"origin": s, "n": i}), qos=1
                ).wait_for_publish(5)
        # A device of slice a forging an envelope for b's sink: its slice is forced to a, "to" is dropped.
        forged = {"slice": "b", "to": "b-sink", "topic": "sensors/t", "payload": {"origin": "forged-into-a"}}
        device.publish("flyslice/a/$envelope", json.dumps(forged), qos=1).wait_for_publish(5)
        wait_for(lambda: agent.mqtt.received == 41)  # type: ignore[union-attr]
    finally:
        device.loop_stop()
        device.disconnect()
    # Over the data-plane port: a forged slice, or "to" naming another slice's tenant or sink.
    hostile = [
        {"slice": "a", "to": "b-sp", "topic": "sensors/t", "payload": {"origin": "hostile"}},
        {"slice": "b", "to": "a-broker", "topic": "sensors/t", "payload": {"origin": "hostile"}},
        {"slice": "a", "to": "b-sink", "topic": "sensors/t", "payload": {"origin": "hostile"}},
        {"slice": "b", "to": "a-sp", "topic": "sensors/t", "payload": {"origin": "hostile"}},
    ]
    send_lines(agent.address, hostile)
    wait_for(lambda: agent.plane.rejected == 4)
    wait_for(lambda: len(sinks.got.get("a-sink", [])) == 21 and len(sinks.got.get("b-sink", [])) == 20)

    assert cross_deliveries(sinks, ["a", "b"]) == 0
    assert sorted(m["payload"]["n"] for m in sinks.got["b-sink"]) == list(range(20))
    assert not any(m["payload"]["origin"] == "hostile" for ms in sinks.got.values() for m in ms)
    st = agent.status()
    # Per-tenant counters: each tenant counts its own slice's messages only, and the refusals aimed at it.
    assert (st["a-broker"].counters["in"], st["b-broker"].counters["in"]) == (21, 20)
    assert (st["a-sp"].counters["in"], st["b-sp"].counters["in"]) == (21, 20)
    assert {n: st[n].counters.get("rejected", 0) for n in ("a-broker", "a-sp", "b-sp", "b-sink")} == {
        "a-broker": 1, "a-sp": 1, "b-sp": 1, "b-sink": 1,
    }  # fmt: skip
    assert st["a-sp"].latency_ms is not None and st["b-sp"].latency_ms is not None
    # Traces name each slice's own NFInstances only.
    assert {h[0] for m in sinks.got["b-sink"] for h in m["trace"]["hops"]} == {"b-broker", "b-sp", "b-sink"}
    assert agent.http is not None
    base = f"http://{agent.http.address}"
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert "flyslice_agent_cross_slice_rejected_messages 4.0" in metrics
    assert f'flyslice_shared_instance_tenants{{node="n1",shared_instance="{SP}"}} 2.0' in metrics
    assert 'flyslice_instance_rejected_messages_total{instance="b-sp",node="n1",slice="b"} 1.0' in metrics
    with urllib.request.urlopen(f"{base}/status", timeout=5) as r:
        doc = json.loads(r.read())
    assert doc["sharedInstances"][SP]["tenants"] == ["a-sp", "b-sp"]
    assert doc["sharedInstances"][SP]["slices"] == ["a", "b"]
    assert doc["instances"]["a-sp"]["shared_instance"] == SP


HOSTILE = """
from flyslice.nodeagent.message import new_message
from flyslice.nodeagent.sdk import NetworkFunction
class NF(NetworkFunction):
    def process(self, msg):
        other = "b" if self.ctx.slice == "a" else "a"
        self.ctx.emit(new_message(other, "emitted", {"origin": self.ctx.slice}))   # another slice
        relabelled = dict(msg, slice=other, trace={"t0": 0, "hops": []})
        routed = dict(msg, route=[other + "-sink"], trace={"t0": 0, "hops": []})  # another slice's sink
        return [msg, relabelled, routed]
"""


def test_a_shared_nf_cannot_send_a_tenants_traffic_into_another_slice(
    agents: MakeAgent, tmp_path: Path
) -> None:
    hostile = tmp_path / "hostile.py"
    hostile.write_text(HOSTILE)
    agent = agents()
    sinks = Sinks(agent)

    def specs(s: str) -> list[Any]:
        return [
            tenant(f"{s}-nf", f"file:{hostile}", "hostile@n1#0", {}, (f"{s}-sink",), slice_=s),
            make_spec(f"{s}-sink", "firewall", {"default": "allow"}, slice_=s),
        ]

    agent.converge(specs("a") + specs("b"))
    for i in range(5):
        agent.plane.deliver(new_message("a", "t", {"origin": "a", "n": i}))
        agent.plane.deliver(new_message("b", "t", {"origin": "b", "n": i}))
    wait_for(lambda: agent.status()["a-nf"].counters.get("rejected") == 10)
    wait_for(lambda: agent.status()["b-nf"].counters.get("rejected") == 10)
    wait_for(lambda: len(sinks.got.get("a-sink", [])) == 5 and len(sinks.got.get("b-sink", [])) == 5)
    assert cross_deliveries(sinks, ["a", "b"]) == 0
    st = agent.status()
    # Per tenant: 5 in; out: its own 5 plus 5 routed to another slice's sink, which match no next hop
    # of the tenant and are dropped; 10 written for another slice are rejected before any routing.
    assert {k: st["a-nf"].counters[k] for k in ("in", "out", "rejected", "dropped")} == {
        "in": 5, "out": 10, "rejected": 10, "dropped": 5,
    }  # fmt: skip
    assert st["a-sink"].counters["in"] == st["b-sink"].counters["in"] == 5


GUARD = """
import threading, time
from flyslice.nodeagent.sdk import NetworkFunction
class NF(NetworkFunction):
    shared_state = True      # one set of attributes for all tenants: the NF keeps them apart itself
    def __init__(self, ctx):
        super().__init__(ctx)
        self.inside = 0
        self.overlaps = 0
        self.mismatches = 0
        self.threads = set()
        self.count = {}
    def process(self, msg):
        self.inside += 1
        if self.inside > 1:
            self.overlaps += 1
        self.threads.add(threading.get_ident())
        time.sleep(0)        # gives the GIL away: a concurrent caller would run now and overlap
        if msg["slice"] != self.ctx.slice:
            self.mismatches += 1
        self.count[self.ctx.instance] = self.count.get(self.ctx.instance, 0) + 1
        self.inside -= 1
        return msg
"""


def test_slice_workers_feeding_one_shared_nf_never_call_it_concurrently(
    agents: MakeAgent, tmp_path: Path
) -> None:
    guard = tmp_path / "guard.py"
    guard.write_text(GUARD)
    agent = agents()
    slices = [f"s{i}" for i in range(8)]
    specs = []
    for s in slices:  # each slice: its own firewall (its own worker) -> the shared guard
        specs.append(make_spec(f"{s}-fw", "firewall", {"default": "allow"}, [f"{s}-guard"], slice_=s))
        specs.append(tenant(f"{s}-guard", f"file:{guard}", "guard@n1#0", {}, slice_=s))
    agent.converge(specs)
    shared = agent.platform.shared["guard@n1#0"]
    n = 500

    def feed(s: str) -> None:
        for i in range(n):
            agent.plane.deliver(new_message(s, "t", i), 5.0)

    threads = [threading.Thread(target=feed, args=(s,)) for s in slices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    nf: Any = shared.nf
    wait_for(lambda: sum(nf.count.values()) == n * len(slices), timeout=30)
    assert nf.overlaps == 0 and nf.mismatches == 0
    assert len(nf.threads) == 1  # every call on the shared instance's own thread
    assert nf.count == {f"{s}-guard": n for s in slices}
    assert len({agent.plane.where[f"{s}-fw"] for s in slices}) == len(slices)  # fed by 8 slice workers
