"""Runtime faults the agent must see and say: a frozen VNF (liveness probes through its data port),
a crashed one, restart counts and events; NF data kept on disk across restarts."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from flyslice.nodeagent.agent import Agent, AgentConfig
from flyslice.nodeagent.dataplane.chains import DataPlane
from flyslice.nodeagent.dataplane.transport import TcpIngress, probe
from flyslice.nodeagent.kube.pod_driver import DATA_MOUNT, pod_manifest
from flyslice.nodeagent.kube.source import status_body
from flyslice.nodeagent.message import new_message
from flyslice.nodeagent.runtime.drivers import LocalProcessDriver
from flyslice.nodeagent.runtime.modules import ModuleLoader
from flyslice.nodeagent.runtime.platform import ModularPlatform
from flyslice.nodeagent.spec import InstanceSpec, InstanceStatus
from flyslice.nodeagent.telemetry import AgentCollector

from .conftest import make_spec, wait_for


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def fast_agent(tmp_path: Path) -> Iterator[Agent]:
    """An agent whose VNF driver probes every 0.2 s and gives up on a runner silent for 1.5 s."""
    state = tmp_path / "agent"
    driver = LocalProcessDriver(state, state / "agent.addr", probe_interval_s=0.2, unresponsive_after_s=1.5)
    agent = Agent(
        AgentConfig(node="n1", state_dir=state, resync_s=0.2, retry_initial_s=0.2), vnf_driver=driver
    )
    pids: list[int] = []
    agent.pids = pids  # type: ignore[attr-defined]  # runners the test touched, killed at the end
    try:
        yield agent
    finally:
        agent.stop()
        for pid in pids:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def vnf(name: str = "sp") -> InstanceSpec:
    return make_spec(name, "stream_processor", {}, flavor="vnf")


def running_pid(agent: Agent, name: str) -> int:
    def pid() -> int | None:
        obs = agent.vnf.observe(name)
        st = agent.status().get(name)
        return obs.pid if obs and st and st.state == "Running" else None

    result: int = wait_for(pid, timeout=15)
    return result


# -- the probe -------------------------------------------------------------------------------------


def test_a_listener_answers_probes_without_counting_them_as_messages_or_errors() -> None:
    got: list[object] = []
    ingress = TcpIngress("127.0.0.1:0", lambda msgs, _t: got.extend(msgs) or 0)
    try:
        assert probe(ingress.address, timeout=2.0)
        assert (ingress.received, ingress.errors, got) == (0, 0, [])
    finally:
        ingress.close()


def test_a_listener_that_accepts_but_never_answers_fails_the_probe_within_its_timeout() -> None:
    # What a SIGSTOPped process looks like from outside: the kernel completes the handshake.
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        host, port = mute.getsockname()
        t0 = time.monotonic()
        assert not probe(f"{host}:{port}", timeout=0.5)
        assert time.monotonic() - t0 < 1.5
    assert not probe(f"{host}:{port}", timeout=0.5)  # nothing listening at all


# -- frozen and crashed VNFs -------------------------------------------------------------------------


def test_a_frozen_vnf_is_detected_restarted_counted_and_reported(
    fast_agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    agent = fast_agent
    agent.converge([vnf()])
    pid = running_pid(agent, "sp")
    agent.pids.append(pid)  # type: ignore[attr-defined]
    time.sleep(2.5)  # longer than the 1.5 s limit: a healthy runner answers and is left alone
    assert agent.vnf.observe("sp").pid == pid  # type: ignore[union-attr]
    assert agent.status()["sp"].restarts == 0 and not agent.events_since(0)

    caplog.set_level(logging.WARNING, logger="flyslice.nodeagent")
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)  # the pid still exists; only a probe can tell
    new_pid = wait_for(lambda: (p := running_pid(agent, "sp")) != pid and p, timeout=15)
    assert time.monotonic() - t0 < 8  # "within a few seconds" with these settings (1.5 s limit)
    agent.pids.append(new_pid)  # type: ignore[attr-defined]
    wait_for(lambda: _gone(pid), timeout=5)  # the frozen one was killed, not left behind
    st = agent.status()["sp"]
    assert (st.state, st.restarts) == ("Running", 1)
    failed, restarted = [e for e in agent.events_since(0) if e.instance == "sp"]
    assert failed.reason == "Failed" and "liveness probe" in failed.message and str(pid) in failed.message
    assert restarted.reason == "Restarted" and "restart 1" in restarted.message
    assert "liveness probe" in restarted.message  # the restart says why
    assert any("Restarted" in r.getMessage() and "sp" in r.getMessage() for r in caplog.records)


def test_a_crashed_vnf_is_restarted_with_an_event_naming_the_exit(fast_agent: Agent) -> None:
    agent = fast_agent
    agent.converge([vnf()])
    pid = running_pid(agent, "sp")
    os.kill(pid, signal.SIGKILL)
    new_pid = wait_for(lambda: (p := running_pid(agent, "sp")) != pid and p, timeout=15)
    agent.pids.append(new_pid)  # type: ignore[attr-defined]
    assert agent.status()["sp"].restarts == 1
    (fam,) = [
        m for m in AgentCollector("n1", agent._metric_rows, dict).collect() if m.name.endswith("restarts")
    ]
    assert [(s.name, s.labels["instance"], s.value) for s in fam.samples] == [
        ("flyslice_instance_restarts_total", "sp", 1.0)
    ]
    events = [str(e) for e in agent.events_since(0)]
    assert any("Failed" in e and "runner exited (code -9)" in e for e in events), events
    assert any("Restarted" in e and "restart 1" in e for e in events), events
    agent.converge([])  # a removal is an event too, and it forgets the count
    assert str(agent.events_since(0)[-1]) == (
        "instance sp: Removed: no longer in this node's desired state; stopped"
    )
    assert "sp" not in agent.restarts


def test_a_failed_fnf_reinstall_is_a_counted_restart(tmp_path: Path) -> None:
    module = tmp_path / "crashy.py"
    module.write_text(
        "from flyslice.nodeagent.sdk import NetworkFunction\n"
        "class NF(NetworkFunction):\n"
        "    def process(self, msg):\n"
        "        raise RuntimeError('boom')\n"
    )
    from flyslice.nodeagent.runtime.modules import module_digest

    spec = make_spec("c", f"file:{module}", digest=module_digest(f"file:{module}"))
    agent = Agent(
        AgentConfig(
            node="n1",
            state_dir=tmp_path / "a",
            resync_s=0.2,
            retry_initial_s=0.2,
            error_limit=1,
            module_dirs=(tmp_path,),  # file: modules are confined; this one is written here
        )
    )
    try:
        agent.converge([spec])
        agent.plane.deliver(new_message("s1", "t", {}))
        wait_for(lambda: agent.status()["c"].restarts >= 1, timeout=10)
        reasons = [(e.reason, e.message) for e in agent.events_since(0)]
        assert reasons[0][0] == "Failed" and "boom" in reasons[0][1]
        assert reasons[1][0] == "Restarted" and reasons[1][1].startswith("fNF restarted (restart 1)")
    finally:
        agent.stop()


def test_restart_counts_reach_the_nfinstance_status() -> None:
    spec = vnf()
    body = status_body(spec, InstanceStatus(spec.name, "Running", restarts=3))
    assert body["restarts"] == 3


# -- NF data on disk ---------------------------------------------------------------------------------


def storage_spec(config: dict[str, object] | None = None) -> InstanceSpec:
    return make_spec("db", "storage", config or {"field": "t", "commitMs": 10})


def test_storage_keeps_its_rows_in_the_instance_data_dir_across_a_reinstall(tmp_path: Path) -> None:
    plane = DataPlane("n1")
    platform = ModularPlatform(plane, ModuleLoader(), data_root=tmp_path / "data")
    try:
        spec = storage_spec()
        platform.install(spec)
        platform.start("db")
        plane.deliver_many([new_message("s1", "r", {"t": i}) for i in range(5)], 1.0)
        db = tmp_path / "data" / "default" / "db" / "storage.sqlite"
        wait_for(lambda: db.exists() and _count(db) == 5, timeout=5)
        platform.uninstall("db")  # a crash or a flavour switch: the next copy opens the same file
        platform.install(spec)
        platform.start("db")
        plane.deliver(new_message("s1", "r", {"t": 9}))
        wait_for(lambda: _count(db) == 6, timeout=5)
    finally:
        plane.stop()


def test_storage_without_a_data_dir_says_its_readings_are_not_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plane = DataPlane("n1")
    platform = ModularPlatform(plane, ModuleLoader())
    try:
        caplog.set_level(logging.WARNING)
        platform.install(storage_spec())
        assert platform.instances["db"].nf.path == ":memory:"  # type: ignore[attr-defined]
        assert any("kept in memory only" in r.getMessage() for r in caplog.records)
    finally:
        plane.stop()


def test_storage_relative_path_is_inside_the_data_dir_and_names_cannot_escape_it(tmp_path: Path) -> None:
    plane = DataPlane("n1")
    platform = ModularPlatform(plane, ModuleLoader(), data_root=tmp_path / "data")
    try:
        platform.install(storage_spec({"path": "readings.db"}))
        expected = tmp_path / "data" / "default" / "db" / "readings.db"
        assert platform.instances["db"].nf.path == str(expected)  # type: ignore[attr-defined]
        from dataclasses import replace

        sneaky = replace(storage_spec(), name="..")
        platform.install(sneaky)
        assert platform.instances[".."].ctx.data_dir is None
    finally:
        plane.stop()


def test_vnf_runners_get_the_agents_data_root_and_pods_a_data_volume(tmp_path: Path) -> None:
    driver = LocalProcessDriver(tmp_path, tmp_path / "agent.addr")
    try:
        driver.ensure(storage_spec())
        db = tmp_path / "data" / "default" / "db" / "storage.sqlite"
        wait_for(lambda: db.exists(), timeout=10)  # the runner opened its database there
    finally:
        driver.remove_all()
        driver.close()
    pod = pod_manifest(vnf(), node_name="n", namespace="ns", agent_address="10.0.0.1:7100")
    (c,) = pod["spec"]["containers"]
    assert {"name": "FLYSLICE_DATA_DIR", "value": DATA_MOUNT} in c["env"]
    assert c["volumeMounts"] == [{"name": "data", "mountPath": DATA_MOUNT}]
    assert pod["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]


def _count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT count(*) FROM series").fetchone()
    return int(n)


# -- a runner tied to its parent -------------------------------------------------------------------


def test_a_runner_started_to_die_with_its_parent_stops_when_the_parent_is_killed(tmp_path: Path) -> None:
    import subprocess
    import sys

    parent_code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from flyslice.nodeagent.runtime.drivers import LocalProcessDriver\n"
        "from tests.nodeagent.conftest import make_spec\n"
        f"d = LocalProcessDriver(Path({str(tmp_path)!r}), Path({str(tmp_path / 'agent.addr')!r}),"
        " die_with_parent=True)\n"
        "d.ensure(make_spec('sp', 'stream_processor', {}, flavor='vnf'))\n"
        "print(d.wait_ready('sp').pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    runner_pid = 0
    try:
        assert parent.stdout is not None
        runner_pid = int(parent.stdout.readline())
        assert psutil.Process(runner_pid).ppid() == parent.pid
        parent.kill()  # SIGKILL: no clean-up code of the parent runs
        parent.wait(5)
        t0 = time.monotonic()
        wait_for(lambda: _gone(runner_pid), timeout=10)
        assert time.monotonic() - t0 < 6  # noticed within a second, then at most a 3 s drain
    finally:
        parent.kill()
        if runner_pid and not _gone(runner_pid):
            os.kill(runner_pid, signal.SIGKILL)


def test_silence_counts_only_when_the_latest_probe_went_unanswered(tmp_path: Path) -> None:
    """A prober starved of CPU (a loaded host) sends no probe; that must not restart a healthy runner."""
    from flyslice.nodeagent.runtime.drivers import _Proc

    driver = LocalProcessDriver(tmp_path, tmp_path / "agent.addr", unresponsive_after_s=1.0)
    try:
        proc = _Proc("f", tmp_path, time.time(), pid=1, last_answer=time.monotonic() - 10)
        assert driver._silent_for(proc) is None and not proc.unresponsive
        proc.probe_failing = True
        silent = driver._silent_for(proc)
        assert silent is not None and silent >= 10 and proc.unresponsive
    finally:
        driver.close()
