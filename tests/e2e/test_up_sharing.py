"""NF sharing end to end in a real `flyslice up` (issue 15, "Done when"): examples/shared-gateways with real
agents, real VNF runners and a real mosquitto, loopback only.

The two agencies that allow sharing get ONE broker per tower, the rangers (``sharing: forbidden``) brokers
of their own; every reading published at a tower reaches its own slice's database and no other; each
tenant's counters count its own readings only; ``flyslice plan`` lists each shared instance once, with its
tenants, and they are the instances `up` runs; a fourth sharing slice added later joins the running
brokers without restarting them, while the others keep streaming without losing a reading.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from flyslice.operator.planning.actions import instance_name
from tests.conftest import wait_for

from .up_process import UpProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "shared-gateways"
TOWERS = ("tower-1", "tower-2")
SHARERS = ("air-quality", "fire-watch")
RANGERS = "ranger-tracking"
LATE = "pest-watch"
#: Readings per tower and slice: a different number for each slice, so that counters added up over the
#: tenants of a shared instance (or given to the wrong tenant) cannot pass for a tenant's own.
PER_TOWER = {"fire-watch": 12, "air-quality": 7, RANGERS: 9, LATE: 5}

# The fourth agency: sharing allowed (the default), the service's default configs.
LATE_SLICE = {
    "apiVersion": "flyslice.io/v1alpha1",
    "kind": "Slice",
    "metadata": {"name": LATE},
    "spec": {
        "services": ["forest-telemetry"],
        "qos": {"maxLatencyMs": 10, "availability": 0.9},
        "attachments": [{"node": t} for t in TOWERS],
    },
}


def _example(dest: Path) -> Path:
    """The example, with towers of 600m instead of 500m: the three slices take 410m per tower, and a fourth
    sharing slice needs 105m per tower (5m in the broker, a 100m filter), which the incremental admission
    of a new slice must find next to the running ones without moving them."""
    dest.mkdir(parents=True)
    for f in EXAMPLE.glob("*.yaml"):
        shutil.copy(f, dest / f.name)
    nodes = [d for d in yaml.safe_load_all((dest / "nodes.yaml").read_text()) if d]
    for node in nodes:
        if node["metadata"]["name"] in TOWERS:
            node["spec"]["capacity"]["cpu"] = "600m"
    (dest / "nodes.yaml").write_text(yaml.safe_dump_all(nodes, sort_keys=False))
    return dest


class Devices:
    """Real MQTT clients at the towers: each reading names its slice, tower and a sequence number, and
    carries every field the slices' filters test (so no filter drops it)."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="shared-gateways-devices")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent: Counter[tuple[str, str]] = Counter()  # (slice, tower) -> readings published
        self._lock = threading.Lock()

    def publish(self, slice_name: str, tower: str) -> None:
        with self._lock:
            seq = self.sent[(slice_name, tower)]
            self.sent[(slice_name, tower)] += 1
        payload = {"origin": slice_name, "tower": tower, "seq": seq, "temperature": 21.5, "pm25": 3.0,
                   "battery": 80.0}  # fmt: skip
        info = self.client.publish(
            f"flyslice/{tower}/{slice_name}/readings/forest", json.dumps(payload), qos=1
        )
        info.wait_for_publish(5)

    def expected(self, slice_name: str) -> Counter[tuple[str, str, int]]:
        with self._lock:
            return Counter(
                (slice_name, tower, seq) for tower in TOWERS for seq in range(self.sent[(slice_name, tower)])
            )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _stored(db: Path) -> Counter[tuple[str, str, int]]:
    """(origin slice, tower, seq) of every reading in a storage NF's database, with multiplicity."""
    if not db.exists():
        return Counter()
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT json_extract(payload, '$.origin'), json_extract(payload, '$.tower'), "
            "json_extract(payload, '$.seq') FROM series"
        ).fetchall()
    return Counter((str(o), str(t), int(s)) for o, t, s in rows)


def _entries(doc: dict[str, Any], slice_name: str) -> list[dict[str, Any]]:
    s = next(s for s in doc["slices"] if s["name"] == slice_name)
    return list(s["instances"])


