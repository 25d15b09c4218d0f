"""Pruning: which objects to delete when a new revision no longer declares them.

Only objects flyslice created are ever pruned: the caller passes the inventory it recorded when it
applied the previous revision (GitSource ``status.inventory``), and anything outside that inventory
(created by hand, by another tool, by another source) is never touched. Objects that are invalid in
the new revision, or that sat in a file that no longer parses, keep their last good version and are
not pruned either: one bad manifest must not delete what it used to declare.

Keys are ``Kind/namespace/name`` for namespaced kinds and ``Kind/name`` for cluster-scoped ones
(EdgeNode), the format of the CRD's ``status.inventory``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: Kinds without a namespace (see crds/*.yaml ``scope``).
CLUSTER_SCOPED = frozenset({"EdgeNode"})


class _FromFile(Protocol):
    @property
    def file(self) -> str: ...


class _Finding(Protocol):
    @property
    def file(self) -> str: ...
    @property
    def object(self) -> str: ...
    @property
    def severity(self) -> str: ...


def object_key(kind: str, namespace: str | None, name: str) -> str:
    if kind in CLUSTER_SCOPED or not namespace:
        return f"{kind}/{name}"
    return f"{kind}/{namespace}/{name}"


def parse_object_key(key: str) -> tuple[str, str, str]:
    """``Kind/ns/name`` -> (kind, ns, name); ``Kind/name`` -> (kind, "", name)."""
    parts = key.split("/")
    if len(parts) == 3 and all(parts):
        return parts[0], parts[1], parts[2]
    if len(parts) == 2 and all(parts):
        return parts[0], "", parts[1]
    raise ValueError(f"inventory entry {key!r} is not Kind/namespace/name or Kind/name")


@dataclass(frozen=True)
class PrunePlan:
    #: Delete these (sorted): created by flyslice from this source, gone from the new revision.
    prune: tuple[str, ...]
    #: Record this as the new inventory once the apply and the deletions succeeded.
    inventory: tuple[str, ...]
    #: Previously applied objects kept at their last good version because the new revision breaks them.
    retained: tuple[str, ...]
    #: Gone from git but left in place because pruning is off; no longer owned (dropped from inventory).
    orphaned: tuple[str, ...]


def plan_prune(
    previous_inventory: Iterable[str],
    desired: Iterable[str],
    *,
    retained: Iterable[str] = (),
    prune: bool = True,
) -> PrunePlan:
    """What to delete going from the revision that produced ``previous_inventory`` to one whose valid
    objects are ``desired``. ``retained``: objects to keep at their last good version (see
    :func:`retained_keys`). With ``prune`` off nothing is deleted and vanished objects are orphaned
    (dropped from the inventory, so turning prune on later never deletes them by surprise)."""
    previous = set(previous_inventory)
    wanted = set(desired)
    kept = (set(retained) & previous) - wanted
    gone = previous - wanted - kept
    return PrunePlan(
        prune=tuple(sorted(gone)) if prune else (),
        inventory=tuple(sorted(wanted | kept)),
        retained=tuple(sorted(kept)),
        orphaned=() if prune else tuple(sorted(gone)),
    )


def retained_keys(
    previous_files: Mapping[str, str],
    *,
    broken_objects: Iterable[str] = (),
    broken_files: Iterable[str] = (),
) -> set[str]:
    """Previously applied objects to keep: those named by an error of the new revision
    (``broken_objects``, inventory keys) and those that came from a file that now fails as a whole
    (``broken_files``: unparsable YAML, unreadable). ``previous_files`` maps each key of the previous
    inventory to the file (path inside the source) it came from."""
    files = set(broken_files)
    objects = set(broken_objects)
    return {key for key, file in previous_files.items() if key in objects or file in files}


def error_object_key(ref: str) -> str:
    """An error's ``Kind/name`` or ``Kind/ns/name`` as an inventory key (namespaced kinds default to
    the ``default`` namespace, as the loader does)."""
    kind, ns, name = parse_object_key(ref)
    return object_key(kind, ns or "default", name)


def inventory_files(sources: Mapping[tuple[str, str, str], _FromFile], root: Path) -> dict[str, str]:
    """Inventory key -> file relative to the snapshot ``root``, from a validation result's ``sources``.
    Relative, because every revision is exported to a different snapshot directory."""
    return {object_key(kind, ns, name): _relative(m.file, root) for (kind, ns, name), m in sources.items()}


def broken_in(errors: Iterable[_Finding], root: Path) -> tuple[set[str], set[str]]:
    """(objects, files) that a revision's errors break: objects named by an error, and files with an
    error that names no object (the whole file failed to load)."""
    objects: set[str] = set()
    files: set[str] = set()
    for e in errors:
        if e.severity != "error":
            continue
        # An object the loader could not name ("Slice/<no name>", a YAML syntax error) breaks its file.
        if e.object and "<" not in e.object:
            try:
                objects.add(error_object_key(e.object))
            except ValueError:
                files.add(_relative(e.file, root))
        else:
            files.add(_relative(e.file, root))
    return objects, files


@dataclass(frozen=True)
class RevisionInventory:
    plan: PrunePlan
    #: The new inventory with where each object came from (retained objects keep their old file);
    #: pass it to ``GitSource.mark_applied(revision, inventory=files)`` after applying.
    files: dict[str, str]


def plan_revision(
    previous_files: Mapping[str, str],
    sources: Mapping[tuple[str, str, str], _FromFile],
    errors: Iterable[_Finding],
    root: Path,
    *,
    prune: bool = True,
) -> RevisionInventory:
    """The whole pruning step for one revision exported at ``root``: ``sources`` and ``errors`` come
    from loading and validating it; ``previous_files`` is the last applied inventory with files
    (``GitSource.inventory_files``)."""
    desired = inventory_files(sources, root)
    broken_objects, broken_files = broken_in(errors, root)
    keep = retained_keys(previous_files, broken_objects=broken_objects, broken_files=broken_files)
    plan = plan_prune(previous_files, desired, retained=keep, prune=prune)
    files = {key: previous_files[key] for key in plan.retained}
    files.update(desired)
    return RevisionInventory(plan, files)


def _relative(file: str, root: Path) -> str:
    try:
        return str(Path(file).resolve().relative_to(root.resolve()))
    except ValueError:
        return file
