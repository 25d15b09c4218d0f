"""Where the embedded controller reads its desired state: a directory, or a git repository.

Both give a :class:`Snapshot`: one revision and the files of exactly that revision, so that a
reconcile is pinned to one consistent set of manifests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from flyslice.operator.intake.manifests import discover


@dataclass(frozen=True)
class Snapshot:
    revision: str
    root: Path
    #: The commit message (git sources), read for the prune guard's confirmation trailer.
    message: str = ""


class FetchError(RuntimeError):
    pass


class DesiredSource(Protocol):
    def fetch(self) -> Snapshot: ...

    def describe(self) -> str: ...


class DirectorySource:
    """A plain directory (or file); its revision is the sha256 of every manifest's path and bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    def fetch(self) -> Snapshot:
        if not self.path.exists():
            raise FetchError(f"{self.path} does not exist")
        files, _ = discover([self.path])
        h = hashlib.sha256()
        for f in files:
            try:
                h.update(str(f).encode() + b"\0" + f.read_bytes() + b"\0")
            except OSError as exc:
                raise FetchError(f"cannot read {f}: {exc.strerror}") from exc
        return Snapshot("sha256:" + h.hexdigest()[:16], self.path)
