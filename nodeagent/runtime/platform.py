"""The Modular Platform (seed 000, P3) and its Mi interface: install, start, stop, update,
configure and uninstall fNFs, each move checked by the lifecycle state machine.

Loading and configuring a new module happens on the caller's thread, before the NF is visible to
the data plane; every call into a live NF is run on its slice's worker thread (see dataplane).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from flyslice.nodeagent.dataplane.chains import DataPlane, SliceWorker
from flyslice.nodeagent.dataplane.hosted import HostedNF, describe_fault
from flyslice.nodeagent.dataplane.lifecycle import State
from flyslice.nodeagent.dataplane.tenancy import SharedNF, TenantNF
from flyslice.nodeagent.runtime.modules import ModuleLoader
from flyslice.nodeagent.sdk import Timer, validate_config
from flyslice.nodeagent.spec import InstanceSpec

log = logging.getLogger("flyslice.nodeagent.platform")


class PlatformError(RuntimeError):
    pass


# Kubernetes object names; anything else (a '/' or '..' from a hand-written desired file) must not
# pick a directory outside the data root.
_PATH_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


def instance_data_dir(root: Path | None, spec: InstanceSpec) -> Path | None:
    """The instance's persistent directory under ``root``; keyed by namespace and name, not by
    flavour or process, so an NF finds its files again after a restart or a flavour switch."""
    if root is None or not (_PATH_SAFE.match(spec.namespace) and _PATH_SAFE.match(spec.name)):
        return None
    return Path(root) / spec.namespace / spec.name


class ModularPlatform:
    def __init__(
        self,
        plane: DataPlane,
        loader: ModuleLoader,
        *,
        error_limit: int = 5,
        deadline_s: float = 1.0,
        data_root: Path | None = None,
    ) -> None:
        self.plane = plane
        self.loader = loader
        self.error_limit = error_limit
        self.deadline_s = deadline_s
        #: Where instances keep their files: ``<data_root>/<namespace>/<name>/`` (None: nowhere).
        self.data_root = data_root
        self.instances: dict[str, HostedNF] = {}
        #: Why the last install of a name failed before an NF object existed (integrity, config...).
        self.failures: dict[str, str] = {}
        #: Shared instances by ``sharedInstance.name``; their tenants are in ``instances`` too.
        self.shared: dict[str, SharedNF] = {}
        #: How often an NF object was built for each shared instance name (1 while it never restarted).
        self.shared_builds: dict[str, int] = {}

    # -- building -----------------------------------------------------------------------------------

    def _build(self, spec: InstanceSpec) -> HostedNF:
        """Verify, load, instantiate and configure; nothing of it is visible to traffic yet."""
        cls = self.loader.nf_class(spec.module, spec.digest, spec.entrypoint, spec.signature)
        config = validate_config(cls, dict(spec.config), where=f"instance {spec.name}: config")
        inst = HostedNF(
            spec,
            cls,
            error_limit=self.error_limit,
            deadline_s=self.deadline_s,
            memory_budget=spec.memory_bytes,
            data_dir=instance_data_dir(self.data_root, spec),
        )
        inst.lifecycle.to(State.INSTALLING)
        inst.nf.configure(config)
        return inst

    def _release_unused_code(self) -> None:
        """Drop the loader's modules that no installed instance runs (uninstall, update, failure)."""
        keep = {inst.spec.digest for inst in list(self.instances.values())}
        keep |= {sh.spec.digest for sh in list(self.shared.values())}
        self.loader.prune(keep)

    def _worker(self, inst: HostedNF) -> SliceWorker:
        return self.plane.worker(inst.worker_key)

    def _bind_timers(self, worker: SliceWorker, inst: HostedNF) -> None:
        def added(timer: Timer) -> None:
            if inst.running:
                worker.schedule(inst, timer)

        inst.ctx.on_timer_added = added

    # -- the Mi interface ---------------------------------------------------------------------------

    def install(self, spec: InstanceSpec) -> HostedNF:
        """Load (integrity-checked) and configure; the instance ends Stopped. Raises on failure."""
        if spec.name in self.instances:
            raise PlatformError(f"instance {spec.name} is already installed")
        try:
            inst = self._build(spec)
        except Exception as exc:
            self.failures[spec.name] = describe_fault(exc) if not isinstance(exc, ValueError) else str(exc)
            self._release_unused_code()  # e.g. a module that loaded but whose config was refused
            raise
        self.failures.pop(spec.name, None)
        worker = self._worker(inst)
        self._bind_timers(worker, inst)

        def register() -> None:
            inst.lifecycle.to(State.STOPPED)
            worker.instances[inst.name] = inst

        worker.call(register)
        self.instances[spec.name] = inst
        self.plane.where[spec.name] = worker
        self.plane.set_topology(spec.name, spec.slice, spec.next_hops)
        return inst

    def start(self, name: str, state: Any = None) -> None:
        """Start; ``state`` (if not None) is imported first, as on an update (a replaced VNF's state)."""
        inst = self._get(name)
        worker = self._worker(inst)

        def start() -> None:
            try:
                inst.enter()
                if state is not None:
                    inst.nf.import_state(state)
                inst.nf.start()
            except Exception as exc:
                inst.fail(f"start raised: {describe_fault(exc)}")
                return
            inst.lifecycle.to(State.RUNNING)
            for timer in inst.ctx.timers:
                worker.schedule(inst, timer)

        worker.call(start)

    def stop(self, name: str) -> None:
        inst = self._get(name)

        def stop() -> None:
            if inst.lifecycle.state is not State.RUNNING:
                return
            inst.lifecycle.to(State.STOPPED)
            try:
                inst.enter()
                inst.nf.stop()
            except Exception as exc:
                inst.lifecycle.to(State.FAILED, f"stop raised: {describe_fault(exc)}")

        self._worker(inst).call(stop)

    def configure(self, name: str, config: dict[str, Any]) -> None:
        """Reconfigure a live NF in place (its state is kept)."""
        inst = self._get(name)
        checked = validate_config(type(inst.nf), config, where=f"instance {name}: config")

        def configure() -> None:
            try:
                inst.enter()
                inst.nf.configure(checked)
            except Exception as exc:
                inst.fail_own(f"configure raised: {describe_fault(exc)}")

        self._worker(inst).call(configure)

    def set_next_hops(self, spec: InstanceSpec) -> None:
        inst = self._get(spec.name)
        inst.next_hops = spec.next_hops  # one attribute store: the worker sees old or new, never half
        inst.spec = spec
        self.plane.set_topology(spec.name, spec.slice, spec.next_hops)

    def update(self, spec: InstanceSpec) -> HostedNF:
        """Hot swap to a new version: the new NF takes over the old one's state between two batches,
        so no queued or in-flight message is lost. On any failure the old version keeps running."""
        old = self._get(spec.name)
        if isinstance(old, TenantNF):
            raise PlatformError(f"instance {spec.name}: a tenant is updated with its shared instance")
        if spec.slice != old.slice:
            raise PlatformError(f"instance {spec.name}: cannot move between slices in an update")
        # The old version keeps processing while the new one loads and configures (which may be slow);
        # status shows Updating meanwhile.
        old.pending_update = spec.digest or spec.module
        try:
            new = self._build(spec)  # raises before touching the running version
        except Exception:
            self._release_unused_code()
            raise
        finally:
            old.pending_update = ""
        worker = self._worker(old)
        self._bind_timers(worker, new)

        def swap() -> str:
            was_running = old.running
            if was_running:
                old.lifecycle.to(State.UPDATING)
            try:
                new.nf.import_state(old.nf.export_state())
                if was_running:
                    new.nf.start()
            except Exception as exc:
                if was_running:
                    old.lifecycle.to(State.RUNNING, f"update to {spec.digest[:19]} failed; kept old version")
                return f"update failed: {describe_fault(exc)}"
            new.lifecycle.to(State.STOPPED)
            new.counters = old.counters  # counters are the instance's, not the version's
            worker.instances[spec.name] = new
            self.instances[spec.name] = new  # before the old one is retired: readers never see a gap
            if was_running:
                new.lifecycle.to(State.RUNNING)
                for timer in new.ctx.timers:
                    worker.schedule(new, timer)
            old.ctx.timers.clear()
            try:
                old.nf.stop()
            except Exception as exc:  # the old version is gone either way
                log.warning("old version of %s raised in stop: %s", spec.name, exc)
            if old.lifecycle.state is State.UPDATING:
                old.lifecycle.to(State.UNINSTALLED)
            return ""

        error = worker.call(swap)
        if error:
            self._release_unused_code()  # the new version's module, unless another instance runs it
            raise PlatformError(f"instance {spec.name}: {error}")
        self.instances[spec.name] = new
        self._release_unused_code()  # the old version's module, unless another instance runs it
        self.plane.set_topology(spec.name, spec.slice, spec.next_hops)
        return new

    def restart(self, spec: InstanceSpec) -> HostedNF:
        """Replace a failed instance with a fresh one (state is not carried over)."""
        self.uninstall(spec.name)
        inst = self.install(spec)
        self.start(spec.name)
        return inst

    def uninstall(self, name: str) -> None:
        if isinstance(self.instances.get(name), TenantNF):
            self.detach(name)
            return
        inst = self.instances.pop(name, None)
        self.failures.pop(name, None)
        if inst is None:
            return
        worker = self._worker(inst)

        def remove() -> None:
            if inst.lifecycle.state is State.RUNNING:
                try:
                    inst.nf.stop()
                except Exception as exc:
                    log.warning("instance %s raised in stop: %s", name, exc)
            inst.ctx.timers.clear()
            if inst.lifecycle.state is not State.UNINSTALLED:
                inst.lifecycle.to(State.UNINSTALLED)
            if worker.instances.get(name) is inst:
                del worker.instances[name]

        worker.call(remove)
        self.plane.forget(name)
        self.plane.retire_if_empty(inst.slice)
        self._release_unused_code()

    # -- shared instances -----------------------------------------------------------------------

    def attach(self, spec: InstanceSpec, state: Any = None) -> TenantNF:
        """Make ``spec`` (a tenant: ``spec.shared`` set) run in its shared instance: built and started
        with its first tenant; a later tenant joins the running NF between two of its batches, so the
        other tenants lose nothing and nothing restarts. Raises (touching nothing that runs) when the
        tenant does not match the running instance or its config is refused."""
        if spec.shared is None:
            raise PlatformError(f"instance {spec.name}: not a tenant of a shared instance")
        if spec.name in self.instances:
            raise PlatformError(f"instance {spec.name} is already installed")
        name = spec.shared.name
        shared = self.shared.get(name)
        if shared is not None and shared.failed:
            raise PlatformError(
                f"instance {spec.name}: shared instance {name} has failed: {shared.lifecycle.message}"
            )
        if shared is not None:
            why = spec.sharing_mismatch(shared.spec)
            if why:
                raise PlatformError(
                    f"instance {spec.name}: cannot join shared instance {name} ({len(shared.tenants)} "
                    f"tenant(s)): {why}; the running tenants are not disturbed"
                )
        try:
            new_shared = shared is None
            if shared is None:
                shared = self._build_shared(spec)
            cls = shared.nf_class
            config = validate_config(cls, dict(spec.config), where=f"instance {spec.name}: config")
        except Exception as exc:
            self.failures[spec.name] = describe_fault(exc) if not isinstance(exc, ValueError) else str(exc)
            self._release_unused_code()
            raise
        self.failures.pop(spec.name, None)
        tenant = shared.new_tenant(
            spec, error_limit=self.error_limit, data_dir=instance_data_dir(self.data_root, spec)
        )
        worker = self.plane.worker(shared.worker_key)
        shared.worker = worker
        self._bind_timers(worker, tenant)
        if new_shared:
            self.shared[name] = shared
            self.shared_builds[name] = self.shared_builds.get(name, 0) + 1

        def join() -> str:
            tenant.lifecycle.to(State.INSTALLING)
            try:
                tenant.init_state()  # the NF's __init__, for this tenant's own attributes
                tenant.nf.configure(config)
                if state is not None:  # a replaced runner's state for this tenant
                    tenant.nf.import_state(state)
                tenant.nf.start()
            except Exception as exc:
                tenant.lifecycle.to(State.FAILED, f"start raised: {describe_fault(exc)}")
                with contextlib.suppress(Exception):
                    tenant.nf.stop()
                return tenant.lifecycle.message
            shared.tenants[spec.name] = tenant
            worker.instances[spec.name] = tenant
            if shared.lifecycle.state is not State.RUNNING:
                shared.lifecycle.to(State.RUNNING)
            tenant.lifecycle.to(State.RUNNING)
            for timer in tenant.ctx.timers:
                worker.schedule(tenant, timer)
            return ""

        error = worker.call(join)
        if error:
            if not shared.tenants:
                self._drop_shared(shared)
            raise PlatformError(f"instance {spec.name}: {error}")
        self.instances[spec.name] = tenant
        self.plane.where[spec.name] = worker
        self.plane.set_topology(spec.name, spec.slice, spec.next_hops)
        return tenant

    def _build_shared(self, spec: InstanceSpec) -> SharedNF:
        cls = self.loader.nf_class(spec.module, spec.digest, spec.entrypoint, spec.signature)
        assert spec.shared is not None
        data_dir = None
        if self.data_root is not None:
            # One directory for the instance's own files (tenants keep theirs under their own names).
            key = hashlib.sha256(spec.shared.name.encode()).hexdigest()[:16]
            data_dir = instance_data_dir(self.data_root, replace(spec, name=f"shared-{key}"))
        shared = SharedNF(spec, cls, deadline_s=self.deadline_s, data_dir=data_dir)
        shared.lifecycle.to(State.INSTALLING)
        return shared

    def detach(self, name: str) -> None:
        """Take one tenant out of its shared instance (the NF's ``stop`` for that tenant); the other
        tenants keep running; the last tenant's detach stops the instance."""
        tenant = self.instances.get(name)
        if not isinstance(tenant, TenantNF):
            raise PlatformError(f"instance {name} is not a tenant of a shared instance")
        del self.instances[name]
        self.failures.pop(name, None)
        shared = tenant.shared
        worker = self.plane.worker(shared.worker_key)

        def leave() -> None:
            if tenant.lifecycle.state is State.RUNNING and not shared.failed:
                try:
                    tenant.enter()
                    tenant.nf.stop()
                except Exception as exc:
                    log.warning("instance %s raised in stop: %s", name, exc)
            tenant.ctx.timers.clear()
            if tenant.lifecycle.state is not State.UNINSTALLED:
                tenant.lifecycle.to(State.UNINSTALLED)
            if worker.instances.get(name) is tenant:
                del worker.instances[name]
            if shared.tenants.get(name) is tenant:
                del shared.tenants[name]
            if shared.current is tenant:
                shared.current = None
                if shared.isolated:
                    shared.nf.__dict__ = {}  # the leaving tenant's state goes with it

        worker.call(leave)
        self.plane.forget(name)
        if not shared.tenants:
            self._drop_shared(shared)

    def _drop_shared(self, shared: SharedNF) -> None:
        if self.shared.get(shared.name) is shared:
            del self.shared[shared.name]
        if shared.lifecycle.state is not State.UNINSTALLED:
            shared.lifecycle.to(State.UNINSTALLED)
        self.plane.retire_if_empty(shared.worker_key)
        self._release_unused_code()

    def reconfigure_shared(self, specs: list[InstanceSpec]) -> None:
        """A new config for every tenant of a shared instance (same code): all are checked first, so
        a refused config changes no tenant; then each is configured in place (state kept) and the
        first spec becomes what joining tenants must match."""
        first = specs[0]
        assert first.shared is not None
        shared = self.shared.get(first.shared.name)
        if shared is None:
            raise PlatformError(f"shared instance {first.shared.name} is not running")
        for s in specs:
            validate_config(shared.nf_class, dict(s.config), where=f"instance {s.name}: config")
        for s in specs:
            self.configure(s.name, dict(s.config))
        shared.spec = first

    def update_shared(self, specs: list[InstanceSpec]) -> SharedNF:
        """Hot swap a shared instance to new code: every tenant's state moves to a new NF object
        between two batches (as :meth:`update` does for one instance). All ``specs`` are the tenants'
        new specs and agree on the code; on any failure the old version keeps running."""
        first = specs[0]
        assert first.shared is not None
        old = self.shared.get(first.shared.name)
        if old is None:
            raise PlatformError(f"shared instance {first.shared.name} is not running")
        if {s.name for s in specs} != set(old.tenants):
            raise PlatformError(f"shared instance {old.name}: an update must carry every tenant")
        try:
            new = self._build_shared(first)
            configs = {
                s.name: validate_config(new.nf_class, dict(s.config), where=f"instance {s.name}: config")
                for s in specs
            }
        except Exception:
            self._release_unused_code()
            raise
        worker = self.plane.worker(old.worker_key)
        new.worker = worker
        tenants = {
            s.name: new.new_tenant(s, error_limit=self.error_limit, data_dir=old.tenants[s.name].ctx.data_dir)
            for s in specs
        }
        for t in tenants.values():
            self._bind_timers(worker, t)

        def swap() -> str:
            try:
                for name, t in tenants.items():
                    was = old.tenants[name]
                    was.enter()
                    state = was.nf.export_state() if was.running else None
                    t.lifecycle.to(State.INSTALLING)
                    t.init_state()
                    t.nf.configure(configs[name])
                    if state is not None:
                        t.nf.import_state(state)
            except Exception as exc:
                new.current = None
                return f"update failed: {describe_fault(exc)}; kept the running version"
            started: list[TenantNF] = []
            for name, t in tenants.items():
                t.counters = old.tenants[name].counters  # the tenant's, not the version's
                t.enter()
                try:
                    t.nf.start()  # a tenant that had failed gets a fresh start, as a restart would
                    t.lifecycle.to(State.STOPPED)
                    started.append(t)
                except Exception as exc:
                    t.lifecycle.to(State.FAILED, f"start raised: {describe_fault(exc)}")
                new.tenants[name] = t
                worker.instances[name] = t
                self.instances[name] = t
            new.lifecycle.to(State.RUNNING)
            for t in started:
                t.lifecycle.to(State.RUNNING)
                for timer in t.ctx.timers:
                    worker.schedule(t, timer)
            for was in old.tenants.values():
                was.ctx.timers.clear()
                if was.running:
                    try:
                        was.enter()
                        was.nf.stop()
                    except Exception as exc:  # the old version is gone either way
                        log.warning("old version of %s raised in stop: %s", was.name, exc)
                was.lifecycle.to(State.UNINSTALLED)
            old.lifecycle.to(State.UNINSTALLED)
            self.shared[old.name] = new
            return ""

        error = worker.call(swap)
        if error:
            self._release_unused_code()
            raise PlatformError(f"shared instance {old.name}: {error}")
        self.shared_builds[old.name] = self.shared_builds.get(old.name, 0) + 1
        self._release_unused_code()
        for s in specs:
            self.plane.set_topology(s.name, s.slice, s.next_hops)
        return new

    def _get(self, name: str) -> HostedNF:
        inst = self.instances.get(name)
        if inst is None:
            raise PlatformError(f"instance {name} is not installed")
        return inst
