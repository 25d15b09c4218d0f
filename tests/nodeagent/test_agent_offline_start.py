"""A cluster agent that starts while the API server is out of reach keeps the certificate it has.

The agent asks for a fresh data-plane certificate at every start; a gateway restarted offline could
not, and exited (found on the real cluster: tests/cluster/test_faults_k3s.py, scenario 4). Now it
uses the certificate of its earlier start when that one is still usable, and never when the signer
refused it a new one.
"""

from __future__ import annotations

from pathlib import Path

from flyslice.nodeagent.dataplane.tls import CertificateAuthority, write_tls_dir
from flyslice.nodeagent.kube.agent import kept_node_tls
from flyslice.nodeagent.kube.dataplane_certs import CertificateUnavailable

UNREACHABLE = ConnectionError("[Errno 101] Network is unreachable")


def test_a_usable_certificate_from_an_earlier_start_is_kept_when_the_api_is_unreachable(
    tmp_path: Path,
) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "pki")
    issued = ca.issue_to(tmp_path / "tls", "agent gw-2", node="gw-2")
    kept = kept_node_tls(tmp_path / "tls", UNREACHABLE)
    assert kept is not None and kept.cert == issued.cert
    kept.server_context()  # it serves
    # The operator not answering in time is no refusal either.
    assert (
        kept_node_tls(tmp_path / "tls", CertificateUnavailable("CSR node-gw-2 not signed within 60s"))
        is not None
    )


def test_a_refused_missing_or_broken_certificate_is_not_kept(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "pki")
    ca.issue_to(tmp_path / "tls", "agent gw-2", node="gw-2")
    assert (
        kept_node_tls(tmp_path / "tls", CertificateUnavailable("CSR node-gw-2-x denied: not this node"))
        is None
    )
    assert kept_node_tls(tmp_path / "tls", CertificateUnavailable("CSR node-gw-2-x failed: signer")) is None
    assert kept_node_tls(tmp_path / "nothing", UNREACHABLE) is None
    cert, _key = ca.issue("agent gw-2", node="gw-2")
    _cert, other_key = ca.issue("agent gw-2", node="gw-2")
    write_tls_dir(tmp_path / "mixed", ca.cert_pem, cert, other_key)  # a key that is not the certificate's
    assert kept_node_tls(tmp_path / "mixed", UNREACHABLE) is None
