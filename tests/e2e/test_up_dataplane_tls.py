"""A real `flyslice up` on the wildfire example runs its data plane on mutual TLS: readings still
reach the storage VNF end to end, while forged messages -- from a plain-TCP socket, and from a
component of another slice holding a certificate from the same CA -- are dropped, at an agent and at
the storage runner, and counted in ``flyslice_dataplane_rejected_total``."""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from flyslice.nodeagent.dataplane.tls import CertificateAuthority
from flyslice.nodeagent.dataplane.transport import send_lines
from tests.conftest import wait_for

from .harness import Sensors, rows
from .test_up_runtime_faults import Up, up_factory  # noqa: F401 -- the fixture

pytestmark = pytest.mark.slow


def _forge(address: str, topic: str, tls: object = None) -> None:
    msg = {"slice": "wildfire", "to": "wildfire-db", "topic": topic, "payload": {"value": 99.0}}
    # the listener may cut the connection while we write: that is the point
    with contextlib.suppress(ssl.SSLError, OSError):
        send_lines(address, [msg], tls=tls)  # type: ignore[arg-type]


def _rejected(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^flyslice_dataplane_rejected_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    }


def test_up_data_plane_is_mutual_tls_and_drops_forgeries(
    tmp_path: Path,
    up_factory: Callable[..., Up],  # noqa: F811 -- the fixture imported above
    mosquitto: int,
) -> None:
    state = tmp_path / "state"
    up = up_factory("--mqtt", f"127.0.0.1:{mosquitto}")
    up.wait_ready()
    db = state / "agents" / "cloud" / "data" / "default" / "wildfire-db" / "storage.sqlite"
    runner_dir = state / "agents" / "cloud" / "vnf" / "wildfire-db"
    runner_addr = json.loads((runner_dir / "ready.json").read_text())["address"]
    agent_addr = (state / "agents" / "cloud" / "agent.addr").read_text().strip()
    assert (runner_dir / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600

    # The chain carries readings end to end (gateway fNFs -> cloud agent -> storage runner), over TLS.
    sensors = Sensors(mosquitto)
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set():
            sensors.publish("gw-1", "wildfire", 20.0 + i % 10)
            i += 1
            time.sleep(0.02)

    feeder = threading.Thread(target=stream, daemon=True)
    feeder.start()
    try:
        wait_for(lambda: rows(db, "readings/%") >= 30, timeout=30, interval=0.1)
    finally:
        stop.set()
        feeder.join(10)
        sensors.close()

    # Forgeries, addressed straight to the storage NF (skipping every stream processor).
    ca = CertificateAuthority.load_or_create(state / "pki")  # what a compromised ddos runner holds
    other_slice = ca.issue_to(tmp_path / "ddos-runner", "runner ddos-fw", slices=["ddos"])
    own_slice = ca.issue_to(tmp_path / "wf-runner", "runner wildfire-x", slices=["wildfire"])
    for address in (agent_addr, runner_addr):
        _forge(address, "readings/forged-plain")
        _forge(address, "readings/forged-other-slice", other_slice)
    wait_for(lambda: _rejected(up.port).get("plaintext", 0) >= 1, timeout=10, interval=0.2)
    wait_for(lambda: _rejected(up.port).get("slice", 0) >= 1, timeout=10, interval=0.2)

    def runner_rejected() -> dict[str, int]:
        status = json.loads((runner_dir / "status.json").read_text())
        return dict(status.get("rejected", {}))

    wait_for(lambda: runner_rejected().get("plaintext") == 1 and runner_rejected().get("slice") == 1, 10, 0.3)

    # The control: the same message from a certificate for this slice is accepted and stored, so the
    # forgeries above were dropped for their credentials, not for their shape.
    _forge(runner_addr, "readings/authentic", own_slice)
    wait_for(lambda: rows(db, "readings/authentic") == 1, timeout=10, interval=0.1)
    assert rows(db, "readings/forged%") == 0
