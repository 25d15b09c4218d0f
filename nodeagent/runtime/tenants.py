"""A shared VNF runner's tenants: one runner process serving several slices' NFInstances.

The agent's local-process driver writes the tenants' specs to ``tenants.json`` (with a generation
number); the runner polls the file and makes its tenants equal to it -- attaching a new tenant to the
running NF, detaching a leaving one, reconfiguring or re-routing a changed one -- without restarting
and without touching the other tenants. ``status.json`` then reports each tenant and the generation
it applied, which is how the driver knows the change is in effect.

A shared VNF *pod* (cluster mode) has no file the agent can write: :class:`TenantControl` takes the
same tenant sets as control requests on the runner's data-plane port (``transport.control_request``),
together with a slice certificate covering every tenant's slice, and answers each tenant's status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flyslice.nodeagent.dataplane.tenancy import TenantNF
from flyslice.nodeagent.runtime.platform import ModularPlatform
from flyslice.nodeagent.spec import InstanceSpec, SpecError

if TYPE_CHECKING:
    from flyslice.nodeagent.dataplane.tls import PeerIdentity

log = logging.getLogger("flyslice.nodeagent.runner")

#: The environment variable holding a shared VNF pod's control token (the agent sets it in the pod spec).
CONTROL_TOKEN_ENV = "FLYSLICE_CONTROL_TOKEN"


def tenants_digest(specs: list[InstanceSpec]) -> str:
    """What a tenant set is, independent of who counted generations: the agent compares the digest a
    runner reports with the one it wants, so an agent restart does not re-send an unchanged set."""
    canon = json.dumps([s.to_dict() for s in specs], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:32]


def write_tenants(path: Path, generation: int, specs: list[InstanceSpec]) -> None:
    """The driver's side: the runner's tenants, atomically replaced."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"generation": generation, "tenants": [s.to_dict() for s in specs]}))
    tmp.replace(path)


class TenantSync:
    """Keeps a runner's tenants equal to its tenants file."""

    def __init__(
        self, platform: ModularPlatform, path: Path | None, states: dict[str, Any] | None = None
    ) -> None:
        self.platform = platform
        self.path = path
        self.generation = -1
        self._stamp: tuple[int, int] | None = None
        #: Why a tenant of the file is not running (refused config, a start that raised...).
        self.errors: dict[str, str] = {}
        #: States carried over from a replaced runner, imported when their tenant attaches.
        self._states = dict(states or {})

    def changed(self) -> bool:
        """Whether the file changed since it was last applied (cheap: a stat)."""
        if self.path is None:
            return False
        try:
            st = self.path.stat()
        except OSError:
            return False
        return (st.st_mtime_ns, st.st_size) != self._stamp

    def read(self) -> tuple[int, list[InstanceSpec]] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
            raw = json.loads(self.path.read_text())
            self._stamp = (st.st_mtime_ns, st.st_size)
            generation = int(raw["generation"])
            specs = [InstanceSpec.from_dict(d, where=str(self.path)) for d in raw["tenants"]]
        except (OSError, ValueError, KeyError, TypeError, SpecError) as exc:
            log.error("tenants file %s unreadable: %s", self.path, exc)
            return None
        return generation, specs

    def apply(self, generation: int, specs: list[InstanceSpec]) -> None:
        platform = self.platform
        wanted = {s.name: s for s in specs}
        for name in [n for n in platform.instances if n not in wanted]:
            platform.uninstall(name)
            self.errors.pop(name, None)
        for spec in specs:
            try:
                inst = platform.instances.get(spec.name)
                if isinstance(inst, TenantNF) and inst.lifecycle.state == "Failed":
                    platform.uninstall(spec.name)  # re-attached fresh, as the agent restarts an fNF tenant
                    inst = None
                if inst is None:
                    platform.attach(spec, state=self._states.pop(spec.name, None))
                elif inst.spec.fingerprint != spec.fingerprint:
                    if inst.spec.slice != spec.slice:
                        platform.uninstall(spec.name)
                        platform.attach(spec)
                    else:
                        if dict(inst.spec.config) != dict(spec.config):
                            platform.configure(spec.name, dict(spec.config))
                        platform.set_next_hops(spec)
                self.errors.pop(spec.name, None)
            except Exception as exc:  # one refused tenant never blocks the others
                log.warning("tenant %s: %s", spec.name, exc)
                self.errors[spec.name] = str(exc)
        self.generation = generation

    def poll(self) -> bool:
        """Apply the file when it changed; True when a new generation was applied."""
        if not self.changed():
            return False
        got = self.read()
        if got is None:
            return False
        self.apply(*got)
        return True

    def status(self) -> dict[str, Any]:
        """Per tenant: state, message, counters and latencies (the runner's ``status.json``)."""
        plane = self.platform.plane
        out: dict[str, Any] = {}
        for name, inst in list(self.platform.instances.items()):
            c = inst.counters
            counters = c.as_dict()
            counters["dropped"] += plane.queue_dropped_for.get(name, 0)
            rejected = plane.rejected_for.get(name, 0)
            if rejected:
                counters["rejected"] = counters.get("rejected", 0) + rejected
            out[name] = {
                "state": str(inst.lifecycle.state),
                "message": inst.lifecycle.message,
                "counters": counters,
                "latencyMs": c.latency_ms,
                "e2eLatencyMs": c.e2e_latency_ms,
            }
        for name, why in self.errors.items():
            out.setdefault(name, {"state": "Failed", "message": why, "counters": {}})
        return out

    def export_states(self) -> dict[str, Any]:
        """Each running tenant's exported state (a replaced runner hands them to the next one)."""
        states: dict[str, Any] = {}
        for name, inst in list(self.platform.instances.items()):
            if not inst.running:
                continue

            def export(inst: Any = inst) -> Any:
                inst.enter()
                return inst.nf.export_state()

            try:
                states[name] = self.platform.plane.worker(inst.worker_key).call(export)
            except Exception as exc:  # that tenant starts fresh in the next runner
                log.error("tenant %s: could not save its state: %s", name, exc)
        return states


