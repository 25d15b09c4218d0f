"""A shared VNF runner's tenants: one runner process serving several slices' NFInstances.

The agent's local-process driver writes the tenants' specs to ``tenants.json`` (with a generation
number); the runner polls the file and makes its tenants equal to it -- attaching a new tenant to the
running NF, detaching a leaving one, reconfiguring or re-routing a changed one -- without restarting
and without touching the other tenants. ``status.json`` then reports each tenant and the generation
it applied, which is how the driver knows the change is in effect.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from flyslice.nodeagent.dataplane.tenancy import TenantNF
from flyslice.nodeagent.runtime.platform import ModularPlatform
from flyslice.nodeagent.spec import InstanceSpec, SpecError

log = logging.getLogger("flyslice.nodeagent.runner")


def write_tenants(path: Path, generation: int, specs: list[InstanceSpec]) -> None:
    """The driver's side: the runner's tenants, atomically replaced."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"generation": generation, "tenants": [s.to_dict() for s in specs]}))
    tmp.replace(path)


class TenantSync:
    """Keeps a runner's tenants equal to its tenants file."""

    def __init__(self, platform: ModularPlatform, path: Path, states: dict[str, Any] | None = None) -> None:
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
        try:
            st = self.path.stat()
        except OSError:
            return False
        return (st.st_mtime_ns, st.st_size) != self._stamp

    def read(self) -> tuple[int, list[InstanceSpec]] | None:
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
