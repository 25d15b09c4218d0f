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

#: Kinds without a namespace (see crds/*.yaml ``scope``).
CLUSTER_SCOPED = frozenset({"EdgeNode"})


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
