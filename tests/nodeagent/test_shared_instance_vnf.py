"""A shared VNF (issue 15, embedded mode): ONE runner process serves the tenants of a shared instance.
Real runner processes, mutual TLS from a real CA (as ``flyslice up`` runs them), real sockets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psutil

from flyslice.nodeagent.agent import Agent
from flyslice.nodeagent.dataplane.tls import CertificateAuthority
from flyslice.nodeagent.message import new_message
from flyslice.nodeagent.runtime.drivers import LocalProcessDriver
from flyslice.nodeagent.spec import InstanceSpec, SharedInstance

from .conftest import make_spec, wait_for
from .test_shared_instance import Sinks, tenant

MakeAgent = Callable[..., Agent]
NAME = "stream_processor@n1#vnf0"


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def specs(s: str, config: dict[str, object] | None = None) -> list[InstanceSpec]:
    return [
        tenant(f"{s}-sp", "stream_processor", NAME, config or {}, (f"{s}-sink",), slice_=s, flavor="vnf"),
        make_spec(f"{s}-sink", "firewall", {"default": "allow"}, slice_=s),
    ]


def test_one_runner_serves_every_tenant_and_tenants_join_and_leave_it_without_a_restart(
    agents: MakeAgent, tmp_path: Path
) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "pki")
    agent = agents("n1", tls=ca.issue_to(tmp_path / "n1-tls", "agent n1", node="n1"), tls_issuer=ca,
                   vnfs_die_with_agent=True)  # fmt: skip
    assert isinstance(agent.vnf, LocalProcessDriver)
    sinks = Sinks(agent)
    status = agent.converge(specs("a"))
    assert status["a-sp"].state == "Running", status["a-sp"]
    pid = agent.vnf.shared_pid(NAME)
    assert pid is not None and agent.vnf.names() == []  # no runner of its own for the tenant
    for i in range(50):
        agent.plane.deliver(new_message("a", "t", {"origin": "a", "n": i}), 5.0)
    wait_for(lambda: len(sinks.got.get("a-sink", [])) == 50)  # the runner's uplink is open now

    # b joins the running process: its certificate now allows both slices, and the runner reconnects
    # its uplink before b's first output -- else the agent would refuse b's messages from it.
    status = agent.converge(specs("a") + specs("b"))
    assert status["b-sp"].state == "Running", status["b-sp"]
    assert agent.vnf.shared_pid(NAME) == pid
    # c's config differs (and is not per tenant): refused, and the process is not touched.
    status = agent.converge(specs("a") + specs("b") + specs("c", {"passthrough": False}))
    assert (
        status["c-sp"].state == "Failed"
        and f"cannot join shared instance {NAME}: config" in status["c-sp"].message
    )
    assert agent.vnf.shared_pid(NAME) == pid
    for i in range(50):
        agent.plane.deliver(new_message("b", "t", {"origin": "b", "n": i}), 5.0)
        agent.plane.deliver(new_message("a", "t", {"origin": "a", "n": 50 + i}), 5.0)
    wait_for(lambda: len(sinks.got.get("b-sink", [])) == 50 and len(sinks.got.get("a-sink", [])) == 100)
    assert agent.ingress.rejected["slice"] == 0
    assert [m["payload"]["n"] for m in sinks.got["a-sink"]] == list(range(100))  # nothing lost for a
    assert {(m["slice"], m["payload"]["origin"]) for m in sinks.got["b-sink"]} == {("b", "b")}
    assert {(m["slice"], m["payload"]["origin"]) for m in sinks.got["a-sink"]} == {("a", "a")}
    # Per-tenant counters and latency, from the runner.
    wait_for(
        lambda: (
            agent.status()["b-sp"].counters.get("in") == 50
            and agent.status()["a-sp"].counters.get("in") == 100
        )
    )
    st = agent.status()
    assert st["a-sp"].shared_instance == NAME and st["a-sp"].latency_ms is not None
    assert agent.shared_instances()[NAME]["tenants"] == ["a-sp", "b-sp"]

    # b leaves: same process; a keeps flowing.
    agent.converge(specs("a"))
    assert agent.vnf.shared_pid(NAME) == pid
    agent.plane.deliver(new_message("a", "t", {"origin": "a", "n": 100}), 5.0)
    wait_for(lambda: len(sinks.got["a-sink"]) == 101)
    wait_for(lambda: agent.shared_instances()[NAME]["tenants"] == ["a-sp"])
    # The last tenant leaves: the runner stops.
    agent.converge([s for s in specs("a") if s.flavor == "fnf"])
    assert agent.vnf.shared_names() == []
    wait_for(lambda: gone(pid))


def test_a_shared_runner_that_dies_is_restarted_once_for_all_its_tenants(agents: MakeAgent) -> None:
    agent = agents("n1")
    driver = agent.vnf
    assert isinstance(driver, LocalProcessDriver)
    agent.converge(specs("a") + specs("b"))
    pid = driver.shared_pid(NAME)
    assert pid is not None
    psutil.Process(pid).kill()
    wait_for(lambda: driver.shared_pid(NAME) not in (None, pid), timeout=20)
    wait_for(lambda: {agent.status()[n].state for n in ("a-sp", "b-sp")} == {"Running"}, timeout=20)
    st = agent.status()
    assert (st["a-sp"].restarts, st["b-sp"].restarts) == (1, 1)
    assert len(driver.shared_names()) == 1
    sinks = Sinks(agent)
    agent.plane.deliver(new_message("b", "t", {"origin": "b"}), 5.0)
    wait_for(lambda: len(sinks.got.get("b-sink", [])) == 1, timeout=20)


def test_a_vnf_tenant_that_becomes_an_fnf_leaves_the_shared_runner(agents: MakeAgent) -> None:
    agent = agents("n1")
    assert isinstance(agent.vnf, LocalProcessDriver)
    agent.converge(specs("a") + specs("b"))
    pid = agent.vnf.shared_pid(NAME)
    fnf_pool = SharedInstance("stream_processor@n1#fnf0")  # the fNF flavour is another pool
    moved = [
        replace(s, flavor="fnf", image="", shared=fnf_pool) if s.name == "b-sp" else s for s in specs("b")
    ]
    status = agent.converge(specs("a") + moved)
    assert status["b-sp"].state == "Running" and "b-sp" in agent.platform.shared[fnf_pool.name].tenants
    assert agent.vnf.shared_pid(NAME) == pid  # a's runner untouched
    assert agent.vnf.tenant_of("b-sp") is None and agent.vnf.tenant_of("a-sp") == NAME


def test_a_restarted_agent_adopts_the_shared_runner_instead_of_starting_another(agents: MakeAgent) -> None:
    agent = agents("n1", state="shared")
    agent.converge(specs("a") + specs("b"))
    assert isinstance(agent.vnf, LocalProcessDriver)
    pid = agent.vnf.shared_pid(NAME)
    agent.stop(stop_vnfs=False)  # an agent upgrade: the runner keeps serving
    again = agents("n1", state="shared")
    assert isinstance(again.vnf, LocalProcessDriver)
    assert again.vnf.shared_pid(NAME) == pid and again.vnf.tenant_of("b-sp") == NAME
    wait_for(lambda: {again.status()[n].state for n in ("a-sp", "b-sp")} == {"Running"}, timeout=20)
    sinks = Sinks(again)
    again.plane.deliver(new_message("b", "t", {"origin": "b"}), 5.0)
    wait_for(lambda: len(sinks.got.get("b-sink", [])) == 1, timeout=20)
    assert again.vnf.shared_pid(NAME) == pid
    assert pid is not None
    again.stop()  # stops the runner too
    wait_for(lambda: gone(pid))
