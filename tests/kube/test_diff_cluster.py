"""`flyslice diff cluster:NS DIR` against a real API server where the real operator placed wildfire.

The API server is this module's own: EdgeNodes are cluster-scoped, and other tests' nodes on the shared
server would show up in the cluster's view (and in the plan of the directory compared with it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubeenv
import pytest

from .operator_harness import OperatorProcess, kubectl_items, operator_kubeconfig, wait_for

pytestmark = [pytest.mark.kube, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
WILDFIRE = REPO / "examples" / "wildfire"
NS = "brigade"


@pytest.fixture(scope="module")
def own_env() -> Iterator[kubeenv.KubeEnv]:
    try:
        env = kubeenv.KubeEnv(controller_manager=False).start()
    except kubeenv.KubeEnvUnavailable as exc:
        if os.environ.get("FLYSLICE_REQUIRE_KUBE") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        env.install_crds(sorted((REPO / "crds").glob("*.yaml")))
        yield env
    finally:
        env.stop()


@pytest.fixture(scope="module")
def placed(own_env: kubeenv.KubeEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[kubeenv.KubeEnv]:
    """The wildfire example applied with `kubectl apply -n brigade` and placed by the operator."""
    env = own_env
    env.kubectl("create", "namespace", NS)
    env.kubectl("-n", NS, "apply", "-f", str(WILDFIRE))
    op = OperatorProcess(
        operator_kubeconfig(env),
        NS,
        tmp_path_factory.mktemp("op"),
        identity="op-diff",
        lease_name="lease-diff",
    )
    try:
        wait_for(
            lambda: (s := env.kubectl_json("-n", NS, "get", "slice", "wildfire").get("status", {}))
            and len(s.get("placement", [])) == 9 and "predictedLatencyMs" in s,
            90, "the operator to place wildfire",
        )  # fmt: skip
        assert len(kubectl_items(env, NS, "nfinstances")) == 9
        yield env
    finally:
        op.stop()
        print(op.tail())


def diff(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "flyslice.operator.cli", "diff", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def wildfire_copy(dest: Path) -> Path:
    """The example as a user's directory: objects without a namespace, as applied above."""
    shutil.copytree(WILDFIRE, dest, ignore=shutil.ignore_patterns("*.py", "*.md"))
    return dest


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} has no {old!r}"
    path.write_text(text.replace(old, new))


