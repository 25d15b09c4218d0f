"""The sharing-density benchmark (suite ``solver``, ``sharing_density``) measures what it says: the
"without sharing" input is the same manifests with only the slices' policy changed, and on a case
where the declared footprints leave no room for every offered slice, the plan with sharing admits
more slices than any placement without sharing could."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import manifests_gen  # noqa: E402
import sharing_density  # noqa: E402

KEYS: dict[str, type | tuple[type, ...]] = {
    "gateways": int,
    "gateway_memory_mib": int,
    "offered": int,
    "admitted_shared": int,
    "admitted_unshared": int,
    "baseline_admitted_shared": int,
    "baseline_admitted_unshared": int,
    "gateway_memory_used_mib_shared": float,
    "gateway_memory_used_mib_unshared": float,
    "seconds_shared": float,
    "seconds_unshared": float,
    "guarantee_shared": str,
    "gap_shared": (int, float, type(None)),
}


def _mib(quantity: str) -> int:
    assert quantity.endswith("Mi"), quantity
    return int(quantity[:-2])


def _gateway_mib_per_slice_unshared() -> int:
    """Memory one slice's NFs reserve on a tower without sharing, from the example's declarations."""
    with open(sharing_density.EXAMPLE / "service.yaml", encoding="utf-8") as f:
        roles = yaml.safe_load(f)["spec"]["graph"]["roles"]
    with open(sharing_density.EXAMPLE / "packages.yaml", encoding="utf-8") as f:
        packages = {d["metadata"]["name"]: d["spec"] for d in yaml.safe_load_all(f) if d}
    # Towers run fNF only; each gateway role is one fNF per tower the slice uses.
    gateway_roles = [r for r in roles if r.get("tiers") == ["gateway"]]
    assert gateway_roles
    return sum(_mib(packages[r["package"]]["flavors"]["fnf"]["resources"]["memory"]) for r in gateway_roles)


def _documents(directory: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for path in sorted(directory.glob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            out[path.name] = [d for d in yaml.safe_load_all(f) if d]
    return out


def test_the_unshared_twin_changes_only_the_slices_sharing_policy(tmp_path: Path) -> None:
    case = sharing_density.Case(3, 512, 7)
    sharing_density.write(tmp_path / "shared", case)
    changed = manifests_gen.forbid_sharing(tmp_path / "shared", tmp_path / "unshared")
    before, after = _documents(tmp_path / "shared"), _documents(tmp_path / "unshared")
    assert changed == 7 and before.keys() == after.keys()
    for name, docs in before.items():
        for old, new in zip(docs, after[name], strict=True):
            if old["kind"] == "Slice":
                assert "sharing" not in old["spec"] and new["spec"].pop("sharing") == "forbidden"
            assert old == new
    # The sharing block is still in the packages: only policy forbids it.
    packages = after["packages.yaml"]
    assert any("sharing" in flavor for p in packages for flavor in p["spec"]["flavors"].values())


def test_sharing_admits_more_than_any_unshared_placement_could(tmp_path: Path) -> None:
    case = sharing_density.Case(2, 512, 20)
    row = sharing_density.run_case(case)
    for key, kind in KEYS.items():
        assert isinstance(row[key], kind), (key, row[key])
    assert (row["gateways"], row["gateway_memory_mib"], row["offered"]) == (2, 512, 20)

    # With two towers every slice uses both. Without sharing, a tower holds at most this many slices
    # (memory; CPU binds later on a 512 MiB board), so the case offers more than fit unshared.
    _, nf_mib = sharing_density.gateway_capacity(case.gateway_memory_mib)
    per_slice = _gateway_mib_per_slice_unshared()
    unshared_bound = math.floor(nf_mib / per_slice)
    assert unshared_bound < case.offered
    assert row["admitted_unshared"] <= unshared_bound
    assert row["baseline_admitted_unshared"] <= unshared_bound
    # Sharing only widens the feasible set, and here it must be used to admit more than fits unshared:
    # this fails if the pools were ignored (both runs would admit the same).
    assert row["admitted_shared"] >= row["admitted_unshared"]
    assert row["admitted_shared"] > unshared_bound
    assert row["shared_tenants"] >= 2 * row["admitted_shared"]  # both towers' brokers are shared
    for suffix in ("shared", "unshared"):
        used = row[f"gateway_memory_used_mib_{suffix}"]
        assert 0 < used <= case.gateways * nf_mib
    assert row["gateway_memory_used_mib_unshared"] == case.gateways * per_slice * row["admitted_unshared"]
