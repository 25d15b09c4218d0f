"""The Modular Platform: lifecycle, hot update without loss, and fault containment."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from flyslice.nodeagent.dataplane.chains import DataPlane
from flyslice.nodeagent.dataplane.lifecycle import InvalidTransition, Lifecycle, State
from flyslice.nodeagent.message import new_message
from flyslice.nodeagent.runtime.modules import IntegrityError, ModuleLoader
from flyslice.nodeagent.runtime.platform import ModularPlatform, PlatformError
from flyslice.nodeagent.sdk import ConfigError

from .conftest import Sink, make_spec, wait_for

COUNTER = """
from flyslice.nodeagent.sdk import NetworkFunction
class NF(NetworkFunction):
    VERSION = {version}
    def configure(self, config):
        self.count = 0
    def process(self, msg):
        self.count += 1
        msg["payload"]["version"] = self.VERSION
        return msg
    def export_state(self):
        return {{"count": self.count}}
    def import_state(self, state):
        self.count = state["count"]
"""

CRASHER = """
from flyslice.nodeagent.sdk import NetworkFunction
class NF(NetworkFunction):
    def process(self, msg):
        raise RuntimeError("boom on " + str(msg["payload"]))
"""

BLOCKER = """
import time
from flyslice.nodeagent.sdk import NetworkFunction
class NF(NetworkFunction):
    def process(self, msg):
        time.sleep(30)
        return msg
"""

HOARDER = """
from flyslice.nodeagent.sdk import NetworkFunction
class NF(NetworkFunction):
    def configure(self, config):
        self.hoard = []
    def process(self, msg):
        self.hoard.append("x" * 10_000)
        return msg
