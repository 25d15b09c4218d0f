"""Solver libraries write below Python (HiGHS in C++, CBC as a child process): none of it may reach stdout."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

# What a solver library does: libc printf (buffered), a raw write to descriptor 1, and a child
# process that inherits descriptor 1. Then the program prints its machine-readable result.
_NOISY_SOLVER = textwrap.dedent(
    """
    import ctypes, json, os, subprocess, sys
    from flyslice.solver.console import solver_output_to_stderr

    libc = ctypes.CDLL(None)
    with solver_output_to_stderr():
        libc.printf(b"Running HiGHS 9.9.9 (buffered in libc)\\n")
        os.write(1, b"raw write to fd 1\\n")
        subprocess.run(["echo", "child process banner"], check=True)
        with solver_output_to_stderr():  # nested solves share one redirection
            print("python print during solve")
        os.write(1, b"after the nested block, still redirected\\n")
    print(json.dumps({"ok": True}))
    """
)


def test_everything_a_solver_prints_goes_to_stderr_and_stdout_stays_parseable() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _NOISY_SOLVER], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == {"ok": True}
    for banner in (
        "Running HiGHS 9.9.9",
        "raw write to fd 1",
        "child process banner",
        "python print during solve",
        "still redirected",
    ):
        assert banner in out.stderr


def _installed_solvers() -> list[str]:
    from flyslice.solver.backends import highs_available

    return ["cbc", *(["highs"] if highs_available() else [])]


@pytest.mark.parametrize("solver", _installed_solvers())
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_plan_output_parses_with_every_installed_solver(solver: str, fmt: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "flyslice.operator.cli",
            "plan",
            str(REPO / "examples" / "wildfire"),
            "-o",
            fmt,
            "--solver",
            solver,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout) if fmt == "json" else yaml.safe_load(out.stdout)
    assert doc["format"] == "flyslice.io/plan/v1"
    assert doc["solver"]["name"] == {"cbc": "CBC", "highs": "HiGHS"}[solver]
