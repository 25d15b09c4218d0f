"""`flyslice up` and `flyslice status` as a user runs them: real processes, loopback only."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import psutil
import pytest

from tests.conftest import free_port

from .harness import WILDFIRE

pytestmark = pytest.mark.slow


def status(port: int) -> dict | None:
    out = subprocess.run(
        ["flyslice", "status", "--status-addr", f"127.0.0.1:{port}", "-o", "json"],
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout) if out.returncode == 0 else None


def test_up_serves_status_and_stops_everything_on_ctrl_c(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            "flyslice",
            "up",
            str(WILDFIRE),
            "--no-view",
            "--status-addr",
            f"127.0.0.1:{port}",
            "--state-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        doc = None
        while time.monotonic() < deadline:
            doc = status(port)
            if doc and doc["slices"] and doc["slices"][0]["phase"] == "Ready":
                break
            time.sleep(0.3)
        assert doc and doc["slices"][0]["phase"] == "Ready", doc
        (s,) = doc["slices"]
        assert (s["name"], s["namespace"]) == ("wildfire", "default")
        assert s["revision"].startswith("sha256:")
        assert s["predictedLatencyMs"] <= s["budgetMs"] == 10
        assert "observedLatencyMs" in s
        assert {i["state"] for i in s["instances"]} == {"Running"}
        gw = next(i for i in s["instances"] if i["role"] == "sp-gw" and i["attachment"] == "gw-2")
        assert (gw["node"], gw["flavor"]) == ("gw-2", "fnf")
        assert {n["name"]: n["tier"] for n in doc["nodes"]} == {
            "cloud": "cloud",
            "fog-1": "fog",
            "gw-1": "gateway",
            "gw-2": "gateway",
        }
        assert all(n["heartbeatAgeS"] is not None and "load" in n for n in doc["nodes"])
        # Not counted: the forkserver (and its resource tracker) that reads revisions off the loop.
        vnf_pids = [
            c.pid
            for c in psutil.Process(proc.pid).children(recursive=True)
            if "multiprocessing" not in " ".join(c.cmdline())
        ]
        assert len(vnf_pids) == 3  # broker, stream processor and database VNFs as local processes

        table = subprocess.run(
            ["flyslice", "status", "--status-addr", f"127.0.0.1:{port}"], capture_output=True, text=True
        )
        assert "default/wildfire  Ready" in table.stdout and "9/9 running" in table.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, proc.stdout.read() if proc.stdout else ""
    assert not [
        p for p in vnf_pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert status(port) is None  # the status API is gone too


def test_status_without_a_running_controller_says_so():
    out = subprocess.run(
        ["flyslice", "status", "--status-addr", f"127.0.0.1:{free_port()}"], capture_output=True, text=True
    )
    assert out.returncode == 1 and "is `flyslice up` running?" in out.stderr


def test_up_exit_when_ready_and_bad_arguments(tmp_path):
    out = subprocess.run(
        [
            "flyslice",
            "up",
            str(WILDFIRE),
            "--no-view",
            "--status-addr",
            "127.0.0.1:0",
            "--state-dir",
            str(tmp_path),
            "--exit-when-ready",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "default/wildfire  Ready" in out.stdout
    bad = subprocess.run(
        ["flyslice", "up", str(WILDFIRE), "--mqtt", "nonsense"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "'nonsense' is not HOST:PORT" in bad.stderr
    hook = subprocess.run(
        ["flyslice", "up", str(WILDFIRE), "--webhook-addr", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        env={"PATH": __import__("os").environ["PATH"]},
    )
    assert hook.returncode == 2 and "FLYSLICE_WEBHOOK_SECRET" in hook.stderr


def test_up_refuses_unreadable_trusted_keys(tmp_path):
    repo = tmp_path / "repo.git"
    out = subprocess.run(
        [
            "flyslice",
            "up",
            f"file://{repo}",
            "--trust-gpg-key",
            str(tmp_path / "missing.asc"),
            "--no-view",
            "--status-addr",
            "127.0.0.1:0",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert f"cannot read trusted keys {tmp_path / 'missing.asc'}" in out.stderr