"""


def module(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return f"file:{path}"


def test_lifecycle_refuses_impossible_transitions() -> None:
    lc = Lifecycle("x")
    with pytest.raises(InvalidTransition, match="Pending to Running"):
        lc.to(State.RUNNING)
    lc.to(State.INSTALLING)
    lc.to(State.STOPPED)
    lc.to(State.RUNNING)
    assert lc.started_at is not None
    lc.to(State.UNINSTALLED)
    with pytest.raises(InvalidTransition):
        lc.to(State.INSTALLING)


def test_install_start_stop_configure_uninstall(platform: ModularPlatform, plane: DataPlane) -> None:
    sink = Sink()
    plane.sinks.append(sink)
    inst = platform.install(make_spec("fw", "firewall", {"default": "allow"}))
    assert inst.lifecycle.state is State.STOPPED
    plane.deliver(new_message("s1", "t", {"n": 0}))
    wait_for(lambda: inst.counters.dropped == 1)  # a stopped fNF takes nothing
    platform.start("fw")
    assert inst.lifecycle.state is State.RUNNING
    plane.deliver(new_message("s1", "t", {"n": 1}))
    wait_for(lambda: sink.payloads() == [{"n": 1}])
    platform.configure("fw", {"default": "drop"})
    plane.deliver(new_message("s1", "t", {"n": 2}))
    wait_for(lambda: inst.nf.denied == 1)
    with pytest.raises(ConfigError, match=r"instance fw: config\.default"):
        platform.configure("fw", {"default": "maybe"})
    platform.stop("fw")
    assert inst.lifecycle.state is State.STOPPED
    platform.uninstall("fw")
    assert "fw" not in platform.instances and "s1" not in plane.entries
    with pytest.raises(PlatformError, match="not installed"):
        platform.start("fw")


def test_invalid_config_and_tampered_digest_are_refused(platform: ModularPlatform) -> None:
    with pytest.raises(ConfigError, match=r"config\.rate"):
        platform.install(make_spec("rl", "rate_limiter", {"rate": "fast"}))
    with pytest.raises(IntegrityError):
        platform.install(make_spec("rl", "rate_limiter", {"rate": 1}, digest="sha256:" + "ab" * 32))
    assert "rl" not in platform.instances and "digest mismatch" in platform.failures["rl"]


def test_update_under_load_loses_no_message_and_carries_state(
    tmp_path: Path, platform: ModularPlatform, plane: DataPlane
) -> None:
    v1 = module(tmp_path, "v1", COUNTER.format(version=1))
    v2 = module(tmp_path, "v2", COUNTER.format(version=2))
    sink = Sink()
    plane.sinks.append(sink)
    platform.install(make_spec("counter", v1))
    platform.start("counter")
    total = 20_000

    def produce() -> None:
        for i in range(total):
            plane.deliver(new_message("s1", "t", {"seq": i}), timeout=5.0)
            if i % 100 == 99:
                time.sleep(0.002)  # paced, so that the updates below land mid-stream

    producer = threading.Thread(target=produce)
    producer.start()
    for k, ref in enumerate((v2, v1, v2), start=1):
        wait_for(lambda k=k: len(sink.messages) >= k * total // 4)
        platform.update(make_spec("counter", ref))
    producer.join(30)
    wait_for(lambda: len(sink.messages) >= total, timeout=30)
    seqs = [m["payload"]["seq"] for m in sink.messages]
    assert seqs == list(range(total))  # nothing lost, nothing doubled, order kept
    versions = [m["payload"]["version"] for m in sink.messages]
    switches = sum(1 for a, b in itertools.pairwise(versions) if a != b)
    assert versions[0] == 1 and versions[-1] == 2 and switches == 3  # three swaps, each mid-stream
    inst = platform.instances["counter"]
    assert inst.nf.count == total  # each version took over the previous one's state
    assert inst.counters.in_ == total and inst.counters.dropped == 0
    assert plane.dropped_total() == 0


def test_failed_update_keeps_the_old_version_running(tmp_path: Path, platform: ModularPlatform) -> None:
    v1 = module(tmp_path, "v1", COUNTER.format(version=1))
    bad = module(tmp_path, "bad", "raise ImportError('broken release')\n")
    platform.install(make_spec("counter", v1))
    platform.start("counter")
    with pytest.raises(ImportError, match="broken release"):
        platform.update(make_spec("counter", bad))
    assert platform.instances["counter"].running
    assert platform.instances["counter"].spec.module == v1


def test_crashing_fnf_is_stopped_and_neighbours_keep_running(
    tmp_path: Path, platform: ModularPlatform, plane: DataPlane
) -> None:
    sink = Sink()
    plane.sinks.append(sink)
    crasher = module(tmp_path, "crasher", CRASHER)
    platform.install(make_spec("fw", "firewall", {"default": "allow"}, ["bad"]))
    platform.install(make_spec("bad", crasher))
    platform.install(make_spec("other", "broker", slice_="s2"))
    for name in ("fw", "bad", "other"):
        platform.start(name)
    for i in range(10):
        plane.deliver(new_message("s1", "t", {"i": i}))
    bad = platform.instances["bad"]
    wait_for(lambda: bad.lifecycle.state is State.FAILED)
    assert "RuntimeError: boom on" in bad.lifecycle.message and "crasher.py" in bad.lifecycle.message
    assert bad.counters.errors == 3  # error_limit of the fixture
    wait_for(lambda: bad.counters.in_ + bad.counters.dropped == 10)
    for i in range(5):
        plane.deliver(new_message("s2", "t", {"i": i}))
        plane.deliver(new_message("s1", "t", {"i": 100 + i}))
    wait_for(lambda: len(sink.messages) == 5)
    assert all(m["slice"] == "s2" for m in sink.messages)
    assert platform.instances["fw"].running and platform.instances["fw"].counters.in_ == 15
    assert platform.instances["other"].running


def test_blocked_fnf_is_failed_at_its_deadline_and_its_slice_keeps_flowing(
    tmp_path: Path, platform: ModularPlatform, plane: DataPlane
) -> None:
    sink = Sink()
    plane.sinks.append(sink)
    platform.install(make_spec("stuck", module(tmp_path, "blocker", BLOCKER)))
    platform.install(make_spec("fine", "broker"))  # same slice, its own entry
    platform.install(make_spec("elsewhere", "broker", slice_="s2"))
    for name in ("stuck", "fine", "elsewhere"):
        platform.start(name)
    plane.deliver({**new_message("s1", "t", {"i": 0}), "to": "stuck"})
    plane.deliver(new_message("s2", "t", {"i": 1}))
    stuck = platform.instances["stuck"]
    wait_for(lambda: stuck.lifecycle.state is State.FAILED, timeout=5)
    assert "blocked for" in stuck.lifecycle.message
    for i in range(3):
        plane.deliver({**new_message("s1", "t", {"i": 10 + i}), "to": "fine"})
    wait_for(lambda: len(sink.messages) == 4, timeout=5)
    assert sorted(m["payload"]["i"] for m in sink.messages) == [1, 10, 11, 12]
    assert platform.instances["fine"].running and platform.instances["elsewhere"].running


def test_fnf_outgrowing_its_memory_budget_is_stopped(tmp_path: Path) -> None:
    plane = DataPlane("n1", memory_check_interval_s=0.0)
    try:
        platform = ModularPlatform(plane, ModuleLoader())
        platform.install(make_spec("hoarder", module(tmp_path, "hoarder", HOARDER), memory="64Ki"))
        platform.install(make_spec("modest", "broker", memory="64Ki", slice_="s2"))
        platform.start("hoarder")
        platform.start("modest")
        for i in range(30):
            plane.deliver(new_message("s1", "t", {"i": i}))
            plane.deliver(new_message("s2", "t", {"i": i}))
        hoarder = platform.instances["hoarder"]
        wait_for(lambda: hoarder.lifecycle.state is State.FAILED)
        assert "memory budget exceeded" in hoarder.lifecycle.message
        wait_for(lambda: platform.instances["modest"].counters.in_ == 30)
        assert platform.instances["modest"].running
    finally:
        plane.stop()


def test_a_slice_without_fnfs_gives_its_thread_back(platform: ModularPlatform, plane: DataPlane) -> None:
    platform.install(make_spec("a", "broker", slice_="gone"))
    platform.install(make_spec("b", "broker", slice_="gone"))
    thread = plane.workers["gone"].thread
    platform.uninstall("a")
    assert "gone" in plane.workers  # b still lives there
    platform.uninstall("b")
    assert "gone" not in plane.workers
    thread.join(2)
    assert not thread.is_alive()


def test_bounded_queue_put_many_waits_for_the_consumer_then_drops_the_rest() -> None:
    from flyslice.nodeagent.dataplane.bqueue import BoundedQueue

    q: BoundedQueue[int] = BoundedQueue(4)
    assert q.put_many(list(range(6))) == 2 and q.dropped == 2  # no wait: what does not fit is dropped
    got: list[int] = []

    def consume() -> None:
        while len(got) < 4 + 10:
            got.extend(q.get_batch(3, 0.5))

    t = threading.Thread(target=consume)
    t.start()
    assert q.put_many(list(range(100, 110)), timeout=5.0) == 0  # waits as the consumer drains
    t.join(5)
    assert got == [0, 1, 2, 3, *range(100, 110)] and q.dropped == 2


TIMER_HOARDER = """
from flyslice.nodeagent.sdk import NetworkFunction
class NF(NetworkFunction):
    def start(self):
        self.hoard = []
        self.ctx.every(0.01, lambda: self.hoard.append("y" * 10_000))
"""


def test_memory_growing_from_timers_alone_is_caught(tmp_path: Path) -> None:
    plane = DataPlane("n1", memory_check_interval_s=0.0)
    try:
        platform = ModularPlatform(plane, ModuleLoader())
        platform.install(make_spec("quiet", module(tmp_path, "timer_hoarder", TIMER_HOARDER), memory="64Ki"))
        platform.start("quiet")
        inst = platform.instances["quiet"]
        wait_for(lambda: inst.lifecycle.state is State.FAILED, timeout=5)
        assert "memory budget exceeded" in inst.lifecycle.message and inst.counters.in_ == 0
    finally:
        plane.stop()
