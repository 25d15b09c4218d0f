"""One ``flyslice up`` per state directory: an exclusive ``flock`` on ``<state>/up.lock``.

Two ``up`` on one state directory would each adopt the same VNF runners (by pid, from
``agents/<node>/vnf/``) and then stop or replace each other's. ``flock`` rather than a pid file: the
kernel drops the lock when its holder dies however it dies (``kill -9`` included), so a crash never
leaves a stale lock for a user to delete by hand. The pid written into the file only names the
holder in the refusal.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_NAME = "up.lock"


class StateDirError(Exception):
    """The state directory is locked by another process, or cannot be created or locked."""


class StateDirLock:
    """Held until :meth:`release`, or until the process exits."""

    def __init__(self, file: IO[str], path: Path) -> None:
        self._file = file
        self.path = path

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()  # closing the descriptor releases the flock


def lock_state_dir(state_dir: Path) -> StateDirLock:
    """Lock ``state_dir`` for this process or raise :class:`StateDirError` in one line saying why."""
    path = Path(state_dir) / LOCK_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Python opens files non-inheritable (PEP 446): VNF runners and git never hold the lock.
        file = open(path, "a+")  # noqa: SIM115 -- kept open for as long as the lock is held
    except OSError as exc:
        raise StateDirError(f"cannot use state directory {state_dir}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        file.seek(0)
        holder = file.read().strip()
        file.close()
        if isinstance(exc, BlockingIOError):
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise StateDirError(
                f"state directory {state_dir} is in use by another `flyslice up`{by}; "
                "stop it, or pass another --state-dir"
            ) from exc
        raise StateDirError(f"cannot lock state directory {state_dir}: {exc.strerror or exc}") from exc
    file.seek(0)
    file.truncate()
    file.write(f"{os.getpid()}\n")
    file.flush()
    return StateDirLock(file, path)
