"""What the operator's scale work (issue 13 item 6) changed, on the real API server, and that it
still does its job: the background re-optimisation waits while a burst of NFInstances is written but
still runs once the burst is over; Events of a burst that spans several passes are aggregated across
them yet a later, lone change gets its own Event again; the data-plane signer waits on a watch, not a
poll, and still wakes for (only) a new pending CSR of its signer."""

from __future__ import annotations

import base64
import copy
import threading
import time
from typing import Any

import kubeenv
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flyslice.nodeagent.kube.agent import api_client_for
from flyslice.nodeagent.kube.dataplane_certs import SIGNER
from flyslice.operator.kube.cache import WatchCache
from flyslice.operator.kube.cluster import ClusterClient
from flyslice.operator.kube.dataplane_ca import DataplaneSigner
from flyslice.operator.kube.events import EventRecorder
from flyslice.operator.kube.kopf_operator import ReconcileLoop
from flyslice.operator.planning.reoptimize import ReoptimizeSettings

from . import test_operator_cache as cache_tests
from .operator_harness import apply_docs, kubectl_items, operator_kubeconfig, wait_for, wildfire_docs

pytestmark = [pytest.mark.kube, pytest.mark.timeout(180)]
# The watch-fed cache fixtures of test_operator_cache.py, reused rather than copied.
client = cache_tests.client
cache = cache_tests.cache
_names = cache_tests._names


def test_reoptimisation_waits_out_a_burst_then_runs(
    kube_env: kubeenv.KubeEnv, client: ClusterClient, cache: WatchCache, namespace: str
) -> None:
    docs = wildfire_docs(namespace)
    apply_docs(kube_env, namespace, docs)
    wait_for(lambda: _names(cache, "Slice") == {"wildfire"}, 10, "the slice in the cache")
    loop = ReconcileLoop(
        client, namespaces=[namespace], cache=cache, reoptimize=ReoptimizeSettings(interval_s=300.0)
    )
    pending = [False]
    loop.pass_pending = lambda: pending[0]  # type: ignore[method-assign]
    # Nothing else queued: the run starts right after the pass that placed the slice.
    assert loop.run_once().created == 9
    assert loop.reoptimizer.status()["runs"] == 1
    loop.reoptimizer.wait(60)
    # A second slice arrives while more changes are queued (a burst): its pass writes, no run starts.
    second = copy.deepcopy(next(d for d in docs if d["kind"] == "Slice"))
    second["metadata"] = {"name": "wildfire-2"}
    apply_docs(kube_env, namespace, [second])
    wait_for(lambda: "wildfire-2" in _names(cache, "Slice"), 10, "the second slice in the cache")
    pending[0] = True
    before = loop.report.created
    loop.run_once()
    assert loop.report.created > before, "the second slice's pass must write NFInstances"
    assert loop.reoptimizer.status()["runs"] == 1, "no re-optimisation while the burst is written"
    # The next pass writes nothing: the deferred run starts even though passes are still queued and
    # the periodic interval (300 s) is not due -- the admission's request was carried over.
    after_burst = loop.report.created
    loop.run_once()
    assert loop.report.created == after_burst, "nothing more to write"
    assert loop.reoptimizer.status()["runs"] == 2
    loop.reoptimizer.wait(60)


def _slice(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "Slice",
        "metadata": {"name": name},
        "spec": {
            "services": ["data-collection"],
            "qos": {"maxLatencyMs": 50},
            "attachments": [{"node": "gw"}],
        },
    }


