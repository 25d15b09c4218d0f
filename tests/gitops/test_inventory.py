"""Prune planning: only objects flyslice created, never those a bad revision merely broke."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flyslice.operator.gitops.inventory import (
    error_object_key,
    object_key,
    parse_object_key,
    plan_prune,
    plan_revision,
    retained_keys,
)

REPO = Path(__file__).resolve().parents[2]

KEYS = st.sampled_from([f"Slice/default/s{i}" for i in range(6)] + [f"EdgeNode/n{i}" for i in range(3)])


def test_removed_objects_are_pruned_and_added_ones_recorded() -> None:
    plan = plan_prune(
        ["EdgeNode/gw1", "Slice/default/old", "Slice/default/kept"],
        ["EdgeNode/gw1", "Slice/default/kept", "Slice/default/new"],
    )
    assert plan.prune == ("Slice/default/old",)
    assert plan.inventory == ("EdgeNode/gw1", "Slice/default/kept", "Slice/default/new")
    assert plan.retained == () and plan.orphaned == ()


def test_objects_outside_the_inventory_are_never_pruned() -> None:
    # Slice/default/by-hand exists in the cluster but flyslice never created it: not in the inventory.
    plan = plan_prune(["Slice/default/a"], [])
    assert plan.prune == ("Slice/default/a",)
    assert "Slice/default/by-hand" not in plan.prune


def test_broken_objects_and_files_keep_their_last_good_version() -> None:
    previous_files = {
        "Slice/default/a": "slices/a.yaml",
        "Slice/default/b": "slices/b.yaml",
        "Slice/default/c": "slices/c.yaml",
        "EdgeNode/gw1": "nodes.yaml",
    }
    # a.yaml no longer parses at all; b is invalid (named by a validation error); c was deleted.
    keep = retained_keys(previous_files, broken_objects=["Slice/default/b"], broken_files=["slices/a.yaml"])
    assert keep == {"Slice/default/a", "Slice/default/b"}
    plan = plan_prune(previous_files, ["EdgeNode/gw1"], retained=keep)
    assert plan.prune == ("Slice/default/c",)
    assert plan.retained == ("Slice/default/a", "Slice/default/b")
    assert plan.inventory == ("EdgeNode/gw1", "Slice/default/a", "Slice/default/b")


def test_prune_off_deletes_nothing_and_releases_ownership() -> None:
    plan = plan_prune(["Slice/default/a", "Slice/default/b"], ["Slice/default/b"], prune=False)
    assert plan.prune == ()
    assert plan.orphaned == ("Slice/default/a",)
    assert plan.inventory == ("Slice/default/b",)


def test_object_keys_round_trip() -> None:
    assert object_key("Slice", "default", "wildfire") == "Slice/default/wildfire"
    assert object_key("EdgeNode", "default", "gw1") == "EdgeNode/gw1"
    assert parse_object_key("Slice/default/wildfire") == ("Slice", "default", "wildfire")
    assert parse_object_key("EdgeNode/gw1") == ("EdgeNode", "", "gw1")
    with pytest.raises(ValueError, match="not Kind/namespace/name"):
        parse_object_key("Slice//x")
    assert error_object_key("Slice/wildfire") == "Slice/default/wildfire"
    assert error_object_key("EdgeNode/gw1") == "EdgeNode/gw1"


@given(st.sets(KEYS), st.sets(KEYS), st.sets(KEYS), st.booleans())
def test_prune_plan_invariants(
    previous: set[str], desired: set[str], retained: set[str], prune: bool
) -> None:
    plan = plan_prune(previous, desired, retained=retained, prune=prune)
    pruned = set(plan.prune)
    assert pruned <= previous  # only what flyslice created
    assert not pruned & desired  # never what the new revision declares
    assert not pruned & retained  # never what a bad revision merely broke
    assert desired <= set(plan.inventory) <= desired | previous
    assert not pruned & set(plan.inventory)
    if not prune:
        assert not pruned
    else:
        assert pruned == previous - desired - retained


def test_pruning_across_real_revisions(tmp_path: Path) -> None:
    """Revisions from a real repository, loaded and validated by the real loader: a file that stops
    parsing and an object that turns invalid keep their objects; only a deletion prunes. The
    inventory (with files) survives a restart through the source's state."""
    from flyslice.operator.gitops.fetcher import GitSource, GitSourceSpec
    from flyslice.operator.intake.manifests import load_paths
    from flyslice.operator.intake.validation import validate

    from .conftest import Upstream

    (tmp_path / "remotes").mkdir()
    up = Upstream(tmp_path / "remotes")
    wildfire = {p.name: p.read_text() for p in (REPO / "examples" / "wildfire").glob("*.yaml")}
    second = wildfire["slice.yaml"].replace("name: wildfire", "name: second")
    spec = GitSourceSpec(url=str(up.bare))

    def apply(files: dict[str, str | None]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        up.commit(files)
        source = GitSource(spec, tmp_path / "cache")  # a fresh process each time: state from disk
        snap = source.fetch()
        manifests, load_errors = load_paths([snap.root])
        result = validate(manifests)
        step = plan_revision(
            source.inventory_files, result.sources, [*load_errors, *result.errors], snap.root
        )
        source.mark_applied(snap.revision, inventory=step.files)
        return step.plan.prune, step.plan.retained

    def inventory() -> tuple[str, ...]:
        return GitSource(spec, tmp_path / "cache").status.inventory

    assert apply({**wildfire, "more/second.yaml": second}) == ((), ())
    assert {"Slice/default/second", "Slice/default/wildfire", "EdgeNode/gw-1"} <= set(inventory())

    # second.yaml no longer parses: its slice is kept, nothing is pruned.
    assert apply({"more/second.yaml": "kind: Slice\nmetadata: {name: second\n"}) == (
        (),
        ("Slice/default/second",),
    )
    # The wildfire slice turns invalid: kept at its last good version too.
    broken = wildfire["slice.yaml"].replace("maxLatencyMs: 10", "maxLatencyMs: -3")
    assert apply({"slice.yaml": broken}) == ((), ("Slice/default/second", "Slice/default/wildfire"))
    # Fixed again, and second.yaml deleted: now, and only now, the second slice is pruned.
    assert apply({"slice.yaml": wildfire["slice.yaml"], "more/second.yaml": None}) == (
        ("Slice/default/second",),
        (),
    )
    assert "Slice/default/second" not in inventory()
    assert "Slice/default/wildfire" in inventory()
