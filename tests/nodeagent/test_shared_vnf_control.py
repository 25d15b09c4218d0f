"""The runner of a shared VNF *pod* (``--tenants-control``): its agent sets its tenants, and the
certificate for their slices, with control requests on its data-plane port. Real runner processes,
real sockets, mutual TLS from a real CA; the "agent" is a real data-plane listener of the test.

What the cluster-mode pod driver relies on (tests/cluster/test_shared_vnf_pod.py runs it in a real pod):
the runner starts with no tenant, a request attaches and detaches tenants without restarting the
process, each tenant's outputs carry its own slice to its own next hop, the reply reports each tenant
and the digest of the set applied; a request without the pod's token, or (on TLS) from anything but
this node's agent, changes nothing; credentials sent with a joining tenant's set are in use before
that tenant's first output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flyslice.nodeagent.dataplane.tls import CertificateAuthority, TlsFiles
from flyslice.nodeagent.dataplane.transport import TcpIngress, control_request, send_lines
from flyslice.nodeagent.message import Message, new_message
from flyslice.nodeagent.runtime.drivers import shared_base, shared_key
from flyslice.nodeagent.runtime.tenants import CONTROL_TOKEN_ENV, tenants_digest
from flyslice.nodeagent.spec import InstanceSpec

from ..conftest import wait_for
from .test_shared_instance import tenant

NAME = "firewall/vnf/any@n1#0"
TOKEN = "t0k3n-for-the-test"


def firewall(s: str) -> InstanceSpec:
    return tenant(f"{s}-fw", "firewall", NAME, {"default": "allow"}, (f"{s}-sink",), slice_=s, flavor="vnf")


@dataclass
class Uplink:
    """The agent's side: a data-plane listener collecting what the runner sends up."""

    ingress: TcpIngress
    got: list[Message] = field(default_factory=list)

    def of(self, to: str) -> list[Message]:
        return [m for m in list(self.got) if m.get("to") == to]


@dataclass
class Runner:
    popen: subprocess.Popen[bytes]
    address: str
    log: Path


def _uplink(tls: TlsFiles | None) -> Uplink:
    got: list[Message] = []
    lock = threading.Lock()

    def deliver(msgs: list[Message], timeout: float) -> int:
        with lock:
            got.extend(msgs)
        return 0

    up = Uplink(TcpIngress("127.0.0.1:0", deliver, tls=tls), got)
    return up


def _start(tmp: Path, uplink: str, *, token: str = TOKEN, tls_dir: Path | None = None) -> Runner:
    base = shared_base(shared_key(NAME), firewall("a"))
    (tmp / "spec.json").write_text(json.dumps(base.to_dict()))
    cmd = [
        sys.executable, "-I", "-m", "flyslice.nodeagent.runtime.runner", "--spec-file", str(tmp / "spec.json"),
        "--listen", "127.0.0.1:0", "--ready-file", str(tmp / "ready.json"), "--uplink", uplink,
        "--tenants-control", "--parent-pid", str(os.getpid()),
    ]  # fmt: skip
    if tls_dir is not None:
        cmd += ["--tls-dir", str(tls_dir), "--tls-work-dir", str(tmp / "tls-work")]
    log = tmp / "runner.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, CONTROL_TOKEN_ENV: token}
        )
    ready = wait_for(lambda: (tmp / "ready.json").exists() or popen.poll() is not None, 30)
    assert ready and popen.poll() is None, log.read_text()
    return Runner(popen, json.loads((tmp / "ready.json").read_text())["address"], log)


@pytest.fixture
def runners() -> Iterator[list[Runner]]:
    started: list[Runner] = []
    yield started
    for r in started:
        r.popen.terminate()
        try:
            r.popen.wait(10)
        except subprocess.TimeoutExpired:
            r.popen.kill()
            r.popen.wait(5)


def _set(runner: Runner, specs: list[InstanceSpec], generation: int, token: str = TOKEN) -> dict[str, Any]:
    """A plain-TCP agent's tenants request."""
    request = {
        "op": "tenants", "token": token, "generation": generation, "digest": tenants_digest(specs),
        "tenants": [s.to_dict() for s in specs],
    }  # fmt: skip
    return control_request(runner.address, request, 10.0)


