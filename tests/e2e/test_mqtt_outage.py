"""Issue 11, item 8 (MQTT): an MQTT broker that cannot be reached is a condition and a warning in the
status and the live view, retried with back-off, and clears by itself once a real mosquitto listens."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, wait_for

from .harness import Sensors, rows
from .up_process import UpProcess, copy_wildfire

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@contextmanager
def mosquitto_on(port: int, tmp_path: Path) -> Iterator[None]:
    """A real mosquitto on a port chosen beforehand (the conftest fixture picks its own)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.skip("mosquitto binary not installed (apt-get install -y mosquitto)")
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(5)


def flyslice_status(port: int) -> str:
    """What `flyslice status` prints: the same rendering as `up`'s live view."""
    out = subprocess.run(
        ["flyslice", "status", "--status-addr", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def ingress_conditions(doc: dict[str, Any]) -> list[dict[str, str]]:
    return [c for c in doc["controller"]["conditions"] if c["type"] == "IngressReady"]


def test_an_unreachable_broker_is_a_warning_until_mosquitto_starts(tmp_path: Path) -> None:
    broker_port = free_port()  # nothing listens here yet: every connect is refused
    src = copy_wildfire(tmp_path / "src")
    with UpProcess(str(src), tmp_path / "state", "--mqtt", f"127.0.0.1:{broker_port}") as up:
        ready = up.wait_ready(timeout=90)
        # The slice runs, but its devices' readings cannot arrive: never Ready without a warning.
        doc = up.wait(lambda d: d if d["warnings"] else None, 30, "a warning about the broker")
        assert ready["phase"] == "Ready"
        assert any(f"cannot connect to MQTT broker 127.0.0.1:{broker_port}" in w for w in doc["warnings"])
        (cond,) = ingress_conditions(doc)
        assert cond["status"] == "False" and cond["reason"] == "BrokerUnreachable"
        assert f"127.0.0.1:{broker_port}" in cond["message"]
        wildfire = next(s for s in doc["slices"] if s["name"] == "wildfire")
        # Its gateways gw-1 and gw-2 are where the devices attach.
        assert {w.split(":", 1)[0] for w in wildfire["warnings"]} == {"gw-1", "gw-2"}
        assert any("cannot connect to MQTT broker" in e for e in doc["events"])
        view = flyslice_status(up.port)
        assert f"WARNING node gw-1: cannot connect to MQTT broker 127.0.0.1:{broker_port}" in view
        assert "wildfire: warning: gw-1:" in view

        # Retried with back-off, not given up on: the attempts keep counting while it is down.
        def attempts(d: dict[str, Any]) -> int:
            w = next(w for w in d["warnings"] if w.startswith("node gw-1:"))
            return int(w.split(" failed attempt")[0].rsplit(" ", 1)[-1])

        first = attempts(doc)
        later = up.wait(lambda d: attempts(d) >= first + 2 and d, 30, "more connection attempts")
        assert attempts(later) >= 2
        events_while_down = sum("cannot connect to MQTT broker" in e for e in later["events"])

        with mosquitto_on(broker_port, tmp_path):
            # paho's back-off is at most 8 s: cleared within a few retries.
            cleared = up.wait(lambda d: not d["warnings"] and d, 45, "the broker warning to clear")
            assert ingress_conditions(cleared) == []
            assert all(not s["warnings"] for s in cleared["slices"])
            assert any("cleared: cannot connect to MQTT broker" in e for e in cleared["events"])
            # One event per node when the outage started, not one per retry.
            assert events_while_down <= 5  # 4 nodes (cloud, fog, gw-1, gw-2) each warn once
            assert "WARNING" not in flyslice_status(up.port)
            # And the reconnected agents subscribed: readings published now reach the storage NF.
            db = (
                tmp_path
                / "state"
                / "agents"
                / "cloud"
                / "data"
                / "default"
                / "wildfire-db"
                / "storage.sqlite"
            )
            before = rows(db, "readings/%")
            sensors = Sensors(broker_port)
            try:
                deadline = time.monotonic() + 30
                while rows(db, "readings/%") < before + 5 and time.monotonic() < deadline:
                    sensors.publish("gw-1", "wildfire", 21.5)
                    time.sleep(0.1)
            finally:
                sensors.close()
            wait_for(lambda: rows(db, "readings/%") >= before + 5, timeout=10, interval=0.2)
