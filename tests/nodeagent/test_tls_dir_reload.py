"""``--tls-dir`` credentials renewed by someone else (cert-manager, a Secret mount, a script) are
picked up while the agent runs: replaced files are reloaded -- only as a consistent set -- and a new
connection presents the new certificate; a half-written or mismatched set is ignored (the old
certificate stays in use) until it is whole. Real processes and sockets; the kubelet's Secret-volume
layout (``..data`` symlink swapped at once) is reproduced on disk, since no kubelet runs here."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from flyslice.nodeagent.dataplane.tls import (
    CertificateAuthority,
    PeerIdentity,
    TlsDirWatcher,
    TlsFiles,
    check_credentials,
    identity_from_peercert,
)
from flyslice.nodeagent.dataplane.transport import TcpIngress, parse_address, probe
from tests.conftest import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_serial(address: str, client: TlsFiles) -> tuple[int, PeerIdentity | None]:
    """A NEW connection as ``client``: the serial and identity of the certificate the server presents."""
    raw = socket.create_connection(parse_address(address), timeout=5)
    with client.client_context().wrap_socket(raw) as s:
        der = s.getpeercert(binary_form=True)
        ident = identity_from_peercert(s.getpeercert())
    assert der is not None
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number, ident


def serial_of(pem: bytes) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem).serial_number


def project(directory: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` the way the kubelet updates a Secret volume (its AtomicWriter): a new
    timestamped directory, then the ``..data`` symlink swapped to it in one rename; the visible names
    are symlinks through ``..data``, so a reader sees either the whole old set or the whole new one."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f"..{time.time_ns()}"
    stamp.mkdir()
    for name, data in files.items():
        (stamp / name).write_bytes(data)
    tmp = directory / "..data_tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(stamp.name, tmp)
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    os.replace(tmp, directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            os.symlink(f"..data/{name}", directory / name)
    if old:
        for f in (directory / old).iterdir():
            f.unlink()
        (directory / old).rmdir()


def test_check_credentials_refuses_a_mismatched_or_expired_set(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "pki")
    _cert1, key1 = ca.issue("agent gw", node="gw")
    cert2, key2 = ca.issue("agent gw", node="gw")
    assert check_credentials(ca.cert_pem, cert2, key2).serial_number == serial_of(cert2)
    with pytest.raises(ValueError, match=r"key\.pem is not the key of cert\.pem"):
        check_credentials(ca.cert_pem, cert2, key1)
    with pytest.raises(ValueError, match=r"cert\.pem: no certificate"):
        check_credentials(ca.cert_pem, cert2[: len(cert2) // 2], key2)  # caught half-written
    with pytest.raises(ValueError, match=r"key\.pem: no usable private key"):
        check_credentials(ca.cert_pem, cert2, key2[:40])
    import datetime

    ca.leaf_lifetime = datetime.timedelta(seconds=-1)
    old_cert, old_key = ca.issue("agent gw", node="gw")
    with pytest.raises(ValueError, match=r"cert\.pem expired at"):
        check_credentials(ca.cert_pem, old_cert, old_key)


def test_secret_volume_swap_is_reloaded_and_a_new_ca_replaces_the_old(tmp_path: Path) -> None:
    """In-process listener on files in the kubelet's layout: a swapped ``..data`` is loaded (new
    serial on new connections); a truncated key is ignored; a new ca.pem is the only CA trusted after."""
    ca = CertificateAuthority.load_or_create(tmp_path / "pki")
    peer = ca.issue_to(tmp_path / "peer", "agent cloud", node="cloud")
    cert1, key1 = ca.issue("agent gw", node="gw")
    vol = tmp_path / "vol"
    project(vol, {"ca.pem": ca.cert_pem, "cert.pem": cert1, "key.pem": key1})
    files = TlsFiles.in_dir(vol)
    ingress = TcpIngress("127.0.0.1:0", lambda m, t: 0, tls=files)
    watcher = TlsDirWatcher(files, interval_s=0.1)
    try:
        assert server_serial(ingress.address, peer) == (serial_of(cert1), PeerIdentity("agent/gw", None))
        cert2, key2 = ca.issue("agent gw", node="gw")
        project(vol, {"ca.pem": ca.cert_pem, "cert.pem": cert2, "key.pem": key2})
        wait_for(lambda: server_serial(ingress.address, peer)[0] == serial_of(cert2), timeout=10)
        assert watcher.renewals == 1 and watcher.failures == 0
        assert watcher.status()["serial"] == f"{serial_of(cert2):x}"

        # A set whose key was cut short: ignored, counted, the current certificate stays in use.
        cert3, key3 = ca.issue("agent gw", node="gw")
        project(vol, {"ca.pem": ca.cert_pem, "cert.pem": cert3, "key.pem": key3[:50]})
        wait_for(lambda: watcher.failures == 1, timeout=10)
        assert watcher.status()["state"] == "RenewalFailing"
        assert "key.pem" in watcher.status()["lastError"]
        time.sleep(0.5)
        assert watcher.failures == 1  # not retried (nor logged again) until the files change
        assert server_serial(ingress.address, peer)[0] == serial_of(cert2)

        # A new CA with a certificate from it: after the swap only the new CA is trusted.
        new_ca = CertificateAuthority.load_or_create(tmp_path / "pki2", name="rotated CA")
        cert4, key4 = new_ca.issue("agent gw", node="gw")
        project(vol, {"ca.pem": new_ca.cert_pem, "cert.pem": cert4, "key.pem": key4})
        new_peer = new_ca.issue_to(tmp_path / "peer2", "agent cloud", node="cloud")
        wait_for(lambda: probe(ingress.address, timeout=1.0, tls=new_peer), timeout=10)
        assert server_serial(ingress.address, new_peer)[0] == serial_of(cert4)
        assert not probe(ingress.address, timeout=1.0, tls=peer)  # the old CA's peers: refused now
        assert watcher.status()["state"] == "Valid"
    finally:
        watcher.close()
        ingress.close()


def _status(http: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://{http}/status", timeout=5) as r:
            doc: dict[str, Any] = json.loads(r.read())
            return doc
    except OSError:  # not listening yet
        return {}


def _metrics(http: str) -> str:
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as r:
        text: str = r.read().decode()
        return text


def test_standalone_tls_dir_agent_reloads_replaced_files_and_ignores_a_mismatched_pair(
    tmp_path: Path,
) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "pki")
    gw = ca.issue_to(tmp_path / "gw", "agent gw", node="gw")
    peer = ca.issue_to(tmp_path / "peer", "agent cloud", node="cloud")
    first = serial_of(gw.cert.read_bytes())
    addr, http = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flyslice.nodeagent", "--node", "gw", "--state-dir", str(tmp_path / "s"),
         "--listen", addr, "--http", http, "--tls-dir", str(gw.cert.parent)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: probe(addr, timeout=1.0, tls=peer) and _status(http), timeout=30)
        assert server_serial(addr, peer) == (first, PeerIdentity("agent/gw", None))
        assert _status(http)["dataPlaneCertificate"]["serial"] == f"{first:x}"

        # The new certificate lands, its key not yet (plain file writes, one at a time): the pair
        # does not match, so the agent keeps presenting the old certificate -- and still answers.
        cert2, key2 = ca.issue("agent gw", node="gw")
        gw.cert.write_bytes(cert2)
        wait_for(lambda: _status(http).get("dataPlaneCertificate", {}).get("failures") == 1, timeout=15)
        doc = _status(http)["dataPlaneCertificate"]
        assert doc["state"] == "RenewalFailing" and "key.pem is not the key of cert.pem" in doc["lastError"]
        assert server_serial(addr, peer) == (first, PeerIdentity("agent/gw", None))

        # The key follows: the set is whole, and new connections present the new certificate.
        gw.key.write_bytes(key2)
        wait_for(lambda: server_serial(addr, peer)[0] == serial_of(cert2), timeout=15)
        assert server_serial(addr, peer)[1] == PeerIdentity("agent/gw", None)
        doc = _status(http)["dataPlaneCertificate"]
        assert doc["state"] == "Valid" and doc["serial"] == f"{serial_of(cert2):x}"
        assert doc["renewals"] == 1 and doc["failures"] == 1
        metrics = _metrics(http)
        assert "flyslice_agent_dataplane_cert_renewals 1.0" in metrics
        assert "flyslice_agent_dataplane_cert_renewal_failures 1.0" in metrics
        assert proc.poll() is None  # not restarted
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    log = out.decode(errors="replace")
    assert proc.returncode == 0, log[-2000:]
    assert "are not loaded" in log and "loaded the replaced data-plane certificate" in log


def test_a_runner_ignores_a_half_written_pair_then_loads_the_whole_one(tmp_path: Path) -> None:
    """The reload path of every runner (``up``'s and a VNF pod's): TlsFiles.reload_if_changed."""
    ca = CertificateAuthority.load_or_create(tmp_path / "pki")
    files = ca.issue_to(tmp_path / "r", "vnf x", slices=["s1"])
    files.server_context()
    first = serial_of(files.cert.read_bytes())
    cert2, key2 = ca.issue("vnf x", slices=["s1"])
    files.key.write_bytes(key2)  # the key first: a mismatched pair on disk
    assert files.reload_if_changed() is False
    loaded = files.loaded()
    assert loaded is not None and loaded.serial_number == first
    assert files.reload_if_changed() is False  # the same bad set: not tried again
    files.cert.write_bytes(cert2)
    assert files.reload_if_changed() is True
    loaded = files.loaded()
    assert loaded is not None and loaded.serial_number == serial_of(cert2)
    assert files.reload_if_changed() is False
    # A context built before the reload is not the one handed out after it.
    assert isinstance(files.server_context(), ssl.SSLContext)
