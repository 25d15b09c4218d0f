"""flyslice without its ``[highs]`` extra: no highspy and so no numpy, as `pip install flyslice`, the
container images (tools/kubeenv/image.py: runtime dependencies, no extras) and the gateways get it.
The solver must still plan, with CBC and plain-Python distances (solver/distances.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BLOCKED = """
import sys
sys.modules["numpy"] = None  # an import of either now raises ImportError, as when not installed
sys.modules["highspy"] = None
sys.argv = ["flyslice", "plan", sys.argv[1]]
from flyslice.operator.cli import main
sys.exit(main())
"""


def test_plan_works_without_numpy_and_highspy() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED, str(REPO / "examples" / "wildfire")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "solver: ilp CBC status=Optimal" in out, out
    assert "slice default/wildfire: admitted" in out, out
