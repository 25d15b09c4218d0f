"""Module lifecycle: uninstalling or updating an fNF frees its module -- no growth of ``sys.modules``,
of the loader's cache or of the agent's RSS over 1,000 updates (issue 12, item 5). A real agent,
real module files with a new digest each cycle."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from pathlib import Path

import psutil

from flyslice.nodeagent.agent import Agent
from flyslice.nodeagent.message import new_message
from flyslice.nodeagent.runtime.modules import BUILTIN_DIR
from tests.conftest import wait_for

from .conftest import Sink, make_spec

MakeAgent = Callable[..., Agent]
BROKER = (BUILTIN_DIR / "broker.py").read_bytes()
#: Padding that makes each version's module noticeably big: a leak of 1,000 of them is ~50 MB.
PAYLOAD = "TABLE = [" + ", ".join(f"'entry-{{v}}-{i:05d}'" for i in range(1500)) + "]\n"


def fnf_modules() -> list[str]:
    return [n for n in sys.modules if n.startswith("flyslice_fnf_")]


def version(path: Path, v: int) -> str:
    path.write_bytes(BROKER + b"\n" + PAYLOAD.format(v=v).encode())
    return f"file:{path}"


def test_uninstall_frees_the_module(agents: MakeAgent, tmp_path: Path) -> None:
    agent = agents()
    ref = version(tmp_path / "nf.py", 0)
    agent.converge([make_spec("a", ref), make_spec("b", ref, slice_="s2")])
    (name,) = {type(i.nf).__module__ for i in agent.platform.instances.values()}
    assert len(agent.loader.cached_digests()) == 1
    agent.converge([make_spec("b", ref, slice_="s2")])  # still used by b: kept, not executed again
    assert name in sys.modules and agent.loader.executions == 1
    agent.converge([])
    assert name not in sys.modules and agent.loader.cached_digests() == set()


def test_a_thousand_updates_keep_modules_and_rss_flat(agents: MakeAgent, tmp_path: Path) -> None:
    agent = agents(resync_s=3600)  # only the test's converges: the measurement is of updates alone
    sink = Sink()
    agent.on_sink(sink)
    path = tmp_path / "nf.py"
    before = set(fnf_modules())
    rss = psutil.Process().memory_info().rss

    def cycle(v: int) -> None:
        status = agent.converge([make_spec("nf", version(path, v))])
        assert status["nf"].state == "Running", status["nf"].message

    for v in range(100):  # warm-up: allocator arenas, caches, the data plane's worker
        cycle(v)
    gc.collect()
    rss = psutil.Process().memory_info().rss
    for v in range(100, 1100):
        cycle(v)
    gc.collect()
    grown = psutil.Process().memory_info().rss - rss
    assert agent.loader.executions == 1100  # every cycle really loaded a new version
    assert len(set(fnf_modules()) - before) == 1 and len(agent.loader.cached_digests()) == 1
    # Each version's code and constants take ~50 kB: 1,000 leaked would be ~50 MB.
    assert grown < 8 * 2**20, f"RSS grew {grown / 2**20:.1f} MB over 1,000 updates"
    # And the last version still carries traffic.
    agent.plane.deliver(new_message("s1", "t", {"v": 1}))
    wait_for(lambda: sink.payloads() == [{"v": 1}])
