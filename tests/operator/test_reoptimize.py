"""Background re-optimisation: applied only when it improves by the margin, still applies and passes
the checks (issue 13, item 1). The solver runs for real (in the Reoptimizer's worker thread where the
test says so); the catalog is the fragmented one, where moving alpha's fog stage admits beta."""

from __future__ import annotations

import dataclasses

import pytest

from flyslice.operator.planning.reoptimize import Reoptimizer, ReoptimizeSettings
from flyslice.operator.reconcile import (
    ControllerState,
    NodeObservation,
    Observation,
    reconcile,
    reoptimization_job,
    state_key,
)
from flyslice.solver.model import Assignment, Flavor

from .conftest import catalog_from, find
from .fragmented import ALPHA, BETA, catalog_docs, slice_doc
from .test_reconcile import T0, running


@pytest.fixture
def admitted_around_alpha():
    """alpha runs on fog-1; beta was just refused by incremental admission."""
    first = reconcile(
        catalog_from(catalog_docs(slice_doc("alpha", "gw-1"))), ControllerState(), Observation(), now=T0
    )
    docs = catalog_docs(slice_doc("alpha", "gw-1"), slice_doc("beta", "gw-2"))
    inc = reconcile(catalog_from(docs), first.state, running(first), now=T0 + 1)
    assert not inc.state.slices[BETA].admitted
    return docs, inc


def proposal_for(docs, outcome, budget=None, now=T0 + 2):
    job = reoptimization_job(
        catalog_from(docs), outcome.state, running(outcome), now=now, migration_budget=budget
    )
    assert job is not None
    return job()


def fog_of(outcome, key):
    return outcome.state.slices[key].assignments["sp-fog"].host


def test_an_improving_proposal_runs_in_the_background_and_the_next_pass_applies_it(admitted_around_alpha):
    docs, inc = admitted_around_alpha
    catalog = catalog_from(docs)
    reopt = Reoptimizer(ReoptimizeSettings(interval_s=3600, margin=0.05, migration_budget=None))
    obs = running(inc)

    def make_job():
        return reoptimization_job(catalog, inc.state, obs, now=T0 + 2, migration_budget=None)

    assert reopt.after_pass(make_job, replanned=True, base=lambda: state_key(inc.state))
    reopt.wait(60)
    proposal = reopt.take()
    assert proposal is not None and proposal.moved == 2 and BETA in proposal.assignments
    applied = reconcile(catalog, inc.state, obs, now=T0 + 3, proposal=proposal)
    reopt.settle(applied.reoptimization)
    assert applied.reoptimization is not None and applied.reoptimization.result == "applied"
    assert applied.replanned and fog_of(applied, ALPHA) == "fog-2" and fog_of(applied, BETA) == "fog-1"
    line = next(e for e in applied.events if e.startswith("re-optimisation: objective "))
    assert line.endswith("2 NF(s) moved") and "(-9" in line  # about -98 %
    assert "slice default/alpha: re-placed, 2 NF(s) moved" in applied.events
    assert applied.slice_status[BETA]["placementGuarantee"] == "optimal"
    status = reopt.status()
    assert status["lastResult"] == "applied" and status["applied"] == 1 and status["movedNFs"] == 2
    assert status["objectiveBefore"] > 1000 > status["objectiveAfter"]
    # The next pass has nothing to apply and re-plans nothing.
    calm = reconcile(catalog, applied.state, running(applied), now=T0 + 4)
    assert not calm.replanned and calm.reoptimization is None


def test_a_proposal_for_an_older_desired_state_is_not_applied(admitted_around_alpha):
    docs, inc = admitted_around_alpha
    proposal = proposal_for(docs, inc)
    find(docs, "Slice", "beta")["spec"]["qos"]["maxLatencyMs"] = 11  # changed while it was computed
    out = reconcile(catalog_from(docs), inc.state, running(inc), now=T0 + 3, proposal=proposal)
    assert out.reoptimization is not None and out.reoptimization.result == "stale"
    assert "the desired state or the nodes changed since it started" in out.reoptimization.message
    assert out.reoptimization.message in out.events
    assert fog_of(out, ALPHA) == "fog-1"  # the incremental pass ran instead, alpha held fixed


def test_a_proposal_for_an_older_placement_is_not_applied(admitted_around_alpha):
    docs, inc = admitted_around_alpha
    catalog = catalog_from(docs)
    proposal = proposal_for(docs, inc)
    # fog-1 went down and came back in between: the same desired state, another placement
    # (alpha moved to fog-2 while fog-1 was down; beta got fog-1 when it returned).
    down = Observation(nodes={"fog-1": NodeObservation(heartbeat_at=T0 - 100)})
    without_fog1 = reconcile(catalog, inc.state, down, now=T0 + 3)
    up = Observation(nodes={"fog-1": NodeObservation(heartbeat_at=T0 + 4)})
    moved_on = reconcile(catalog, without_fog1.state, up, now=T0 + 4)
    assert moved_on.state.plan_fingerprint == inc.state.plan_fingerprint
    assert state_key(moved_on.state) != proposal.base
    out = reconcile(catalog, moved_on.state, up, now=T0 + 5, proposal=proposal)
    assert out.reoptimization is not None and out.reoptimization.result == "stale"
    assert "the placement changed since it started" in out.reoptimization.message
    assert not out.replanned and out.state == moved_on.state


