"""What the wildfire slice must keep, whatever the manifests become (seed 000, section IV).

Run: python -m pytest examples/   (docs/testing.md)
"""

from pathlib import Path

from flyslice.testing import PlanUnderTest

HERE = Path(__file__).parent


def test_the_fire_brigade_gets_its_slice_within_budget(flyslice_plan) -> None:
    plan: PlanUnderTest = flyslice_plan(HERE)
    plan.assert_admitted("wildfire")
    plan.assert_latency_under("wildfire", 10)


def test_gateways_run_flyweight_nfs_and_the_cloud_stores(flyslice_plan) -> None:
    plan: PlanUnderTest = flyslice_plan(HERE)
    plan.assert_nf("wildfire", "broker-gw", tier="gateway", flavor="fnf")
    plan.assert_nf("wildfire", "sp-gw", tier="gateway", flavor="fnf")
    plan.assert_nf("wildfire", "db", tier="cloud", flavor="vnf")


def test_the_raspberry_pis_keep_headroom(flyslice_plan) -> None:
    plan: PlanUnderTest = flyslice_plan(HERE)
    for gateway in ("gw-1", "gw-2"):
        plan.assert_headroom(gateway, cpu="500m", memory="256Mi")
