"""Shared instances: ONE NF object serving several tenants (NFInstances of several slices).

A :class:`SharedNF` owns the NF object, a data-plane worker of its own (one thread, one bounded
queue) and the instance-wide memory budget. Each tenant is a :class:`TenantNF` -- a
:class:`~flyslice.nodeagent.dataplane.hosted.HostedNF` whose ``nf`` is the shared object and whose
name, slice, next hops, counters and lifecycle are the tenant's own. Every call into the NF runs on
the shared worker's thread (so the NF needs no locks however many slice workers feed it), after
:meth:`TenantNF.enter` made the object act for that tenant:

- ``self.ctx`` is the tenant's context (its NFInstance, its slice, its outbox and timers), so what
  the NF emits or creates (``ctx.message``) is the tenant's, and is routed to the tenant's next hops;
- unless the NF class sets ``shared_state = True``, the object's attributes are the tenant's too: the
  host swaps the object's ``__dict__`` between tenants, so one tenant's state (windows, buckets,
  firewall entries...) is never read or written on another tenant's behalf.

Failures are contained per tenant where the NF object is intact (``process`` or a tenant's timer
raising: only that tenant fails, and is re-attached by the agent) and per instance where it is not
(blocked past the deadline, over the memory budget: every tenant fails; the agent rebuilds it).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flyslice.nodeagent.dataplane.hosted import Counters, HostedNF
from flyslice.nodeagent.dataplane.lifecycle import Lifecycle, State
from flyslice.nodeagent.dataplane.memsize import deep_size
from flyslice.nodeagent.sdk import Context, NetworkFunction
from flyslice.nodeagent.spec import InstanceSpec

if TYPE_CHECKING:
    from flyslice.nodeagent.dataplane.chains import SliceWorker

#: Prefix of a shared instance's worker key; slice names (Kubernetes names) never contain ':'.
WORKER_PREFIX = "shared:"


class SharingError(ValueError):
    """An NF class that cannot serve several tenants (e.g. it has no instance ``__dict__``)."""


@dataclass
class OverloadSample:
    at: float
    dropped: int


class OverloadMeter:
    """Queue drops of one shared instance over time: the scale-out signal.

    ``sample()`` is called about once a second (the agent's resync). The instance is *overloaded*
    when its queue dropped messages in each of the last ``sustain`` samples -- a burst that one
    full queue absorbed once is not sustained overload, drops second after second are.
    """

    def __init__(self, window_s: float = 10.0, sustain: int = 3) -> None:
        self.window_s = window_s
        self.sustain = sustain
        self.samples: deque[OverloadSample] = deque()

    def sample(self, dropped: int, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        self.samples.append(OverloadSample(t, dropped))
        while len(self.samples) > 2 and self.samples[1].at < t - self.window_s:
            self.samples.popleft()

    def rate(self) -> float:
        """Queue drops per second over the window (0 until two samples exist)."""
        s = list(self.samples)
        if len(s) < 2 or s[-1].at <= s[0].at:
            return 0.0
        return (s[-1].dropped - s[0].dropped) / (s[-1].at - s[0].at)

    def sustained(self) -> bool:
        s = list(self.samples)[-(self.sustain + 1) :]
        return len(s) == self.sustain + 1 and all(b.dropped > a.dropped for a, b in itertools.pairwise(s))


class SharedNF:
    """One running NF serving several tenants; built by the platform, fed by its own worker."""

    def __init__(
        self,
        spec: InstanceSpec,
        nf_class: type[NetworkFunction],
        *,
        deadline_s: float = 1.0,
        data_dir: Path | None = None,
    ) -> None:
        if spec.shared is None:
            raise SharingError(f"instance {spec.name}: not a tenant of a shared instance")
        self.name = spec.shared.name
        #: The spec the instance was built (or last updated) with: what a joining tenant must match.
        self.spec = spec
        self.nf_class = nf_class
        self.isolated = not getattr(nf_class, "shared_state", False)
        self.worker_key = WORKER_PREFIX + self.name
        self.deadline_s = deadline_s
        self.data_dir = data_dir
        self.lifecycle = Lifecycle(f"shared instance {self.name}")
        self.tenants: dict[str, TenantNF] = {}
        #: The tenant whose call the object is set up for (None: none yet).
        self.current: TenantNF | None = None
        self.base_memory = spec.memory_bytes
        self.per_tenant_memory = spec.shared.per_tenant_memory_bytes
        self.next_memory_check = 0.0
        #: The instance's own data-plane worker (set by the platform when it installs the instance).
        self.worker: SliceWorker | None = None
        self.overload = OverloadMeter()
        self.built_at = time.time()
        if self.isolated:
            # No __init__ here: each tenant gets its own attributes from __init__ when it attaches.
            try:
                self.nf: NetworkFunction = nf_class.__new__(nf_class)
                self.nf.__dict__ = {}
            except (TypeError, AttributeError) as exc:
                raise SharingError(
                    f"shared instance {self.name}: {nf_class.__name__} keeps no per-object attribute "
                    f"dictionary, so tenants' state cannot be kept apart ({exc}); set shared_state = True "
                    "if it keeps them apart itself"
                ) from exc
        else:
            self.nf = nf_class(Context(self.name, "", spec.role, shared=self.name, data_dir=data_dir))

    # -- tenants -----------------------------------------------------------------------------------

    def new_tenant(self, spec: InstanceSpec, *, error_limit: int, data_dir: Path | None) -> TenantNF:
        """A tenant handle; its NF state is created by :meth:`TenantNF.init_state` on the worker."""
        return TenantNF(self, spec, error_limit=error_limit, data_dir=data_dir)

    @property
    def memory_budget(self) -> int | None:
        """The instance's own memory plus ``perTenant.memory`` for each tenant (None: unlimited)."""
        if self.base_memory is None:
            return None
        return self.base_memory + self.per_tenant_memory * len(self.tenants)

    def memory_size(self) -> int:
        budget = self.memory_budget
        if self.isolated:
            skip = [id(t.ctx) for t in self.tenants.values()]
            total = 0
            for t in list(self.tenants.values()):
                total += deep_size(t.attrs, limit=None if budget is None else budget - total, skip=skip)
            return total
        return deep_size(vars(self.nf), limit=budget, skip=[id(t.ctx) for t in self.tenants.values()])

    @property
    def failed(self) -> bool:
        return self.lifecycle.state is State.FAILED

    def fail(self, reason: str) -> None:
        """The NF object itself is unusable (blocked, over budget): every tenant fails with it."""
        if not self.lifecycle.fail(reason):
            return
        on_worker = self.worker is not None and threading.current_thread() is self.worker.thread
        for t in list(self.tenants.values()):
            if t.lifecycle.fail(f"shared instance {self.name} failed: {reason}"):
                t.ctx.timers.clear()
                if on_worker:  # never call into the NF from the watchdog: a stuck call may still run
                    with contextlib.suppress(Exception):
                        t.enter()
                        self.nf.stop()

    def statistics(self, queue_length: int, queue_dropped: int) -> dict[str, Any]:
        """What ``/status`` reports of the instance (see docs/nodeagent.md, *Shared instances*)."""
        return {
            "state": str(self.lifecycle.state),
            "message": self.lifecycle.message,
            "tenants": sorted(self.tenants),
            "slices": sorted({t.slice for t in self.tenants.values()}),
            "package": self.spec.package,
            "flavor": self.spec.flavor,
            "builtAt": self.built_at,
            "queueLength": queue_length,
            "queueDropped": queue_dropped,
            "queueDropsPerSecond": round(self.overload.rate(), 3),
            "overloaded": self.overload.sustained(),
        }


class TenantNF(HostedNF):
    """One tenant of a :class:`SharedNF`: its own identity, next hops, counters and lifecycle."""

    def __init__(
        self, shared: SharedNF, spec: InstanceSpec, *, error_limit: int, data_dir: Path | None
    ) -> None:
        # Not HostedNF.__init__: that would build an NF object of its own.
        self.shared = shared
        self.spec = spec
        self.name = spec.name
        self.slice = spec.slice
        self.worker_key = shared.worker_key
        self.ctx = Context(spec.name, spec.slice, spec.role, shared=shared.name, data_dir=data_dir)
        self.nf = shared.nf
        #: The tenant's attributes on the NF object (isolated NFs; see SharedNF).
        self.attrs: dict[str, Any] = {}
        self.lifecycle = Lifecycle(spec.name)
        self.counters = Counters()
        self.next_hops = spec.next_hops
        self.error_limit = error_limit
        self.deadline_ns = int(shared.deadline_s * 1e9)
        self._consecutive_errors = 0
        self._hop_name = spec.name
        self.pending_update = ""

    # The memory budget and its sampling are the instance's, whichever tenant's call triggers them.
    @property
    def memory_budget(self) -> int | None:
        return self.shared.memory_budget

    @memory_budget.setter
    def memory_budget(self, value: int | None) -> None:
        raise AttributeError("a tenant's memory budget is its shared instance's")

    @property
    def next_memory_check(self) -> float:
        return self.shared.next_memory_check

    @next_memory_check.setter
    def next_memory_check(self, value: float) -> None:
        self.shared.next_memory_check = value

    @property
    def running(self) -> bool:
        return self.lifecycle.state is State.RUNNING and not self.shared.failed

    def init_state(self) -> None:
        """On the worker: the tenant's own attributes, as the NF's ``__init__`` makes them."""
        if self.shared.isolated:
            self.attrs = {}
            self.shared.current = None
            self.enter()
            self.shared.nf_class.__init__(self.nf, self.ctx)
        else:
            self.enter()

    def enter(self) -> None:
        shared = self.shared
        if shared.current is self:
            return
        if shared.isolated:
            self.nf.__dict__ = self.attrs
        else:
            self.nf.ctx = self.ctx
        shared.current = self

    def process_batch(self, msgs: list[Any]) -> list[Any]:
        self.enter()
        return super().process_batch(msgs)

    def run_timer(self, callback: object) -> list[Any]:
        self.enter()
        return super().run_timer(callback)

    def memory_size(self) -> int:
        return self.shared.memory_size()

    def fail(self, reason: str) -> None:
        # Called by the watchdog (a call that blocked) and the memory check: the object is unusable.
        self.shared.fail(reason)

    def fail_own(self, reason: str) -> None:
        """This tenant's messages or timer broke it: this tenant stops; the others keep running."""
        if self.lifecycle.fail(reason):
            self.ctx.timers.clear()
            with contextlib.suppress(Exception):
                self.enter()
                self.nf.stop()