def test_the_applied_directory_is_no_change(placed: kubeenv.KubeEnv, tmp_path: Path) -> None:
    d = wildfire_copy(tmp_path / "wildfire")
    kc = str(placed.kubeconfig)
    out = diff(f"cluster:{NS}", str(d), "--kubeconfig", kc, "-o", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert (doc["base"], doc["changed"], doc["slices"], doc["nodes"]) == (f"cluster:{NS}", False, [], [])
    text = diff(f"cluster:{NS}", str(d), "--kubeconfig", kc)
    assert text.returncode == 0 and text.stdout.strip() == f"cluster:{NS} -> {d}: no change to placement"
    # Every namespace: the same, once the files name the namespace they were applied to.
    for f in d.glob("*.yaml"):
        edit(f, "metadata:\n  name:", f"metadata:\n  namespace: {NS}\n  name:")
    edit(d / "nodes.yaml", f"  namespace: {NS}\n", "")  # EdgeNodes are cluster-scoped
    every = diff("cluster:", str(d), "--kubeconfig", kc, "-o", "json")
    assert every.returncode == 0, every.stdout + every.stderr


def test_a_tightened_budget_rejects_the_running_slice(placed: kubeenv.KubeEnv, tmp_path: Path) -> None:
    d = wildfire_copy(tmp_path / "wildfire")
    edit(d / "slice.yaml", "maxLatencyMs: 10", "maxLatencyMs: 9")
    out = diff(f"cluster:{NS}", str(d), "--kubeconfig", str(placed.kubeconfig), "-o", "json")
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    (s,) = doc["slices"]
    assert (s["slice"], s["change"], s["budgetMs"]) == (f"{NS}/wildfire", "rejected", [10, 9])
    assert s["latencyMs"] == [pytest.approx(9.4), None]
    assert any("9 ms budget" in r for r in s["reasons"])
    # What the operator placed goes: every instance is removed, every node gets its capacity back.
    assert len(s["instances"]) == 9 and {i["change"] for i in s["instances"]} == {"removed"}
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert set(nodes) == {"cloud", "fog-1", "gw-1", "gw-2"}
    assert nodes["fog-1"]["cpuFreeMillis"] == [3850, 4000]


def test_a_changed_node_moves_its_nfs_in_every_format(placed: kubeenv.KubeEnv, tmp_path: Path) -> None:
    d = wildfire_copy(tmp_path / "wildfire")
    edit(d / "nodes.yaml", "runtimes: [vnf, fnf]", "runtimes: [vnf]")
    edit(d / "slice.yaml", "maxLatencyMs: 10", "maxLatencyMs: 20")
    kc = str(placed.kubeconfig)
    out = diff(f"cluster:{NS}", str(d), "--kubeconfig", kc, "-o", "json")
    assert out.returncode == 1, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    (s,) = doc["slices"]
    assert (s["change"], s["budgetMs"]) == ("changed", [10, 20])
    assert s["latencyMs"][0] == pytest.approx(9.4) and s["latencyMs"][1] > s["latencyMs"][0]
    assert {i["nf"]: (i["node"], i["flavor"]) for i in s["instances"]} == {
        "broker-fog": (["fog-1", "fog-1"], ["fnf", "vnf"]),
        "sp-fog": (["fog-1", "fog-1"], ["fnf", "vnf"]),
    }
    (fog,) = doc["nodes"]
    assert fog["name"] == "fog-1" and fog["cpuFreeMillis"][1] < fog["cpuFreeMillis"][0] == 3850
    md = diff(f"cluster:{NS}", str(d), "--kubeconfig", kc, "-o", "markdown")
    assert md.returncode == 1 and md.stdout.startswith(f"### flyslice diff `cluster:{NS}` → `{d}`")
    assert "| `sp-fog` | moved | fog-1 | fnf → vnf |" in md.stdout
    # The other way round: the directory is the base, planned with the cluster's placement as current.
    back = diff(str(d), f"cluster:{NS}", "--kubeconfig", kc)
    assert back.returncode == 1 and "sp-fog: moved node fog-1 flavor vnf → fnf" in back.stdout


def test_a_file_in_another_namespace_is_refused_as_kubectl_apply_n_does(
    placed: kubeenv.KubeEnv, tmp_path: Path
) -> None:
    d = wildfire_copy(tmp_path / "wildfire")
    edit(d / "slice.yaml", "metadata:\n  name: wildfire", "metadata:\n  namespace: other\n  name: wildfire")
    out = diff(f"cluster:{NS}", str(d), "--kubeconfig", str(placed.kubeconfig))
    assert out.returncode == 2
    assert (
        "slice.yaml:3: Slice/other/wildfire: metadata.namespace: 'other' is not the namespace diffed against, "
        f"'{NS}' (kubectl apply -n {NS} refuses it too)" in out.stderr
    )
    # Refused, as kubectl refuses it, so it adds no follow-on errors (its service is in NS).
    assert out.stderr.rstrip().endswith("has 1 invalid object error (above)")


def test_credentials_without_read_access_exit_2_in_one_line(placed: kubeenv.KubeEnv) -> None:
    nobody = placed.user_kubeconfig("nobody")
    out = diff(f"cluster:{NS}", str(WILDFIRE), "--kubeconfig", str(nobody))
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith(f"flyslice diff: cluster:{NS}: the Kubernetes API server answered 403")


def test_a_context_selects_the_server(placed: kubeenv.KubeEnv, tmp_path: Path) -> None:
    import yaml

    cfg = yaml.safe_load(placed.kubeconfig.read_text())
    good = cfg["contexts"][0]
    dead = {"name": "dead", "context": {**good["context"], "cluster": "dead"}}
    cfg["clusters"].append(
        {
            "name": "dead",
            "cluster": {
                "server": f"https://127.0.0.1:{kubeenv.free_port()}",
                "insecure-skip-tls-verify": True,
            },
        }
    )
    cfg["contexts"].append(dead)
    cfg["current-context"] = "dead"
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump(cfg))
    out = diff(f"cluster:{NS}", str(WILDFIRE), "--kubeconfig", str(kc))
    assert (
        out.returncode == 2 and "cannot reach the Kubernetes API server at https://127.0.0.1:" in out.stderr
    )
    assert len(out.stderr.strip().splitlines()) == 1
    d = wildfire_copy(tmp_path / "wildfire")
    ok = diff(f"cluster:{NS}", str(d), "--kubeconfig", str(kc), "--context", good["name"])
    assert ok.returncode == 0, ok.stderr
    out = diff(f"cluster:{NS}", str(d), "--kubeconfig", str(kc), "--context", "nope")
    assert out.returncode == 2 and "no cluster credentials" in out.stderr and "'nope'" in out.stderr
