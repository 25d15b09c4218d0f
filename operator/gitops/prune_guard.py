"""The prune guard: a revision that would delete too much of what runs waits for a confirmation.

Compare Argo CD's ``Prune=confirm``. Deleting a manifest is how a user removes a slice, but a
commit that drops every slice, or most of what runs, is far more often a mistake (a bad merge, a
moved directory, a ``path`` typo) than an intent. Such a revision is applied except for the removals,
which are held with a reason until confirmed: by ``flyslice up --confirm-prune`` or by a commit whose
message carries the trailer ``Flyslice-Prune: confirm``. The kopf operator's GitSources use the same
guard, confirmed by the trailer or by the annotation ``flyslice.io/confirm-prune: "<revision>"`` on
the GitSource (:mod:`flyslice.operator.kube.cluster_git`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

#: Above this share of running NF instances, a removal waits for a confirmation.
DEFAULT_MAX_PRUNE_SHARE = 0.5
_TRAILER = re.compile(r"^flyslice-prune:\s*confirm\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class PruneDecision:
    #: Slices (``ns/name``) the revision removes.
    removed: tuple[str, ...]
    #: Removals held back (empty: the revision applies as it is).
    held: tuple[str, ...]
    #: Why they are held and how to confirm; empty when nothing is held.
    reason: str = ""


def confirmed_by_message(message: str) -> bool:
    """Whether a commit message confirms its prune (the trailer ``Flyslice-Prune: confirm``)."""
    return bool(_TRAILER.search(message))


def decide(
    previous: Collection[str],
    desired: Collection[str],
    running: Mapping[str, int],
    *,
    max_share: float = DEFAULT_MAX_PRUNE_SHARE,
    confirmed: bool = False,
    how: str = "or run with --confirm-prune",
) -> PruneDecision:
    """Whether removing the slices of ``previous`` missing from ``desired`` needs a confirmation.

    ``running`` maps a slice to its running NF instances. Held: a revision that removes every slice,
    or more than ``max_share`` of the running instances. ``how`` completes "commit with the trailer
    …" with the front end's own way to confirm.
    """
    removed = tuple(sorted(set(previous) - set(desired)))
    if not removed or confirmed:
        return PruneDecision(removed, ())
    total = sum(running.values())
    gone = sum(running.get(key, 0) for key in removed)
    if not desired:
        why = f"this revision removes every slice ({len(removed)})"
    elif total and gone / total > max_share:
        why = (
            f"this revision removes {gone} of {total} running NF instances "
            f"({gone / total:.0%}, more than {max_share:.0%}) with {len(removed)} slice(s)"
        )
    else:
        return PruneDecision(removed, ())
    until = f"; they keep running until confirmed: commit with the trailer 'Flyslice-Prune: confirm' {how}"
    return PruneDecision(removed, removed, why + until)