def shared_statistics(platform: ModularPlatform) -> dict[str, Any]:
    """Per shared instance of a runner: tenants, state and its queue drops (the overload signal)."""
    plane = platform.plane
    out: dict[str, Any] = {}
    for name, sh in list(platform.shared.items()):
        w = plane.workers.get(sh.worker_key)
        out[name] = sh.statistics(len(w.queue) if w else 0, w.queue.dropped if w else 0)
    return out


class TenantControl:
    """A shared VNF pod's tenants, set by its node's agent through control requests.

    ``{"op": "tenants", "token", "generation", "digest", "tenants": [spec...], "tls"?: {cert, key, ca}}``
    installs the credentials (first, so that a joining tenant's first output already goes out under a
    certificate allowing its slice), then makes the tenants equal to the list, as :class:`TenantSync`
    does for the file: attach, detach, reconfigure, nothing restarted. ``{"op": "status", "token"}``
    answers the same status without changing anything.

    Who may ask: a request must carry the pod's token (``FLYSLICE_CONTROL_TOKEN``, known to the agent
    that created the pod) and, on mutual TLS, come from this node's agent (``flyslice://agent/<node>``):
    a component of a slice -- another NF -- never sets tenants or reads their status.
    """

    def __init__(
        self,
        sync: TenantSync,
        *,
        token: str,
        agent: str | None,
        install_credentials: Callable[[bytes, bytes, bytes], None] | None = None,
    ) -> None:
        if not token:
            raise ValueError(f"a shared runner taking tenants from its agent needs {CONTROL_TOKEN_ENV}")
        self.sync = sync
        self.token = token
        #: The peer identity requests must come from on TLS (``agent/<node>``); None: plain TCP.
        self.agent = agent
        self.install_credentials = install_credentials
        self.digest = ""
        self.refused = 0
        self.lock = threading.Lock()

    def refusal(self, request: dict[str, Any], peer: PeerIdentity | None) -> str:
        if not hmac.compare_digest(str(request.get("token", "")).encode(), self.token.encode()):
            return "wrong or missing control token"
        if self.agent is not None and (peer is None or peer.name != self.agent):
            who = peer.name if peer is not None else "a peer without a certificate"
            return f"{who} is not {self.agent}, the only peer that may set this runner's tenants"
        return ""

    def __call__(self, request: dict[str, Any], peer: PeerIdentity | None) -> dict[str, Any]:
        why = self.refusal(request, peer)
        if why:
            self.refused += 1
            log.warning("control request refused: %s", why)
            return {"error": why}
        op = request.get("op")
        if op == "status":
            return self.status()
        if op != "tenants":
            return {"error": f"unknown control op {op!r} (tenants, status)"}
        try:
            generation = int(request["generation"])
            raw = request["tenants"]
            if not isinstance(raw, list):
                raise TypeError("'tenants' must be a list")
            specs = [InstanceSpec.from_dict(d, where="control request") for d in raw]
            tls = request.get("tls")
            creds = None
            if tls is not None:
                creds = (str(tls["ca"]).encode(), str(tls["cert"]).encode(), str(tls["key"]).encode())
        except (KeyError, TypeError, ValueError, SpecError) as exc:
            return {"error": f"bad tenants request: {exc}"}
        with self.lock:
            if creds is not None:
                if self.install_credentials is None:
                    return {"error": "this runner serves plain TCP: it takes no credentials"}
                try:
                    self.install_credentials(*creds)
                except (OSError, ValueError) as exc:  # the tenants stay as they were
                    return {"error": f"credentials not installed: {exc}"}
            self.sync.apply(generation, specs)
            self.digest = str(request.get("digest") or tenants_digest(specs))
        return self.status()

    def status(self) -> dict[str, Any]:
        """The applied generation and digest, each tenant's state and counters, the instance's queue."""
        with self.lock:
            return {
                "generation": self.sync.generation,
                "digest": self.digest,
                "tenants": self.sync.status(),
                "shared": shared_statistics(self.sync.platform),
                "builds": dict(self.sync.platform.shared_builds),
            }
