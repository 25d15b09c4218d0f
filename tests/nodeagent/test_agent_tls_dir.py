"""A standalone agent (``python -m flyslice.nodeagent --tls-dir``, how a bare gateway joins with files
it was given) listens only for mutual TLS from its CA: a peer with a certificate from that CA is
answered, a plain-TCP client and a certificate from another CA are not (and are counted). Secure by
default: without ``--tls-dir`` or ``--insecure-plaintext`` the agent does not start (exit 2); with
``--insecure-plaintext`` it starts, warns, and says it is unauthenticated in ``/status`` and ``/metrics``."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from flyslice.nodeagent.dataplane.tls import CertificateAuthority
from flyslice.nodeagent.dataplane.transport import probe
from tests.conftest import wait_for


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return None


def _status(http: str) -> dict[str, Any] | None:
    text = _get(f"http://{http}/status")
    return json.loads(text) if text else None


def _metric(http: str, name: str) -> float:
    """The value of one unlabelled or fully-labelled sample in the agent's /metrics."""
    text = _get(f"http://{http}/metrics") or ""
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_standalone_agent_with_tls_dir_answers_only_its_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "pki")
    ca.issue_to(tmp_path / "gw", "agent gw", node="gw")
    peer = ca.issue_to(tmp_path / "peer", "agent cloud", node="cloud")
    stranger = CertificateAuthority.load_or_create(tmp_path / "other").issue_to(
        tmp_path / "stranger", "agent cloud", node="cloud"
    )
    addr, http = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flyslice.nodeagent", "--node", "gw", "--state-dir", str(tmp_path / "s"),
         "--listen", addr, "--http", http, "--tls-dir", str(tmp_path / "gw")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    plain = 'flyslice_dataplane_rejected_total{reason="plaintext"}'
    try:
        wait_for(lambda: probe(addr, timeout=1.0, tls=peer), timeout=20)
        assert not probe(addr, timeout=1.0)  # plain TCP
        assert not probe(addr, timeout=1.0, tls=stranger)  # another CA
        assert proc.poll() is None
        doc = wait_for(lambda: _status(http), timeout=10)  # the HTTP listener starts after the data plane's
        assert doc["dataPlane"] == {"authenticated": True, "transport": "mutual-tls"}
        assert _metric(http, plain) >= 1  # the plain client was counted
        assert _metric(http, "flyslice_agent_dataplane_authenticated") == 1.0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]


def test_standalone_agent_refuses_to_start_without_usable_tls_files(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.pem").write_text("not a certificate")
    (tmp_path / "tls" / "cert.pem").write_text("x")
    (tmp_path / "tls" / "key.pem").write_text("x")
    r = subprocess.run(
        [sys.executable, "-m", "flyslice.nodeagent", "--node", "gw", "--state-dir", str(tmp_path / "s"),
         "--tls-dir", str(tmp_path / "tls")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 1
    assert "--tls-dir" in r.stderr


def test_standalone_agent_without_tls_dir_or_insecure_flag_does_not_start(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "flyslice.nodeagent", "--node", "gw", "--state-dir", str(tmp_path / "s"),
         "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "flyslice agent: the data plane needs mutual TLS: add --tls-dir DIR (ca.pem, cert.pem, key.pem), "
        "or --insecure-plaintext to serve unauthenticated plain TCP; see `flyslice agent --help`"
    ]
    assert not (tmp_path / "s").exists()  # refused before it touched anything


def test_insecure_plaintext_agent_starts_and_says_it_is_unauthenticated(tmp_path: Path) -> None:
    addr, http = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flyslice.nodeagent", "--node", "gw", "--state-dir", str(tmp_path / "s"),
         "--listen", addr, "--http", http, "--insecure-plaintext"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: probe(addr, timeout=1.0), timeout=20)  # what the flag means: plain TCP answered
        doc = wait_for(lambda: _status(http), timeout=10)
        assert doc["dataPlane"]["authenticated"] is False
        assert doc["dataPlane"]["transport"] == "plaintext"
        assert "unauthenticated" in doc["dataPlane"]["warning"]
        assert _metric(http, "flyslice_agent_dataplane_authenticated") == 0.0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    log = out.decode(errors="replace")
    assert (
        f"WARNING flyslice.nodeagent: --insecure-plaintext: the data plane on {addr} is plain TCP and UNAUTHENTICATED"
        in log
    )
