"""Background re-optimisation with shared instances: the independent check packs the proposal's
tenants into the proposal's own instances (examples/shared-gateways, the real solver).

On the example's 500m towers a fourth sharing slice does not fit incrementally; re-optimisation
finds a placement that admits all four by moving tenants between the towers' shared brokers. A
tenant moved to the other tower cannot stay in the instance it runs in now: checking the proposal
with the running memberships opened a second broker there, paid its base again and refused a
valid proposal.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from flyslice.operator.reconcile import ControllerState, Observation, reconcile, reoptimization_job

from .conftest import catalog_from, find
from .test_reconcile import T0, running

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shared-gateways"
NEW = "default/pest-watch"


def example_docs() -> list[dict]:
    return [d for f in sorted(EXAMPLE.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def test_a_proposal_that_moves_tenants_between_shared_instances_passes_the_check() -> None:
    docs = example_docs()
    first = reconcile(catalog_from(docs), ControllerState(), running_of_nothing(), now=T0)
    assert all(rec.admitted for rec in first.state.slices.values())
    pest = copy.deepcopy(find(docs, "Slice", "fire-watch"))
    pest["metadata"]["name"] = "pest-watch"
    more = [*docs, pest]
    inc = reconcile(catalog_from(more), first.state, running(first), now=T0 + 1)
    assert not inc.state.slices[NEW].admitted  # held fixed, the running slices leave no room

    job = reoptimization_job(catalog_from(more), inc.state, running(inc), now=T0 + 2, migration_budget=None)
    assert job is not None
    proposal = job()
    assert NEW in proposal.assignments and proposal.moved > 0
    assert proposal.instances[NEW], "the proposal names the shared instances it packs its tenants into"

    applied = reconcile(catalog_from(more), inc.state, running(inc), now=T0 + 3, proposal=proposal)
    assert applied.reoptimization is not None
    assert applied.reoptimization.result == "applied", applied.reoptimization.message
    assert all(rec.admitted for rec in applied.state.slices.values())
    # The three sharing slices' tower brokers stay shared (at most one instance per tower).
    tenants: dict[str, set[str]] = {}
    for a in applied.actions:
        if a.spec["role"] == "broker-gw" and a.spec.get("sharedInstance"):
            tenants.setdefault(a.spec["sharedInstance"]["name"], set()).add(a.spec["slice"])
    assert 1 <= len(tenants) <= 2, tenants
    assert set().union(*tenants.values()) == {"fire-watch", "air-quality", "pest-watch"}, tenants


def running_of_nothing() -> Observation:
    return Observation()
