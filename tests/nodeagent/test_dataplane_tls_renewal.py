"""Scheduled certificate renewal on the ``flyslice up`` data plane (issue 12, item 2): agents renew
their own certificate at 2/3 of its lifetime and give their runners new ones, without a restart; new
connections present the new certificate (later notAfter) and still pass the peer checks. Lifetimes
are shortened to seconds (``CertificateAuthority.leaf_lifetime``); real sockets and processes."""

from __future__ import annotations

import datetime
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from flyslice.nodeagent.agent import Agent
from flyslice.nodeagent.dataplane.tls import (
    CertificateAuthority,
    PeerIdentity,
    Renewer,
    TlsFiles,
    identity_from_peercert,
    renewal_due,
)
from flyslice.nodeagent.dataplane.transport import TcpIngress, parse_address, send_lines
from flyslice.nodeagent.message import Message, new_message
from flyslice.nodeagent.runtime.drivers import LocalProcessDriver
from tests.conftest import wait_for
from tests.nodeagent.conftest import make_spec

MakeAgent = Callable[..., Agent]
SHORT = datetime.timedelta(seconds=9)


def peer(address: str, client: TlsFiles) -> tuple[float, PeerIdentity | None]:
    """Connect as ``client``; the server certificate's notAfter (epoch seconds) and its identity."""
    raw = socket.create_connection(parse_address(address), timeout=5)
    with client.client_context().wrap_socket(raw) as s:
        cert = s.getpeercert()
    assert cert
    return ssl.cert_time_to_seconds(str(cert["notAfter"])), identity_from_peercert(cert)


def test_renewal_is_due_at_two_thirds_of_the_lifetime(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "pki")
    assert ca.leaf_lifetime == datetime.timedelta(days=90)
    files = ca.issue_to(tmp_path / "a", "agent a", node="a")
    due = renewal_due(files.cert.read_bytes()) - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=59) < due <= datetime.timedelta(days=60)
    # Renewal keeps the identity and changes the key.
    key_before = files.key.read_bytes()
    ca.renew(files.cert.parent)
    assert files.key.read_bytes() != key_before
    assert files.key.stat().st_mode & 0o777 == 0o600
    ingress = TcpIngress("127.0.0.1:0", lambda m, t: 0, tls=files)
    try:
        _, ident = peer(ingress.address, files)
    finally:
        ingress.close()
    assert ident == PeerIdentity("agent/a", None)


def test_a_renewed_agent_certificate_is_used_for_new_connections_both_ways(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "pki")
    other = ca.issue_to(tmp_path / "b", "agent b", node="b")  # 90 days: the peer that checks
    got: list[Message] = []

    def deliver(msgs: list[Message], _timeout: float) -> int:
        got.extend(msgs)
        return 0

    other_in = TcpIngress("127.0.0.1:0", deliver, tls=other)
    ca.leaf_lifetime = SHORT
    files = ca.issue_to(tmp_path / "a", "agent a", node="a")
    ingress = TcpIngress("127.0.0.1:0", lambda m, t: 0, tls=files)
    renewer = Renewer(files, lambda: ca.renew(files.cert.parent), retry_s=0.5)
    try:
        first, ident = peer(ingress.address, other)
        assert ident == PeerIdentity("agent/a", None)
        wait_for(lambda: renewer.renewals >= 1, timeout=15)
        # Past the first certificate's notAfter: without renewal no handshake would succeed now.
        wait_for(lambda: time.time() > first + 1, timeout=15)
        second, ident = peer(ingress.address, other)
        assert second > first
        assert ident == PeerIdentity("agent/a", None)  # the server side passes the client's check
        # As a client, the renewed certificate passes the listener's chain and per-message checks.
        send_lines(other_in.address, [new_message("wildfire", "after-renewal", 1)], tls=files)
        wait_for(lambda: [m["topic"] for m in got] == ["after-renewal"], timeout=5)
    finally:
        renewer.close()
        ingress.close()
        other_in.close()


def test_agent_renews_its_own_and_its_runners_certificates_without_a_restart(
    agents: MakeAgent, tmp_path: Path
) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "pki")
    checker = ca.issue_to(tmp_path / "checker", "agent checker", node="checker")  # 90 days
    ca.leaf_lifetime = SHORT
    tls = ca.issue_to(tmp_path / "n1-tls", "agent n1", node="n1")
    agent = agents("n1", tls=tls, tls_issuer=ca, vnfs_die_with_agent=True)
    assert agent.tls_renewer is not None
    agent.converge([make_spec("vb", "broker", flavor="vnf", slice_="wildfire")])

    def runner_address() -> str:
        obs = agent.vnf.observe("vb")
        return obs.address if obs is not None and obs.state == "Running" else ""

    wait_for(lambda: bool(runner_address()), timeout=30)
    runner = runner_address()
    agent_first, _ = peer(agent.address, checker)
    runner_first, ident = peer(runner, checker)
    assert ident == PeerIdentity("slice/wildfire", frozenset({"wildfire"}))
    started = agent.vnf.observe("vb")
    assert started is not None
    pid = started.pid

    # Both outlive their first certificate; new connections present renewed ones.
    wait_for(lambda: time.time() > max(agent_first, runner_first) + 1, timeout=20)
    agent_now, ident = peer(agent.address, checker)
    assert agent_now > agent_first and ident == PeerIdentity("agent/n1", None)
    wait_for(lambda: peer(runner, checker)[0] > runner_first, timeout=10)
    _, ident = peer(runner, checker)
    assert ident == PeerIdentity("slice/wildfire", frozenset({"wildfire"}))
    obs = agent.vnf.observe("vb")
    assert obs is not None and obs.pid == pid and obs.state == "Running"  # not restarted
    assert agent.tls_renewer.renewals >= 1
    # The agent's liveness probes (its renewed client certificate) keep passing the runner's check:
    # a runner whose probes failed for 4 s would be reported Failed.
    assert isinstance(agent.vnf, LocalProcessDriver)
    time.sleep(2 * agent.vnf.unresponsive_after_s)
    obs = agent.vnf.observe("vb")
    assert obs is not None and obs.pid == pid and obs.state == "Running", obs
