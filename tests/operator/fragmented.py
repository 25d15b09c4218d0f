"""A catalog where incremental admission and the global model disagree (issue 13, item 1).

Two fog nodes, each with room for the fog stage of one wildfire slice (the fNF broker and stream
processor: 150m of its 200m). ``gw-1`` reaches both fogs in 1 ms; ``gw-2`` reaches only ``fog-1``
within the 10 ms budget (via ``fog-2`` its path is 11.4 ms). ``alpha`` (on ``gw-1``) is placed first
and takes the cheaper ``fog-1``. When ``beta`` (on ``gw-2``) arrives it needs ``fog-1``:

* incremental admission holds ``alpha`` fixed, so ``beta`` is not admitted;
* the global model moves ``alpha``'s two fog NFs to ``fog-2`` (migration cost 2 x 10) and admits
  ``beta`` (rejection cost 1000): the re-optimiser's improving proposal.
"""

from __future__ import annotations

import copy
from typing import Any

from .conftest import wildfire_docs


def node(
    name: str, tier: str, runtimes: list[str], cpu: str, cost: int, links: list[tuple[str, int]]
) -> dict[str, Any]:
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "EdgeNode",
        "metadata": {"name": name},
        "spec": {
            "tier": tier,
            "runtimes": runtimes,
            "capacity": {"cpu": cpu, "memory": "2Gi"},
            "availability": 0.99,
            "cost": cost,
            "links": [{"node": n, "latencyMs": ms} for n, ms in links],
        },
    }


def nodes() -> list[dict[str, Any]]:
    return [
        node("cloud", "cloud", ["vnf"], "16", 1, [("fog-1", 4), ("fog-2", 4)]),
        node("fog-1", "fog", ["vnf", "fnf"], "200m", 2, [("gw-1", 1), ("gw-2", 1)]),
        node("fog-2", "fog", ["vnf", "fnf"], "200m", 3, [("gw-1", 1)]),
        node("gw-1", "gateway", ["fnf"], "1", 4, []),
        node("gw-2", "gateway", ["fnf"], "1", 4, []),
    ]


def slice_doc(name: str, gateway: str, **spec: Any) -> dict[str, Any]:
    base = copy.deepcopy(next(d for d in wildfire_docs() if d["kind"] == "Slice"))
    base["metadata"] = {"name": name}
    base["spec"]["attachments"] = [{"node": gateway}]
    base["spec"].pop("lifetime", None)
    base["spec"].update(spec)
    return base


def catalog_docs(*slices: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes above, the wildfire packages and service, and ``slices``."""
    kept = [d for d in wildfire_docs() if d["kind"] in ("NFPackage", "NetworkService")]
    return [*nodes(), *kept, *slices]


ALPHA = "default/alpha"
BETA = "default/beta"
