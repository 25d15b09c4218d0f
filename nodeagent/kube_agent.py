"""The node agent in cluster mode: a Kubernetes API server is its control plane.

It needs only API credentials (a kubeconfig, or the in-cluster service account), so it also runs on a
bare gateway outside the cluster network. It

* watches only its own node's NFInstances (label ``flyslice.io/node=<node>``) and converges to them:
  fNFs load in-process, VNFs become pods pinned to its node (:class:`KubernetesPodDriver`);
* writes each instance's ``status`` (only when it changes, and at most every ``report_s`` for counters);
* writes its EdgeNode's ``status`` heartbeat (time, load, instance count, a Ready condition).

While the API server is unreachable it keeps running its cached desired state (``Agent.sync_once``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .agent import Agent, AgentConfig, SourceUnavailable
from .kube_source import GROUP, PLURAL, VERSION, KubeSource, status_body
from .spec import InstanceSpec

log = logging.getLogger("flyslice.nodeagent.cluster")

AGENT_VERSION = "0.1.0"


class ClusterAgent:
    def __init__(
        self,
        config: AgentConfig,
        api_client: Any,
        *,
        pod_namespace: str | None = "flyslice-system",
        instance_namespace: str | None = None,
        kubernetes_node: str | None = None,
        heartbeat_s: float = 10.0,
        report_s: float = 30.0,
        report_load: bool = True,
    ) -> None:
        from kubernetes import client

        from .k8s_driver import KubernetesPodDriver

        self.node = config.node
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.api_client = api_client
        self.source = KubeSource(self.custom, config.node, instance_namespace)
        self.pods = (
            KubernetesPodDriver(
                self.core, namespace=pod_namespace, node_name=kubernetes_node or config.node, agent_address=""
            )
            if pod_namespace
            else None
        )
        self.agent = Agent(config, self.pods)
        if self.pods is not None:
            self.pods.agent_address = self.agent.address
        self.heartbeat_s = heartbeat_s
        self.report_s = report_s
        self.report_load = report_load
        self._reported: dict[str, tuple[dict[str, Any], float]] = {}
        self._last_beat = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- one round ----------------------------------------------------------------------------

    def _desired(self) -> list[InstanceSpec]:
        specs = self.source()
        if self.pods is not None:
            # A VNF pod is owned by its NFInstance (garbage-collected with it even if this agent is
            # down), but an owner must live in the pod's namespace.
            self.pods.uids = {
                s.name: uid
                for s in specs
                if (uid := self.source.uids.get(s.name)) and s.namespace == self.pods.namespace
            }
        return specs

    def sync_once(self) -> bool:
        """Pull, converge, report; False when the API server could not be reached."""
        ok = self.agent.sync_once(self._desired)
        if ok:
            self.report_status()
        self.heartbeat_if_due()
        return ok

    def report_status(self, force: bool = False) -> int:
        """Write the status of every desired instance whose state changed; how many were written."""
        from kubernetes.client.exceptions import ApiException

        now = time.monotonic()
        written = 0
        statuses = self.agent.status()
        for name, st in statuses.items():
            spec = self.agent.desired.get(name)
            if spec is None:
                continue
            body = status_body(spec, st)
            key = {k: v for k, v in body.items() if k not in ("counters", "latencyMs")}
            last = self._reported.get(name)
            if not force and last is not None and last[0] == key and now - last[1] < self.report_s:
                continue
            try:
                self.source.report(spec, st)
            except ApiException as exc:
                if exc.status != 404:  # 404: deleted meanwhile; the next sync removes it
                    log.warning("status of NFInstance %s/%s: %s", spec.namespace, name, exc.reason)
                continue
            except Exception as exc:
                log.warning("status of NFInstance %s/%s: %s", spec.namespace, name, exc)
                continue
            self._reported[name] = (key, now)
            written += 1
        for gone in set(self._reported) - set(statuses):
            del self._reported[gone]
        return written

    def heartbeat_if_due(self) -> bool:
        if time.monotonic() - self._last_beat < self.heartbeat_s:
            return False
        return self.heartbeat()

    def heartbeat(self) -> bool:
        """Write this node's EdgeNode status: heartbeat time, load, instances, Ready."""
        hb = self.agent.heartbeat()
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status: dict[str, Any] = {
            "heartbeatTime": now,
            "agentVersion": AGENT_VERSION,
            "instances": int(hb["instances"]),
        }
        if self.report_load:
            status["load"] = round(float(hb["load"]), 3)
        healthy, why = self.agent.healthy()
        status["conditions"] = [
            {"type": "Ready", "status": "True" if healthy else "False", "reason": "AgentReady" if healthy else "AgentUnhealthy",
             "message": why, "lastTransitionTime": now}
        ]  # fmt: skip
        try:
            self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, "edgenodes", self.node, {"status": status}
            )
        except Exception as exc:
            log.warning("heartbeat of EdgeNode %s: %s", self.node, getattr(exc, "reason", exc))
            return False
        self._last_beat = time.monotonic()
        return True

    # -- loop ---------------------------------------------------------------------------------

    def _watch(self) -> None:
        """Wake the loop on any change to this node's NFInstances (polling stays as the fallback)."""
        from kubernetes import watch

        selector = f"flyslice.io/node={self.node}"
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                ns = self.source.namespace
                if ns:
                    stream = w.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,
                                      label_selector=selector, timeout_seconds=10)  # fmt: skip
                else:
                    stream = w.stream(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                                      label_selector=selector, timeout_seconds=10)  # fmt: skip
                for _event in stream:
                    self._wake.set()
                    if self._stop.is_set():
                        break
            except Exception as exc:
                log.debug("NFInstance watch of %s interrupted: %s", self.node, exc)
                self._stop.wait(1.0)
            finally:
                w.stop()

    def run(self, stop: threading.Event | None = None, interval_s: float = 5.0) -> None:
        """Sync on every change to this node's NFInstances, and at least every ``interval_s``."""
        stop = stop or self._stop
        self._watcher = threading.Thread(
            target=self._watch, name=f"nfinstance-watch-{self.node}", daemon=True
        )
        self._watcher.start()
        try:
            while not stop.is_set() and not self._stop.is_set():
                self._wake.clear()
                try:
                    self.sync_once()
                except SourceUnavailable:
                    pass
                except Exception:
                    log.exception("agent round failed")
                # Short waits while instances are settling, so status follows state changes quickly.
                settling = any(s.state not in ("Running", "Failed") for s in self.agent.status().values())
                self._wake.wait(min(interval_s, 0.5) if settling else interval_s)
        finally:
            self._stop.set()

    def stop(self, *, stop_vnfs: bool = False) -> None:
        """Stop the loop and the agent; VNF pods keep running unless ``stop_vnfs`` (an agent upgrade)."""
        self._stop.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(5)
        self.agent.stop(stop_vnfs=stop_vnfs)

    def instances(self) -> Sequence[str]:
        return sorted(self.agent.desired)
