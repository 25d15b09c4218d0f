"""The agent: level-triggered converge, on-disk cache, offline autonomy, telemetry, TCP/HTTP data plane."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from flyslice.nodeagent.agent import Agent, SourceUnavailable
from flyslice.nodeagent.message import hop_latencies_ns, new_message
from flyslice.nodeagent.sources import FileSource
from flyslice.nodeagent.spec import InstanceSpec, NextHop, SpecError

from .conftest import Sink, make_spec, wait_for

MakeAgent = Callable[..., Agent]


def chain() -> list[InstanceSpec]:
    return [
        make_spec("fw", "firewall", {"default": "allow"}, ["rl"]),
        make_spec("rl", "rate_limiter", {"rate": 1000}, ["sp"]),
        make_spec("sp", "stream_processor", {}),
    ]


def test_converge_is_idempotent(agents: MakeAgent) -> None:
    agent = agents()
    status = agent.converge(chain())
    assert {n: s.state for n, s in status.items()} == {"fw": "Running", "rl": "Running", "sp": "Running"}
    executions = agent.loader.executions
    started = {n: s.started_at for n, s in status.items()}
    objects = {n: agent.platform.instances[n] for n in started}
    again = agent.converge(chain())
    assert {n: s.started_at for n, s in again.items()} == started
    assert all(agent.platform.instances[n] is objects[n] for n in started)
    assert agent.loader.executions == executions == 3


def test_converge_applies_only_the_difference(agents: MakeAgent) -> None:
    agent = agents()
    agent.converge(chain())
    fw, rl = agent.platform.instances["fw"], agent.platform.instances["rl"]
    rl.nf.buckets["x"] = 0.5  # state that a reconfigure must keep
    specs = chain()
    specs[1] = make_spec("rl", "rate_limiter", {"rate": 5}, ["sp"])  # config change only
    specs[2] = make_spec("sp", "broker", {})  # code change: hot update
    specs.append(make_spec("extra", "broker", slice_="s2"))
    status = agent.converge(specs)
    assert agent.platform.instances["fw"] is fw  # unchanged: untouched
    assert agent.platform.instances["rl"] is rl and rl.nf.rate == 5 and rl.nf.buckets["x"] == 0.5
    assert agent.platform.instances["sp"].spec.package == "broker"
    assert status["extra"].state == "Running"
    agent.converge(specs[:2])
    assert set(agent.platform.instances) == {"fw", "rl"}
    assert set(agent.status()) == {"fw", "rl"}


def test_one_bad_instance_never_blocks_the_others(agents: MakeAgent, tmp_path: Path) -> None:
    agent = agents()
    bad_digest = make_spec("tampered", "broker", digest="sha256:" + "0" * 64, slice_="s2")
    bad_config = make_spec("badconf", "rate_limiter", {"rate": -1}, slice_="s3")
    status = agent.converge([bad_digest, *chain(), bad_config])
    assert status["tampered"].state == "Failed" and "digest mismatch" in status["tampered"].message
    assert status["badconf"].state == "Failed" and "config.rate" in status["badconf"].message
    assert all(status[n].state == "Running" for n in ("fw", "rl", "sp"))
    fixed = make_spec("tampered", "broker", slice_="s2")  # the control plane corrects the digest
    status = agent.converge([fixed, *chain()])
    assert status["tampered"].state == "Running" and status["tampered"].message == ""


def test_failed_instance_is_restarted_with_backoff(agents: MakeAgent, tmp_path: Path) -> None:
    flaky = tmp_path / "flaky.py"
    flaky.write_text(
        "from flyslice.nodeagent.sdk import NetworkFunction\n"
        "class NF(NetworkFunction):\n"
        "    def process(self, msg):\n"
        "        if msg['payload'] == 'poison':\n"
        "            raise ValueError('poison')\n"
        "        return msg\n"
    )
    agent = agents(error_limit=1)
    sink = Sink()
    agent.on_sink(sink)
    agent.converge([make_spec("flaky", f"file:{flaky}")])
    first = agent.platform.instances["flaky"]
    agent.plane.deliver(new_message("s1", "t", "poison"))
    wait_for(lambda: first.lifecycle.state == "Failed")
    assert "ValueError: poison" in first.lifecycle.message
    wait_for(
        lambda: (
            agent.platform.instances.get("flaky") not in (None, first)
            and agent.status()["flaky"].state == "Running"
        )
    )
    agent.plane.deliver(new_message("s1", "t", "fine"))
    wait_for(lambda: sink.payloads() == ["fine"])


def test_restart_resumes_the_cached_desired_state(agents: MakeAgent) -> None:
    agent = agents(state="shared")
    agent.converge(chain())
    agent.stop()
    again = agents(state="shared")  # no source, no converge call: the cache alone
    assert {n: s.state for n, s in again.status().items()} == {
        "fw": "Running",
        "rl": "Running",
        "sp": "Running",
    }
    assert again.loader.executions == 3


def test_offline_autonomy_keeps_running_and_resyncs_without_restarts(agents: MakeAgent) -> None:
    agent = agents()
    desired: dict[str, Any] = {"specs": chain(), "up": True}

    def source() -> list[InstanceSpec]:
        if not desired["up"]:
            raise SourceUnavailable("connection refused")
        return list(desired["specs"])

    assert agent.sync_once(source) and agent.connected
    before = {n: s.started_at for n, s in agent.status().items()}
    desired["up"] = False
    assert not agent.sync_once(source)
    assert agent.connected is False and agent.heartbeat()["connected"] is False
    sink = Sink()
    agent.on_sink(sink)
    agent.plane.deliver(new_message("s1", "t", {"offline": True}))
    wait_for(lambda: len(sink.messages) == 1)  # still serving while cut off
    desired["up"] = True
    assert agent.sync_once(source)
    assert {n: s.started_at for n, s in agent.status().items()} == before
    assert agent.loader.executions == 3


def test_file_source_reports_bad_entries_and_treats_a_missing_file_as_offline(tmp_path: Path) -> None:
    path = tmp_path / "desired.json"
    src = FileSource(path)
    with pytest.raises(SourceUnavailable):
        src()
    good = make_spec("fw", "firewall").to_dict()
    path.write_text(json.dumps([good, {"name": "broken", "flavor": "fnf"}]))
    specs = src()
    assert [s.name for s in specs] == ["fw"] and "broken" in src.errors[0]


def test_spec_validation_names_the_field() -> None:
    base = make_spec("x", "broker").to_dict()
    with pytest.raises(SpecError, match="instance x: field 'flavor'"):
        InstanceSpec.from_dict({**base, "flavor": "container"})
    with pytest.raises(SpecError, match=r"nextHops\[0\]\.address"):
        InstanceSpec.from_dict({**base, "nextHops": [{"instance": "y", "node": "n", "address": "nowhere"}]})
    obj = {
        "metadata": {"name": "x", "namespace": "ns", "generation": 4},
        "spec": {k: v for k, v in base.items() if k != "name"},
    }
    spec = InstanceSpec.from_object(obj)
    assert (spec.namespace, spec.generation) == ("ns", 4)
    same_but_newer = InstanceSpec.from_dict({**base, "namespace": "ns", "generation": 9})
    assert spec.fingerprint == same_but_newer.fingerprint  # the generation is not part of it


def test_two_agents_chain_over_tcp_with_latency_stamps(agents: MakeAgent) -> None:
    gw = agents("gw")
    fog = agents("fog")
    gw.plane.peers["fog"] = fog.address
    sink = Sink()
    fog.on_sink(sink)
    gw.converge([make_spec("gw-fw", "firewall", {"default": "allow"}, ["fog-sp"], node="gw", hop_node="fog")])
    fog.converge([make_spec("fog-sp", "stream_processor", {}, node="fog")])
    for i in range(200):
        gw.plane.deliver(new_message("s1", "t", {"i": i}))
    wait_for(lambda: len(sink.messages) == 200)
    assert [m["payload"]["i"] for m in sink.messages] == list(range(200))
    msg = sink.messages[-1]
    assert [h[0] for h in msg["trace"]["hops"]] == ["gw-fw", "fog-sp"]
    assert all(lat >= 0 for lat in hop_latencies_ns(msg))
    assert fog.status()["fog-sp"].e2e_latency_ms is not None


def test_next_hop_with_explicit_address(agents: MakeAgent) -> None:
    a, b = agents("a"), agents("b")
    sink = Sink()
    b.on_sink(sink)
    b.converge([make_spec("b-broker", "broker", node="b")])
    hop = NextHop("b-broker", "b", b.address)
    spec = make_spec("a-fw", "firewall", {"default": "allow"}, node="a")
    a.converge([replace(spec, next_hops=(hop,))])
    a.plane.deliver(new_message("s1", "t", 1))
    wait_for(lambda: sink.payloads() == [1])


def test_http_ingress_health_metrics_and_status(agents: MakeAgent) -> None:
    agent = agents(http_listen="127.0.0.1:0")
    sink = Sink()
    agent.on_sink(sink)
    agent.converge(chain())
    base = f"http://{agent.http.address}"  # type: ignore[union-attr]

    def post(body: bytes) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(f"{base}/ingress", data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    code, body = post(json.dumps([{"slice": "s1", "topic": "t", "payload": i} for i in range(3)]).encode())
    assert (code, body) == (202, {"accepted": 3, "dropped": 0})
    assert post(b"{not json")[0] == 400
    code, body = post(json.dumps({"topic": "t"}).encode())
    assert code == 400 and "'slice'" in body["error"]
    agent.converge([*chain(), make_spec("guard", "firewall", {"default": "drop"}, ["inner"], slice_="s9"),
                    make_spec("inner", "broker", slice_="s9")])  # fmt: skip
    code, body = post(json.dumps({"slice": "s9", "to": "inner", "payload": "sneaky"}).encode())
    assert code == 202  # accepted, but at the slice's entry: the guard drops it
    wait_for(lambda: agent.platform.instances["guard"].nf.denied == 1)
    assert agent.platform.instances["inner"].counters.in_ == 0
    code, body = post(json.dumps({"slice": "nobody", "payload": 1}).encode())
    assert code == 503 and body["dropped"] == 1
    wait_for(lambda: len(sink.messages) == 3)
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
        assert r.status == 200 and json.loads(r.read())["healthy"] is True
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'flyslice_instance_in_messages_total{instance="fw",node="n1",slice="s1"} 3.0' in metrics
    assert (
        'flyslice_instance_state{flavor="fnf",instance="sp",node="n1",slice="s1",state="Running"} 1.0'
        in metrics
    )
    assert "flyslice_agent_rss_bytes" in metrics and "flyslice_agent_unroutable_messages 1.0" in metrics
    assert 'flyslice_instance_e2e_latency_seconds{instance="sp",node="n1",slice="s1"}' in metrics
    with urllib.request.urlopen(f"{base}/status", timeout=5) as r:
        doc = json.loads(r.read())
    assert doc["heartbeat"]["node"] == "n1" and doc["heartbeat"]["agentRssBytes"] > 0
    assert 0.0 <= doc["heartbeat"]["load"] <= 1.0
    assert doc["instances"]["sp"]["counters"]["in"] == 3


def test_full_queue_drops_are_counted(agents: MakeAgent, tmp_path: Path) -> None:
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import time\nfrom flyslice.nodeagent.sdk import NetworkFunction\n"
        "class NF(NetworkFunction):\n    def process(self, msg):\n        time.sleep(0.05)\n        return msg\n"
    )
    agent = agents(queue_size=5)
    agent.converge([make_spec("slow", f"file:{slow}")])
    results = [agent.plane.deliver(new_message("s1", "t", i)) for i in range(50)]
    assert results.count(False) > 0
    assert agent.plane.workers["s1"].queue.dropped == results.count(False)


def test_slow_next_agent_slows_the_sender_instead_of_dropping(agents: MakeAgent, tmp_path: Path) -> None:
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import time\nfrom flyslice.nodeagent.sdk import NetworkFunction\n"
        "class NF(NetworkFunction):\n    def process(self, msg):\n        time.sleep(0.002)\n        return msg\n"
    )
    a, b = agents("a", queue_size=10), agents("b", queue_size=10)
    a.plane.peers["b"] = b.address
    sink = Sink()
    b.on_sink(sink)
    b.converge([make_spec("b-slow", f"file:{slow}", node="b")])
    a.converge([make_spec("a-fw", "firewall", {"default": "allow"}, ["b-slow"], node="a", hop_node="b")])
    accepted = [a.plane.deliver(new_message("s1", "t", i), timeout=10.0) for i in range(300)]
    assert all(accepted)
    wait_for(lambda: len(sink.messages) == 300, timeout=20)
    assert sink.payloads() == list(range(300))
    assert a.plane.dropped_total() == 0 and b.plane.dropped_total() == 0


def test_status_is_reported_back_to_the_source_only_on_change(agents: MakeAgent) -> None:
    reports: list[tuple[str, str, int]] = []

    class Source:
        specs = chain()

        def __call__(self) -> list[InstanceSpec]:
            return list(self.specs)

        def report(self, spec: InstanceSpec, status: Any) -> None:
            reports.append((spec.name, status.state, spec.generation))

    source = Source()
    agent = agents()
    agent.sync_once(source)
    assert sorted(reports) == [("fw", "Running", 0), ("rl", "Running", 0), ("sp", "Running", 0)]
    agent.sync_once(source)
    assert len(reports) == 3  # nothing changed: nothing sent
    source.specs = [*chain()[:2], replace(chain()[2], generation=2)]
    agent.sync_once(source)
    assert reports[3:] == [("sp", "Running", 2)]


def test_instances_for_another_node_are_refused_by_name(agents: MakeAgent) -> None:
    agent = agents()
    status = agent.converge([make_spec("mine", "broker"), make_spec("theirs", "broker", node="n2")])
    assert status["mine"].state == "Running"
    assert status["theirs"].state == "Failed" and "for node n2" in status["theirs"].message
    assert "theirs" not in agent.platform.instances


def test_tcp_ingress_counts_bad_lines_and_keeps_the_connection(agents: MakeAgent) -> None:
    import socket

    agent = agents()
    sink = Sink()
    agent.on_sink(sink)
    agent.converge([make_spec("b", "broker")])
    host, port = agent.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        good = json.dumps({"slice": "s1", "topic": "t", "payload": 1}).encode()
        s.sendall(b"not json\n" + good[:10])  # a message split across two writes
        s.sendall(good[10:] + b'\n{"topic": "no slice"}\n\n' + good + b"\n")
        wait_for(lambda: len(sink.messages) == 2)
    assert agent.ingress.errors == 2 and agent.ingress.received == 2
    assert "'slice'" in agent.ingress.last_error


def test_status_shows_updating_while_the_new_version_loads(agents: MakeAgent, tmp_path: Path) -> None:
    import threading

    slow = tmp_path / "slow_configure.py"
    slow.write_text(
        "import time\nfrom flyslice.nodeagent.sdk import NetworkFunction\n"
        "class NF(NetworkFunction):\n    def configure(self, config):\n        time.sleep(0.5)\n"
    )
    agent = agents(resync_s=60)
    agent.converge([make_spec("x", "broker")])
    sink = Sink()
    agent.on_sink(sink)
    t = threading.Thread(target=agent.converge, args=([make_spec("x", f"file:{slow}")],))
    t.start()
    wait_for(lambda: agent.status()["x"].state == "Updating", timeout=5)
    agent.plane.deliver(new_message("s1", "t", "during"))  # the old version still serves
    wait_for(lambda: sink.payloads() == ["during"])
    seen = set()
    while t.is_alive():  # what a controller polling the status sees until the swap is done
        seen.add(agent.status()["x"].state)
    t.join(10)
    assert seen <= {"Updating", "Running"}
    assert agent.status()["x"].state == "Running"
    assert agent.platform.instances["x"].spec.module == f"file:{slow}"


def test_unchanged_desired_state_is_not_rewritten_to_disk(agents: MakeAgent) -> None:
    agent = agents(resync_s=60)
    agent.converge(chain())
    cache = agent.state_dir / "desired.json"
    first = cache.stat().st_ino  # every save is a new file renamed over the old one
    agent.converge(chain())
    assert cache.stat().st_ino == first
    agent.converge(chain()[:2])
    assert cache.stat().st_ino != first
    assert [s.name for s in agent.cache.load() or []] == ["fw", "rl"]


def test_unwritable_cache_is_reported_and_does_not_block_converge(agents: MakeAgent) -> None:
    agent = agents(resync_s=60)
    agent.cache.path.unlink(missing_ok=True)
    agent.cache.path.mkdir()  # a directory where the file should be: every save fails
    status = agent.converge(chain())
    assert all(s.state == "Running" for s in status.values())
    assert "cannot write" in agent.heartbeat()["cacheError"]
    agent.cache.path.rmdir()
    agent.converge(chain()[:1])
    assert agent.heartbeat()["cacheError"] == "" and agent.cache.path.is_file()


def test_failed_update_taken_back_clears_the_error(agents: MakeAgent, tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('release 2 is broken')\n")
    agent = agents(resync_s=60)
    agent.converge(chain())
    specs = chain()
    specs[2] = make_spec("sp", f"file:{broken}")
    status = agent.converge(specs)
    assert status["sp"].state == "Running" and "release 2 is broken" in status["sp"].message  # old one serves
    status = agent.converge(chain())  # the control plane rolls back
    assert status["sp"].state == "Running" and status["sp"].message == ""
    dup = agent.converge([*chain(), make_spec("fw", "broker")])
    assert "listed twice" in dup["fw"].message and agent.platform.instances["fw"].spec.package == "firewall"
    assert agent.converge(chain())["fw"].message == ""
