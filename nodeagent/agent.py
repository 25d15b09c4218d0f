"""The node agent: Function Management + SFC + Modular Platform on one host (seed 000 §III.C),
plus GNF's lifecycle-and-telemetry agent.

``Agent.converge(desired)`` is the SCi interface: it is level-triggered and idempotent -- it
compares the desired instances with what runs (by fingerprint) and does only the difference.
The desired list is written to disk before acting, so after a crash the agent resumes from it,
and while the control plane is unreachable (``Agent.run`` with a failing source) it keeps running
the cached state; on reconnect, instances whose spec did not change are left untouched.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flyslice.nodeagent.cache import DesiredCache
from flyslice.nodeagent.dataplane.chains import DataPlane
from flyslice.nodeagent.dataplane.lifecycle import State
from flyslice.nodeagent.dataplane.tenancy import TenantNF
from flyslice.nodeagent.dataplane.transport import TcpIngress, TcpSender
from flyslice.nodeagent.heartbeat import heartbeat
from flyslice.nodeagent.message import Message
from flyslice.nodeagent.runtime.drivers import LocalProcessDriver, VnfDriver
from flyslice.nodeagent.runtime.modules import IntegrityError, ModuleLoader
from flyslice.nodeagent.runtime.platform import ModularPlatform
from flyslice.nodeagent.spec import InstanceSpec, InstanceStatus

if TYPE_CHECKING:
    # Imported lazily below, only when configured: together they cost ~15 MB of RSS, which an
    # agent on a gateway without MQTT ingress, HTTP telemetry or signing should not pay.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from flyslice.nodeagent.dataplane.mqtt_ingress import MqttIngress
    from flyslice.nodeagent.dataplane.tls import CertificateAuthority, Renewer, TlsFiles
    from flyslice.nodeagent.runtime.image_signatures import TrustedKey
    from flyslice.nodeagent.telemetry import TelemetryServer

log = logging.getLogger("flyslice.nodeagent")


class SourceUnavailable(RuntimeError):
    """The control plane cannot be reached; the agent keeps its cached desired state."""


@dataclass
class AgentConfig:
    node: str
    state_dir: Path
    #: Data-plane TCP listener (other agents and this node's VNF runners send here).
    listen: str = "127.0.0.1:0"
    #: Telemetry/ingress HTTP listener; None = no HTTP server.
    http_listen: str | None = None
    #: node -> host:port of that node's agent, for next hops without an address.
    peers: dict[str, str] = field(default_factory=dict)
    #: (host, port) of an MQTT broker devices publish to; None = no MQTT ingress.
    mqtt: tuple[str, int] | None = None
    mqtt_prefix: str = "flyslice"
    trusted_keys: list[Ed25519PublicKey] = field(default_factory=list)
    #: Keys for image signatures only (``--trusted-image-key``: ed25519 or ECDSA P-256, e.g. cosign.pub);
    #: image signatures also verify with ``trusted_keys``. They never make a module acceptable.
    image_keys: list[TrustedKey] = field(default_factory=list)
    #: Directories ``file:`` modules may be loaded from (fNFs and this agent's VNF runners).
    #: Empty, the default: no ``file:`` module at all, only ``builtin:`` ones.
    module_dirs: tuple[Path, ...] = ()
    #: Mutual TLS for the data plane: this agent's certificate (``flyslice://agent/<node>``) for its
    #: listener, its senders and its runner probes. None: plain TCP, nothing authenticated.
    tls: TlsFiles | None = None
    #: Issues each VNF runner a certificate bound to the runner's slice. Needed with ``tls`` to run
    #: local-process VNFs: without it they are refused rather than started on an open port.
    tls_issuer: CertificateAuthority | None = None
    queue_size: int = 10_000
    error_limit: int = 5
    deadline_s: float = 1.0
    #: How often the agent re-converges to its last desired state on its own (retries, VNF watch).
    resync_s: float = 1.0
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    #: Local-process VNFs stop when this process dies, instead of outliving it to be re-adopted by
    #: the next agent on the state dir. ``flyslice up`` sets it: its agents die with it, and runners
    #: left behind would run unsupervised until the next ``up`` (which may never come).
    vnfs_die_with_agent: bool = False


@dataclass(frozen=True)
class AgentEvent:
    """Something that happened to an instance on its own: a failure, a restart, a removal."""

    seq: int
    at: float
    instance: str
    #: Failed | Restarted | Removed
    reason: str
    message: str

    def __str__(self) -> str:
        return f"instance {self.instance}: {self.reason}: {self.message}"


@dataclass
class _Retry:
    fingerprint: str
    delay: float
    next_at: float


class Agent:
    def __init__(self, config: AgentConfig, vnf_driver: VnfDriver | None = None) -> None:
        self.config = config
        self.node = config.node
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.cache = DesiredCache(self.state_dir)
        self.loader = ModuleLoader(config.trusted_keys, config.module_dirs)
        tls = config.tls

        def sender(address: str) -> TcpSender:
            return TcpSender(address, tls=tls)

        self.plane = DataPlane(
            config.node, queue_size=config.queue_size, sender_factory=sender, peers=dict(config.peers)
        )
        self.platform = ModularPlatform(
            self.plane,
            self.loader,
            error_limit=config.error_limit,
            deadline_s=config.deadline_s,
            data_root=self.state_dir / "data",  # the same root the VNF runners get: see drivers.py
        )
        self.ingress = TcpIngress(config.listen, self.plane.deliver_many, tls=config.tls)
        self.address = self.ingress.address
        #: With a CA of its own (``flyslice up``) the agent renews its certificate while it runs, at
        #: 2/3 of its lifetime; new connections (listener, senders, probes) then present the new one.
        self.tls_renewer: Renewer | None = None
        if config.tls is not None and config.tls_issuer is not None:
            from flyslice.nodeagent.dataplane.tls import Renewer

            issuer, files, node = config.tls_issuer, config.tls, config.node
            self.tls_renewer = Renewer(
                files, lambda: issuer.issue_to(files.cert.parent, f"agent {node}", node=node)
            )
        self.uplink_file = self.state_dir / "agent.addr"
        self.uplink_file.write_text(self.address)
        self.vnf: VnfDriver = vnf_driver or LocalProcessDriver(
            self.state_dir,
            self.uplink_file,
            die_with_parent=config.vnfs_die_with_agent,
            trusted_keys=config.trusted_keys,  # the fNF loader's policy, for VNF runners too
            module_dirs=config.module_dirs,
            tls=config.tls,
            tls_issuer=config.tls_issuer,
        )
        #: Failures, restarts and removals the agent saw or did on its own, newest last (bounded).
        self.events: deque[AgentEvent] = deque(maxlen=500)
        self._event_seq = itertools.count(1)
        #: Restarts per instance since it was installed on this agent (reported in its status).
        self.restarts: dict[str, int] = {}
        self._failure_noted: dict[str, str] = {}  # name -> the failure already reported as an event
        self.desired: dict[str, InstanceSpec] = {}
        self.actual: dict[str, InstanceSpec] = {}  # what was last applied successfully, by name
        self.errors: dict[str, str] = {}  # why the last attempt on an instance failed
        self.notes: dict[str, str] = {}  # remarks on the last desired list (duplicates)
        self._retries: dict[str, _Retry] = {}
        #: Shared VNF instance -> the spec its runner was started for (what joining tenants must match).
        self._shared_vnf_ref: dict[str, InstanceSpec] = {}
        #: What the VNF driver runs, listed once per converge (``_list_vnfs``).
        self._vnf_names: set[str] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self.connected: bool | None = None  # None: no source in use
        self._reported: dict[str, tuple[Any, ...]] = {}
        self._saved_key: tuple[tuple[str, int], ...] | None = None
        self.cache_error = ""
        self.last_sync: float | None = None
        self.http: TelemetryServer | None = None
        if config.http_listen:
            from prometheus_client import CollectorRegistry

            from flyslice.nodeagent.telemetry import AgentCollector, TelemetryServer

            self.registry = CollectorRegistry()
            self.registry.register(
                AgentCollector(self.node, self._metric_rows, self._agent_gauges, self.shared_instances)
            )
            self.http = TelemetryServer(
                config.http_listen,
                registry=self.registry,
                status=self.status_document,
                healthy=self.healthy,
                deliver=self.plane.deliver,
            )
        self.mqtt: MqttIngress | None = None
        if config.mqtt:
            from flyslice.nodeagent.dataplane.mqtt_ingress import MqttIngress

            self.mqtt = MqttIngress(
                config.mqtt[0], config.mqtt[1], self.plane.deliver, prefix=config.mqtt_prefix,
                client_id=f"flyslice-agent-{config.node}",
            )  # fmt: skip
        self._monitor = threading.Thread(target=self._monitor_loop, name="agent-monitor", daemon=True)
        # Resume: run the last desired state before hearing from anyone (offline autonomy).
        cached = self.cache.load()
        if cached is not None:
            self.converge(cached)
        self._monitor.start()

    # -- SCi: desired state ------------------------------------------------------------------------

    def converge(self, desired: Sequence[InstanceSpec], *, _save: bool = True) -> dict[str, InstanceStatus]:
        """Make this node run exactly ``desired``; returns the status of every desired instance."""
        with self._lock:
            by_name: dict[str, InstanceSpec] = {}
            refused: dict[str, InstanceStatus] = {}
            dups: set[str] = set()
            for spec in desired:
                if spec.node and spec.node != self.node:
                    msg = f"instance {spec.name} is for node {spec.node}, this agent serves {self.node}"
                    refused[spec.name] = InstanceStatus(spec.name, str(State.FAILED), msg, flavor=spec.flavor)
                    continue
                if spec.name in by_name:
                    dups.add(spec.name)
                    continue
                by_name[spec.name] = spec
            self.notes = {n: f"instance {n} is listed twice; using the first" for n in dups}
            saved_key = tuple((s.fingerprint, s.generation) for s in by_name.values())
            if _save and saved_key != self._saved_key:  # no fsync when nothing changed
                try:
                    self.cache.save(self.node, list(by_name.values()))
                    self._saved_key = saved_key
                    self.cache_error = ""
                except OSError as exc:  # a full or read-only disk costs offline autonomy, not the slices
                    self.cache_error = f"cannot write {self.cache.path}: {exc}"
                    log.error("%s", self.cache_error)
            self.desired = by_name
            self._list_vnfs()
            for name in [n for n in self._running_names() if n not in by_name]:
                self._remove(name)
            groups: dict[str, list[InstanceSpec]] = {}
            for spec in by_name.values():
                if spec.shared is not None:
                    if self._shares(spec):
                        groups.setdefault(spec.shared.name, []).append(spec)
                        continue
                    why = (
                        "an image-only VNF (no vnf.module) cannot take tenants"
                        if callable(getattr(self.vnf, "ensure_shared", None))
                        else "this agent's VNF driver cannot serve several tenants from one pod"
                    )
                    self.notes[spec.name] = (
                        f"runs on its own, not in shared instance {spec.shared.name}: {why}"
                    )
                try:
                    self._converge_one(spec)
                except Exception as exc:  # one bad instance never blocks the others
                    log.warning("instance %s: %s", spec.name, exc)
                    self.errors[spec.name] = str(exc)
                    self._schedule_retry(spec)
            self._converge_shared_groups(groups)
            return {**refused, **{name: self._status_of(name) for name in by_name}}

    def _list_vnfs(self) -> None:
        """What the VNF driver runs, read once per converge: for the pod driver a LIST of this node's
        pods (refreshed here, reused by every ``names``/``observe`` until the next converge). Asking
        per instance cost one API request per fNF in every sync."""
        try:
            refresh = getattr(self.vnf, "refresh", None)
            if callable(refresh):
                refresh()
            self._vnf_names = set(self.vnf.names())
        except Exception as exc:  # API unreachable: the last list stands; fNFs converge regardless
            log.warning("listing this node's VNFs failed: %s", getattr(exc, "reason", None) or exc)

    def _vnf_runs(self, name: str) -> bool:
        """Whether the VNF driver runs ``name`` as a VNF of its own (as of this converge's list)."""
        return name in self._vnf_names

    def _vnf_remove(self, name: str) -> None:
        self.vnf.remove(name)
        self._vnf_names.discard(name)

    def _running_names(self) -> set[str]:
        return set(self.actual) | set(self.platform.instances) | self._vnf_names

    def _remove(self, name: str) -> None:
        self.platform.uninstall(name)
        self._vnf_remove(name)
        self.plane.forget(name)
        self.actual.pop(name, None)
        self.errors.pop(name, None)
        self._retries.pop(name, None)
        self.restarts.pop(name, None)
        self._failure_noted.pop(name, None)
        self._event(name, "Removed", "no longer in this node's desired state; stopped", logging.INFO)

    # -- events ------------------------------------------------------------------------------------

    def _event(self, name: str, reason: str, message: str, level: int = logging.WARNING) -> None:
        event = AgentEvent(next(self._event_seq), time.time(), name, reason, message)
        self.events.append(event)
        log.log(level, "%s", event)

    def events_since(self, seq: int) -> list[AgentEvent]:
        """Events newer than ``seq`` (0: all that are kept); safe to call from any thread."""
        return [e for e in list(self.events) if e.seq > seq]

    def _note_failure(self, name: str, why: str) -> None:
        """One Failed event per failure, however many passes see it before the retry is due."""
        if self._failure_noted.get(name) is None:
            self._failure_noted[name] = why
            self._event(name, "Failed", why or "failed (no reason given)")

    def _restarted(self, name: str, kind: str) -> None:
        why = self._failure_noted.pop(name, "") or "it had failed"
        n = self.restarts[name] = self.restarts.get(name, 0) + 1
        self._event(name, "Restarted", f"{kind} restarted (restart {n}) after: {why}")

    def _retry_due(self, spec: InstanceSpec) -> bool:
        return self._due(spec.name, spec.fingerprint)

    def _schedule_retry(self, spec: InstanceSpec) -> None:
        self._schedule(spec.name, spec.fingerprint)

    def _due(self, key: str, fingerprint: str) -> bool:
        r = self._retries.get(key)
        return r is None or r.fingerprint != fingerprint or time.monotonic() >= r.next_at

    def _schedule(self, key: str, fingerprint: str) -> None:
        r = self._retries.get(key)
        delay = self.config.retry_initial_s
        if r is not None and r.fingerprint == fingerprint:
            delay = min(r.delay * 2, self.config.retry_max_s)
        self._retries[key] = _Retry(fingerprint, delay, time.monotonic() + delay)

    def _converge_one(self, spec: InstanceSpec) -> None:
        self._check_signing_policy(spec)
        cur = self.actual.get(spec.name)
        if spec.flavor == "fnf":
            self._converge_fnf(spec, cur)
        else:
            self._converge_vnf(spec, cur)

    def _check_signing_policy(self, spec: InstanceSpec) -> None:
        """Refuse an instance whose namespace requires signed packages when this agent cannot
        verify signatures (it has no trusted key): without a key the loader checks the digest only,
        and a signature nobody checks is no policy. A copy already running is stopped."""
        if not spec.signature_required or self.config.trusted_keys:
            return
        if spec.flavor == "vnf" and not spec.module and self.config.image_keys:
            return  # an image-only pod: the pod driver verifies its image signature with these keys
        if spec.name in self._running_names():
            self._remove(spec.name)
        raise IntegrityError(
            f"namespace {spec.namespace!r} requires signed packages, but this agent has no trusted "
            "key to verify the signature with (start it with --trusted-key); not running it"
        )

    def _converge_fnf(self, spec: InstanceSpec, cur: InstanceSpec | None) -> None:
        if self._vnf_runs(spec.name):  # flavour changed vnf -> fnf
            self._vnf_remove(spec.name)
            self.plane.forget(spec.name)
        inst = self.platform.instances.get(spec.name)
        if isinstance(inst, TenantNF):  # no longer a tenant of a shared instance: runs on its own now
            self.platform.uninstall(spec.name)
            self.actual.pop(spec.name, None)
            inst, cur = None, None
        if inst is None or cur is None:
            if not self._retry_due(spec):
                return
            if inst is not None:
                self.platform.uninstall(spec.name)
            self.actual.pop(spec.name, None)
            self._install_fnf(spec)
            return
        if inst.lifecycle.state is State.FAILED:
            self._note_failure(spec.name, inst.lifecycle.message)
            if self._retry_due(spec):
                self._schedule_retry(spec)  # backs off if the fresh copy fails again
                self.platform.uninstall(spec.name)
                self.actual.pop(spec.name, None)
                self._install_fnf(spec, keep_retry=True)
                self._restarted(spec.name, "fNF")
            return
        if cur.fingerprint == spec.fingerprint:
            self.errors.pop(spec.name, None)  # e.g. a failed update the control plane took back
            return
        if cur.slice != spec.slice:
            self.platform.uninstall(spec.name)
            self.actual.pop(spec.name, None)
            self._install_fnf(spec)
        elif cur.code_fingerprint != spec.code_fingerprint or cur.memory != spec.memory:
            if not self._retry_due(spec):
                return
            self.platform.update(spec)
        elif dict(cur.config) != dict(spec.config):
            self.platform.configure(spec.name, dict(spec.config))
            self.platform.set_next_hops(spec)
        else:
            self.platform.set_next_hops(spec)
        self.actual[spec.name] = spec
        self.errors.pop(spec.name, None)
        self._retries.pop(spec.name, None)

    def _install_fnf(self, spec: InstanceSpec, keep_retry: bool = False) -> None:
        self.platform.install(spec)
        self.platform.start(spec.name)
        self.actual[spec.name] = spec
        self.errors.pop(spec.name, None)
        if not keep_retry:
            self._retries.pop(spec.name, None)

    def _converge_vnf(self, spec: InstanceSpec, cur: InstanceSpec | None) -> None:
        if spec.name in self.platform.instances:  # flavour changed fnf -> vnf
            self.platform.uninstall(spec.name)
        obs = self.vnf.observe(spec.name)
        if obs is not None and obs.state == "Failed":
            self._note_failure(spec.name, obs.message)
            if not self._retry_due(spec):
                return
        healthy = obs is not None and obs.state in ("Running", "Installing")
        if cur is not None and cur.fingerprint == spec.fingerprint and healthy:
            # Already converged: skip ensure, which for the pod driver is an API round trip.
            self.errors.pop(spec.name, None)
            if obs is not None and obs.address and self.plane.vnf_addresses.get(spec.name) != obs.address:
                self.plane.set_topology(spec.name, spec.slice, spec.next_hops, vnf_address=obs.address)
            return
        restarting = obs is not None and obs.state == "Failed"
        if restarting:
            self._schedule_retry(spec)
            self.vnf.remove(spec.name)
        self.vnf.ensure(spec)
        if restarting:
            self._restarted(spec.name, "VNF runner")
        obs = self.vnf.observe(spec.name)
        self.plane.set_topology(
            spec.name, spec.slice, spec.next_hops, vnf_address=obs.address if obs and obs.address else None
        )
        self.actual[spec.name] = spec
        self.errors.pop(spec.name, None)

    # -- shared instances --------------------------------------------------------------------------

    def _shares(self, spec: InstanceSpec) -> bool:
        """Whether this agent runs ``spec`` as a tenant of a shared instance: always for an fNF; for a
        VNF when the driver can host several tenants in one runner (a local process, or a pod) and the
        VNF runs the NF runner (an image-only VNF's container knows nothing of tenants)."""
        return spec.flavor == "fnf" or (
            callable(getattr(self.vnf, "ensure_shared", None)) and bool(spec.module)
        )

    def _converge_shared_groups(self, groups: dict[str, list[InstanceSpec]]) -> None:
        for name, specs in groups.items():
            try:
                if specs[0].flavor == "fnf":
                    self._converge_shared_fnf(name, specs)
                else:
                    self._converge_shared_vnf(name, specs)
            except Exception as exc:  # a bug here must not stop other groups or instances
                log.exception("shared instance %s: converge failed", name)
                for spec in specs:
                    self.errors.setdefault(spec.name, f"shared instance {name}: {exc}")
        self._converge_shared_vnf_leftovers(groups)

    def _converge_shared_fnf(self, name: str, specs: list[InstanceSpec]) -> None:
        platform = self.platform
        for spec in specs:  # tenants that ran elsewhere (alone, in another shared instance, as a VNF)
            inst = platform.instances.get(spec.name)
            if inst is not None and not (isinstance(inst, TenantNF) and inst.shared.name == name):
                platform.uninstall(spec.name)
                self.actual.pop(spec.name, None)
            if self._vnf_runs(spec.name):
                self._vnf_remove(spec.name)
                self.plane.forget(spec.name)
            tenant_of = getattr(self.vnf, "tenant_of", None)
            if (
                callable(tenant_of)
                and tenant_of(spec.name) is not None
                and spec.name not in platform.instances
            ):
                self.plane.forget(spec.name)  # was a tenant of a shared runner: no longer routed there
        shared = platform.shared.get(name)
        if shared is not None and shared.failed:
            # The NF object itself broke (blocked, over budget): rebuild it with every tenant.
            for spec in specs:
                self._note_failure(spec.name, shared.lifecycle.message)
            key = "shared:" + name
            if not self._due(key, specs[0].fingerprint):
                return
            self._schedule(key, specs[0].fingerprint)
            for tenant in list(shared.tenants):
                platform.uninstall(tenant)
                self.actual.pop(tenant, None)
            for spec in specs:
                self._retries.pop(spec.name, None)  # rebuilt now, whatever a tenant's own back-off
                self._restarted(spec.name, "shared fNF instance")  # before it shows Running again
            shared = None
        held: set[str] = set()
        if shared is not None:
            try:
                self._move_shared_fnf(name, specs)
            except Exception as exc:  # the running version keeps running; each tenant's status says why
                log.warning("shared instance %s: %s", name, exc)
                for spec in specs:
                    if spec.name in shared.tenants:
                        held.add(spec.name)
                        self.errors[spec.name] = f"new spec not applied to shared instance {name}: {exc}"
        for spec in specs:
            if spec.name in held:
                continue
            try:
                self._converge_tenant(spec)
            except Exception as exc:  # a refused or broken tenant never disturbs the others
                log.warning("instance %s: %s", spec.name, exc)
                self.errors[spec.name] = str(exc)
                self._schedule_retry(spec)

    def _move_shared_fnf(self, name: str, specs: list[InstanceSpec]) -> None:
        """A change every tenant agrees on (new code or, without per-tenant config, a new config):
        applied to the running instance in place -- a hot swap with each tenant's state, or a
        reconfiguration -- instead of refusing every tenant for not matching the old version."""
        shared = self.platform.shared[name]
        first = specs[0]
        if any(s.sharing_mismatch(first) for s in specs[1:]) or not first.sharing_mismatch(shared.spec):
            return  # the tenants disagree (the running version stays the reference), or nothing moved
        attached = [s for s in specs if s.name in shared.tenants]
        if not attached:
            return
        same_code = replace(first, config=shared.spec.config).sharing_mismatch(shared.spec) == ""
        if same_code:
            self.platform.reconfigure_shared(attached)
        else:
            if {s.name for s in attached} != set(shared.tenants):
                return  # a tenant still on the old version is leaving later: wait for it
            self.platform.update_shared(attached)
        for s in attached:
            self.platform.set_next_hops(s)
            self.actual[s.name] = s
            self.errors.pop(s.name, None)

    def _converge_tenant(self, spec: InstanceSpec) -> None:
        self._check_signing_policy(spec)
        inst = self.platform.instances.get(spec.name)
        cur = self.actual.get(spec.name)
        if not isinstance(inst, TenantNF) or cur is None:
            if not self._retry_due(spec):
                return
            if inst is not None:
                self.platform.uninstall(spec.name)
            self.actual.pop(spec.name, None)
            self.platform.attach(spec)
            self.actual[spec.name] = spec
            self.errors.pop(spec.name, None)
            self._retries.pop(spec.name, None)
            return
        if inst.lifecycle.state is State.FAILED:  # this tenant only (its messages or timers broke it)
            self._note_failure(spec.name, inst.lifecycle.message)
            if self._retry_due(spec):
                self._schedule_retry(spec)
                self.platform.uninstall(spec.name)
                self.actual.pop(spec.name, None)
                self._restarted(spec.name, "tenant of a shared fNF")  # before it shows Running again
                self.platform.attach(spec)
                self.actual[spec.name] = spec
            return
        if cur.fingerprint == spec.fingerprint:
            self.errors.pop(spec.name, None)
            return
        if cur.slice != spec.slice:
            self.platform.uninstall(spec.name)
            self.actual.pop(spec.name, None)
            self.platform.attach(spec)
            self.actual[spec.name] = spec
            self.errors.pop(spec.name, None)
            return
        why = spec.sharing_mismatch(inst.shared.spec)
        if why:  # keeps running what it ran; the status says why the new spec is not applied
            raise ValueError(
                f"instance {spec.name}: new spec not applied, it no longer fits shared instance "
                f"{inst.shared.name}: {why}; the tenant keeps running its previous spec"
            )
        if dict(cur.config) != dict(spec.config):
            self.platform.configure(spec.name, dict(spec.config))
        self.platform.set_next_hops(spec)
        self.actual[spec.name] = spec
        self.errors.pop(spec.name, None)
        self._retries.pop(spec.name, None)

    def _converge_shared_vnf(self, name: str, specs: list[InstanceSpec]) -> None:
        """One runner process for every tenant of ``name`` (local-process driver): tenants join and
        leave it through its tenants file, without a restart; a tenant that does not match the running
        instance is refused with a status message and never reaches the runner."""
        drv: Any = self.vnf
        for spec in specs:  # tenants that ran elsewhere (an fNF, a runner of their own, another instance)
            if spec.name in self.platform.instances:
                self.platform.uninstall(spec.name)
                self.actual.pop(spec.name, None)
            if self._vnf_runs(spec.name):
                self._vnf_remove(spec.name)
                self.plane.forget(spec.name)
            if drv.tenant_of(spec.name) not in (None, name):
                self.plane.forget(spec.name)  # its old runner drops it when its own group converges
        ref = self._shared_vnf_ref.get(name)
        first = specs[0]
        if ref is None or (
            not any(s.sharing_mismatch(first) for s in specs[1:]) and first.sharing_mismatch(ref)
        ):
            ref = first  # new, or a change every tenant agrees on (the runner is replaced with state)
        accepted: list[InstanceSpec] = []
        for spec in specs:
            why = spec.sharing_mismatch(ref)
            try:
                if why:
                    raise ValueError(
                        f"instance {spec.name}: cannot join shared instance {name}: {why}; "
                        "the running tenants are not disturbed"
                    )
                self._check_signing_policy(spec)
            except Exception as exc:
                self.errors[spec.name] = str(exc)
                self.actual.pop(spec.name, None)
                self.plane.forget(spec.name)
                continue
            accepted.append(spec)
        if not accepted:
            if name in drv.shared_names():
                drv.remove_shared(name)
            self._shared_vnf_ref.pop(name, None)
            return
        runner = drv.observe_shared(name)
        restarting = runner is not None and runner.state == "Failed"
        if restarting:
            for spec in accepted:
                self._note_failure(spec.name, runner.message)
            key = "shared:" + name
            if not self._due(key, ref.fingerprint):
                return
            self._schedule(key, ref.fingerprint)
            drv.remove_shared(name)
            for spec in accepted:  # counted now: the new runner may report Running before ensure returns
                self._restarted(spec.name, "shared VNF runner")
        drv.ensure_shared(name, accepted)
        self._shared_vnf_ref[name] = ref
        for spec in accepted:
            obs = self.vnf.observe(spec.name)
            # Traffic goes to the runner only once it serves this tenant (else it would bounce back).
            address = obs.address if obs is not None and obs.state == "Running" and obs.address else None
            self.plane.set_topology(spec.name, spec.slice, spec.next_hops, vnf_address=address)
            self.actual[spec.name] = spec
            self.errors.pop(spec.name, None)

    def _converge_shared_vnf_leftovers(self, groups: dict[str, list[InstanceSpec]]) -> None:
        """Stop shared runners none of whose tenants is desired any more."""
        names = getattr(self.vnf, "shared_names", None)
        if not callable(names):
            return
        for name in names():
            specs = groups.get(name)
            if not specs or specs[0].flavor != "vnf":
                self.vnf.remove_shared(name)  # type: ignore[attr-defined]
                self._shared_vnf_ref.pop(name, None)

    def sample_overload(self) -> None:
        """Record each shared instance's queue drops (once a second, from the resync loop)."""
        for shared in list(self.platform.shared.values()):
            w = self.plane.workers.get(shared.worker_key)
            if w is not None:
                shared.overload.sample(w.queue.dropped)

    def shared_instances(self) -> dict[str, dict[str, Any]]:
        """Per shared instance on this node: tenants, state, and its queue drops (the overload signal)."""
        out: dict[str, dict[str, Any]] = {}
        for name, shared in sorted(self.platform.shared.items()):
            w = self.plane.workers.get(shared.worker_key)
            doc = shared.statistics(len(w.queue) if w else 0, w.queue.dropped if w else 0)
            doc["builds"] = self.platform.shared_builds.get(name, 0)
            out[name] = doc
        status_of = getattr(self.vnf, "shared_status", None)
        for name in getattr(self.vnf, "shared_names", list)():
            if callable(status_of):
                out[name] = status_of(name)
        return out

    # -- offline autonomy --------------------------------------------------------------------------

    def sync_once(self, source: Callable[[], Sequence[InstanceSpec]]) -> bool:
        """One pull from the control plane; False (and nothing changed) when it is unreachable."""
        try:
            desired = source()
        except SourceUnavailable as exc:
            if self.connected is not False:
                log.warning("control plane unreachable, running the cached desired state: %s", exc)
            self.connected = False
            return False
        self.connected = True
        self.last_sync = time.time()
        statuses = self.converge(desired)
        report = getattr(source, "report", None)
        if callable(report):
            self._report(report, desired, statuses)
        return True

    def _report(
        self,
        report: Callable[[InstanceSpec, InstanceStatus], None],
        desired: Sequence[InstanceSpec],
        statuses: dict[str, InstanceStatus],
    ) -> None:
        """Send each instance's status back, only when it changed (counters aside) since last sent."""
        for spec in desired:
            st = statuses.get(spec.name)
            if st is None:
                continue
            # sharedOverloaded: the scale-out signal is reported when it changes, not only with the state.
            key = (
                spec.generation, st.state, st.message, st.address, st.fingerprint, st.restarts,
                st.counters.get("sharedOverloaded"),
            )  # fmt: skip
            if self._reported.get(spec.name) == key:
                continue
            try:
                report(spec, st)
                self._reported[spec.name] = key
            except Exception as exc:  # the next sync retries; the data plane is unaffected
                log.warning("status report for %s failed: %s", spec.name, exc)
        for name in [n for n in self._reported if n not in statuses]:
            del self._reported[name]

    def run(self, source: Callable[[], Sequence[InstanceSpec]], interval_s: float = 1.0,
            stop: threading.Event | None = None) -> None:  # fmt: skip
        stop = stop or self._stop
        while not stop.is_set():
            self.sync_once(source)
            stop.wait(interval_s)

    def _monitor_loop(self) -> None:
        while not self._stop.wait(self.config.resync_s):
            try:
                with self._lock:
                    self.sample_overload()
                    if self.desired:
                        self.converge(list(self.desired.values()), _save=False)
            except Exception:
                log.exception("periodic resync failed")

    # -- status and telemetry ----------------------------------------------------------------------

    def _status_of(self, name: str) -> InstanceStatus:
        spec = self.desired.get(name) or self.actual.get(name)
        flavor = spec.flavor if spec else ""
        base = InstanceStatus(
            name=name, state=str(State.PENDING), flavor=flavor,
            fingerprint=self.actual[name].fingerprint if name in self.actual else "",
            generation=self.actual[name].generation if name in self.actual else 0,
            restarts=self.restarts.get(name, 0),
        )  # fmt: skip
        inst = self.platform.instances.get(name)
        if inst is not None and inst.lifecycle.state is State.UNINSTALLED:
            # Read just before a hot swap retired it: the swap publishes the new version first,
            # so a second read finds that one (status never shows a live instance Uninstalled).
            inst = self.platform.instances.get(name)
        if inst is not None:
            c = inst.counters
            base.state = str(inst.lifecycle.state)
            if inst.pending_update and inst.running:
                base.state = str(State.UPDATING)
            base.message = inst.lifecycle.message
            base.counters = c.as_dict()
            base.latency_ms = c.latency_ms
            base.e2e_latency_ms = c.e2e_latency_ms
            base.started_at = inst.lifecycle.started_at
            base.address = self.address
        else:
            obs = self.vnf.observe(name)
            if obs is not None:
                base.state, base.message, base.address = obs.state, obs.message, obs.address
                base.counters, base.latency_ms = obs.counters, obs.latency_ms
                base.e2e_latency_ms, base.started_at = obs.e2e_latency_ms, obs.started_at
                base.restarts += obs.restarts
                if obs.address and self.plane.vnf_addresses.get(name) != obs.address and spec is not None:
                    self.plane.set_topology(name, spec.slice, spec.next_hops, vnf_address=obs.address)
            elif name in self.platform.failures or name in self.errors:
                base.state = str(State.FAILED)
        self._add_plane_counters(name, base, inst)
        error = self.errors.get(name) or self.notes.get(name)
        if error and (base.state in (str(State.PENDING), str(State.FAILED)) or not base.message):
            if base.state == str(State.PENDING):
                base.state = str(State.FAILED)
            base.message = error
        return base

    def _add_plane_counters(self, name: str, base: InstanceStatus, inst: Any) -> None:
        """What the data plane counted for this instance outside it: messages a full queue dropped
        before they reached it, and messages refused for naming it from another slice; for a tenant,
        its shared instance's name and queue drops (the overload signal of the whole instance)."""
        plane = self.plane
        queue_dropped = plane.queue_dropped_for.get(name, 0)
        rejected = plane.rejected_for.get(name, 0)
        if queue_dropped or rejected:
            c = base.counters = dict(base.counters)
            c["dropped"] = c.get("dropped", 0) + queue_dropped
            if queue_dropped:
                c["queueDropped"] = queue_dropped
            if rejected:
                c["rejected"] = c.get("rejected", 0) + rejected
        if isinstance(inst, TenantNF):
            shared = inst.shared
            base.shared_instance = shared.name
            w = plane.workers.get(shared.worker_key)
            base.counters = {
                **base.counters,
                "sharedQueueDropped": w.queue.dropped if w is not None else 0,
                "sharedOverloaded": int(shared.overload.sustained()),
            }
        else:
            spec = self.desired.get(name)
            status_of = getattr(self.vnf, "shared_status", None)
            if spec is not None and spec.shared is not None and spec.flavor == "vnf" and callable(status_of):
                base.shared_instance = spec.shared.name
                if self.vnf.tenant_of(name) == spec.shared.name:  # type: ignore[attr-defined]
                    doc = status_of(spec.shared.name)
                    base.counters = {
                        **base.counters,
                        "sharedQueueDropped": int(doc.get("queueDropped", 0)),
                        "sharedOverloaded": int(bool(doc.get("overloaded"))),
                    }
            elif spec is not None and spec.shared is not None and self._shares(spec):
                base.shared_instance = spec.shared.name  # a tenant not (yet) running in it

    def status(self) -> dict[str, InstanceStatus]:
        """Per desired instance; lock-free (reads a snapshot), so a long converge never stalls a reader."""
        return {name: self._status_of(name) for name in list(self.desired)}

    def heartbeat(self) -> dict[str, Any]:
        return heartbeat(
            self.node,
            {
                "instances": len(self.desired),
                "fnfs": len(self.platform.instances),
                "sharedInstances": len(self.platform.shared) + len(getattr(self.vnf, "shared_names", list)()),
                "vnfs": len(self.vnf.names()),
                "connected": self.connected,
                "cacheError": self.cache_error,
                "lastSync": self.last_sync,
                "address": self.address,
            },
        )

    def status_document(self) -> dict[str, Any]:
        doc = {
            "heartbeat": self.heartbeat(),
            "instances": {n: s.to_dict() for n, s in self.status().items()},
        }
        if self.tls_renewer is not None:  # serial, notAfter, renewals, failures, last error
            doc["dataPlaneCertificate"] = self.tls_renewer.status()
        doc["dataPlane"] = self.dataplane_security()
        doc["sharedInstances"] = self.shared_instances()
        return doc

    def dataplane_security(self) -> dict[str, Any]:
        """Whether this agent's data plane authenticates its peers: mutual TLS, or plain TCP (an
        agent started with ``--insecure-plaintext``, or built without ``AgentConfig.tls``)."""
        if self.config.tls is not None:
            return {"authenticated": True, "transport": "mutual-tls"}
        return {
            "authenticated": False,
            "transport": "plaintext",
            "warning": "the data plane is plain TCP and unauthenticated: any process that can connect "
            "can inject into any slice",
        }

    def warnings(self) -> list[str]:
        """What keeps this agent from doing its whole job although its NFs run: today, an MQTT
        broker it cannot reach (the devices' readings never arrive, so Ready alone would mislead)."""
        if self.mqtt is None:
            return []
        ok, why = self.mqtt.health()
        return [] if ok else [why]

    def healthy(self) -> tuple[bool, str]:
        dead = [s for s, w in self.plane.workers.items() if not w.thread.is_alive() and not w.stopping]
        if dead:
            return False, f"slice workers not running: {', '.join(sorted(dead))}"
        return True, "ok"

    def _metric_rows(self) -> list[tuple[str, InstanceStatus]]:
        return [(spec.slice, self._status_of(name)) for name, spec in list(self.desired.items())]

    def _agent_gauges(self) -> dict[str, float]:
        hb = heartbeat(self.node)
        # The data-plane certificate in use and its renewals (agents with TLS that renew or watch it).
        tls = self.tls_renewer.gauges() if self.tls_renewer is not None else {}
        return {
            **tls,
            # 0 on an agent serving plain TCP (--insecure-plaintext): alert on it.
            "dataplane_authenticated": 1.0 if self.config.tls is not None else 0.0,
            "rss_bytes": float(hb["agentRssBytes"]),
            "cpu_percent": float(hb["cpuPercent"]),
            "load": float(hb["load"]),
            "unroutable_messages": float(self.plane.unroutable),
            "queue_dropped_messages": float(sum(w.queue.dropped for w in self.plane.workers.values())),
            "forward_dropped_messages": float(self.plane.forward_dropped),
            # Messages addressed to an instance of another slice than their own: never delivered.
            "cross_slice_rejected_messages": float(self.plane.rejected),
            "ingress_errors": float(self.ingress.errors + (self.mqtt.errors if self.mqtt else 0)),
        }

    def on_sink(self, fn: Callable[[Any, list[Message]], None]) -> None:
        """Observe messages at the end of their path on this node (tests, examples)."""
        self.plane.sinks.append(fn)

    # -- shutdown ----------------------------------------------------------------------------------

    def stop(self, *, stop_vnfs: bool = True) -> None:
        """Stop the agent; ``stop_vnfs=False`` leaves VNF processes running (an agent upgrade)."""
        self._stop.set()
        if self.tls_renewer is not None:
            self.tls_renewer.close()
        if self._monitor.is_alive():
            self._monitor.join(5)
        with self._lock:
            if self.mqtt:
                self.mqtt.close()
            if self.http:
                self.http.close()
            self.ingress.close()
            for name in list(self.platform.instances):
                self.platform.uninstall(name)
            if stop_vnfs:
                for name in self.vnf.names():
                    self.vnf.remove(name)
                for name in getattr(self.vnf, "shared_names", list)():
                    self.vnf.remove_shared(name)  # type: ignore[attr-defined]
            self.vnf.close()
            self.plane.stop()
