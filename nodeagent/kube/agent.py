"""The node agent in cluster mode: a Kubernetes API server is its control plane.

It needs only API credentials (a kubeconfig, or the in-cluster service account), so it also runs on a
bare gateway outside the cluster network. It

* watches only its own node's NFInstances (label ``flyslice.io/node=<node>``) and converges to them:
  fNFs load in-process, VNFs become pods pinned to its node (:class:`KubernetesPodDriver`);
* writes each instance's ``status`` (only when it changes, and at most every ``report_s`` for counters);
* writes its EdgeNode's ``status`` heartbeat (time, load, instance count, a Ready condition, and with
  ``--mqtt`` an ``IngressReady`` condition, False with reason ``BrokerUnreachable`` while the broker is down);
* serves its data plane as mutual TLS by default, with a certificate the operator's signer issues
  (a CSR; ``--tls-dir`` takes provided files instead, and only ``--insecure-plaintext`` serves plain
  TCP), reported in a ``DataPlaneAuthenticated`` condition;
* keeps that certificate current while it runs (a CSR at 2/3 of its lifetime, or a reload of replaced
  files) and renews its VNF pods' slice certificates, reporting the certificate in use in a
  ``DataPlaneCertificate`` condition.

While the API server is unreachable it keeps running its cached desired state (``Agent.sync_once``).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from flyslice.nodeagent.agent import Agent, AgentConfig, SourceUnavailable
from flyslice.nodeagent.kube.source import (
    GROUP,
    PLURAL,
    VERSION,
    KubeSource,
    edgenode_conditions,
    status_body,
)
from flyslice.nodeagent.spec import InstanceSpec

if TYPE_CHECKING:
    from pathlib import Path

    from flyslice.nodeagent.dataplane.tls import Renewer, TlsFiles

log = logging.getLogger("flyslice.nodeagent.cluster")

AGENT_VERSION = "0.1.0"
#: EdgeNode condition on the agent's data-plane certificate (agents with ``--tls``/``--tls-dir``).
CERTIFICATE_CONDITION = "DataPlaneCertificate"
#: EdgeNode condition: True (``MutualTLS``) or False (``InsecurePlaintext``, ``--insecure-plaintext``).
AUTHENTICATED_CONDITION = "DataPlaneAuthenticated"


def _tls_keeper(
    files: TlsFiles, how: Literal["csr", "files"], api_client: Any, node: str, *, ca_namespace: str,
    retry_s: float, timeout_s: float, expiration_s: int | None,
) -> Renewer:  # fmt: skip
    """What keeps a cluster agent's certificate current: CSR renewal (``--tls``) or a file watch (``--tls-dir``)."""
    from flyslice.nodeagent.dataplane.tls import Renewer, TlsDirWatcher
    from flyslice.nodeagent.kube.dataplane_certs import DEFAULT_EXPIRATION_S, obtain_node_tls

    if how == "files":
        return TlsDirWatcher(files)

    def renew() -> object:
        return obtain_node_tls(
            api_client, node, files.cert.parent, ca_namespace=ca_namespace, timeout_s=timeout_s,
            expiration_s=expiration_s or DEFAULT_EXPIRATION_S,
        )  # fmt: skip

    return Renewer(files, renew, retry_s=retry_s)


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
        advertise: str | None = None,
        tls_renewal: Literal["csr", "files"] | None = None,
        tls_ca_namespace: str = "flyslice-system",
        tls_retry_s: float = 30.0,
        tls_request_timeout_s: float = 60.0,
        tls_expiration_s: int | None = None,
    ) -> None:
        """``tls_renewal`` keeps ``config.tls`` current while the agent runs: ``"csr"`` renews it at
        2/3 of its lifetime with a new key and a CSR to the operator's signer (``--tls``); ``"files"``
        reloads the files when someone else replaces them (``--tls-dir``). Failed CSR renewals are
        retried after ``tls_retry_s``, doubling up to 10 minutes."""
        from kubernetes import client

        from flyslice.nodeagent.kube.pod_driver import KubernetesPodDriver

        self.node = config.node
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.core: Any = client.CoreV1Api(api_client)
        self.api_client = api_client
        self.source = KubeSource(self.custom, config.node, instance_namespace)
        self.pods = (
            KubernetesPodDriver(
                self.core,
                namespace=pod_namespace,
                node_name=kubernetes_node or config.node,
                agent_address="",
                trusted_keys=config.trusted_keys,  # pods verify under the agent's signing policy
                image_keys=config.image_keys,  # and image signatures before a pod is created
                tls=config.tls,  # pods get slice certificates chained to the agent's CA
            )
            if pod_namespace
            else None
        )
        self.agent = Agent(config, self.pods)
        #: host:port other agents reach this one at (published in the EdgeNode status).
        self.advertise = advertise or self.agent.address
        if self.pods is not None:
            # The pods' uplink: the address they reach the agent at, not what it binds (a DaemonSet
            # agent listens on 0.0.0.0, which inside a pod is the pod itself).
            self.pods.agent_address = self.advertise
        if config.tls is not None and tls_renewal is not None:
            self.agent.tls_renewer = _tls_keeper(
                config.tls, tls_renewal, api_client, config.node, ca_namespace=tls_ca_namespace,
                retry_s=tls_retry_s, timeout_s=tls_request_timeout_s, expiration_s=tls_expiration_s,
            )  # fmt: skip
        #: (state, since) of the DataPlaneCertificate condition: lastTransitionTime moves when it flips.
        self._tls_since: tuple[str, str] | None = None
        self._started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._static_peers = dict(config.peers)
        self.heartbeat_s = heartbeat_s
        self.report_s = report_s
        self.report_load = report_load
        self._reported: dict[str, tuple[dict[str, Any], float]] = {}
        self._last_beat = 0.0
        #: This node's EdgeNode metadata.generation, from the last EdgeNode list (None until one).
        self._generation: int | None = None
        #: (Ready, since when) of the last heartbeat: lastTransitionTime moves only when Ready flips.
        self._ready_since: tuple[bool, str] | None = None
        #: The same for the MQTT ingress (IngressReady): (reachable, since when).
        self._ingress_since: tuple[bool, str] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._stopped = False

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
            if self.pods is not None and self.pods.tls is not None:
                self.pods.renew_certificates()  # VNF pods' slice certificates at 2/3 of their lifetime
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
            # Counters and latencies move with every message: refreshed every report_s, not on each
            # change. The first end-to-end figure is written at once (its presence is in the key).
            key = {k: v for k, v in body.items() if k not in ("counters", "latencyMs", "e2eLatencyMs")}
            key["e2eLatencyMs"] = "e2eLatencyMs" in body
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
            "agentAddress": self.advertise,
            "instances": int(hb["instances"]),
        }
        if self.report_load:
            status["load"] = round(float(hb["load"]), 3)
        healthy, why = self.agent.healthy()
        # The peer list read right before carries this node's own object: its generation is what the
        # kstatus observedGeneration says this heartbeat saw (Argo CD / Flux compare the two).
        self.refresh_peers()
        generation = self._generation
        if self._ready_since is None or self._ready_since[0] != healthy:
            self._ready_since = (healthy, now)
        status["conditions"] = edgenode_conditions(
            healthy, why, self._ready_since[1], generation, self._ingress_state(now)
        )
        status["conditions"].append(self._authenticated_condition(now, generation))
        renewer = self.agent.tls_renewer
        if renewer is not None:
            status["conditions"].append(self._certificate_condition(renewer.status(), now, generation))
        if generation is not None:
            status["observedGeneration"] = generation
        try:
            self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, "edgenodes", self.node, {"status": status}
            )
        except Exception as exc:
            log.warning("heartbeat of EdgeNode %s: %s", self.node, getattr(exc, "reason", exc))
            return False
        self._last_beat = time.monotonic()
        return True

    def _authenticated_condition(self, now: str, generation: int | None) -> dict[str, Any]:
        """``DataPlaneAuthenticated``: False with reason ``InsecurePlaintext`` on an agent that serves
        plain TCP, so that an open data plane shows where operators look (``kubectl get edgenode``).
        A warning: Ready does not change with it. Its transition time is the agent's start (it cannot
        change while an agent runs)."""
        sec = self.agent.dataplane_security()
        cond: dict[str, Any] = {
            "type": AUTHENTICATED_CONDITION, "status": "True" if sec["authenticated"] else "False",
            "reason": "MutualTLS" if sec["authenticated"] else "InsecurePlaintext",
            "message": "mutual TLS" if sec["authenticated"] else "--insecure-plaintext: " + sec["warning"],
            "lastTransitionTime": self._started,
        }  # fmt: skip
        if generation is not None:
            cond["observedGeneration"] = generation
        return cond

    def _certificate_condition(
        self, cert: dict[str, Any], now: str, generation: int | None
    ) -> dict[str, Any]:
        """``DataPlaneCertificate``: True (reason ``Valid``) while the certificate in use is valid and
        its last renewal worked; False with reason ``RenewalFailing`` (still valid, renewal retried) or
        ``Expired``. The message names the serial and notAfter in use. A warning like IngressReady:
        Ready does not change with it."""
        state = str(cert["state"])
        if self._tls_since is None or self._tls_since[0] != state:
            self._tls_since = (state, now)
        message = (
            f"serial {cert['serial']}, valid until {cert['notAfter']}, renewed {cert['renewals']} times, "
            f"{cert['failures']} failed attempts"
        )
        if cert["lastError"]:
            message += f"; last: {cert['lastError']}"
        cond: dict[str, Any] = {
            "type": CERTIFICATE_CONDITION, "status": "True" if state == "Valid" else "False", "reason": state,
            "message": message[:1024], "lastTransitionTime": self._tls_since[1],
        }  # fmt: skip
        if generation is not None:
            cond["observedGeneration"] = generation
        return cond

    def _ingress_state(self, now: str) -> tuple[bool, str, str] | None:
        """(reachable, why not, since) of the MQTT ingress, from ``Agent.warnings``; None without one."""
        if self.agent.mqtt is None:
            return None
        warnings = self.agent.warnings()
        reachable = not warnings
        if self._ingress_since is None or self._ingress_since[0] != reachable:
            self._ingress_since = (reachable, now)
        return reachable, "; ".join(warnings), self._ingress_since[1]

    def refresh_peers(self) -> dict[str, str]:
        """Learn where the other nodes' agents listen from their EdgeNode status (next hops name a node,
        not an address); ``--peer`` flags win over what the API says."""
        try:
            nodes = self.custom.list_cluster_custom_object(GROUP, VERSION, "edgenodes")["items"]
        except Exception as exc:
            log.warning("listing EdgeNodes for peer addresses: %s", getattr(exc, "reason", exc))
            return dict(self.agent.plane.peers)
        own = next((n for n in nodes if n["metadata"]["name"] == self.node), None)
        if own is not None and own["metadata"].get("generation") is not None:
            self._generation = int(own["metadata"]["generation"])
        learned = {
            n["metadata"]["name"]: addr
            for n in nodes
            if (addr := (n.get("status") or {}).get("agentAddress")) and n["metadata"]["name"] != self.node
        }
        self.agent.plane.peers.update({**learned, **self._static_peers})
        return dict(self.agent.plane.peers)

    # -- loop ---------------------------------------------------------------------------------

    def _watch(self) -> None:
        """Wake the loop on any change to this node's NFInstances (polling stays as the fallback)."""
        from kubernetes import watch

        selector = f"flyslice.io/node={self.node}"
        while not self._stop.is_set():
            w = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                ns = self.source.namespace
                args: tuple[Any, ...] = (
                    (self.custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL)
                    if ns
                    else (self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
                )
                stream = w.stream(*args, label_selector=selector, timeout_seconds=10)  # type: ignore[no-untyped-call]
                for _event in stream:
                    self._wake.set()
                    if self._stop.is_set():
                        break
            except Exception as exc:
                log.debug("NFInstance watch of %s interrupted: %s", self.node, exc)
                self._stop.wait(1.0)
            finally:
                w.stop()  # type: ignore[no-untyped-call]

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

    def wake(self) -> None:
        """Run the next round now (a change, or a stop request)."""
        self._wake.set()

    def stop(self, *, stop_vnfs: bool = False) -> None:
        """Stop the loop and the agent; VNF pods keep running unless ``stop_vnfs`` (an agent upgrade)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(1)  # a daemon thread; its watch ends by itself within 10 s
        self.agent.stop(stop_vnfs=stop_vnfs)

    def instances(self) -> Sequence[str]:
        return sorted(self.agent.desired)


def api_client_for(kubeconfig: str | None = None, *, pool: int | None = None) -> Any:
    """API credentials: this kubeconfig, else the in-cluster service account, else ~/.kube/config.
    ``pool`` sizes the HTTP connection pool for callers that issue requests in parallel."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    if pool is not None:
        cfg.connection_pool_maxsize = pool
    return client.ApiClient(cfg)


def _cert_seconds(text: str) -> int:
    import argparse

    from flyslice.nodeagent.kube.dataplane_certs import MIN_EXPIRATION_S

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value < MIN_EXPIRATION_S:
        raise argparse.ArgumentTypeError(
            f"{value}: a CSR's expirationSeconds must be at least {MIN_EXPIRATION_S} (Kubernetes)"
        )
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flyslice.nodeagent.kube.agent --node gw-1 --state-dir DIR [--kubeconfig FILE]``

    Exit codes: 0 stopped (SIGTERM), 1 cannot start (no data-plane certificate: the signer denied or
    never answered the CSR; unusable ``--tls-dir`` files), 2 usage error."""
    import argparse
    import signal
    from pathlib import Path

    from flyslice.nodeagent.runtime.image_signatures import TrustedKey, load_trusted_key
    from flyslice.nodeagent.runtime.trust_options import (
        TrustOptionError,
        add_module_trust_options,
        load_module_keys,
    )

    p = argparse.ArgumentParser(prog="flyslice agent --kube", description="flyslice node agent, cluster mode")
    p.add_argument("--kube", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--node", required=True, help="EdgeNode name this agent serves")
    p.add_argument("--state-dir", type=Path, required=True, help="desired-state cache")
    p.add_argument(
        "--kubeconfig", default=None, help="API credentials (default: in-cluster, then ~/.kube/config)"
    )
    p.add_argument("--namespace", default=None, help="read NFInstances of this namespace only (default: all)")
    p.add_argument("--pod-namespace", default="flyslice-system", help="namespace of this node's VNF pods")
    p.add_argument("--no-pods", action="store_true", help="fNF-only gateway: never create VNF pods")
    p.add_argument("--kubernetes-node", default=None, help="Node VNF pods are pinned to (default: --node)")
    p.add_argument("--listen", default="0.0.0.0:7000", help="data-plane TCP host:port")
    p.add_argument(
        "--advertise",
        default=None,
        help="host:port other agents reach this one at (default: the listen address; for a wildcard one, "
        "the address this host reaches the API server from, else its one interface address)",
    )
    p.add_argument("--http", default=None, help="telemetry/ingress HTTP host:port")
    p.add_argument("--peer", action="append", default=[], help="node=host:port of another agent")
    p.add_argument("--mqtt", default=None, help="host:port of the MQTT broker devices publish to")
    add_module_trust_options(p)
    p.add_argument(
        "--trusted-image-key", action="append", default=[], metavar="PEM",
        help="public key for image signatures only: ed25519 or ECDSA P-256 (cosign.pub; repeatable)",
    )  # fmt: skip
    p.add_argument("--interval", type=float, default=5.0, help="seconds between full syncs (changes wake it)")
    p.add_argument("--heartbeat", type=float, default=10.0, help="seconds between EdgeNode heartbeats")
    p.add_argument(
        "--no-load-report", action="store_true",
        help="leave the host's load out of the heartbeat (the operator then counts only what it placed "
        "as used): for agents that share one machine, whose load is not theirs",
    )  # fmt: skip
    tls = p.add_mutually_exclusive_group()
    tls.add_argument(
        "--tls", action="store_true",
        help="the default, accepted for old command lines: mutual TLS on the data plane with a "
        "certificate the operator signs (CSR, signer flyslice.io/dataplane)",
    )  # fmt: skip
    tls.add_argument(
        "--tls-dir", type=Path, default=None, metavar="DIR",
        help="mutual TLS with provided ca.pem, cert.pem, key.pem in DIR instead of a CSR",
    )  # fmt: skip
    tls.add_argument(
        "--insecure-plaintext", action="store_true",
        help="serve the data plane as plain TCP, UNAUTHENTICATED: any process that can connect can inject "
        "into any slice (the EdgeNode's DataPlaneAuthenticated condition, /status and /metrics say so)",
    )  # fmt: skip
    p.add_argument(
        "--tls-ca-namespace",
        default="flyslice-system",
        help="namespace of the ConfigMap flyslice-dataplane-ca",
    )
    p.add_argument(
        "--tls-cert-seconds", type=_cert_seconds, default=None, metavar="SECONDS",
        help="certificate lifetime the CSR asks for (expirationSeconds, at least 600; default 90 days; "
        "renewed at 2/3 of what the signer grants; not with --tls-dir)",
    )  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mqtt = None
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":")
        mqtt = (host, int(port))
    try:
        module_keys = load_module_keys(args.trusted_key)
    except TrustOptionError as exc:
        p.error(str(exc))
    image_keys: list[TrustedKey] = []
    for k in args.trusted_image_key:
        try:
            image_keys.append(load_trusted_key(Path(k).read_bytes()))
        except (OSError, ValueError) as exc:
            p.error(f"--trusted-image-key {k}: {exc}")
    api = api_client_for(args.kubeconfig)
    tls_files = None
    if args.tls_dir is not None:
        from flyslice.nodeagent.dataplane.tls import load_tls_dir

        try:
            tls_files = load_tls_dir(args.tls_dir)
        except (OSError, ValueError) as exc:
            return _cannot_start(f"--tls-dir {args.tls_dir}: {exc}")
    elif not args.insecure_plaintext:  # (which is warned about below, once the port is bound)
        # The default (also what --tls asks for): a fresh key and certificate at every start, from
        # the operator's signer, renewed while running (docs/security.md).
        from flyslice.nodeagent.kube.dataplane_certs import DEFAULT_EXPIRATION_S, obtain_node_tls

        try:
            tls_files = obtain_node_tls(
                api, args.node, args.state_dir / "tls", ca_namespace=args.tls_ca_namespace,
                expiration_s=args.tls_cert_seconds or DEFAULT_EXPIRATION_S,
            )  # fmt: skip
        except Exception as exc:  # CertificateUnavailable, an API error, a timeout
            kept = kept_node_tls(args.state_dir / "tls", exc)
            if kept is None:
                return _cannot_start(
                    f"data-plane certificate for node {args.node}: {getattr(exc, 'reason', None) or exc}; the "
                    "operator (signer flyslice.io/dataplane) must run, or give --tls-dir DIR"
                )
            tls_files = kept
    config = AgentConfig(
        node=args.node, state_dir=args.state_dir, listen=args.listen, http_listen=args.http,
        peers=dict(item.split("=", 1) for item in args.peer), mqtt=mqtt,
        trusted_keys=module_keys, tls=tls_files,
        image_keys=image_keys,
        module_dirs=tuple(args.module_dir),
    )  # fmt: skip
    from flyslice.nodeagent.kube.advertise import AdvertiseError, advertised_address

    try:
        advertise = advertised_address(args.listen, args.advertise, str(api.configuration.host))
    except AdvertiseError as exc:
        return _cannot_start(f"the data-plane address of node {args.node}: {exc}")
    log.info("node %s: other agents reach this one at %s", args.node, advertise)
    agent = ClusterAgent(
        config, api, pod_namespace=None if args.no_pods else args.pod_namespace,
        instance_namespace=args.namespace, kubernetes_node=args.kubernetes_node, heartbeat_s=args.heartbeat,
        advertise=advertise, report_load=not args.no_load_report,
        tls_renewal=None if tls_files is None else ("files" if args.tls_dir is not None else "csr"),
        tls_ca_namespace=args.tls_ca_namespace, tls_expiration_s=args.tls_cert_seconds,
    )  # fmt: skip
    if tls_files is None:
        log.warning(
            "--insecure-plaintext: the data plane on %s is plain TCP and UNAUTHENTICATED; any process that "
            "can connect can inject messages into any slice. Use it only on a network nothing untrusted "
            "can reach.",
            agent.agent.address,
        )
    from flyslice.nodeagent.gctune import tune_for_data_plane

    tune_for_data_plane()
    stop = threading.Event()

    def request_stop(*_: object) -> None:
        stop.set()
        agent.wake()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        agent.run(stop, args.interval)
    finally:
        agent.stop(stop_vnfs=False)
    return 0


def kept_node_tls(directory: Path, exc: Exception) -> TlsFiles | None:
    """The certificate an earlier start obtained, when a new one cannot be had now: a gateway that
    restarts while the API server is out of reach keeps serving its slices with it (the renewer
    replaces it once the signer answers). Not when the signer refused (a denied or failed CSR), nor
    an expired, mismatched or missing one: then the agent does not start."""
    from flyslice.nodeagent.dataplane.tls import TlsFiles, check_credentials
    from flyslice.nodeagent.kube.dataplane_certs import CertificateUnavailable

    if isinstance(exc, CertificateUnavailable) and re.search(r"^CSR \S+ (denied|failed):", str(exc)):
        return None
    tls = TlsFiles.in_dir(directory)
    try:
        leaf = check_credentials(tls.ca.read_bytes(), tls.cert.read_bytes(), tls.key.read_bytes())
    except (OSError, ValueError):
        return None
    log.warning("no new data-plane certificate (%s): using the one in %s, valid until %s",
                getattr(exc, "reason", None) or exc, directory, f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")  # fmt: skip
    return tls


def _cannot_start(message: str) -> int:
    print(f"flyslice agent --kube: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
