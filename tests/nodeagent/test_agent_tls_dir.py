"""A standalone agent (``python -m flyslice.nodeagent --tls-dir``, how a bare gateway joins with files
it was given) listens only for mutual TLS from its CA: a peer with a certificate from that CA is
answered, a plain-TCP client and a certificate from another CA are not."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

from flyslice.nodeagent.dataplane.tls import CertificateAuthority
from flyslice.nodeagent.dataplane.transport import probe
from tests.conftest import wait_for


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
    addr = f"127.0.0.1:{_free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flyslice.nodeagent", "--node", "gw", "--state-dir", str(tmp_path / "s"),
         "--listen", addr, "--tls-dir", str(tmp_path / "gw")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: probe(addr, timeout=1.0, tls=peer), timeout=20)
        assert not probe(addr, timeout=1.0)  # plain TCP
        assert not probe(addr, timeout=1.0, tls=stranger)  # another CA
        assert proc.poll() is None
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