def _broker_gw(doc: dict[str, Any], slice_name: str, tower: str) -> dict[str, Any]:
    return next(
        i for i in _entries(doc, slice_name) if i["role"] == "broker-gw" and i.get("attachment") == tower
    )


def _shared_on(doc: dict[str, Any], node: str) -> dict[str, dict[str, Any]]:
    n = next(n for n in doc["nodes"] if n["name"] == node)
    return dict(n["sharedInstances"])


def _db(state: Path, doc: dict[str, Any], slice_name: str) -> Path:
    db = next(i for i in _entries(doc, slice_name) if i["role"] == "db")
    return state / "agents" / db["node"] / "data" / "default" / db["instance"] / "storage.sqlite"


def _plan(source: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["flyslice", "plan", str(source), "-o", "json"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def _publish_all(devices: Devices, slices: tuple[str, ...]) -> None:
    for slice_name in slices:
        for tower in TOWERS:
            for _ in range(PER_TOWER[slice_name]):
                devices.publish(slice_name, tower)


def _wait_delivered(up: UpProcess, state: Path, devices: Devices, slices: tuple[str, ...]) -> None:
    """Every slice's database holds exactly its own readings, each once: none lost, none from another."""
    doc = up.status()
    assert doc is not None
    dbs = {s: _db(state, doc, s) for s in slices}

    def delivered() -> bool:
        return all(_stored(dbs[s]) == devices.expected(s) for s in slices)

    try:
        wait_for(delivered, timeout=60, interval=0.3)
    except AssertionError:
        got = {s: sorted(set(_stored(dbs[s])) ^ set(devices.expected(s)))[:10] for s in slices}
        raise AssertionError(f"readings missing or misdelivered (symmetric difference): {got}") from None


def test_two_agencies_share_the_tower_brokers_and_receive_only_their_own_readings(
    tmp_path: Path, mosquitto: int
) -> None:
    source = _example(tmp_path / "src")
    state = tmp_path / "state"
    t0 = time.monotonic()

    # `flyslice plan`: each shared instance listed once, with its tenants; the rangers are in none.
    plan = _plan(source)
    plan_ids = [si["id"] for si in plan["sharedInstances"]]
    assert len(plan_ids) == len(set(plan_ids)) == 2, plan["sharedInstances"]
    planned = {si["node"]: si for si in plan["sharedInstances"]}
    assert sorted(planned) == list(TOWERS), plan["sharedInstances"]
    for tower, si in planned.items():
        assert si["tenants"] == [{"slice": f"default/{s}", "nf": f"broker-gw@{tower}"} for s in SHARERS]

    with UpProcess(str(source), state, "--mqtt", f"127.0.0.1:{mosquitto}") as up:
        for name in (*SHARERS, RANGERS):
            up.wait_ready(name, timeout=150)
        # Every agent subscribed to the broker (a reading published before would be lost, not misrouted).
        doc = up.wait(lambda d: not d["warnings"] and d, 30, "every agent connected to mosquitto")
        ready_s = time.monotonic() - t0

        # What runs: on each tower ONE shared broker, whose tenants are the two sharers' broker-gw NFs --
        # the instance `flyslice plan` listed, under the same name.
        running: dict[str, tuple[str, float]] = {}  # tower -> (shared instance, builtAt)
        for tower in TOWERS:
            shared = _shared_on(doc, tower)
            assert list(shared) == [planned[tower]["id"]], shared
            (name, si) = next(iter(shared.items()))
            tenants = sorted(instance_name(s, f"broker-gw@{tower}") for s in SHARERS)
            assert si["tenants"] == tenants and si["slices"] == sorted(SHARERS), si
            assert (si["state"], si["builds"], si["package"]) == ("Running", 1, "tower-broker"), si
            for s in SHARERS:
                entry = _broker_gw(doc, s, tower)
                assert (entry["node"], entry.get("sharedInstance"), entry["state"]) == (
                    tower,
                    name,
                    "Running",
                )
            # The rangers' broker on this tower is an instance of its own, in no shared instance.
            rangers = _broker_gw(doc, RANGERS, tower)
            assert "sharedInstance" not in rangers and rangers["state"] == "Running", rangers
            assert all(rangers["instance"] not in x["tenants"] for x in shared.values())
            running[tower] = (name, si["builtAt"])
        # Nowhere else does anything run shared (the cloud brokers and the filters are per slice).
        assert not any(n["sharedInstances"] for n in doc["nodes"] if n["name"] not in TOWERS)

        devices = Devices(mosquitto)
        try:
            # Each reading reaches its own slice's database and no other, each exactly once.
            _publish_all(devices, (*SHARERS, RANGERS))
            _wait_delivered(up, state, devices, (*SHARERS, RANGERS))

            # Each tenant counts its own readings only, although the sharers' run in one NF object.
            def counted(d: dict[str, Any]) -> dict[str, Any] | None:
                for s in (*SHARERS, RANGERS):
                    for tower in TOWERS:
                        if _broker_gw(d, s, tower).get("counters", {}).get("in") != PER_TOWER[s]:
                            return None
                return d

            doc = up.wait(counted, 30, "each broker-gw counting its own readings")
            for s in (*SHARERS, RANGERS):
                for tower in TOWERS:
                    c = _broker_gw(doc, s, tower)["counters"]
                    assert c.get("rejected", 0) == 0 and c["errors"] == 0, (s, tower, c)
            traffic_s = time.monotonic() - t0 - ready_s

            # A fourth sharing agency, committed while the sharers stream: it joins the running brokers.
            stop = threading.Event()

            def stream() -> None:
                while not stop.is_set():
                    for s in SHARERS:
                        for tower in TOWERS:
                            devices.publish(s, tower)
                    time.sleep(0.05)

            feeder = threading.Thread(target=stream, daemon=True)
            feeder.start()
            try:
                with (source / "slices.yaml").open("a") as f:
                    f.write("---\n" + yaml.safe_dump(LATE_SLICE, sort_keys=False))
                up.wait_ready(LATE, timeout=120)

                def joined(d: dict[str, Any]) -> dict[str, Any] | None:
                    ok = all(
                        instance_name(LATE, f"broker-gw@{t}") in _shared_on(d, t).get(running[t][0], {}).get(
                            "tenants", [])
                        for t in TOWERS
                    )  # fmt: skip
                    return d if ok else None

                doc = up.wait(joined, 30, f"{LATE} joining the running brokers")
                time.sleep(1.0)  # the sharers keep streaming through the join
            finally:
                stop.set()
                feeder.join(10)
            join_s = time.monotonic() - t0 - ready_s - traffic_s

            # Same instances, not rebuilt: the same name, built at the same time, built once.
            for tower in TOWERS:
                name, built_at = running[tower]
                shared = _shared_on(doc, tower)
                assert list(shared) == [name], shared
                si = shared[name]
                assert (si["builtAt"], si["builds"], si["state"]) == (built_at, 1, "Running"), si
                assert si["tenants"] == sorted(
                    instance_name(s, f"broker-gw@{tower}") for s in (*SHARERS, LATE)
                )
                entry = _broker_gw(doc, LATE, tower)
                assert (entry["node"], entry.get("sharedInstance")) == (tower, name), entry
                assert "sharedInstance" not in _broker_gw(doc, RANGERS, tower)

            # The late agency's readings reach its database only; the sharers lost nothing while it joined
            # (every sequence number, once), and nobody received another's.
            _publish_all(devices, (LATE,))
            _wait_delivered(up, state, devices, (*SHARERS, RANGERS, LATE))
            doc = up.wait(
                lambda d: all(_broker_gw(d, LATE, t).get("counters", {}).get("in") == PER_TOWER[LATE] for t in TOWERS)
                and d,
                30, f"{LATE}'s tenants counting its own readings",
            )  # fmt: skip
            for tower in TOWERS:
                for s in SHARERS:  # the join did not reset (or take over) a running tenant's counters
                    assert _broker_gw(doc, s, tower)["counters"]["in"] == devices.sent[(s, tower)], (s, tower)
                assert list(_shared_on(doc, tower)) == [running[tower][0]]
                assert _shared_on(doc, tower)[running[tower][0]]["builds"] == 1
        finally:
            devices.close()
    print(
        f"shared-gateways up: Ready {ready_s:.1f}s, traffic {traffic_s:.1f}s, fourth slice joined {join_s:.1f}s, "
        f"sent {sum(devices.sent.values())} readings"
    )
