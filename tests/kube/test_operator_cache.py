"""The operator's watch-fed cache, Event recorder and pass on the real API server: what changes behind
the operator's back is seen, an expired watch (410 Gone) and a missed event are repaired by a re-list,
a pass with nothing new makes no request, and changes during a long pass wake exactly one more."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubeenv
import pytest

from flyslice.operator.kube.cache import WatchCache, newer
from flyslice.operator.kube.cluster import DESIRED_KINDS, MANAGED_BY, OPERATOR, ClusterClient
from flyslice.operator.kube.events import EventRecorder
from flyslice.operator.kube.kopf_operator import FINALIZER, PassReport, ReconcileLoop

from .operator_harness import apply_docs, kubectl_items, wait_for, wildfire_docs

pytestmark = [pytest.mark.kube, pytest.mark.timeout(120)]
KINDS = {**dict.fromkeys(DESIRED_KINDS, ""), "NFInstance": f"{MANAGED_BY}={OPERATOR}"}


@pytest.fixture
def client(kubeconfig: Path, crds_installed: list[str]) -> ClusterClient:
    return ClusterClient.from_kubeconfig(str(kubeconfig))


@pytest.fixture
def cache(client: ClusterClient, namespace: str) -> Iterator[WatchCache]:
    c = WatchCache(client, KINDS, namespaces=[namespace], resync_s=600)
    client.sink = c
    c.start()
    assert c.wait_synced(20)
    yield c
    c.stop()


def _names(cache: WatchCache, kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in cache.snapshot()[kind]}


def _slice(name: str, node: str, max_latency: int = 50) -> dict[str, Any]:
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "Slice",
        "metadata": {"name": name},
        "spec": {"services": ["data-collection"], "qos": {"maxLatencyMs": max_latency},
                 "attachments": [{"node": node}]},
    }  # fmt: skip


def _instance(name: str, managed: bool) -> dict[str, Any]:
    labels = {MANAGED_BY: OPERATOR if managed else "someone-else", "flyslice.io/slice": "s"}
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "NFInstance",
        "metadata": {"name": name, "labels": labels},
        "spec": {"slice": "s", "role": "r", "node": "gw-1", "flavor": "vnf", "package": "p", "image": "i:1"},
    }


def test_changes_behind_the_operators_back_are_seen(
    kube_env: kubeenv.KubeEnv, cache: WatchCache, namespace: str
) -> None:
    changes: list[float] = []
    cache.on_change = lambda: changes.append(time.monotonic())
    apply_docs(kube_env, namespace, [_slice("a", "gw"), _slice("b", "gw")])
    wait_for(lambda: _names(cache, "Slice") == {"a", "b"}, 10, "both slices in the cache")
    assert changes, "a watch event that changed the cache must trigger a pass"
    kube_env.kubectl("-n", namespace, "patch", "slice", "a", "--type=merge", "-p",
                     '{"spec":{"qos":{"maxLatencyMs":77}}}')  # fmt: skip
    wait_for(
        lambda: (a := cache.get("Slice", namespace, "a")) and a["spec"]["qos"]["maxLatencyMs"] == 77,
        10, "the changed spec",
    )  # fmt: skip
    assert "managedFields" not in (cache.get("Slice", namespace, "a") or {})["metadata"]
    kube_env.kubectl("-n", namespace, "delete", "slice", "b")
    wait_for(lambda: _names(cache, "Slice") == {"a"}, 10, "the deleted slice to leave the cache")
    # The label selector: only the operator's NFInstances; relabelling moves one in and out.
    apply_docs(kube_env, namespace, [_instance("ours", True), _instance("theirs", False)])
    wait_for(lambda: _names(cache, "NFInstance") == {"ours"}, 10, "only the operator's NFInstance")
    kube_env.kubectl(
        "-n", namespace, "label", "nfinstance", "theirs", f"{MANAGED_BY}={OPERATOR}", "--overwrite"
    )
    wait_for(lambda: _names(cache, "NFInstance") == {"ours", "theirs"}, 10, "the relabelled NFInstance")
    kube_env.kubectl("-n", namespace, "label", "nfinstance", "ours", f"{MANAGED_BY}=x", "--overwrite")
    wait_for(lambda: _names(cache, "NFInstance") == {"theirs"}, 10, "the NFInstance labelled away")


def test_an_expired_watch_relists_and_repairs_missed_events(
    kube_env: kubeenv.KubeEnv, cache: WatchCache, namespace: str
) -> None:
    apply_docs(kube_env, namespace, [_slice("kept", "gw")])
    wait_for(lambda: _names(cache, "Slice") == {"kept"}, 10, "the slice")
    # Missed events, as after a dropped connection: a DELETE of "kept" and an ADD of "ghost" that the
    # server never had. Only a re-list can repair them.
    cache.forget("Slice", namespace, "kept")
    ghost = {**_slice("ghost", "gw"), "metadata": {"name": "ghost", "namespace": namespace,
                                                   "resourceVersion": "1", "labels": {}}}  # fmt: skip
    cache.record("Slice", ghost)
    assert _names(cache, "Slice") == {"ghost"}
    lists, expired = cache.stats.lists, cache.stats.expired
    # Resume from a version the server no longer keeps: it answers 410 Gone (a real one, from the
    # real server), and the cache lists again.
    cache.restart_watch("Slice", "1")
    wait_for(lambda: cache.stats.expired > expired, 20, "the server's 410 Gone")
    wait_for(lambda: _names(cache, "Slice") == {"kept"}, 20, "the re-list to repair the cache")
    assert cache.stats.lists > lists
    # And the watch goes on after the re-list.
    apply_docs(kube_env, namespace, [_slice("later", "gw")])
    wait_for(lambda: _names(cache, "Slice") == {"kept", "later"}, 10, "a change after the re-list")


def test_the_periodic_resync_repairs_a_missed_event(
    kube_env: kubeenv.KubeEnv, client: ClusterClient, namespace: str
) -> None:
    cache = WatchCache(client, {"Slice": ""}, namespaces=[namespace], resync_s=2.0)
    cache.start()
    try:
        assert cache.wait_synced(20)
        apply_docs(kube_env, namespace, [_slice("a", "gw")])
        wait_for(lambda: _names(cache, "Slice") == {"a"}, 10, "the slice")
        cache.forget("Slice", namespace, "a")  # a missed event: nothing on the server changes
        wait_for(lambda: _names(cache, "Slice") == {"a"}, 10, "the resync to bring it back")
    finally:
        cache.stop()


def test_own_writes_are_in_the_cache_at_once_and_stale_events_lose() -> None:
    """Write-through ordering (no server needed): a write's response beats an older watch event."""
    cache = WatchCache(_NoSource(), {"Slice": ""})
    (refl,) = cache._reflectors["Slice"]
    obj = {"metadata": {"name": "s", "namespace": "n", "resourceVersion": "10"}, "status": {"phase": "Ready"}}
    cache.record("Slice", obj)
    stale = {"metadata": {"name": "s", "namespace": "n", "resourceVersion": "9"}, "status": {}}
    assert not cache.put(refl, stale)
    assert (cache.get("Slice", "n", "s") or {})["status"] == {"phase": "Ready"}
    cache.forget("Slice", "n", "s")
    assert not cache.put(refl, stale), "an event older than the operator's delete must not resurrect it"
    assert cache.put(refl, {"metadata": {"name": "s", "namespace": "n", "resourceVersion": "11"}})
    assert newer("11", "9") and not newer("9", "11") and newer("b", "a")


