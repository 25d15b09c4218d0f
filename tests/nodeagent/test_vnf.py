"""VNFs through the local-process driver: the same NF code in its own process, adopted across agent
restarts, restarted when it dies, and an agent killed with -9 mid-update that converges on restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from flyslice.nodeagent.agent import Agent
from flyslice.nodeagent.message import new_message

from .conftest import Sink, free_port, make_spec, wait_for

MakeAgent = Callable[..., Agent]


def runners(state_dir: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "flyslice.nodeagent.runtime.runner" in cmd and any(str(state_dir) in c for c in cmd):
            out.append(p)
    return out


def vnf_chain() -> list[Any]:
    return [
        make_spec("fw", "firewall", {"default": "allow"}, ["sp"]),
        make_spec(
            "sp",
            "stream_processor",
            {"alarm": {"field": "t", "above": 5, "topic": "alarm"}},
            ["out"],
            flavor="vnf",
        ),
        make_spec("out", "broker"),
    ]


def test_vnf_runs_the_same_nf_code_in_its_own_process(agents: MakeAgent, tmp_path: Path) -> None:
    agent = agents()
    sink = Sink()
    agent.on_sink(sink)
    agent.converge(vnf_chain())
    wait_for(lambda: agent.status()["sp"].state == "Running" and agent.status()["sp"].address)
    obs = agent.vnf.observe("sp")
    assert obs is not None and obs.pid != os.getpid()
    for t in (1, 9):
        agent.plane.deliver(new_message("s1", "temp", {"t": t}))
    wait_for(lambda: len(sink.messages) == 3)
    assert sorted(m["topic"] for m in sink.messages) == ["alarm", "temp", "temp"]
    assert [h[0] for h in sink.messages[-1]["trace"]["hops"]] == ["fw", "sp", "out"]
    wait_for(lambda: agent.status()["sp"].counters.get("in") == 2, timeout=5)  # reported by the runner


def test_agent_restart_adopts_running_vnfs_instead_of_starting_them_twice(agents: MakeAgent) -> None:
    agent = agents(state="shared")
    agent.converge(vnf_chain())
    wait_for(lambda: agent.status()["sp"].state == "Running")
    pid = agent.vnf.observe("sp").pid  # type: ignore[union-attr]
    agent.stop(stop_vnfs=False)
    again = agents(state="shared")
    sink = Sink()
    again.on_sink(sink)
    assert again.vnf.observe("sp").pid == pid  # type: ignore[union-attr]
    again.converge(vnf_chain())
    assert [p.pid for p in runners(again.state_dir)] == [pid]

    def flows() -> bool:  # the runner follows the agent to its new address (uplink file)
        again.plane.deliver(new_message("s1", "temp", {"t": 1}))
        time.sleep(0.05)
        return bool(sink.messages)

    wait_for(flows, timeout=10)


def test_dead_vnf_is_reported_and_restarted(agents: MakeAgent) -> None:
    agent = agents()
    agent.converge(vnf_chain())
    wait_for(lambda: agent.status()["sp"].state == "Running")
    pid = agent.vnf.observe("sp").pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]

    def restarted() -> bool:
        seen = agent.vnf.observe("sp")  # one read: the record may go between two (the restart)
        return seen is not None and seen.pid != pid

    wait_for(restarted, timeout=10)
    wait_for(lambda: agent.status()["sp"].state == "Running", timeout=10)


def test_vnf_spec_change_replaces_the_process(agents: MakeAgent) -> None:
    agent = agents()
    agent.converge(vnf_chain())
    wait_for(lambda: agent.status()["sp"].state == "Running")
    old = agent.vnf.observe("sp").pid  # type: ignore[union-attr]
    old_address = agent.status()["sp"].address
    agent.plane.deliver(new_message("s1", "temp", {"t": 1}))  # opens a sender to the old runner
    wait_for(lambda: old_address in agent.plane.senders)
    changed = vnf_chain()
    changed[1] = make_spec("sp", "stream_processor", {"passthrough": False}, ["out"], flavor="vnf")
    agent.converge(changed)
    wait_for(lambda: agent.status()["sp"].state == "Running")
    assert agent.vnf.observe("sp").pid != old  # type: ignore[union-attr]
    new_address = agent.status()["sp"].address
    wait_for(lambda: agent.plane.vnf_addresses.get("sp") == new_address)
    assert old_address != new_address
    assert old_address not in agent.plane.senders  # no thread left retrying the dead runner
    wait_for(lambda: not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE)  # type: ignore[arg-type]
    agent.converge(changed[:1])
    assert runners(agent.state_dir) == []


SLOW_V2 = """
import os, time
from flyslice.nodeagent.sdk import NetworkFunction
with open({log!r}, "a") as f:
    f.write(f"{{os.getpid()}} v2\\n")
class NF(NetworkFunction):
    def configure(self, config):
        time.sleep(1.5)
        self.config = config
