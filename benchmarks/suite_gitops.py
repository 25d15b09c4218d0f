"""GitOps suite: commit-to-all-running latency of the embedded mode, webhook vs polling.

Each round commits the slices into a real git repository (file://) that has none and measures the
time from the commit until every NF of every slice runs (every slice Ready at that revision), once triggered by a signed webhook and once by
polling alone (the baseline, measured in the same run). Flux polls every minute by default and
Argo CD every three; the poll interval used here is in the output.

The 50-slice case runs every NF as an fNF (the cloud node offers the fnf runtime too) so that it
measures the control plane rather than 150 Python VNF processes starting on two cores; the
wildfire case keeps its three cloud VNFs (local processes).
"""

from __future__ import annotations

import asyncio
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flyslice.operator.gitops.webhook import sign
from tests.e2e.harness import WILDFIRE, Embedded, ManifestRepo


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((WILDFIRE / name).read_text()) if d]


def many_slices_repo(root: Path, n: int) -> ManifestRepo:
    """n slices over pairs of gateways (each pair behind one of four fog nodes) and a cloud that also runs fNFs."""
    repo = ManifestRepo(root)
    gateways = max(2, (n // 3) // 2 * 2)  # even: a slice's two gateways share a fog node
    nodes: list[dict[str, Any]] = []
    nodes.append(
        {
            "apiVersion": "flyslice.io/v1alpha1",
            "kind": "EdgeNode",
            "metadata": {"name": "cloud"},
            "spec": {
                "tier": "cloud",
                "runtimes": ["vnf", "fnf"],
                "capacity": {"cpu": "256", "memory": "512Gi"},
                "availability": 0.999,
                "links": [{"node": f"fog-{f}", "latencyMs": 4} for f in range(4)],
            },
        }
    )
    for f in range(4):
        nodes.append(
            {
                "apiVersion": "flyslice.io/v1alpha1",
                "kind": "EdgeNode",
                "metadata": {"name": f"fog-{f}"},
                "spec": {
                    "tier": "fog",
                    "runtimes": ["vnf", "fnf"],
                    "capacity": {"cpu": "32", "memory": "64Gi"},
                    "availability": 0.99,
                    "cost": 2,
                    "links": [
                        {"node": f"gw-{g}", "latencyMs": 1} for g in range(gateways) if (g // 2) % 4 == f
                    ],
                },
            }
        )
    for g in range(gateways):
        nodes.append(
            {
                "apiVersion": "flyslice.io/v1alpha1",
                "kind": "EdgeNode",
                "metadata": {"name": f"gw-{g}"},
                "spec": {
                    "tier": "gateway",
                    "runtimes": ["fnf"],
                    "capacity": {"cpu": "4", "memory": "2Gi"},
                    "availability": 0.98,
                    "cost": 4,
                },
            }
        )
    packages = _docs("packages.yaml")
    for p in packages:
        if p["metadata"]["name"] == "storage":
            fnf = copy.deepcopy(p["spec"]["flavors"]["vnf"])
            fnf.pop("image")
            fnf["resources"] = {"cpu": "100m", "memory": "32Mi"}
            p["spec"]["flavors"]["fnf"] = fnf
    repo.write("nodes.yaml", nodes)
    repo.write("packages.yaml", packages)
    repo.write("service.yaml", _docs("service.yaml"))
    template = _docs("slice.yaml")[0]
    slices = []
    for i in range(n):
        s = copy.deepcopy(template)
        s["metadata"]["name"] = f"slice-{i}"
        s["spec"]["attachments"] = [
            {"node": f"gw-{(2 * i) % gateways}"},
            {"node": f"gw-{(2 * i + 1) % gateways}"},
        ]
        s["spec"]["qos"]["availability"] = 0.8
        slices.append(s)
    repo.write("slices.yaml", slices)
    return repo


def wildfire_repo(root: Path) -> ManifestRepo:
    repo = ManifestRepo(root)
    repo.copy_example()
    return repo


def _slice_files(repo: ManifestRepo) -> dict[str, str]:
    return {f.name: f.read_text() for f in repo.root.glob("*.yaml") if "kind: Slice" in f.read_text()}


def _all_ready(emb: Embedded, revision: str, n: int) -> bool:
    st = emb.status()
    return (
        st["source"]["lastAppliedRevision"] == revision
        and len(st["slices"]) == n
        and all(s["phase"] == "Ready" for s in st["slices"])
    )


def measure(make_repo: Any, n: int, *, webhook: bool, poll_s: float, rounds: int) -> list[float]:
    """Each round commits the slices into a repository that has none and times until all run."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = make_repo(root / "repo")
        slice_files = _slice_files(repo)
        for name in slice_files:
            repo.remove(name)
        empty = repo.commit("infrastructure and catalog, no slices")
        emb = Embedded(repo.url, root / "state", None, interval_s=poll_s)
        times = []
        with emb:
            receiver_url = _start_webhook(emb) if webhook else None
            if receiver_url:
                _post_push(receiver_url, empty)
            emb.wait(lambda: emb.status()["source"]["lastAppliedRevision"] == empty, 300, "first fetch")
            for r in range(rounds):
                for name, text in slice_files.items():
                    repo.write(name, text)
                t0 = time.perf_counter()
                rev = repo.commit(f"round {r}: add {n} slice(s)")
                if receiver_url:
                    _post_push(receiver_url, rev)
                emb.wait(lambda rev=rev: _all_ready(emb, rev, n), 300, f"round {r}")
                times.append(time.perf_counter() - t0)
                for name in slice_files:
                    repo.remove(name)
                gone = repo.commit(f"round {r}: remove the slices")
                if receiver_url:
                    _post_push(receiver_url, gone)
                emb.wait(
                    lambda gone=gone: (
                        emb.status()["source"]["lastAppliedRevision"] == gone and not emb.status()["slices"]
                    ),
                    300,
                    f"round {r} teardown",
                )
        return times


_SECRET = "bench-secret"


def _start_webhook(emb: Embedded) -> str:
    from flyslice.operator.gitops.webhook import WebhookReceiver

    async def start() -> str:
        receiver = WebhookReceiver("127.0.0.1", 0)
        receiver.register("bench", _SECRET, emb.watcher.handle_push)
        receiver.port = await receiver.start()
        return receiver.url("bench")

    return asyncio.run_coroutine_threadsafe(start(), emb.loop).result(10)


def _post_push(url: str, revision: str) -> None:
    import json
    import urllib.request

    body = json.dumps({"ref": "refs/heads/main", "after": revision}).encode()
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": sign(_SECRET, body),
        },
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def run(quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else 5
    poll_s = 5.0 if quick else 10.0
    cases = []
    for label, make, n in [
        ("wildfire", wildfire_repo, 1),
        ("50-slices", lambda p: many_slices_repo(p, 50), 50),
    ]:
        if quick and n > 1:
            n = 20
            make = lambda p, n=n: many_slices_repo(p, n)  # noqa: E731
        hook = measure(make, n, webhook=True, poll_s=600.0, rounds=rounds)
        poll = measure(make, n, webhook=False, poll_s=poll_s, rounds=rounds)
        cases.append(
            {
                "case": label,
                "slices": n,
                "webhook_s_median": round(statistics.median(hook), 3),
                "poll_s_median": round(statistics.median(poll), 3),
                "poll_interval_s": poll_s,
                "poll_over_webhook": round(statistics.median(poll) / statistics.median(hook), 1),
            }
        )
    big = cases[-1]
    return {
        "slices": big["slices"],
        "commit_to_running_s_webhook": big["webhook_s_median"],
        "commit_to_running_s_poll": big["poll_s_median"],
        "wildfire_commit_to_running_s_webhook": cases[0]["webhook_s_median"],
        "wildfire_commit_to_running_s_poll": cases[0]["poll_s_median"],
        "cases": cases,
    }