class _NoSource:
    def list_raw(self, kind: str, **_: Any) -> tuple[list[dict[str, Any]], str]:
        raise AssertionError("not started")

    def watch_raw(self, kind: str, **_: Any) -> Any:
        raise AssertionError("not started")


def test_a_pass_reads_the_cache_and_a_pass_with_nothing_new_makes_no_request(
    kube_env: kubeenv.KubeEnv, client: ClusterClient, cache: WatchCache, namespace: str
) -> None:
    docs = wildfire_docs(namespace)
    # A node whose agent stopped long ago (as other tests leave behind on a shared API server): it is
    # confirmed down once with a fresh read, and costs no request in later passes.
    gone = next(d for d in docs if d["kind"] == "EdgeNode" and "cloud" in d["metadata"]["name"])
    gone = {**gone, "metadata": {"name": f"{namespace}-gone"}, "spec": {**gone["spec"], "links": []}}
    apply_docs(kube_env, namespace, [*docs, gone])
    _beat(kube_env, f"{namespace}-gone", time.time() - 600)
    wait_for(lambda: _names(cache, "Slice") == {"wildfire"}, 10, "the slice in the cache")
    wait_for(
        lambda: (cache.get("EdgeNode", "", f"{namespace}-gone") or {}).get("status"), 10, "the old heartbeat"
    )
    loop = ReconcileLoop(client, namespaces=[namespace], cache=cache)
    first = loop.run_once()  # (the loop's one PassReport, updated by every pass)
    assert first.created == 9 and first.slices == {f"{namespace}/wildfire": "Deploying"}
    slice_obj = kube_env.kubectl_json("-n", namespace, "get", "slice", "wildfire")
    assert FINALIZER in slice_obj["metadata"]["finalizers"]
    assert len(kubectl_items(kube_env, namespace, "nfinstances")) == 9

    # The next pass starts before the watch events of those writes could all arrive: it must not
    # re-create, re-patch or re-list anything (the writes went into the cache as the server answered).
    def pass_requests() -> int:  # the client's count, less the cache's own lists and watches
        return client.requests - cache.stats.lists - cache.stats.watches

    before = pass_requests()
    loop.run_once()
    assert pass_requests() - before == 0, "a pass with nothing new must make no API request"
    # A change behind the operator's back reaches the next pass through the cache.
    victim = sorted(_names(cache, "NFInstance"))[0]
    kube_env.kubectl("-n", namespace, "delete", "nfinstance", victim)
    wait_for(lambda: victim not in _names(cache, "NFInstance"), 10, "the delete")
    assert loop.run_once().created == 10  # re-created: the one deleted behind its back
    # Deleting the slice: the pass deletes its NFInstances, then releases the finalizer.
    kube_env.kubectl("-n", namespace, "delete", "slice", "wildfire", "--wait=false")
    wait_for(lambda: (s := cache.get("Slice", namespace, "wildfire")) and s["metadata"].get("deletionTimestamp"),
             10, "the deletion in the cache")  # fmt: skip
    loop.run_once()
    assert kubectl_items(kube_env, namespace, "nfinstances") == []
    wait_for(lambda: not kubectl_items(kube_env, namespace, "slices"), 10, "the slice to go")


