"""Reading a revision (YAML parsing and validation) in a separate process, with a time budget.

Parsing is pure Python: a 4 MiB file of small mappings takes minutes and, in a thread, would hold
the GIL against the status API and keep ``flyslice up`` from exiting. A child process runs it on
another core, and one that outlives its budget is killed: the revision is reported unreadable and
the last good one keeps running. The children fork from a forkserver that has the intake modules
imported already, so a read starts in milliseconds and never inherits the controller's threads.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.validation import PackagePolicy, ValidationResult

#: A revision not read within this many seconds is refused (a real one reads in well under a second).
DEFAULT_BUDGET_S = 30.0

Read = tuple[ValidationResult, list[ManifestError]]


class IntakeTimeout(Exception):
    """Reading the revision took longer than the budget."""


def read_revision(root: Path, policy: PackagePolicy | None = None) -> Read:
    """Load and validate every manifest under ``root``."""
    from flyslice.operator.intake.manifests import load_paths
    from flyslice.operator.intake.validation import validate

    manifests, load_errors = load_paths([root])
    return validate(manifests, policy=policy), load_errors


def _child(root: Path, conn: Connection, policy: PackagePolicy | None = None) -> None:
    try:
        conn.send(("ok", read_revision(root, policy)))
    except BaseException as exc:  # the parent turns it into a failed pass with this message
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


_context: Any = None


def _mp() -> Any:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["flyslice.operator.intake.validation"])
    return _context


async def read_in_child(
    root: Path, budget_s: float = DEFAULT_BUDGET_S, policy: PackagePolicy | None = None
) -> Read:
    """``read_revision(root)`` in a child process; raises :class:`IntakeTimeout` past ``budget_s``
    (the child is killed) and ``RuntimeError`` when the child fails."""
    ctx = _mp()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(root, child, policy), daemon=True, name="flyslice-intake")
    await asyncio.to_thread(proc.start)
    child.close()
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(parent.fileno(), readable.set)
    try:
        try:
            await asyncio.wait_for(readable.wait(), budget_s)
        except TimeoutError:
            raise IntakeTimeout(f"reading took longer than {budget_s:g}s") from None
        # The result of a large revision is megabytes: receive it off the loop.
        status, value = await asyncio.to_thread(parent.recv)
    except EOFError:
        raise RuntimeError(f"the intake process died (exit code {proc.exitcode})") from None
    finally:
        loop.remove_reader(parent.fileno())
        parent.close()
        if proc.is_alive():
            proc.kill()
        await asyncio.to_thread(proc.join, 5)
    if status != "ok":
        raise RuntimeError(str(value))
    result: Read = value
    return result
