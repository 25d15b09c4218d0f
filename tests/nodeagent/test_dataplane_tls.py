"""Mutual TLS on the data plane, on real sockets: only components with a certificate from the
installation's CA get a message in, and each only for the slices its certificate names. Everything
else is dropped and counted by reason (``flyslice_dataplane_rejected_total``)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flyslice.nodeagent.dataplane.tls import CertificateAuthority, TlsFiles
from flyslice.nodeagent.dataplane.transport import REJECTED, TcpIngress, TcpSender, probe, send_lines
from flyslice.nodeagent.message import Message, new_message
from tests.conftest import wait_for


class Listener:
    def __init__(self, tls: TlsFiles | None) -> None:
        self.got: list[Message] = []
        self.ingress = TcpIngress("127.0.0.1:0", self._deliver, tls=tls)

    def _deliver(self, msgs: list[Message], _timeout: float) -> int:
        self.got.extend(msgs)
        return 0

    def topics(self) -> list[str]:
        return [m["topic"] for m in self.got]


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "pki")


@pytest.fixture
def agent_listener(ca: CertificateAuthority, tmp_path: Path) -> Iterator[Listener]:
    lis = Listener(ca.issue_to(tmp_path / "agent-a", "agent a", node="a"))
    yield lis
    lis.ingress.close()


def _reject_delta(before: dict[str, int], reason: str) -> int:
    return REJECTED.snapshot()[reason] - before[reason]


def test_a_component_of_the_slice_gets_in_and_the_agent_for_any_slice(
    ca: CertificateAuthority, agent_listener: Listener, tmp_path: Path
) -> None:
    runner = ca.issue_to(tmp_path / "r", "runner wf-db", slices=["wildfire"])
    agent_b = ca.issue_to(tmp_path / "b", "agent b", node="b")
    addr = agent_listener.ingress.address
    send_lines(addr, [new_message("wildfire", "from-runner", 1)], tls=runner)
    send_lines(
        addr, [new_message("ddos", "from-agent", 2), new_message("wildfire", "from-agent", 3)], tls=agent_b
    )
    wait_for(lambda: len(agent_listener.got) == 3, timeout=5)
    assert sorted(agent_listener.topics()) == ["from-agent", "from-agent", "from-runner"]
    assert agent_listener.ingress.rejected == dict.fromkeys(agent_listener.ingress.rejected, 0)
    assert probe(addr, timeout=2.0, tls=runner)  # liveness probes travel the same authenticated path


def test_plain_tcp_forgery_is_dropped_and_counted(agent_listener: Listener) -> None:
    before = REJECTED.snapshot()
    forged = {"slice": "wildfire", "to": "wildfire-db", "topic": "forged", "payload": 1}
    send_lines(agent_listener.ingress.address, [forged])  # no TLS: what any local process can do
    wait_for(lambda: agent_listener.ingress.rejected["plaintext"] == 1, timeout=5)
    assert agent_listener.got == []
    assert _reject_delta(before, "plaintext") == 1
    # A plain-TCP prober learns nothing either.
    assert not probe(agent_listener.ingress.address, timeout=1.0)


def test_another_slices_component_cannot_inject_into_this_slice(
    ca: CertificateAuthority, agent_listener: Listener, tmp_path: Path
) -> None:
    other = ca.issue_to(tmp_path / "ddos", "runner ddos-fw", slices=["ddos"])
    before = REJECTED.snapshot()
    # Same connection, same batch: the allowed message passes, the forged one does not.
    send_lines(
        agent_listener.ingress.address,
        [
            {"slice": "wildfire", "to": "wildfire-db", "topic": "forged", "payload": 1},
            new_message("ddos", "own-slice", 2),
        ],
        tls=other,
    )
    wait_for(lambda: agent_listener.topics() == ["own-slice"], timeout=5)
    wait_for(lambda: agent_listener.ingress.rejected["slice"] == 1, timeout=5)
    assert _reject_delta(before, "slice") == 1
    assert "slice/ddos may not send for slice 'wildfire'" in agent_listener.ingress.last_error


def test_a_certificate_from_another_ca_is_refused(agent_listener: Listener, tmp_path: Path) -> None:
    foreign = CertificateAuthority.load_or_create(tmp_path / "foreign-pki", name="someone else's CA")
    creds = foreign.issue_to(tmp_path / "f", "agent x", node="x")
    # The forger trusts our CA (ca.pem is public), so its side of the handshake completes; ours refuses.
    creds.ca.write_bytes(Path(agent_listener.ingress.tls.ca).read_bytes())  # type: ignore[union-attr]
    before = REJECTED.snapshot()
    # the listener may cut the connection while we write: that is the point
    with contextlib.suppress(ssl.SSLError, OSError):
        send_lines(agent_listener.ingress.address, [new_message("wildfire", "forged", 1)], tls=creds)
    wait_for(lambda: agent_listener.ingress.rejected["untrusted_certificate"] == 1, timeout=5)
    time.sleep(0.2)
    assert agent_listener.got == []
    assert _reject_delta(before, "untrusted_certificate") == 1


def test_tls_without_a_client_certificate_is_refused(agent_listener: Listener) -> None:
    tls = agent_listener.ingress.tls
    assert tls is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(tls.ca))
    host, port = agent_listener.ingress.address.rsplit(":", 1)
    try:
        with ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=5)) as s:
            s.sendall(b'{"slice": "wildfire", "topic": "forged"}\n')
            s.recv(1)
    except (ssl.SSLError, OSError):
        pass
    wait_for(lambda: agent_listener.ingress.rejected["no_certificate"] == 1, timeout=5)
    assert agent_listener.got == []


def test_a_ca_certificate_without_a_flyslice_identity_is_refused(
    ca: CertificateAuthority, agent_listener: Listener, tmp_path: Path
) -> None:
    creds = ca.issue_to(tmp_path / "anon", "anon", slices=["x"])
    # Re-issue by hand without the URI: the CA's own issue() refuses to make such a certificate.
    with pytest.raises(ValueError, match="needs a node or at least one slice"):
        ca.issue("anon")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = serialization.load_pem_private_key(creds.key.read_bytes(), password=None)
    old = x509.load_pem_x509_certificate(creds.cert.read_bytes())
    bare = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anon")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(old.not_valid_before_utc)
        .not_valid_after(old.not_valid_after_utc)
        .sign(ca.key, hashes.SHA256())
    )
    creds.cert.write_bytes(bare.public_bytes(serialization.Encoding.PEM))
    fresh = TlsFiles.in_dir(tmp_path / "anon")
    with contextlib.suppress(ssl.SSLError, OSError):
        send_lines(agent_listener.ingress.address, [new_message("x", "forged", 1)], tls=fresh)
    wait_for(lambda: agent_listener.ingress.rejected["no_identity"] == 1, timeout=5)
    assert agent_listener.got == []


def test_sender_over_tls_carries_a_stream_in_order(
    ca: CertificateAuthority, agent_listener: Listener, tmp_path: Path
) -> None:
    runner = ca.issue_to(tmp_path / "r", "runner", slices=["wildfire"])
    sender = TcpSender(agent_listener.ingress.address, tls=runner)
    try:
        sender.send_many([new_message("wildfire", f"t{i}", i) for i in range(2000)])
        wait_for(lambda: len(agent_listener.got) == 2000, timeout=10)
    finally:
        sender.close()
    assert agent_listener.topics() == [f"t{i}" for i in range(2000)]  # in order, none lost


def test_leaf_key_is_private_and_ca_is_reused(ca: CertificateAuthority, tmp_path: Path) -> None:
    files = ca.issue_to(tmp_path / "x", "agent x", node="x")
    assert files.key.stat().st_mode & 0o777 == 0o600
    assert (ca.directory / "ca.key").stat().st_mode & 0o777 == 0o600
    again = CertificateAuthority.load_or_create(ca.directory)
    assert again.cert_pem == ca.cert_pem  # a restart keeps the CA: earlier leaves stay valid