def test_changes_during_a_long_pass_wake_exactly_one_more_pass(
    kube_env: kubeenv.KubeEnv, client: ClusterClient, cache: WatchCache, namespace: str
) -> None:
    release = threading.Event()
    seen_during: list[set[str]] = []

    class SlowLoop(ReconcileLoop):
        """The loop's trigger and debounce as they are; the pass stands for a long solve."""

        def _run_once(self) -> PassReport:
            self.report.passes += 1
            if self.report.passes == 2:
                # Watches and triggers go on meanwhile: the cache sees the burst during this pass.
                wait_for(lambda: {"x0", "x1", "x2"} <= _names(cache, "Slice"), 20, "the burst, mid-pass")
                seen_during.append(_names(cache, "Slice"))
                release.wait(30)
            return self.report

    loop = SlowLoop(client, namespaces=[namespace], cache=cache, debounce_s=0.2, resync_s=3600)
    cache.on_change = loop.trigger
    stop = asyncio.Event()
    runner = threading.Thread(target=lambda: asyncio.run(_run_until(loop, stop)), daemon=True)
    runner.start()
    try:
        wait_for(lambda: loop.report.passes == 1, 10, "the first pass")
        apply_docs(kube_env, namespace, [_slice("trigger", "gw")])
        wait_for(lambda: loop.report.passes == 2, 10, "the long pass to start")
        apply_docs(kube_env, namespace, [_slice(f"x{i}", "gw") for i in range(3)])
        wait_for(lambda: seen_during, 20, "the cache to see the burst during the pass")
        time.sleep(1.0)
        assert loop.report.passes == 2, "no pass may start while one runs"
        release.set()
        wait_for(lambda: loop.report.passes == 3, 10, "one follow-up pass")
        time.sleep(2.0)  # several debounce intervals of quiet
        assert loop.report.passes == 3, "the burst during the pass must wake exactly one more pass"
    finally:
        release.set()
        if loop._aio is not None:
            loop._aio.call_soon_threadsafe(stop.set)
        runner.join(10)


async def _run_until(loop: ReconcileLoop, stop: asyncio.Event) -> None:
    await loop.run(stop)


