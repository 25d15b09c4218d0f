"""Fault tests of the embedded mode: each fault loses nothing, the status says what happened, and
everything converges once the fault clears."""

from __future__ import annotations

import copy
import shutil

import pytest
import yaml

from .harness import WILDFIRE, Embedded, ManifestRepo

pytestmark = pytest.mark.slow


def two_fog_nodes() -> list[dict]:
    nodes = list(yaml.safe_load_all((WILDFIRE / "nodes.yaml").read_text()))
    fog2 = copy.deepcopy(next(n for n in nodes if n["metadata"]["name"] == "fog-1"))
    fog2["metadata"]["name"] = "fog-2"
    fog2["spec"]["cost"] = 3  # dearer than fog-1: used only when fog-1 is gone
    fog2["spec"]["links"] = [
        {"node": "gw-1", "latencyMs": 1},
        {"node": "gw-2", "latencyMs": 1},
        {"node": "cloud", "latencyMs": 4},
    ]
    return [*nodes, fog2]


def on_node(emb: Embedded, slice_name: str, node: str) -> set[str]:
    return {name for name, (n, _) in emb.placement(slice_name).items() if n == node}


def test_git_remote_outage_keeps_the_slice_running_then_resumes(tmp_path):
    repo = ManifestRepo(tmp_path / "repo")
    repo.copy_example()
    rev1 = repo.commit("wildfire")
    with Embedded(repo.url, tmp_path / "state", None) as emb:
        emb.wait_ready("wildfire", rev1)
        hidden = tmp_path / "hidden"
        shutil.move(repo.root, hidden)  # the remote disappears
        emb.wait(lambda: emb.status()["source"]["lastError"], 20, "the fetch error to be reported")
        assert emb.slice("wildfire")["phase"] == "Ready"
        assert emb.status()["source"]["lastAppliedRevision"] == rev1
        shutil.move(hidden, repo.root)  # ... and comes back with a new commit
        slice_doc = yaml.safe_load((repo.root / "slice.yaml").read_text())
        slice_doc["spec"]["qos"]["maxLatencyMs"] = 11
        repo.write("slice.yaml", [slice_doc])
        rev2 = repo.commit("relax the budget")
        emb.wait_ready("wildfire", rev2)
        assert emb.status()["source"]["lastError"] == ""
        assert emb.slice("wildfire")["budgetMs"] == 11


def test_force_push_rewriting_history_is_followed(tmp_path):
    repo = ManifestRepo(tmp_path / "repo")
    repo.copy_example()
    rev1 = repo.commit("wildfire")
    with Embedded(repo.url, tmp_path / "state", None) as emb:
        emb.wait_ready("wildfire", rev1)
        slice_doc = yaml.safe_load((repo.root / "slice.yaml").read_text())
        slice_doc["metadata"]["name"] = "rewritten"
        repo.write("slice.yaml", [slice_doc])
        repo.repo.git.add(A=True)
        # The old tip is gone from main. Renaming the only slice removes every running NF: the prune
        # guard holds that unless the commit confirms it.
        repo.repo.git.commit("--amend", "-m", "history rewritten\n\nFlyslice-Prune: confirm")
        rev2 = repo.repo.head.commit.hexsha
        emb.wait_ready("rewritten", rev2)
        emb.wait(lambda: emb.slice("wildfire") is None, 10, "the slice of the dropped commit to be pruned")


def test_killed_agent_loses_its_nfs_to_another_node_and_restarts_cleanly(tmp_path):
    repo = ManifestRepo(tmp_path / "repo")
    repo.copy_example()
    repo.write("nodes.yaml", two_fog_nodes())
    rev1 = repo.commit("wildfire with two fog nodes")
    with Embedded(repo.url, tmp_path / "state", None, heartbeat_timeout_s=1.5) as emb:
        emb.wait_ready("wildfire", rev1)
        fog_nfs = on_node(emb, "wildfire", "fog-1")
        assert fog_nfs == {"wildfire-broker-fog", "wildfire-sp-fog"}
        emb.fleet.runtimes["fog-1"].kill()
        emb.wait(lambda: on_node(emb, "wildfire", "fog-2") == fog_nfs, 20, "fog NFs to move to fog-2")
        emb.wait_ready("wildfire", rev1)
        assert any("fog-1 has not sent a heartbeat" in e for e in emb.status()["events"])
        # The agent comes back: its cache still lists the old NFs; it must end up running none of
        # them, and nothing moves back and forth.
        runtime = emb.fleet.runtimes["fog-1"]
        runtime.start()
        for r in emb.fleet.runtimes.values():
            r.update_peers()
        emb.wait(lambda: runtime.agent is not None and not runtime.agent.desired, 20, "fog-1 to run nothing")
        assert on_node(emb, "wildfire", "fog-2") == fog_nfs
        emb.wait_ready("wildfire", rev1)


def test_node_declared_gone_in_git_moves_its_nfs(tmp_path):
    repo = ManifestRepo(tmp_path / "repo")
    repo.copy_example()
    nodes = two_fog_nodes()
    repo.write("nodes.yaml", nodes)
    rev1 = repo.commit("two fog nodes")
    with Embedded(repo.url, tmp_path / "state", None) as emb:
        emb.wait_ready("wildfire", rev1)
        before = emb.placement("wildfire")
        without_fog1 = [n for n in nodes if n["metadata"]["name"] != "fog-1"]
        for n in without_fog1:
            n["spec"]["links"] = [lk for lk in n["spec"].get("links", []) if lk["node"] != "fog-1"]
        repo.write("nodes.yaml", without_fog1)
        rev2 = repo.commit("fog-1 decommissioned")
        emb.wait_ready("wildfire", rev2)
        after = emb.placement("wildfire")
        moved = {k for k in before if before[k] != after[k]}
        assert moved == {"wildfire-broker-fog", "wildfire-sp-fog"}
        assert all(after[k][0] == "fog-2" for k in moved)
        assert "fog-1" not in emb.controller.runtimes
        assert emb.fleet.runtimes["fog-1"].agent is None  # its agent was stopped


def test_a_fix_supersedes_a_rollout_that_can_never_become_ready(tmp_path):
    """Flux users waited for health-check time-outs before a fix could land; here the next commit
    is applied on the next pass, whatever state the previous rollout is stuck in."""
    repo = ManifestRepo(tmp_path / "repo")
    repo.copy_example()
    good = (repo.root / "packages.yaml").read_text()
    # A wrong digest: the agents refuse to load the broker module, so the slice can never be Ready.
    bad_digest = "sha256:" + "f" * 64
    lines = good.splitlines()
    i = next(n for n, line in enumerate(lines) if "digest:" in line)
    lines[i] = lines[i].split("digest:")[0] + "digest: " + bad_digest
    bad = "\n".join(lines) + "\n"
    repo.write("packages.yaml", bad)
    rev1 = repo.commit("a package with a wrong digest")
    with Embedded(repo.url, tmp_path / "state", None) as emb:
        emb.wait(
            lambda: (s := emb.slice("wildfire")) is not None and s["phase"] == "Degraded",
            30,
            "the bad rollout to report Degraded",
        )
        assert emb.status()["source"]["lastAppliedRevision"] == rev1
        assert any("digest" in r or "sha256" in r for r in emb.slice("wildfire")["reasons"])
        repo.write("packages.yaml", good)
        rev2 = repo.commit("fix the digest")
        emb.wait_ready("wildfire", rev2, timeout=20)
