"""Repository-level contracts: packaging, generated docs, and the standard library's `operator`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_operator_dir_never_shadows_the_standard_library():
    # Run from the repository root, where a naive layout would import ./operator instead.
    code = "import operator, flyslice.operator as o; print(operator.__file__); print(o.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    stdlib_path, ours = out.stdout.split()
    assert "site-packages" not in stdlib_path and stdlib_path.endswith("operator.py")
    assert Path(ours).resolve() == REPO / "operator" / "__init__.py"


def test_components_import_under_the_flyslice_namespace():
    import flyslice.crds
    import flyslice.nodeagent
    import flyslice.operator
    import flyslice.solver

    for mod, d in [(flyslice.crds, "crds"), (flyslice.solver, "solver"), (flyslice.nodeagent, "nodeagent")]:
        assert Path(mod.__file__).resolve().parent == REPO / d


def test_resource_reference_is_generated_from_the_crds():
    out = subprocess.run(
        [sys.executable, "tools/gen_resource_docs.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_console_script_is_installed():
    out = subprocess.run(["flyslice", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "validate" in out.stdout and "plan" in out.stdout


def test_operator_dir_on_sys_path_still_yields_the_standard_library():
    # `python -m pip` / `python -m pytest` from a checkout put the repository root first on sys.path;
    # with -S nothing imports the real `operator` before it (as in a fresh virtualenv).
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); import operator; "
        "from collections import deque; import contextlib; print(operator.__file__, operator.add(2, 3))"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path, total = out.stdout.split()
    assert Path(path).parent != REPO / "operator" and path.endswith("operator.py") and total == "5"


def test_flyslice_agent_forwards_every_option_to_the_agent():
    out = subprocess.run(["flyslice", "agent", "--kube", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--no-pods" in out.stdout and "--kubeconfig" in out.stdout
    out = subprocess.run(["flyslice", "agent", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--desired-file" in out.stdout


def test_example_packages_pin_the_shipped_module_bytes():
    out = subprocess.run(
        [sys.executable, "tools/refresh_digests.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_example_config_schemas_are_the_nfs_own():
    import importlib

    import yaml

    for f in (REPO / "examples").glob("*/packages.yaml"):
        for pkg in yaml.safe_load_all(f.read_text()):
            flavors = pkg["spec"]["flavors"]
            module = (flavors.get("fnf") or flavors["vnf"])["module"].removeprefix("builtin:")
            nf = importlib.import_module(f"flyslice.nodeagent.nfs.{module}").NF
            assert pkg["spec"]["configSchema"] == nf.config_schema, f"{f}: {pkg['metadata']['name']}"


@pytest.mark.slow
def test_a_regular_wheel_install_works_outside_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120
    )
    py = venv / "bin" / "python"
    (wheel,) = wheels.glob("flyslice-*.whl")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    code = (
        "import flyslice.crds as c, flyslice.operator.cli, operator; "
        "from flyslice.nodeagent.runtime.modules import resolve_ref; "
        "print(c.__file__); print(resolve_ref('builtin:broker')); print(sorted(c.crd_documents())); "
        "print(operator.__file__)"
    )
    out = subprocess.run([py, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    crds_file, broker, kinds, std_operator = out.stdout.splitlines()
    assert str(venv) in crds_file and str(venv) in broker and broker.endswith("nodeagent/nfs/broker.py")
    assert kinds == str(
        sorted(["EdgeNode", "GitSource", "NFInstance", "NFPackage", "NetworkService", "Slice"])
    )
    assert "site-packages" not in std_operator


def test_parallel_runs_deal_out_whole_modules_and_tests_cluster_as_one_unit() -> None:
    """tools/test.sh runs pytest-xdist; module fixtures (an API server, a deployed cluster) rely on a
    module's tests sharing one worker, and tests/cluster's modules on sharing one together."""
    from tests.conftest import xdist_scope

    cluster = {xdist_scope(f"tests/cluster/{m}.py::t") for m in ("test_deploy_k3s", "test_faults_k3s")}
    assert cluster == {"tests/cluster"}
    assert xdist_scope("tests/kube/test_a.py::test_b[x::y]") == "tests/kube/test_a.py"
    # The scheduler is the one xdist uses: under its default ("load") the two modules' tests would be
    # spread over both workers.
    modules = ["tests/test_layout.py", "tests/operator/test_limits.py"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider", *modules],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    workers: dict[str, set[str]] = {m: set() for m in modules}
    for line in run.stdout.splitlines():
        if line.startswith("[gw") and " PASSED " in line:
            worker, nodeid = line.split("]", 1)[0][1:], line.split(" PASSED ", 1)[1]
            workers[nodeid.split("::", 1)[0]].add(worker)
    assert all(len(w) == 1 for w in workers.values()), workers
