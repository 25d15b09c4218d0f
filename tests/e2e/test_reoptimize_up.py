"""Issue 13, item 1, through a real ``flyslice up``: incremental admission refuses to move a running
slice for a newcomer, and the background re-optimisation then does it, visibly (status and events),
within its migration budget. Real agents run every NF; the status API is read over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.operator.fragmented import catalog_docs, slice_doc

from .up_process import UpProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def fog_of(slice_doc_: dict) -> str:
    return next(i["node"] for i in slice_doc_["instances"] if i["instance"].endswith("-sp-fog"))


def test_up_admits_incrementally_and_reoptimizes_in_the_background(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "catalog.yaml").write_text(
        yaml.safe_dump_all(catalog_docs(slice_doc("alpha", "gw-1")), sort_keys=False)
    )
    args = ("--reoptimize-interval", "3600", "--reoptimize-margin", "5%", "--migration-budget", "4")
    with UpProcess(str(src), tmp_path / "state", *args) as up:
        alpha = up.wait_ready("alpha", 90)
        assert fog_of(alpha) == "fog-1"
        # The run after alpha's admission finds nothing worth a move.
        doc = up.wait(
            lambda d: d if d["controller"]["reoptimization"]["lastResult"] else None,
            60,
            "first re-optimisation",
        )
        reopt = doc["controller"]["reoptimization"]
        assert reopt["enabled"] and reopt["margin"] == 0.05 and reopt["migrationBudget"] == 4
        assert reopt["intervalS"] == 3600 and reopt["lastResult"] == "no-improvement"
        assert any(e.startswith("re-optimisation: no improvement >= 5%") for e in doc["events"])

        (src / "beta.yaml").write_text(yaml.safe_dump(slice_doc("beta", "gw-2"), sort_keys=False))
        # beta cannot be admitted next to alpha held fixed; the re-optimisation moves alpha's fog stage.
        doc = up.wait(
            lambda d: d if d["controller"]["reoptimization"]["applied"] else None,
            90,
            "the re-optimisation applied",
        )
        assert any("slice default/beta: not admitted" in e and "held fixed" in e for e in doc["events"]), doc[
            "events"
        ]
        line = next(e for e in doc["events"] if e.startswith("re-optimisation: objective "))
        assert line.endswith("2 NF(s) moved")
        # The status that says "applied" already shows the new placement.
        alpha, beta = (next(s for s in doc["slices"] if s["name"] == n) for n in ("alpha", "beta"))
        assert fog_of(alpha) == "fog-2" and fog_of(beta) == "fog-1", up.log.read_text()[-6000:]
        alpha = up.wait_ready("alpha", 90)
        beta = up.wait_ready("beta", 90)
        assert fog_of(alpha) == "fog-2" and fog_of(beta) == "fog-1"
        assert beta["guarantee"] == "restricted: at most 4 running NF(s) may move"
