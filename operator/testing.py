"""Placement tests for manifest repositories: ``flyslice.testing`` (docs/testing.md).

Load a directory, plan it exactly as ``flyslice plan`` does, and assert in one line that a slice is
admitted, that an NF lands on a tier or flavour, that a path stays under a latency, or that a node keeps
headroom. Every failure message ends with the plan table, so a red test shows where everything went.

In a repository's ``conftest.py``: ``pytest_plugins = ["flyslice.testing"]``; then a test asks for the
``flyslice_plan`` fixture, or calls :func:`load_plan` directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flyslice import solver
from flyslice.operator.intake.quantities import cpu_millis, format_cpu, format_memory, memory_bytes
from flyslice.operator.intake.validation import validate_paths
from flyslice.operator.planning.pipeline import plan
from flyslice.operator.planning.plan_format import plan_document, render_table

__all__ = ["InvalidManifests", "PlanUnderTest", "flyslice_plan", "load_plan"]


class InvalidManifests(AssertionError):
    """The directory does not validate; the message lists every error (file:line: object: field: why)."""


@dataclass
class PlanUnderTest:
    """A plan document plus one-line assertions over it."""

    document: dict[str, Any]
    tiers: dict[str, str]

    @property
    def table(self) -> str:
        return render_table(self.document)

    def _fail(self, message: str) -> None:
        # __tracebackhide__ keeps pytest's report on the caller's line, not on this helper.
        __tracebackhide__ = True
        raise AssertionError(f"{message}\n\nthe plan:\n{self.table}")

    def slice(self, name: str) -> dict[str, Any]:
        """The plan document's entry for ``name`` (``slice`` or ``namespace/slice``)."""
        __tracebackhide__ = True
        ns, _, short = name.rpartition("/")
        found = [
            s for s in self.document["slices"] if s["name"] == short and (not ns or s["namespace"] == ns)
        ]
        if len(found) != 1:
            known = ", ".join(f"{s['namespace']}/{s['name']}" for s in self.document["slices"]) or "none"
            self._fail(f"no single slice {name!r} in the plan (slices: {known})")
        entry: dict[str, Any] = found[0]
        return entry

    def assert_admitted(self, name: str) -> None:
        __tracebackhide__ = True
        s = self.slice(name)
        if not s["admitted"]:
            self._fail(f"slice {name} is not admitted: {'; '.join(s['reasons'])}")

    def assert_rejected(self, name: str) -> None:
        __tracebackhide__ = True
        if self.slice(name)["admitted"]:
            self._fail(f"slice {name} is admitted, expected it rejected")

    def assert_nf(
        self,
        name: str,
        role: str,
        *,
        tier: str | None = None,
        flavor: str | None = None,
        node: str | None = None,
    ) -> None:
        """Every instance of ``role`` (one per attachment for a perAttachment role) runs as asked."""
        __tracebackhide__ = True
        self.assert_admitted(name)
        instances = [i for i in self.slice(name)["instances"] if i["role"] == role]
        if not instances:
            self._fail(f"slice {name} has no NF with role {role!r}")
        for i in instances:
            where = f"{role}" + (f"@{i['attachment']}" if "attachment" in i else "")
            got = {"tier": self.tiers.get(i["node"]), "flavor": i["flavor"], "node": i["node"]}
            for what, want in (("tier", tier), ("flavor", flavor), ("node", node)):
                if want is not None and got[what] != want:
                    self._fail(
                        f"slice {name}: {where} runs with {what} {got[what]} on {i['node']}, expected {want}"
                    )

    def assert_latency_under(self, name: str, ms: float, path: str | None = None) -> None:
        """Every budgeted path (or only ``path``) is predicted under ``ms`` milliseconds."""
        __tracebackhide__ = True
        self.assert_admitted(name)
        paths = [p for p in self.slice(name)["paths"] if path is None or p["name"] == path]
        if not paths:
            self._fail(f"slice {name} has no budgeted path {path!r}")
        for p in paths:
            if p["latencyMs"] is None or p["latencyMs"] >= ms:
                self._fail(
                    f"slice {name}: path {p['name']} is predicted at {p['latencyMs']} ms, not under {ms:g} ms"
                )

    def assert_headroom(
        self, node: str, *, cpu: str | float | None = None, memory: str | None = None
    ) -> None:
        """``node`` keeps at least this much free: Kubernetes quantities (``cpu="500m"``, ``memory="1Gi"``)."""
        __tracebackhide__ = True
        found = [n for n in self.document["nodes"] if n["name"] == node]
        if not found:
            self._fail(f"no node {node!r} in the plan")
        n = found[0]
        free_cpu = n["cpu"]["capacityMillis"] - n["cpu"]["usedMillis"]
        free_mem = n["memory"]["capacityBytes"] - n["memory"]["usedBytes"]
        if cpu is not None and free_cpu < cpu_millis(cpu):
            self._fail(f"node {node} keeps {format_cpu(free_cpu)} CPU free, less than {cpu}")
        if memory is not None and free_mem < memory_bytes(memory):
            self._fail(f"node {node} keeps {format_memory(free_mem)} memory free, less than {memory}")


def load_plan(*paths: str | Path, method: str = "ilp", time_limit_s: float | None = None) -> PlanUnderTest:
    """Validate and plan manifests (files or directories) as ``flyslice plan`` does.

    Raises :class:`InvalidManifests` listing every error when they do not validate: a test of an invalid
    repository must fail on the invalid object, not on a missing placement.
    """
    __tracebackhide__ = True
    result = validate_paths([str(p) for p in paths])
    errors = [e for e in result.errors if e.severity == "error"]
    if errors:
        raise InvalidManifests("invalid manifests:\n" + "\n".join(f"  {e}" for e in errors))
    if not result.catalog.slices:
        raise InvalidManifests(f"no Slice in {', '.join(map(str, paths))}: nothing to plan")
    options = solver.SolveOptions(time_limit_s=time_limit_s) if time_limit_s else None
    the_plan = plan(result.catalog, method=method, options=options)
    tiers = {name: n.tier for name, n in result.catalog.nodes.items()}
    return PlanUnderTest(plan_document(the_plan), tiers)


@pytest.fixture
def flyslice_plan() -> Callable[..., PlanUnderTest]:
    """``flyslice_plan("slices/")`` plans a directory once per test session and path."""
    return _cached_load_plan


_CACHE: dict[tuple[Any, ...], PlanUnderTest] = {}


def _cached_load_plan(*paths: str | Path, **kwargs: Any) -> PlanUnderTest:
    __tracebackhide__ = True
    key = (tuple(str(Path(p).resolve()) for p in paths), tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        _CACHE[key] = load_plan(*paths, **kwargs)
    return _CACHE[key]
