"""requirements.lock pins what tools/test.sh installs, and CI notices when pyproject.toml moves without it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCKFILE = REPO / "tools" / "lockfile.py"


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOCKFILE), "check", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "requirements.lock"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def test_the_committed_lock_matches_pyproject() -> None:
    out = _check(REPO)
    assert out.returncode == 0, out.stderr


def test_a_dependency_added_without_relocking_fails_the_check(project: Path) -> None:
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('"PyYAML>=6.0,<7",', '"PyYAML>=6.0,<7",\n    "rich>=13",'))
    out = _check(project)
    assert out.returncode == 1
    assert "refresh it with `bash tools/lock.sh`" in out.stderr
    assert "pins no rich" in out.stderr


def test_a_hand_edited_pin_outside_the_declared_range_fails_the_check(project: Path) -> None:
    lock = project / "requirements.lock"
    lock.write_text(re.sub(r"^pulp==[^ ]+", "pulp==2.7.0", lock.read_text(), flags=re.M))
    out = _check(project)
    assert out.returncode == 1
    assert "pins PuLP==2.7.0" in out.stderr


def test_every_pin_carries_a_hash() -> None:
    text = (REPO / "requirements.lock").read_text()
    pins = re.findall(r"^([A-Za-z0-9][\w.-]*)==[^\n]* \\\n(\s+--hash=sha256:[0-9a-f]{64})", text, re.M)
    names = re.findall(r"^([A-Za-z0-9][\w.-]*)==", text, re.M)
    assert len(pins) == len(names) > 20


@pytest.mark.parametrize("dist", ["pulp", "highspy", "kopf", "pytest", "ruff", "mypy"])
def test_the_running_environment_is_the_locked_one(dist: str) -> None:
    # tools/test.sh installs from the lock; a test run from anywhere else says so here.
    text = (REPO / "requirements.lock").read_text()
    m = re.search(rf"^{dist}==(\S+)", text, re.M | re.I)
    assert m, f"{dist} is not in requirements.lock"
    assert metadata.version(dist) == m.group(1)
