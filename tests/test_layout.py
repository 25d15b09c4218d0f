"""The package layout is a contract: small packages by concern, imports pointing one way.

Data flows manifest -> validated model -> placement -> per-node actions -> observed status; the
imports follow it. A module that reaches "up" (intake importing planning, the embedded runtime
importing the Kubernetes one) makes this test fail and names the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"crds": "flyslice.crds", "solver": "flyslice.solver", "operator": "flyslice.operator"}
PACKAGE_DIRS["nodeagent"] = "flyslice.nodeagent"

# Lower layers never import higher ones; equal layers in different groups never import each other.
LAYERS: list[tuple[str, int]] = [
    ("flyslice.crds", 0),
    ("flyslice.solver", 0),
    ("flyslice.nodeagent.spec", 2),
    ("flyslice.nodeagent.quantity", 1),
    ("flyslice.nodeagent.message", 1),
    ("flyslice.nodeagent.sdk", 2),
    ("flyslice.nodeagent.nfkit", 2),
    ("flyslice.nodeagent.gctune", 2),
    ("flyslice.nodeagent.nfs", 3),
    ("flyslice.nodeagent.dataplane", 3),
    ("flyslice.nodeagent.runtime", 4),
    ("flyslice.nodeagent.heartbeat", 5),
    ("flyslice.nodeagent.cache", 5),
    ("flyslice.nodeagent.telemetry", 5),
    ("flyslice.nodeagent.agent", 6),
    ("flyslice.nodeagent.sources", 7),
    ("flyslice.nodeagent.kube", 7),
    ("flyslice.nodeagent.__main__", 8),
    ("flyslice.operator.local_guard", 9),
    ("flyslice.operator.intake", 10),
    ("flyslice.operator.planning", 11),
    ("flyslice.operator.gitops", 11),
    ("flyslice.operator.reconcile", 12),
    ("flyslice.operator.status_api", 12),
    ("flyslice.operator.observe", 12),
    ("flyslice.operator.review", 12),
    ("flyslice.operator.embedded", 13),
    ("flyslice.operator.kube", 13),
    ("flyslice.operator.testing", 13),
    ("flyslice.operator.cli", 14),
]


def _group(module: str) -> tuple[str, int] | None:
    best: tuple[str, int] | None = None
    for prefix, layer in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best[0])
        ):
            best = (prefix, layer)
    return best


def _modules() -> dict[str, Path]:
    found = {}
    for d, pkg in PACKAGE_DIRS.items():
        for path in (REPO / d).rglob("*.py"):
            rel = path.relative_to(REPO / d).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([pkg, *parts])] = path
    return found


def _imports(module: str, path: Path) -> set[str]:
    is_package = path.name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - node.level + 1]
                target = ".".join(stem + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{a.name}" for a in node.names)
    return {n for n in names if n.startswith("flyslice.")}


MODULES = _modules()


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in MODULES if m.count(".") > 1 and _group(m) is None)
    assert not unplaced, f"add these to LAYERS: {unplaced}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _group(m)))
def test_imports_point_down_the_layers(module: str) -> None:
    here = _group(module)
    assert here is not None
    for target in _imports(module, MODULES[module]):
        there = _group(target)
        if there is None or there[0] == here[0]:
            continue
        assert there[1] < here[1], f"{module} imports {target}: layer {there} is not below {here}"


@pytest.mark.parametrize("package_dir", sorted({p.parent for p in MODULES.values()}), ids=str)
def test_packages_are_small_and_say_what_they_own(package_dir: Path) -> None:
    modules = [p for p in package_dir.glob("*.py") if p.name != "__init__.py"]
    if package_dir.relative_to(REPO).parts[0] in ("operator", "nodeagent"):
        # The two components that keep growing; solver/ is one concern and may stay flat.
        assert len(modules) <= 12, f"{package_dir} holds {len(modules)} modules: split it by concern"
    init = package_dir / "__init__.py"
    assert init.is_file()
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert doc and len(doc) > 40, f"{init} needs a docstring saying what the package owns"
