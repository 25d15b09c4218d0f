"""The Modular Platform (seed 000, P3) and its Mi interface: install, start, stop, update,
configure and uninstall fNFs, each move checked by the lifecycle state machine.

Loading and configuring a new module happens on the caller's thread, before the NF is visible to
the data plane; every call into a live NF is run on its slice's worker thread (see dataplane).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from flyslice.nodeagent.dataplane.chains import DataPlane, SliceWorker
from flyslice.nodeagent.dataplane.hosted import HostedNF, describe_fault
from flyslice.nodeagent.dataplane.lifecycle import State
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
        self.loader.prune({inst.spec.digest for inst in list(self.instances.values())})

    def _worker(self, inst: HostedNF) -> SliceWorker:
        return self.plane.worker(inst.slice)

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
                inst.nf.configure(checked)
            except Exception as exc:
                inst.fail(f"configure raised: {describe_fault(exc)}")

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

    def _get(self, name: str) -> HostedNF:
        inst = self.instances.get(name)
        if inst is None:
            raise PlatformError(f"instance {name} is not installed")
        return inst
