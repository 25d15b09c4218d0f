"""Keeping what solver libraries print off the process's standard output.

HiGHS runs in-process (C++) and CBC as a child process; both write to file descriptor 1 directly,
below Python's ``sys.stdout``, and HiGHS 1.16 prints a banner even with output switched off. So
while a solve runs, descriptor 1 points at descriptor 2 (stderr): ``flyslice plan -o json`` and
every other machine-readable output, written after the solve, stay parseable whatever a solver
version prints. Nested and concurrent solves share one redirection (reference counted).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_saved_stdout: int | None = None


def _flush_everything() -> None:
    # Python's buffer and libc's (C++ iostreams are synced with it): a banner still sitting in a
    # buffer when descriptor 1 is restored would reach stdout after all.
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def solver_output_to_stderr() -> Iterator[None]:
    """Send everything written to descriptor 1 to descriptor 2 until the block ends."""
    global _depth, _saved_stdout
    with _lock:
        if _depth == 0:
            _flush_everything()
            try:
                _saved_stdout = os.dup(1)
                os.dup2(2, 1)
            except OSError:  # no descriptor 1 or 2 (a daemon): there is no stdout to protect
                _saved_stdout = None
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved_stdout is not None:
                _flush_everything()
                os.dup2(_saved_stdout, 1)
                os.close(_saved_stdout)
                _saved_stdout = None
