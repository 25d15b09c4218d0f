"""A process started from a node's directory but in no record still dies with the node.

CI once left a node directory behind: SIGTERM reached ``benchmarks/run.py cluster`` inside
``subprocess.Popen`` while it started a node's containerd, after the fork, so containerd ran but
was never appended to the node's process list, and ``stop()`` did not know it. ``stop()`` now also
kills every process whose arguments name the node's (or cluster's) directory, as ``reap_stale()``
always did for a dead owner's. These tests need no cluster: real processes, real ``/proc``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "kubeenv"))

import nodes  # noqa: E402

from tests.conftest import wait_for  # noqa: E402


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait(5)


def _sleeper(procs: list[subprocess.Popen[bytes]], arg: str) -> subprocess.Popen[bytes]:
    # The argument rides on the command line (sys.argv[1]), as a config path rides on containerd's.
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", arg])
    procs.append(p)
    return p


def test_processes_naming_the_directory_are_killed_and_a_sibling_s_are_not(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    node = tmp_path / "fog"
    inside = _sleeper(started, f"--config={node}/containerd.toml")
    exact = _sleeper(started, str(node))
    sibling = _sleeper(started, f"--config={tmp_path / 'fog-1'}/containerd.toml")  # "fog" is its prefix
    unrelated = _sleeper(started, "--config=/etc/containerd/config.toml")

    assert set(nodes._started_from(node)) == {inside.pid, exact.pid}
    assert nodes._kill_started_from(node, 5.0) == []
    assert inside.wait(5) == -9 and exact.wait(5) == -9
    assert sibling.poll() is None and unrelated.poll() is None


def test_a_machine_stop_sweeps_a_process_its_record_misses(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    # A Host on no cluster: stop() has no namespace or link to remove (their commands fail quietly),
    # so what is checked is the sweep of a process that never reached ``procs``.
    host = nodes.Host(
        cluster=None,  # type: ignore[arg-type]
        name="gw-1",
        ip="10.213.0.100",
        dir=tmp_path / "gw-1",
        netns=f"fsnone{tmp_path.name[-6:]}-gw-1",
        host_veth="fsnonev0",
    )
    orphan = _sleeper(started, f"{host.dir}/agent.yaml")
    # Found by what stop() sweeps, before stop() (a CI run once saw the orphan outlive stop()).
    wait_for(lambda: orphan.pid in nodes._started_from(host.dir), timeout=10)
    assert host.procs == []
    assert host.stop(5.0) == []
    try:
        code = orphan.wait(10)
    except subprocess.TimeoutExpired:
        status = Path(f"/proc/{orphan.pid}/status").read_text().splitlines()[:3]
        pytest.fail(f"pid {orphan.pid} outlived stop(): {status}; swept now: {nodes._started_from(host.dir)}")
    assert code == -9