def test_a_burst_over_several_passes_is_aggregated_and_a_later_change_is_not(
    kube_env: kubeenv.KubeEnv, client: ClusterClient, namespace: str
) -> None:
    apply_docs(kube_env, namespace, [_slice(f"s{i}") for i in range(20)])
    slices = {
        s["metadata"]["name"]: {**s, "kind": "Slice"} for s in kubectl_items(kube_env, namespace, "slices")
    }
    names = sorted(slices)
    now = [0.0]
    recorder = EventRecorder(client, burst=10, burst_window_s=120, clock=lambda: now[0])

    def placed() -> list[dict[str, Any]]:
        return [e for e in kubectl_items(kube_env, namespace, "events") if e["reason"] == "Placed"]

    def own() -> set[str]:
        return {e["involvedObject"]["name"] for e in placed() if e["involvedObject"]["kind"] == "Slice"}

    # Pass 1 of a burst: 12 placed, 10 Events of their own and one naming the other 2.
    for name in names[:12]:
        recorder.add(slices[name], "Placed", "placed", "Normal")
    recorder.flush()
    assert len(own()) == 10 and len(placed()) == 11
    # Pass 2, 30 s later, same burst: its 3 slices are named in one Event, none gets its own.
    now[0] = 30.0
    for name in names[12:15]:
        recorder.add(slices[name], "Placed", "placed", "Normal")
    recorder.flush()
    assert len(own()) == 10 and len(placed()) == 12
    (latest,) = [e for e in placed() if e["message"].startswith("Placed: 3 Slice(s) in this pass: ")]
    assert all(n in latest["message"] for n in names[12:15])
    # Warnings are never folded, burst or not.
    recorder.add(slices[names[15]], "Degraded", "nf down", "Warning")
    recorder.flush()
    assert [e["involvedObject"]["name"] for e in kubectl_items(kube_env, namespace, "events")
            if e["reason"] == "Degraded"] == [names[15]]  # fmt: skip
    # Long after the burst (> burst_window_s after its last aggregate), one slice placed alone gets its own.
    now[0] = 30.0 + 121
    recorder.add(slices[names[16]], "Placed", "placed", "Normal")
    recorder.flush()
    assert names[16] in own()


def _csr(name: str, signer: str) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64.b64encode(request).decode(),
            "signerName": signer,
            "usages": ["client auth"],
        },
    }


def test_the_signer_waits_on_a_watch_and_wakes_only_for_a_new_pending_csr(kube_env: kubeenv.KubeEnv) -> None:
    api = api_client_for(str(operator_kubeconfig(kube_env)))  # the operator's RBAC must allow the watch
    signer = DataplaneSigner(api, "flyslice-system")
    signer.run_once()
    tag = f"{time.monotonic_ns() % 10**9}"
    woke: list[tuple[bool, float]] = []

    def wait(timeout: float) -> None:
        started = time.monotonic()
        woke.append((signer.wait_for_csr(timeout), time.monotonic() - started))

    t = threading.Thread(target=wait, args=(20.0,))
    t.start()
    time.sleep(1.0)
    # Another signer's CSR is none of its business: it keeps waiting.
    kube_env.kubectl("create", "-f", "-", input=_json(_csr(f"other-{tag}", "example.com/other")))
    time.sleep(2.0)
    assert not woke, "a CSR for another signer must not wake the data-plane signer"
    kube_env.kubectl("create", "-f", "-", input=_json(_csr(f"mine-{tag}", SIGNER)))
    t.join(20)
    assert woke and woke[0][0] and woke[0][1] < 15, f"the signer's own new CSR must wake it at once: {woke}"
    # The next round lists it and decides (admin is no agent of a node: denied, with the reason).
    done = signer.run_once()
    assert f"mine-{tag}" in done and done[f"mine-{tag}"] != "signed"
    # Its own decision (a MODIFIED event of a CSR that is no longer pending) does not wake it.
    started = time.monotonic()
    assert signer.wait_for_csr(2.0) is False
    assert time.monotonic() - started >= 1.5
    for name in (f"other-{tag}", f"mine-{tag}"):
        kube_env.kubectl("delete", "csr", name, "--ignore-not-found")


def _json(doc: dict[str, Any]) -> str:
    import json

    return json.dumps(doc)
