"""conftest.py's ordering and deploy_harness.Shared, on stand-in modules (no cluster: this runs always).

A pytest run (in this process: a subprocess would import the cluster tools again, seconds each) collects three modules that ask for one shared fixture whose "build"
is recorded in a file: ``a`` and ``c`` use it, ``b`` spends it (``SPENDS_SHARED``). Checked: ``b``
runs after every module that only uses it, whatever order the files are named in; ``a`` and ``c``
get one build; ``b`` gets that same build and it is stopped when ``b`` ends; each module run alone
builds and stops its own; a build that fails is reported again to the next module, not retried;
a run stopped early (``-x``) still stops what it built.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CONFTEST = """
from tests.cluster.conftest import pytest_collection_modifyitems, shared_clusters  # noqa: F401
"""

COMMON = """
import contextlib, os, pytest

def note(line):
    with open(os.environ["SHARED_LOG"], "a") as f:
        f.write(line + "\\n")

@contextlib.contextmanager
def build():
    if os.environ.get("SHARED_FAIL"):
        note("build failed")
        raise RuntimeError("no cluster")
    log = os.environ["SHARED_LOG"]
    n = sum(1 for line in open(log) if line.startswith("built")) if os.path.exists(log) else 0
    note(f"built {n}")
    try:
        yield n
    finally:
        note(f"stopped {n}")

@pytest.fixture(scope="module")
def deployed(request, shared_clusters):
    yield from shared_clusters.module_fixture(request, build)
"""


def _module(name: str, spends: bool = False) -> str:
    body = f"""
import os
from common import deployed, note  # noqa: F401
{"SPENDS_SHARED = ('deployed',)" if spends else ""}

def test_{name}_1(deployed):
    note("{name} got %d" % deployed)

def test_{name}_2(deployed):
    note("{name} got %d" % deployed)
    assert not os.environ.get("FAIL_{name.upper()}")
"""
    return textwrap.dedent(body)


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str, **env: str) -> list[str]:
    """pytest on the stand-in package in ``tmp_path`` with ``args``; the lines its modules wrote.
    (The modules' contents never vary: pytest may reuse one imported by an earlier run.)"""
    pkg = tmp_path / "stand_in"
    pkg.mkdir(exist_ok=True)
    (pkg / "conftest.py").write_text(CONFTEST)
    (pkg / "common.py").write_text(COMMON)
    for name in "ac":
        (pkg / f"test_{name}.py").write_text(_module(name))
    (pkg / "test_b.py").write_text(_module("b", spends=True))
    log = tmp_path / "log"
    log.unlink(missing_ok=True)
    with monkeypatch.context() as m:
        m.setenv("SHARED_LOG", str(log))
        for key, value in env.items():
            m.setenv(key, value)
        m.syspath_prepend(str(pkg))
        m.chdir(pkg)
        pytest.main(["-q", "-p", "no:cacheprovider", "--import-mode=importlib", "--rootdir", str(pkg), *args])
    return log.read_text().splitlines() if log.exists() else []


def test_the_spender_runs_last_and_the_users_share_one_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Named spender first: it still runs after a and c, which share the build it then stops.
    log = _run(tmp_path, monkeypatch, "test_b.py", "test_a.py", "test_c.py")
    assert log == ["built 0", *[f"{m} got 0" for m in "aacc"], "b got 0", "b got 0", "stopped 0"]


def test_each_module_alone_builds_and_stops_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(tmp_path, monkeypatch, "test_b.py") == ["built 0", "b got 0", "b got 0", "stopped 0"]
    assert _run(tmp_path, monkeypatch, "test_a.py") == ["built 0", "a got 0", "a got 0", "stopped 0"]


def test_a_failed_build_is_reported_again_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _run(tmp_path, monkeypatch, "test_a.py", "test_c.py", SHARED_FAIL="1")
    assert log == ["build failed"]


def test_a_run_stopped_early_stops_what_it_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # c fails with -x: b (still to run) never gets the build, which is stopped at the session's end.
    log = _run(tmp_path, monkeypatch, "-x", "test_a.py", "test_c.py", "test_b.py", FAIL_C="1")
    assert log == ["built 0", *[f"{m} got 0" for m in "aacc"], "stopped 0"]
