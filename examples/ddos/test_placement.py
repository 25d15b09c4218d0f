"""GNF's IoT DDoS mitigation: the filters run on each home's CPE, next to the devices they protect.

Run: python -m pytest examples/   (docs/testing.md)
"""

from pathlib import Path

from flyslice.testing import PlanUnderTest

HERE = Path(__file__).parent


def test_every_home_is_protected_at_its_own_gateway(flyslice_plan) -> None:
    plan: PlanUnderTest = flyslice_plan(HERE)
    plan.assert_admitted("home-iot-protection")
    plan.assert_nf("home-iot-protection", "firewall", tier="gateway", flavor="fnf")
    plan.assert_nf("home-iot-protection", "limiter", tier="gateway", flavor="fnf")
    plan.assert_latency_under("home-iot-protection", 1)
