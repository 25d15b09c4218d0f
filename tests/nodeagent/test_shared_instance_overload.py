"""The scale-out signal of a shared instance (issue 15): its sustained queue drops, reported per instance
(``/status``, metrics) and in each tenant's status counters. A real agent and a really slow NF."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

from flyslice.nodeagent.agent import Agent
from flyslice.nodeagent.dataplane.tenancy import WORKER_PREFIX, OverloadMeter
from flyslice.nodeagent.message import new_message

from .conftest import wait_for
from .test_shared_instance import tenant

MakeAgent = Callable[..., Agent]
SLOW = """
import time
from flyslice.nodeagent.sdk import NetworkFunction
class NF(NetworkFunction):
    def process(self, msg):
        time.sleep(0.002)   # about 500 messages/s: far below what the feeders offer
        return None
"""
NAME = "slow@n1#0"


def test_sustained_queue_drops_mark_the_shared_instance_overloaded_and_reach_every_tenant(
    agents: MakeAgent, tmp_path: Path
) -> None:
    slow = tmp_path / "slow.py"
    slow.write_text(SLOW)
    agent = agents(queue_size=20, resync_s=0.2, http_listen="127.0.0.1:0")
    agent.converge([tenant(f"{s}-slow", f"file:{slow}", NAME, {}, slice_=s) for s in ("a", "b")])
    assert agent.shared_instances()[NAME]["overloaded"] is False
    stop = threading.Event()

    def flood(s: str) -> None:
        while not stop.is_set():
            agent.plane.deliver(new_message(s, "t", 1))  # no backpressure: a full queue drops
            stop.wait(0.0002)

    feeders = [threading.Thread(target=flood, args=(s,), daemon=True) for s in ("a", "b")]
    for t in feeders:
        t.start()
    try:
        doc = wait_for(
            lambda: agent.shared_instances()[NAME]["overloaded"] and agent.shared_instances()[NAME]
        )
        assert doc["queueDropped"] > 0 and doc["queueDropsPerSecond"] > 0
        st = agent.status()
        for name in ("a-slow", "b-slow"):
            c = st[name].counters
            assert c["sharedOverloaded"] == 1 and c["sharedQueueDropped"] > 0
            assert c["queueDropped"] > 0 and c["dropped"] >= c["queueDropped"]  # its own messages dropped
        assert agent.http is not None
        with urllib.request.urlopen(f"http://{agent.http.address}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert f'flyslice_shared_instance_overloaded{{node="n1",shared_instance="{NAME}"}} 1.0' in metrics
    finally:
        stop.set()
        for t in feeders:
            t.join(5)
    # Per tenant, the drops add up to the instance's: each dropped message was counted against its tenant.
    queue = agent.plane.workers[WORKER_PREFIX + NAME].queue
    st = agent.status()
    assert st["a-slow"].counters["queueDropped"] + st["b-slow"].counters["queueDropped"] == queue.dropped
    # Once the queue stops dropping, the instance is no longer overloaded (the signal is not sticky).
    wait_for(lambda: not agent.shared_instances()[NAME]["overloaded"], timeout=10)
    assert agent.status()["a-slow"].counters["sharedOverloaded"] == 0


def test_overload_means_drops_in_each_of_the_last_samples() -> None:
    meter = OverloadMeter(window_s=10.0, sustain=3)
    for t, dropped in enumerate([0, 5, 9, 9, 12, 20, 31]):
        meter.sample(dropped, now=float(t))
        overloaded = meter.sustained()
        # A pause in the drops (9 -> 9) resets it; three growing samples in a row set it.
        assert overloaded == (t == 6), (t, dropped)
    assert meter.rate() == 31 / 6