def test_tenants_join_and_leave_a_running_runner_and_each_keeps_its_slice(
    tmp_path: Path, runners: list[Runner]
) -> None:
    up = _uplink(None)
    runner = _start(tmp_path, up.ingress.address)
    runners.append(runner)
    status = control_request(runner.address, {"op": "status", "token": TOKEN})
    assert status["tenants"] == {} and status["digest"] == ""  # no tenant until the agent sends them

    a, b = firewall("a"), firewall("b")
    reply = _set(runner, [a], 1)
    assert reply["tenants"]["a-fw"]["state"] == "Running" and reply["digest"] == tenants_digest([a])
    reply = _set(runner, [a, b], 2)
    assert {n: t["state"] for n, t in reply["tenants"].items()} == {"a-fw": "Running", "b-fw": "Running"}
    assert reply["builds"] == {NAME: 1}  # b joined the NF object a runs in: nothing was rebuilt

    send_lines(runner.address, [{**new_message(s, "t", {"n": i, "origin": s}), "to": f"{s}-fw"}
                                for i in range(20) for s in ("a", "b")])  # fmt: skip
    wait_for(lambda: len(up.of("a-sink")) == 20 and len(up.of("b-sink")) == 20)
    assert {(m["slice"], m["payload"]["origin"]) for m in up.of("a-sink")} == {("a", "a")}
    assert {(m["slice"], m["payload"]["origin"]) for m in up.of("b-sink")} == {("b", "b")}
    # A message naming a's tenant but labelled with b's slice is dropped and counted for a-fw.
    send_lines(runner.address, [{**new_message("b", "t", {"n": 99}), "to": "a-fw"}])
    status = wait_for(
        lambda: (
            (s := control_request(runner.address, {"op": "status", "token": TOKEN}))["tenants"]["a-fw"][
                "counters"
            ].get("rejected")
            and s
        )
    )
    assert (
        status["tenants"]["a-fw"]["counters"]["in"] == 20
        and status["tenants"]["b-fw"]["counters"]["in"] == 20
    )

    # b leaves; a goes on in the same process and the same NF object.
    reply = _set(runner, [a], 3)
    assert set(reply["tenants"]) == {"a-fw"} and reply["builds"] == {NAME: 1} and reply["generation"] == 3
    assert runner.popen.poll() is None

    # Without the pod's token nothing changes (a plain-TCP pod is reachable by anything on the network).
    refused = _set(runner, [a, b], 4, token="guess")
    assert refused == {"error": "wrong or missing control token"}
    assert set(control_request(runner.address, {"op": "status", "token": TOKEN})["tenants"]) == {"a-fw"}


def test_on_tls_only_the_nodes_agent_sets_tenants_and_a_new_slice_comes_with_its_certificate(
    tmp_path: Path, runners: list[Runner]
) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "pki")
    agent_tls = ca.issue_to(tmp_path / "agent", "agent n1", node="n1")
    other_agent = ca.issue_to(tmp_path / "agent-n2", "agent n2", node="n2")
    slice_peer = ca.issue_to(tmp_path / "nf-a", "vnf a", slices=["a"])
    # The pod starts with the certificate its Secret holds: for the first tenant's slice only.
    ca.issue_to(tmp_path / "secret", "vnf shared", slices=["a"])
    up = _uplink(agent_tls)  # checks that every message's slice is one the runner's certificate allows
    runner = _start(tmp_path, up.ingress.address, tls_dir=tmp_path / "secret")
    runners.append(runner)
    a, b = firewall("a"), firewall("b")

    def ask(files: TlsFiles, specs: list[InstanceSpec], gen: int, **kw: Any) -> dict[str, Any]:
        request = {"op": "tenants", "token": TOKEN, "generation": gen, "digest": tenants_digest(specs),
                   "tenants": [s.to_dict() for s in specs], **kw}  # fmt: skip
        return control_request(runner.address, request, 10.0, tls=files)

    for peer, who in ((other_agent, "agent/n2"), (slice_peer, "slice/a")):
        assert ask(peer, [a], 1) == {
            "error": f"{who} is not agent/n1, the only peer that may set this runner's tenants"
        }
    assert ask(agent_tls, [a], 1)["tenants"]["a-fw"]["state"] == "Running"

    # b joins with a certificate for both slices: loaded before b's first output, which the agent's
    # listener accepts (without it, b's outputs would be refused as "slice").
    cert, key = ca.issue("vnf shared", slices=["a", "b"])
    creds = {"ca": ca.cert_pem.decode(), "cert": cert.decode(), "key": key.decode()}
    assert ask(agent_tls, [a, b], 2, tls=creds)["tenants"]["b-fw"]["state"] == "Running"
    send_lines(runner.address, [{**new_message(s, "t", {"origin": s}), "to": f"{s}-fw"} for s in ("a", "b")],
               tls=agent_tls)  # fmt: skip
    wait_for(lambda: len(up.of("a-sink")) == 1 and len(up.of("b-sink")) == 1)
    assert up.ingress.rejected["slice"] == 0
    assert (tmp_path / "tls-work" / "cert.pem").read_bytes() == cert  # the work copy, not the Secret
    # A bad key is refused and changes nothing: the tenants and the certificate in use stay.
    bad = {**creds, "key": ca.issue("x", slices=["a"])[1].decode()}
    assert "credentials not installed" in ask(agent_tls, [a], 3, tls=bad)["error"]
    assert set(ask(agent_tls, [a, b], 4)["tenants"]) == {"a-fw", "b-fw"}
