"""The five real NFs, each run as an fNF through the platform and data plane."""

from __future__ import annotations

import time
from pathlib import Path

from flyslice.nodeagent.dataplane.chains import DataPlane
from flyslice.nodeagent.message import new_message
from flyslice.nodeagent.nfkit import topic_matches
from flyslice.nodeagent.runtime.platform import ModularPlatform

from .conftest import Sink, make_spec, wait_for


def run(platform: ModularPlatform, *specs: object) -> None:
    for spec in specs:
        platform.install(spec)  # type: ignore[arg-type]
        platform.start(spec.name)  # type: ignore[attr-defined]


def test_topic_filters_follow_mqtt_rules() -> None:
    assert topic_matches("sensors/+/temp", "sensors/gw1/temp")
    assert not topic_matches("sensors/+/temp", "sensors/gw1/hum")
    assert topic_matches("sensors/#", "sensors")
    assert topic_matches("sensors/#", "sensors/a/b/c")
    assert not topic_matches("sensors/+", "sensors/a/b")


def test_broker_fans_out_by_subscription(platform: ModularPlatform, plane: DataPlane) -> None:
    got: dict[str, list[str]] = {"temps": [], "all": []}
    plane.sinks.append(lambda inst, msgs: got[inst.name].extend(m["topic"] for m in msgs))
    subs = {"temps": ["sensors/+/temp"], "all": ["#"]}
    run(
        platform,
        make_spec("broker", "broker", {"subscriptions": subs, "retain": True}, ["temps", "all"]),
        make_spec("temps", "firewall", {"default": "allow"}),
        make_spec("all", "firewall", {"default": "allow"}),
    )
    for topic in ("sensors/gw1/temp", "sensors/gw1/hum", "sensors/gw2/temp"):
        plane.deliver(new_message("s1", topic, {"v": 1}))
    wait_for(lambda: len(got["all"]) == 3 and len(got["temps"]) == 2)
    assert got["temps"] == ["sensors/gw1/temp", "sensors/gw2/temp"]
    assert set(platform.instances["broker"].nf.retained) == {
        "sensors/gw1/temp",
        "sensors/gw1/hum",
        "sensors/gw2/temp",
    }


def test_stream_processor_filters_alarms_and_aggregates(platform: ModularPlatform, plane: DataPlane) -> None:
    sink = Sink()
    plane.sinks.append(sink)
    config = {
        "filter": {"field": "temp", "op": ">=", "value": 0},
        "alarm": {"field": "temp", "above": 50, "topic": "fire"},
        "window": {"seconds": 0.1, "field": "temp", "agg": "max", "topic": "max-temp"},
    }
    run(platform, make_spec("sp", "stream_processor", config))
    for t in (-5, 10, 60, 70, 20, "hot"):
        plane.deliver(new_message("s1", "sensors/temp", {"temp": t}))
    wait_for(lambda: any(m["topic"] == "max-temp" for m in sink.messages), timeout=5)
    topics = [m["topic"] for m in sink.messages]
    assert topics.count("sensors/temp") == 4  # -5 filtered out; "hot" is not comparable to 0
    assert topics.count("fire") == 1  # one alarm on the crossing, not one per hot reading
    agg = next(m for m in sink.messages if m["topic"] == "max-temp")
    assert agg["payload"]["value"] == 70 and agg["payload"]["count"] == 4
    alarm = next(m for m in sink.messages if m["topic"] == "fire")
    assert alarm["payload"]["value"] == 60


def test_storage_keeps_a_time_series_and_hands_it_over(
    tmp_path: Path, platform: ModularPlatform, plane: DataPlane
) -> None:
    run(platform, make_spec("db", "storage", {"field": "temp"}))
    for t in (1.5, 2.5, 3.5):
        plane.deliver(new_message("s1", "gw1/temp", {"temp": t}))
    db = platform.instances["db"]
    wait_for(lambda: db.counters.in_ == 3)
    rows = plane.workers["s1"].call(lambda: db.nf.query("gw1/temp"))
    assert [r["value"] for r in rows] == [1.5, 2.5, 3.5] and rows[0]["payload"] == {"temp": 1.5}
    platform.update(make_spec("db", "storage", {"field": "temp", "commitMs": 50}))
    new = platform.instances["db"]
    rows = plane.workers["s1"].call(lambda: new.nf.query())
    assert len(rows) == 3  # an in-memory database's rows go over to the new version

    path = tmp_path / "series.db"
    run(platform, make_spec("filedb", "storage", {"path": str(path), "commitMs": 20}, slice_="s2"))
    plane.deliver(new_message("s2", "x", {"v": 1}))
    import sqlite3

    def committed() -> bool:
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT count(*) FROM series").fetchone()[0] == 1

    wait_for(committed, timeout=5)


def test_firewall_match_action_with_state_and_expiry(platform: ModularPlatform, plane: DataPlane) -> None:
    sink = Sink()
    plane.sinks.append(sink)
    rules = [
        {
            "match": {"topic": "auth/#"},
            "action": "drop",
            "setState": {"key": "device", "value": "known", "ttlSeconds": 0.3},
        },
        {"match": {"state": {"key": "device", "is": "known"}}, "action": "allow"},
        {"match": {"fields": {"payload.device": "admin"}}, "action": "allow"},
    ]
    run(platform, make_spec("fw", "firewall", {"rules": rules, "default": "drop"}))
    send = lambda topic, dev: plane.deliver(new_message("s1", topic, {"device": dev}))  # noqa: E731
    send("data", "d1")  # unknown device: default drop
    send("auth/login", "d1")  # marks d1 known, itself dropped
    send("data", "d1")  # now allowed
    send("data", "admin")  # allowed by field match
    wait_for(lambda: len(sink.messages) == 2)
    fw = platform.instances["fw"]
    assert fw.nf.denied == 2
    time.sleep(0.4)  # the state entry's ttl passes; the timer removes it
    send("data", "d1")
    wait_for(lambda: fw.nf.denied == 3)
    wait_for(lambda: "d1" not in fw.nf.table, timeout=3)
    assert [m["payload"]["device"] for m in sink.messages] == ["d1", "admin"]


def test_rate_limiter_token_bucket_refilled_by_timer(platform: ModularPlatform, plane: DataPlane) -> None:
    sink = Sink()
    plane.sinks.append(sink)
    run(
        platform,
        make_spec("rl", "rate_limiter", {"rate": 20, "burst": 3, "key": "payload.dev", "refillMs": 50}),
    )
    for _ in range(5):
        plane.deliver(new_message("s1", "t", {"dev": "a"}))
    plane.deliver(new_message("s1", "t", {"dev": "b"}))
    wait_for(lambda: platform.instances["rl"].counters.in_ == 6)
    assert [m["payload"]["dev"] for m in sink.messages] == ["a", "a", "a", "b"]
    assert platform.instances["rl"].nf.limited == 2
    time.sleep(0.2)  # 20 tokens/s for 0.2 s: about 4 tokens, capped at the burst of 3
    for _ in range(4):
        plane.deliver(new_message("s1", "t", {"dev": "a"}))
    wait_for(lambda: platform.instances["rl"].counters.in_ == 10)
    assert [m["payload"]["dev"] for m in sink.messages].count("a") == 6
