"""A next hop that moves to another node while the node it was on is dead (issue 14 (a)): the upstream
agent sends to the new node, closes its sender to the dead one, and what that sender still held is
routed again to where the hop is now.

Real agents over real sockets: the dead node's agent is a separate process killed with SIGKILL, and
its address then black-holes connections (a listener whose accept queue is full: SYNs go unanswered,
connects time out -- what a powered-off node's address does), as in tests/cluster/test_faults_k3s.py.
The upstream and the new node's agents run in this process so their routing can be inspected.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flyslice.nodeagent.agent import Agent
from flyslice.nodeagent.dataplane.chains import SENDER_GRACE_S
from flyslice.nodeagent.dataplane.transport import parse_address, probe
from flyslice.nodeagent.message import new_message
from flyslice.nodeagent.spec import NextHop
from tests.conftest import free_port, wait_for

from .conftest import Sink, make_spec

MakeAgent = Callable[..., Agent]


@pytest.fixture
def dead_node(tmp_path: Path) -> Iterator[Callable[[], tuple[str, Callable[[], None]]]]:
    """``start()`` runs an agent process for node ``a`` (instance ``x``, the last NF of its path) and
    returns its address and ``kill()``: SIGKILL, then a black hole on the same address."""
    procs: list[subprocess.Popen[bytes]] = []
    holes: list[socket.socket] = []

    def start() -> tuple[str, Callable[[], None]]:
        address = f"127.0.0.1:{free_port()}"
        (tmp_path / "a.json").write_text(json.dumps([make_spec("x", "broker", node="a").to_dict()]))
        cmd = [
            sys.executable, "-m", "flyslice.nodeagent", "--node", "a", "--state-dir", str(tmp_path / "a"),
            "--desired-file", str(tmp_path / "a.json"), "--listen", address, "--interval", "0.2",
            "--insecure-plaintext",  # the routing is under test, not TLS (same TcpSender either way)
        ]  # fmt: skip
        with open(tmp_path / "a.log", "ab") as log:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=log))
        wait_for(lambda: probe(address, 0.5), timeout=30)

        def kill() -> None:
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(10)
            holes.extend(_black_hole(address))

        return address, kill

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    for s in holes:
        s.close()


def _black_hole(address: str) -> list[socket.socket]:
    """A listener on ``address`` that never accepts, its accept queue filled: further connects time out."""
    host, port = parse_address(address)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((host, port))
        fillers.append(s)
    time.sleep(0.2)
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        raise AssertionError(f"{address} still accepts connections: not a black hole")
    except TimeoutError:
        pass
    return [listener, *fillers]


def _connected_and_idle(agent: Agent, address: str) -> bool:
    sender = agent.plane.senders.get(address)
    return sender is not None and bool(sender.idle()) and bool(getattr(sender, "connected", False))


def _until_disconnected(agent: Agent, address: str) -> None:
    """Send single messages (payload -2) until the sender to ``address`` notices its peer is gone: the
    first write after the peer died is accepted by this kernel and lost (TCP cannot tell yet), the next
    fails and the sender reconnects -- into the black hole. From then on the sender holds what it gets."""
    deadline = time.monotonic() + 10
    while agent.plane.senders[address].connected:
        assert time.monotonic() < deadline, f"the sender to {address} never noticed its peer died"
        agent.plane.deliver(new_message("s1", "t", -2))
        time.sleep(0.1)


def _received(sink: Sink) -> list[int]:
    """The payloads that reached the sink, sorted, without the probes of ``_until_disconnected``."""
    return sorted(p for p in sink.payloads() if p >= 0)


def _upstream(gw: Agent, node: str) -> None:
    gw.converge([make_spec("fw", "firewall", {"default": "allow"}, ["x"], node="gw", hop_node=node)])


def test_hop_moved_off_a_killed_node_reaches_the_new_node_with_the_backlog(
    agents: MakeAgent, dead_node: Callable[[], tuple[str, Callable[[], None]]]
) -> None:
    a_address, kill_a = dead_node()
    gw, b = agents("gw"), agents("b")
    gw.plane.peers.update({"a": a_address, "b": b.address})
    sink = Sink()
    b.on_sink(sink)
    _upstream(gw, "a")
    gw.plane.deliver(new_message("s1", "t", -1))
    wait_for(lambda: _connected_and_idle(gw, a_address))
    kill_a()
    _until_disconnected(gw, a_address)
    # Sent while node a is dead: the upstream's sender to a holds them (every new connection times out).
    for i in range(50):
        assert gw.plane.deliver(new_message("s1", "t", i))
    old_sender = gw.plane.senders[a_address]
    wait_for(lambda: old_sender.accepted - old_sender.sent >= 50)  # held, not handed to any kernel
    # The control plane places x on node b and points the upstream's next hop there.
    b.converge([make_spec("x", "broker", node="b")])
    _upstream(gw, "b")
    for i in range(50, 100):
        assert gw.plane.deliver(new_message("s1", "t", i))
    # Everything accepted while a was dead or after the move reaches x on b: the backlog too.
    wait_for(lambda: _received(sink) == list(range(100)), timeout=SENDER_GRACE_S + 10)
    assert a_address not in gw.plane.senders  # no sender redials the dead node any more
    assert gw.plane.senders_retired == 1
    assert old_sender.queue.get_batch(1, 0) == []  # closed and emptied (its thread has ended)
    assert gw.plane.unroutable == 0 and gw.plane.forward_dropped == 0


def test_a_peer_agent_that_comes_back_at_a_new_address_gets_the_backlog(
    agents: MakeAgent, dead_node: Callable[[], tuple[str, Callable[[], None]]]
) -> None:
    """The same node, its agent restarted at another address (what ``refresh_peers`` learns from its
    EdgeNode): the sender to the old address is retired and its backlog goes to the new one."""
    a_address, kill_a = dead_node()
    gw = agents("gw")
    gw.plane.peers["a"] = a_address
    _upstream(gw, "a")
    gw.plane.deliver(new_message("s1", "t", -1))
    wait_for(lambda: _connected_and_idle(gw, a_address))
    kill_a()
    _until_disconnected(gw, a_address)
    for i in range(20):
        gw.plane.deliver(new_message("s1", "t", i))
    again = agents("a", state="a-again")
    sink = Sink()
    again.on_sink(sink)
    again.converge([make_spec("x", "broker", node="a")])
    gw.plane.peers["a"] = again.address  # what refresh_peers does with the new agentAddress
    wait_for(lambda: _received(sink) == list(range(20)), timeout=SENDER_GRACE_S + 10)
    assert a_address not in gw.plane.senders


def test_a_sender_in_use_is_kept_and_an_instance_reinstalled_in_place_keeps_its_sender(
    agents: MakeAgent,
) -> None:
    """Retiring must not touch the senders still routed to, nor one whose only hop disappears for a
    moment (an instance reinstalled: its hops are forgotten, then set again)."""
    gw, b = agents("gw"), agents("b")
    gw.plane.peers["b"] = b.address
    sink = Sink()
    b.on_sink(sink)
    b.converge([make_spec("x", "broker", node="b")])
    _upstream(gw, "b")
    for i in range(10):
        gw.plane.deliver(new_message("s1", "t", i))
    wait_for(lambda: len(sink.messages) == 10)
    sender = gw.plane.senders[b.address]
    gw.plane.set_topology("fw", "s1", ())  # the hop to x is gone for a moment...
    assert gw.plane.retire_unused_senders() == []  # ...but not for the grace period yet
    gw.plane.set_topology("fw", "s1", (NextHop("x", "b"),))
    time.sleep(SENDER_GRACE_S + 1.0)  # several watchdog sweeps
    assert gw.plane.senders[b.address] is sender and gw.plane.senders_retired == 0
    for i in range(10, 20):
        gw.plane.deliver(new_message("s1", "t", i))
    wait_for(lambda: len(sink.messages) == 20)
