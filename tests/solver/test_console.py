"""Solver libraries write below Python (HiGHS in C++, CBC as a child process): none of it may reach stdout."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

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
