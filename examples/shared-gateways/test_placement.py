"""What the shared-gateways example must keep, whatever the manifests become.

That the two agencies that allow it do share the towers' brokers is checked through `flyslice plan`
in tests/operator/test_sharing_plan_cli.py.

Run: python -m pytest examples/   (docs/testing.md)
"""

from pathlib import Path

from flyslice.testing import PlanUnderTest

HERE = Path(__file__).parent
SLICES = ("fire-watch", "air-quality", "ranger-tracking")


def test_every_agency_gets_its_slice_within_budget(flyslice_plan) -> None:
    plan: PlanUnderTest = flyslice_plan(HERE)
    for name in SLICES:
        plan.assert_admitted(name)
        plan.assert_latency_under(name, 10)
        plan.assert_nf(name, "broker-gw", tier="gateway", flavor="fnf")
        plan.assert_nf(name, "db", tier="cloud", flavor="vnf")


def test_the_rangers_never_share_a_broker(flyslice_plan) -> None:
    plan: PlanUnderTest = flyslice_plan(HERE)
    rangers = plan.slice("ranger-tracking")
    assert not [i for i in rangers["instances"] if "sharedInstance" in i], plan.table
    for si in plan.document["sharedInstances"]:
        assert all(t["slice"] != "default/ranger-tracking" for t in si["tenants"]), plan.table


def test_the_towers_keep_headroom(flyslice_plan) -> None:
    plan: PlanUnderTest = flyslice_plan(HERE)
    for tower in ("tower-1", "tower-2"):
        plan.assert_headroom(tower, cpu="50m", memory="128Mi")
