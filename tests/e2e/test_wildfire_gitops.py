"""End to end on the embedded default: a commit to a real git repository brings the wildfire slice up,
real MQTT sensors feed it, alarms and readings land in cloud storage, and later commits converge."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from .harness import WILDFIRE, Embedded, ManifestRepo, Sensors, rows

pytestmark = pytest.mark.slow


def slice_doc(name: str, attachments: list[str], db: Path) -> dict:
    doc = yaml.safe_load((WILDFIRE / "slice.yaml").read_text())
    doc = copy.deepcopy(doc)
    doc["metadata"]["name"] = name
    doc["spec"]["attachments"] = [{"node": n} for n in attachments]
    # Per-slice override merged over the service's role config: where the cloud database writes.
    doc["spec"]["config"] = {"db": {"path": str(db), "field": "temperature", "commitMs": 50}}
    return doc


def test_commit_to_running_slice_with_sensor_data_and_later_changes(tmp_path, mosquitto):
    db_a, db_b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    repo = ManifestRepo(tmp_path / "repo")
    repo.copy_example()
    repo.write("slice.yaml", [slice_doc("wildfire", ["gw-1", "gw-2"], db_a)])
    rev1 = repo.commit("wildfire slice")

    with Embedded(repo.url, tmp_path / "state", mosquitto) as emb:
        st = emb.wait_ready("wildfire", rev1)
        assert len(st["instances"]) == 9
        assert st["predictedLatencyMs"] <= 10
        first = emb.placement("wildfire")
        assert first["wildfire-db"] == ("cloud", "vnf")
        assert first["wildfire-sp-gw-gw-1"] == ("gw-1", "fnf")

        sensors = Sensors(mosquitto)
        try:
            for i in range(20):
                sensors.publish("gw-1", "wildfire", 20.0 + i)
                sensors.publish("gw-2", "wildfire", 70.0 if i % 5 == 0 else 30.0)  # crosses 60: fire alarm
            emb.wait(lambda: rows(db_a, "readings/%") >= 40, 20, "40 readings stored in the cloud database")
            emb.wait(lambda: rows(db_a, "alarms/fire") >= 1, 20, "a fire alarm stored")
            observed = emb.wait(lambda: emb.slice("wildfire")["observedLatencyMs"], 20, "observed latency")
            assert observed > 0

            # A second slice, committed while the first one runs: the first one does not move.
            repo.write("slice-b.yaml", [slice_doc("wildfire-b", ["gw-2"], db_b)])
            rev2 = repo.commit("second slice")
            emb.wait_ready("wildfire-b", rev2)
            assert emb.placement("wildfire") == first

            # Roaming: slice b's devices move from gw-2 to gw-1; only its per-gateway stage follows.
            before_b = emb.placement("wildfire-b")
            repo.write("slice-b.yaml", [slice_doc("wildfire-b", ["gw-1"], db_b)])
            rev3 = repo.commit("devices of b roam to gw-1")
            emb.wait_ready("wildfire-b", rev3)
            after_b = emb.placement("wildfire-b")
            assert set(before_b) - set(after_b) == {"wildfire-b-broker-gw-gw-2", "wildfire-b-sp-gw-gw-2"}
            assert after_b["wildfire-b-sp-gw-gw-1"] == ("gw-1", "fnf")
            assert {k: v for k, v in after_b.items() if "-gw-gw-" not in k} == {
                k: v for k, v in before_b.items() if "-gw-gw-" not in k
            }
            sensors.publish("gw-1", "wildfire-b", 99.0)
            emb.wait(lambda: rows(db_b, "alarms/fire") >= 1, 20, "slice b's alarm after roaming")

            # Removing slice b prunes its NFs from every agent; slice a keeps running and storing.
            repo.remove("slice-b.yaml")
            rev4 = repo.commit("remove slice b")
            emb.wait(
                lambda: (
                    emb.status()["source"]["lastAppliedRevision"] == rev4 and emb.slice("wildfire-b") is None
                ),
                20,
                "slice b removed",
            )
            running = {name for rt in emb.fleet.runtimes.values() if rt.agent for name in rt.agent.desired}
            assert not any(n.startswith("wildfire-b-") for n in running)
            assert emb.placement("wildfire") == first
            stored = rows(db_a, "readings/%")
            sensors.publish("gw-1", "wildfire", 21.0)
            emb.wait(lambda: rows(db_a, "readings/%") > stored, 20, "slice a still storing readings")
        finally:
            sensors.close()


def test_invalid_commit_keeps_last_good_objects_and_reports_the_error(tmp_path):
    repo = ManifestRepo(tmp_path / "repo")
    repo.copy_example()
    rev1 = repo.commit("wildfire")
    with Embedded(repo.url, tmp_path / "state", None) as emb:
        emb.wait_ready("wildfire", rev1)
        first = emb.placement("wildfire")
        broken = yaml.safe_load((WILDFIRE / "slice.yaml").read_text())
        broken["spec"]["qos"]["maxLatencyMs"] = "ten"
        extra = copy.deepcopy(broken)
        extra["metadata"]["name"] = "second"
        extra["spec"]["qos"]["maxLatencyMs"] = 10
        repo.write("slice.yaml", [broken, extra])
        rev2 = repo.commit("typo in the slice, plus a valid new slice")
        emb.wait_ready("second", rev2)  # the valid object applies despite the invalid one
        errors = emb.status()["source"]["errors"]
        assert [(e["object"], e["path"]) for e in errors if e["severity"] == "error"] == [
            ("Slice/wildfire", "spec.qos.maxLatencyMs")
        ]
        # The broken slice keeps running its last good version.
        assert emb.slice("wildfire")["phase"] == "Ready"
        assert emb.placement("wildfire") == first