"""


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[Callable[[], tuple[subprocess.Popen[bytes], str]]]:
    procs: list[subprocess.Popen[bytes]] = []
    listen, http = free_port(), free_port()

    def start() -> tuple[subprocess.Popen[bytes], str]:
        cmd = [
            sys.executable, "-m", "flyslice.nodeagent", "--node", "n1", "--state-dir", str(tmp_path / "state"),
            "--desired-file", str(tmp_path / "desired.json"), "--listen", f"127.0.0.1:{listen}",
            "--http", f"127.0.0.1:{http}", "--interval", "0.2",
            "--module-dir", str(tmp_path),  # file: modules are confined; the tests write theirs here
            # Crash recovery, not the data plane: plain TCP, explicitly (a standalone agent has no
            # CA to issue its local VNF runners certificates with).
            "--insecure-plaintext",
        ]  # fmt: skip
        log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115
        p = subprocess.Popen(cmd, stdout=log, stderr=log)
        log.close()
        procs.append(p)
        return p, f"http://127.0.0.1:{http}"

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    for r in runners(tmp_path / "state"):
        r.kill()


def status(base: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{base}/status", timeout=2) as r:
            return dict(json.loads(r.read())["instances"])
    except OSError:
        return {}


def test_kill_9_during_an_update_then_restart_converges_without_double_loads(
    tmp_path: Path, agent_process: Callable[[], tuple[subprocess.Popen[bytes], str]]
) -> None:
    load_log = tmp_path / "loads.log"
    v2 = tmp_path / "v2.py"
    v2.write_text(SLOW_V2.format(log=str(load_log)))
    desired = tmp_path / "desired.json"
    v1_specs = [
        make_spec("nf", "firewall", {"default": "allow"}),
        make_spec("vnf", "broker", flavor="vnf", slice_="s2"),
    ]
    desired.write_text(json.dumps([s.to_dict() for s in v1_specs]))
    proc, base = agent_process()
    wait_for(
        lambda: {i.get("state") for i in status(base).values()} == {"Running"} and len(status(base)) == 2, 20
    )
    vnf_pid = psutil.Process(runners(tmp_path / "state")[0].pid).pid

    v2_specs = [make_spec("nf", f"file:{v2}"), v1_specs[1]]
    desired.write_text(json.dumps([s.to_dict() for s in v2_specs]))
    wait_for(lambda: load_log.exists() and str(proc.pid) in load_log.read_text(), 10, 0.005)
    proc.send_signal(signal.SIGKILL)  # mid-update: v2 loaded, configure still sleeping
    proc.wait(5)
    assert status(base) == {}

    proc2, _ = agent_process()
    wait_for(
        lambda: {i.get("state") for i in status(base).values()} == {"Running"} and len(status(base)) == 2, 20
    )
    st = status(base)
    assert st["nf"]["fingerprint"] == v2_specs[0].fingerprint
    assert st["vnf"]["fingerprint"] == v1_specs[1].fingerprint
    loads = [line.split()[0] for line in load_log.read_text().splitlines()]
    assert loads.count(str(proc2.pid)) == 1  # v2 loaded exactly once by the restarted agent
    assert [r.pid for r in runners(tmp_path / "state")] == [vnf_pid]  # the VNF was adopted, not restarted
    proc2.send_signal(signal.SIGTERM)
    assert proc2.wait(10) == 0


def run_runner(tmp_path: Path, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return subprocess.run(
        [sys.executable, "-m", "flyslice.nodeagent.runtime.runner", "--spec-file", str(path), "--ready-file", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_runner_refuses_a_bad_spec_or_a_tampered_module_with_a_clear_error(tmp_path: Path) -> None:
    bad = run_runner(tmp_path, {"name": "x", "flavor": "vnf", "module": "builtin:broker"})
    assert bad.returncode == 2 and "spec.json: instance x: 'module' and 'digest' go together" in bad.stderr
    bad = run_runner(
        tmp_path, {"name": "x", "flavor": "fnf", "module": "builtin:broker", "digest": "sha256:" + "1" * 64}
    )
    assert bad.returncode == 2 and "instance x: field 'slice'" in bad.stderr
    spec = make_spec("x", "broker", flavor="vnf", digest="sha256:" + "1" * 64).to_dict()
    tampered = run_runner(tmp_path, spec)
    assert tampered.returncode == 3 and "digest mismatch" in tampered.stderr
    assert not (tmp_path / "r").exists()


def test_image_only_vnf_is_failed_by_the_local_driver_with_a_reason(agents: MakeAgent) -> None:
    agent = agents()
    spec = make_spec("img", "broker", flavor="vnf")
    image_only = replace(spec, module="", digest="")
    status = agent.converge([image_only, make_spec("ok", "broker", slice_="s2")])
    assert status["img"].state == "Failed" and "runs vnf.module" in status["img"].message
    assert status["ok"].state == "Running"


def test_flavour_switch_moves_the_instance_between_agent_and_process(agents: MakeAgent) -> None:
    agent = agents()
    sink = Sink()
    agent.on_sink(sink)
    as_fnf = make_spec("sp", "stream_processor", {})
    as_vnf = make_spec("sp", "stream_processor", {}, flavor="vnf")
    agent.converge([as_fnf])
    assert "sp" in agent.platform.instances
    agent.converge([as_vnf])
    wait_for(lambda: agent.status()["sp"].state == "Running" and agent.status()["sp"].flavor == "vnf")
    assert "sp" not in agent.platform.instances and len(runners(agent.state_dir)) == 1
    agent.plane.deliver(new_message("s1", "t", {"via": "vnf"}))
    wait_for(lambda: agent.status()["sp"].counters.get("in") == 1, timeout=5)
    agent.converge([as_fnf])
    assert agent.status()["sp"].state == "Running" and "sp" in agent.platform.instances
    wait_for(lambda: runners(agent.state_dir) == [])
    agent.plane.deliver(new_message("s1", "t", {"via": "fnf"}))
    wait_for(lambda: sink.payloads() == [{"via": "fnf"}])


def test_runner_whose_record_is_removed_stops_by_itself(agents: MakeAgent) -> None:
    agent = agents()
    agent.converge([make_spec("sp", "stream_processor", flavor="vnf")])
    wait_for(lambda: agent.status()["sp"].state == "Running")
    (proc,) = runners(agent.state_dir)
    agent.stop(stop_vnfs=False)
    (agent.state_dir / "vnf" / "sp" / "spec.json").unlink()
    proc.wait(10)
    assert not proc.is_running()


SLOWISH = """
import time
from flyslice.nodeagent.sdk import NetworkFunction
class NF(NetworkFunction):
    def process(self, msg):
        time.sleep(0.001)
        return msg
