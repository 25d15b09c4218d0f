"""``--weights``: the objective's weights are configurable where users run the solver (issue 15 item 2).

``flyslice plan`` solves with them (the plan's objective terms change); ``up`` and ``operator`` take
the same option into the SolveOptions of every pass, and the control plane copies them into every
Problem it builds, so re-optimisation judges with the same objective. Bad values exit 2 with one
line naming the option and the term.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flyslice.operator.cli import _parser as build_parser
from flyslice.operator.planning import expansion
from flyslice.solver.model import Weights
from flyslice.solver.options import SolveOptions

REPO = Path(__file__).resolve().parents[2]
WILDFIRE = REPO / "examples" / "wildfire"


def _plan(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flyslice.operator.cli", "plan", str(WILDFIRE), "-o", "json", *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _terms(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout)["solver"]["objectiveTerms"])


def test_plan_solves_with_the_given_weights() -> None:
    default = _terms(_plan())
    assert default["latency"] > 0 and default["resource"] > 0
    no_latency = _terms(_plan("--weights", "latency=0"))
    assert no_latency["latency"] == 0
    # Only resources count now: the optimum cannot pay more for them than the default trade-off did.
    assert no_latency["resource"] <= default["resource"] + 1e-9
    doubled = _terms(_plan("--weights", "latency=2,resource=0"))
    assert doubled["resource"] == 0 and doubled["latency"] >= 2 * default["latency"] - 1e-9


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("bogus=1", "TERM one of resource, latency, migration, rejection"),
        ("latency=-1", "finite number >= 0"),
        ("latency=nan", "finite number >= 0"),
        ("latency=inf", "finite number >= 0"),
        ("rejection=0", "rejection=0"),
        ("latency=1,latency=2", "given twice"),
        ("latency", "TERM=NUMBER"),
        (",", "at least one"),
    ],
)
def test_bad_weights_exit_2_with_one_line(value: str, says: str) -> None:
    out = _plan("--weights", value)
    assert out.returncode == 2 and out.stdout == ""
    assert "--weights" in out.stderr and says in out.stderr, out.stderr


@pytest.mark.parametrize("command", [["up", "dir"], ["operator"]])
def test_up_and_operator_take_the_weights_into_their_solve_options(command: list[str]) -> None:
    from flyslice.operator.cli import _solve_options

    args = build_parser().parse_args([*command, "--weights", "migration=3,rejection=500"])
    assert _solve_options(args) == SolveOptions(weights=Weights(migration=3, rejection=500))
    assert _solve_options(build_parser().parse_args(command)) is None


def test_the_control_plane_builds_problems_with_the_weights() -> None:
    w = Weights(resource=2, latency=0.5)
    from flyslice.operator.intake.manifests import load_paths
    from flyslice.operator.intake.validation import validate

    manifests, errors = load_paths([WILDFIRE])
    assert not errors
    catalog = validate(manifests).catalog
    assert expansion.problem(catalog, [], weights=w).weights == w
    assert expansion.problem(catalog, []).weights == Weights()


def test_solve_options_refuse_unusable_weights() -> None:
    with pytest.raises(ValueError, match=r"weights\.latency"):
        SolveOptions(weights=Weights(latency=float("nan")))
    with pytest.raises(ValueError, match="rejection"):
        SolveOptions(weights=Weights(rejection=0))