def test_a_proposal_below_the_margin_is_never_handed_to_a_pass(admitted_around_alpha):
    docs, inc = admitted_around_alpha
    catalog = catalog_from(docs)
    clock = [T0]
    reopt = Reoptimizer(
        ReoptimizeSettings(interval_s=3600, margin=0.99, migration_budget=None), clock=lambda: clock[0]
    )
    started = reopt.after_pass(
        lambda: reoptimization_job(catalog, inc.state, running(inc), now=T0 + 2),
        replanned=True,
        base=lambda: state_key(inc.state),
    )
    assert started
    reopt.wait(60)
    assert reopt.take() is None
    (event,) = reopt.drain_events()
    assert event.startswith("re-optimisation: no improvement >= 99% (objective ")
    assert reopt.status()["lastResult"] == "no-improvement" and reopt.status()["applied"] == 0
    # Before the interval nothing runs; after it, the same state is not judged again, another is.
    assert not reopt.after_pass(lambda: pytest.fail("not due"), replanned=False, base=lambda: "other")
    clock[0] += 3601
    assert not reopt.after_pass(
        lambda: pytest.fail("judged already"), replanned=False, base=lambda: state_key(inc.state)
    )
    asked: list[str] = []
    assert not reopt.after_pass(lambda: asked.append("job") or None, replanned=False, base=lambda: "another")
    assert asked == ["job"] and reopt.status()["runs"] == 1  # considered; the factory had nothing to run


def test_moves_that_only_save_node_cost_are_not_worth_their_migration(wildfire):
    """After a fog outage the slice stays on the dearer fog: moving back costs more than it saves."""
    from .test_reconcile import with_second_fog

    catalog = catalog_from(with_second_fog(wildfire))
    beats = {n: NodeObservation(heartbeat_at=T0) for n in catalog.nodes}
    out = reconcile(catalog, ControllerState(), Observation(nodes=beats), now=T0)
    later = {n: NodeObservation(heartbeat_at=T0 + 60 if n != "fog-1" else T0) for n in catalog.nodes}
    moved = reconcile(catalog, out.state, Observation(nodes=later), now=T0 + 60)
    back = Observation(nodes={n: NodeObservation(heartbeat_at=T0 + 70) for n in catalog.nodes})
    settled = reconcile(catalog, moved.state, back, now=T0 + 70)
    job = reoptimization_job(catalog, settled.state, back, now=T0 + 71)
    assert job is not None
    proposal = job()
    assert proposal.improvement < 0.05


def test_the_migration_budget_bounds_the_proposal_and_is_checked_again(admitted_around_alpha):
    docs, inc = admitted_around_alpha
    # alpha's fog stage is two NFs that must move together: with one move allowed, alpha and beta
    # cannot both run (the model may swap them, which is no gain: equal priorities).
    tight = proposal_for(docs, inc, budget=1)
    assert tight.moved <= 1 and not {ALPHA, BETA} <= set(tight.assignments) and tight.improvement < 0.05
    assert (
        tight.guarantee.startswith("restricted: ") and "at most 1 running NF(s) may move" in tight.guarantee
    )
    roomy = proposal_for(docs, inc, budget=2)
    assert roomy.moved == 2 and BETA in roomy.assignments
    # A proposal that claims a smaller budget than it uses is refused by the pass's own count.
    forged = dataclasses.replace(roomy, migration_budget=1)
    out = reconcile(catalog_from(docs), inc.state, running(inc), now=T0 + 3, proposal=forged)
    assert out.reoptimization is not None and out.reoptimization.result == "refused"
    assert "moves 2 running NF(s), over the migration budget of 1" in out.reoptimization.message
    assert not out.replanned and fog_of(out, ALPHA) == "fog-1"


def test_a_proposal_that_fails_the_independent_check_is_refused(admitted_around_alpha):
    docs, inc = admitted_around_alpha
    good = proposal_for(docs, inc)
    # beta's fog stage onto fog-1 next to alpha's: 300m of 200m.
    crowded = {
        **good.assignments,
        ALPHA: {**good.assignments[ALPHA], **dict(inc.state.slices[ALPHA].assignments)},
    }
    forged = dataclasses.replace(good, assignments=crowded, moved=0)
    out = reconcile(catalog_from(docs), inc.state, running(inc), now=T0 + 3, proposal=forged)
    assert out.reoptimization is not None and out.reoptimization.result == "refused"
    assert "fails the independent check" in out.reoptimization.message
    assert not out.replanned and not out.state.slices[BETA].admitted


def test_a_proposal_that_tears_down_a_running_slice_is_refused(admitted_around_alpha):
    docs, inc = admitted_around_alpha
    good = proposal_for(docs, inc)
    beta_alone = {BETA: {**good.assignments[BETA], "sp-fog": Assignment("fog-1", Flavor("fnf"))}}
    forged = dataclasses.replace(good, assignments=beta_alone)
    out = reconcile(catalog_from(docs), inc.state, running(inc), now=T0 + 3, proposal=forged)
    assert out.reoptimization is not None and out.reoptimization.result == "refused"
    assert "would tear down running slice(s) default/alpha" in out.reoptimization.message


def test_settings_are_validated_and_off_means_off():
    with pytest.raises(ValueError, match="margin"):
        ReoptimizeSettings(margin=1.5)
    with pytest.raises(ValueError, match="interval"):
        ReoptimizeSettings(interval_s=0)
    with pytest.raises(ValueError, match="migration budget"):
        ReoptimizeSettings(migration_budget=-1)
    off = Reoptimizer(ReoptimizeSettings(interval_s=None))
    assert not off.after_pass(lambda: pytest.fail("off"), replanned=True, base=lambda: "x")
    assert off.status()["enabled"] is False