"""


def test_removed_vnf_finishes_what_it_received_before_exiting(agents: MakeAgent, tmp_path: Path) -> None:
    slow = tmp_path / "slowish.py"
    slow.write_text(SLOWISH)
    agent = agents()
    sink = Sink()
    agent.on_sink(sink)
    specs = [make_spec("vnf", f"file:{slow}", {}, ["out"], flavor="vnf"), make_spec("out", "broker")]
    agent.converge(specs)
    wait_for(lambda: agent.status()["vnf"].state == "Running" and agent.plane.vnf_addresses.get("vnf"))
    address = agent.plane.vnf_addresses["vnf"]
    for i in range(400):  # more than one batch (256): some are still queued in the runner at SIGTERM
        agent.plane.deliver({**new_message("s1", "t", i), "to": "vnf"})
    wait_for(lambda: address in agent.plane.senders and agent.plane.senders[address].idle())
    agent.converge(specs[1:])  # SIGTERM while ~0.5 s of work is still queued in the runner
    wait_for(lambda: len(sink.messages) == 400, timeout=10)
    assert sink.payloads() == list(range(400))


COUNTING = """
from flyslice.nodeagent.sdk import NetworkFunction
class NF(NetworkFunction):
    config_schema = {"type": "object", "properties": {"tag": {"type": "string"}}}
    def configure(self, config):
        self.tag = config.get("tag", "")
        self.count = 0
    def process(self, msg):
        self.count += 1
        msg["payload"] = {"count": self.count, "tag": self.tag}
        return msg
    def export_state(self):
        return {"count": self.count}
    def import_state(self, state):
        self.count = state["count"]
"""


def test_replaced_vnf_hands_its_state_to_the_new_process(agents: MakeAgent, tmp_path: Path) -> None:
    counting = tmp_path / "counting.py"
    counting.write_text(COUNTING)
    agent = agents()
    sink = Sink()
    agent.on_sink(sink)
    out = make_spec("out", "broker")
    agent.converge([make_spec("c", f"file:{counting}", {"tag": "v1"}, ["out"], flavor="vnf"), out])
    wait_for(lambda: agent.status()["c"].state == "Running" and agent.plane.vnf_addresses.get("c"))
    for _ in range(5):
        agent.plane.deliver({**new_message("s1", "t", None), "to": "c"})
    wait_for(lambda: len(sink.messages) == 5)
    old_pid = agent.vnf.observe("c").pid  # type: ignore[union-attr]
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:  # what a controller polling the status sees during the replacement
        while not done.is_set():
            seen.add(agent.status()["c"].state)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    agent.converge([make_spec("c", f"file:{counting}", {"tag": "v2"}, ["out"], flavor="vnf"), out])
    done.set()
    watcher.join(5)
    assert "Updating" in seen and "Failed" not in seen
    wait_for(lambda: agent.status()["c"].state == "Running" and agent.vnf.observe("c").pid != old_pid)  # type: ignore[union-attr]
    wait_for(lambda: agent.plane.vnf_addresses.get("c") == agent.status()["c"].address)
    agent.plane.deliver({**new_message("s1", "t", None), "to": "c"})
    wait_for(lambda: len(sink.messages) == 6)
    assert sink.payloads()[-1] == {"count": 6, "tag": "v2"}  # the count went over to the new process