def test_events_are_deduplicated_and_a_burst_is_aggregated(
    kube_env: kubeenv.KubeEnv, client: ClusterClient, namespace: str
) -> None:
    apply_docs(kube_env, namespace, [_slice(f"s{i}", "gw") for i in range(15)])
    slices = {
        s["metadata"]["name"]: {**s, "kind": "Slice"} for s in kubectl_items(kube_env, namespace, "slices")
    }
    now = [0.0]
    recorder = EventRecorder(client, burst=10, repeat_every_s=60, clock=lambda: now[0])
    events = lambda: kubectl_items(kube_env, namespace, "events")  # noqa: E731
    # The same Warning on one object, three passes in a row: one Event, repeats counted.
    for _ in range(3):
        recorder.add(slices["s0"], "Infeasible", "no room", "Warning")
        recorder.flush()
    (only,) = events()
    assert only["reason"] == "Infeasible" and only["count"] == 1
    now[0] = 61.0  # a minute later: the next repeat writes the count (3 repeats + this one)
    recorder.add(slices["s0"], "Infeasible", "no room", "Warning")
    recorder.flush()
    (only,) = events()
    assert only["count"] == 4
    # 15 slices placed in one pass: 10 Events of their own, the other 5 named in one on the Namespace.
    for name in sorted(slices):
        recorder.add(slices[name], "Placed", "placed 7 NF(s)", "Normal")
    recorder.flush()
    placed = [e for e in events() if e["reason"] == "Placed"]
    own = [e for e in placed if e["involvedObject"]["kind"] == "Slice"]
    (combined,) = [e for e in placed if e["involvedObject"]["kind"] == "Namespace"]
    assert len(own) == 10 and len(placed) == 11
    aggregated = sorted(set(slices) - {e["involvedObject"]["name"] for e in own})
    assert combined["message"].startswith("Placed: 5 more Slice(s) in this pass: ")
    assert all(name in combined["message"] for name in aggregated)


def _beat(kube_env: kubeenv.KubeEnv, node: str, at: float) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    kube_env.kubectl("patch", "edgenode", node, "--subresource=status", "--type=merge",
                     "-p", f'{{"status":{{"heartbeatTime":"{stamp}"}}}}')  # fmt: skip


def test_a_heartbeat_missed_only_by_a_lagging_watch_moves_nothing(
    kube_env: kubeenv.KubeEnv, client: ClusterClient, cache: WatchCache, namespace: str
) -> None:
    """The cache's EdgeNodes say every heartbeat is old (a watch lagging behind a loaded API server);
    the API says they are fresh. A node is only declared down once a fresh read confirms it."""
    docs = wildfire_docs(namespace)
    apply_docs(kube_env, namespace, docs)
    nodes = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "EdgeNode")
    for node in nodes:
        _beat(kube_env, node, time.time())
    wait_for(lambda: _names(cache, "Slice") == {"wildfire"}, 10, "the slice in the cache")
    wait_for(
        lambda: all((cache.get("EdgeNode", "", n) or {}).get("status", {}).get("heartbeatTime") for n in nodes),
        10, "the heartbeats in the cache",
    )  # fmt: skip
    loop = ReconcileLoop(client, namespaces=[namespace], cache=cache, heartbeat_timeout_s=30)
    assert loop.run_once().created == 9
    placed = {
        o["metadata"]["name"]: o["spec"]["node"] for o in kubectl_items(kube_env, namespace, "nfinstances")
    }

    real_snapshot = cache.snapshot

    def lagging() -> dict[str, list[dict[str, Any]]]:
        snap = real_snapshot()
        old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))
        snap["EdgeNode"] = [
            {**o, "status": {**o.get("status", {}), "heartbeatTime": old}} for o in snap["EdgeNode"]
        ]
        return snap

    cache.snapshot = lagging  # type: ignore[method-assign]
    for node in nodes:
        _beat(kube_env, node, time.time())
    report = loop.run_once()
    assert (report.created, report.deleted) == (9, 0), "no NF may move for heartbeats only the watch missed"
    after = {
        o["metadata"]["name"]: o["spec"]["node"] for o in kubectl_items(kube_env, namespace, "nfinstances")
    }
    assert after == placed

    # Confirmed by the API as well: then the node is down. The example has no other cloud node, so its
    # NFs have nowhere to go: the slice keeps every NFInstance and says why (NodeUnavailable).
    cloud = next(n for n in nodes if "cloud" in n)
    _beat(kube_env, cloud, time.time() - 600)
    report = loop.run_once()
    assert report.deleted == 0 and report.slices == {f"{namespace}/wildfire": "Degraded"}
    status = kube_env.kubectl_json("-n", namespace, "get", "slice", "wildfire")["status"]
    assert status["reasons"][0].startswith(f"node(s) {cloud} unavailable"), status["reasons"]
    kept = {
        o["metadata"]["name"]: o["spec"]["node"] for o in kubectl_items(kube_env, namespace, "nfinstances")
    }
    assert kept == placed
