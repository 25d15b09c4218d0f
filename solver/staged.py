"""A restricted first pass for large models: a good, truly feasible answer early.

On large instances the full model's first MIP solve can spend the whole time limit in presolve,
the root LP and cut separation, and its early incumbents break latency budgets the lazy cuts have
not reached yet (the re-check then drops those slices). A model restricted to the few most
promising options per NF (plus the warm start's own) is small, exact in its latency rows, and
solved in a fraction of the time; ``place()`` solves it first and offers its re-checked answer as
the warm start of the full model. The restricted model's bound is never used: the full model's
solve supplies the bound the gap is stated against, so the guarantee stays honest.
"""

from __future__ import annotations

from collections.abc import Mapping

from .candidates import Option, path_slack
from .candidates import _most_promising as most_promising
from .distances import Distances
from .model import Assignment, SliceDemand, Topology

#: The full model must have at least this many (NF, host, flavour) options for the first pass.
MIN_OPTIONS = 3000
#: Options kept per NF in the first pass (the start's own are added back).
KEEP = 6
#: Share of the solve time the first pass may use at most ...
SHARE = 0.3
#: ... unless building the full model is predicted to take at least this share of the solve time
#: left: then the full model cannot be solved usefully in what remains (1000 hosts x 500 slices: a
#: 5-8 s build of ~24 s left, and 10 s of HiGHS on it gave no bound and no better answer), and ...
FULL_BUILD_TOO_LONG = 0.15
#: ... the first pass gets this share instead (on that instance: 480 slices admitted instead of the
#: baseline's 377, the restricted model solved to optimality in 12 s).
LARGE_SHARE = 0.8
#: ... and no first pass with less solve time left than this: building two models would eat it.
MIN_SECONDS = 5.0


def restricted(
    slices: list[SliceDemand],
    candidates: Mapping[str, Mapping[str, list[Option]]],
    topology: Topology,
    dist: Distances,
    start: Mapping[str, Mapping[str, Assignment]],
    min_options: int | None = None,
    seconds_left: float = float("inf"),
) -> dict[str, dict[str, list[Option]]] | None:
    """The first pass's options per slice and NF, or ``None`` when the full model has fewer than
    ``min_options`` (default ``MIN_OPTIONS``) options, or less than ``MIN_SECONDS`` of solve time
    is left, and the full model is solved directly."""
    total = sum(len(o) for s in slices for o in candidates[s.key].values())
    if total < (MIN_OPTIONS if min_options is None else min_options) or seconds_left < MIN_SECONDS:
        return None
    out: dict[str, dict[str, list[Option]]] = {}
    for s in slices:
        full = candidates[s.key]
        slack = path_slack(s, full, dist)
        chosen = start.get(s.key, {})
        kept: dict[str, list[Option]] = {}
        for nf_id, opts in full.items():
            best = most_promising(s, nf_id, opts, slack.get(nf_id, {}), topology)[:KEEP]
            a = chosen.get(nf_id)
            if a is not None and not any((o.host, o.flavor) == (a.host, a.flavor) for o in best):
                # The start must stay a point of the restricted model (it is its warm start).
                best += [o for o in opts if (o.host, o.flavor) == (a.host, a.flavor)]
            kept[nf_id] = best
        out[s.key] = kept
    return out


def share(full_build_predicted: float, seconds_left: float) -> float:
    """The share of ``seconds_left`` the first pass may use, given the full model's predicted build."""
    if seconds_left > 0 and full_build_predicted >= FULL_BUILD_TOO_LONG * seconds_left:
        return LARGE_SHARE
    return SHARE
