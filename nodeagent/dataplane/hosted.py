"""One NF hosted in-process: the NF object, its lifecycle, counters and fault accounting.

Used for fNFs inside the agent and for the single NF a VNF runner hosts, so both flavours run
exactly the same code path.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from flyslice.nodeagent.dataplane.lifecycle import Lifecycle, State
from flyslice.nodeagent.dataplane.memsize import deep_size
from flyslice.nodeagent.message import Message
from flyslice.nodeagent.sdk import Context, NetworkFunction, Output
from flyslice.nodeagent.spec import InstanceSpec, NextHop


@dataclass
class Counters:
    in_: int = 0
    out: int = 0
    dropped: int = 0
    errors: int = 0
    busy_ns: int = 0
    e2e_ns: int = 0
    e2e_count: int = 0
    #: Outputs the NF gave for another slice than its own (or its tenant's): dropped, never routed.
    rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        d = {"in": self.in_, "out": self.out, "dropped": self.dropped, "errors": self.errors}
        if self.rejected:
            d["rejected"] = self.rejected
        return d

    @property
    def latency_ms(self) -> float | None:
        return self.busy_ns / self.in_ / 1e6 if self.in_ else None

    @property
    def e2e_latency_ms(self) -> float | None:
        return self.e2e_ns / self.e2e_count / 1e6 if self.e2e_count else None


class HostedNF:
    """An NF instance plus what the host tracks about it. Only its slice worker calls into ``nf``."""

    def __init__(
        self,
        spec: InstanceSpec,
        nf_class: type[NetworkFunction],
        *,
        error_limit: int = 5,
        deadline_s: float = 1.0,
        memory_budget: int | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.slice = spec.slice
        #: The data-plane worker that runs this NF: its slice's (a shared instance has its own).
        self.worker_key = spec.slice
        self.ctx = Context(spec.name, spec.slice, spec.role, data_dir=data_dir)
        self.nf = nf_class(self.ctx)
        self.lifecycle = Lifecycle(spec.name)
        self.counters = Counters()
        self.next_hops: tuple[NextHop, ...] = spec.next_hops
        self.error_limit = error_limit
        self.deadline_ns = int(deadline_s * 1e9)
        self.memory_budget = memory_budget
        self.next_memory_check = 0.0
        self._consecutive_errors = 0
        self._hop_name = spec.name
        #: Set while a new version is being loaded to replace this one.
        self.pending_update = ""

    @property
    def running(self) -> bool:
        return self.lifecycle.state is State.RUNNING

    def enter(self) -> None:
        """Make ``nf`` act for this instance before a call into it (a tenant of a shared NF switches)."""

    def fail(self, reason: str) -> None:
        """Stop the NF for good (until reinstalled) and record why; its neighbours are untouched."""
        if self.lifecycle.fail(reason):
            self.ctx.timers.clear()
            # An NF already misbehaving may fail to stop; it is discarded anyway.
            with contextlib.suppress(Exception):
                self.nf.stop()

    def fail_own(self, reason: str) -> None:
        """A failure caused by this instance's own messages or timers (a shared NF fails one tenant)."""
        self.fail(reason)

    def memory_size(self) -> int:
        """Estimated bytes the NF holds (its attributes, the context aside); stops once over budget."""
        return deep_size(vars(self.nf), limit=self.memory_budget, skip=(id(self.ctx),))

    def process_batch(self, msgs: list[Message]) -> list[Message]:
        """Run ``process`` on each message; returns the stamped outputs (plus anything emitted)."""
        process = self.nf.process
        out: list[Message] = []
        counters = self.counters
        counters.in_ += len(msgs)
        t_start = time.perf_counter_ns()
        for i, m in enumerate(msgs):
            try:
                r = process(m)
            except Exception as exc:
                counters.errors += 1
                self._consecutive_errors += 1
                if self._consecutive_errors >= self.error_limit:
                    counters.in_ -= len(msgs) - i - 1  # never handed to the NF: dropped, not in
                    counters.dropped += len(msgs) - i - 1
                    self.fail_own(
                        f"process raised {self._consecutive_errors} times in a row; last: {describe_fault(exc)}"
                    )
                    break
                continue
            self._consecutive_errors = 0
            if r is None:
                continue
            if type(r) is dict:
                out.append(r)
            else:
                out.extend(r)  # type: ignore[arg-type]
        counters.busy_ns += time.perf_counter_ns() - t_start
        if self.ctx.outbox:
            out.extend(self.ctx.outbox)
            self.ctx.outbox.clear()
        return self._stamp(out)

    def run_timer(self, callback: object) -> list[Message]:
        try:
            r: Output = callback()  # type: ignore[operator]
        except Exception as exc:
            counters = self.counters
            counters.errors += 1
            self.fail_own(f"timer raised: {describe_fault(exc)}")
            return []
        out = [] if r is None else [r] if isinstance(r, dict) else list(r)
        if self.ctx.outbox:
            out.extend(self.ctx.outbox)
            self.ctx.outbox.clear()
        return self._stamp(out)

    def _stamp(self, out: list[Message]) -> list[Message]:
        if not out:
            return out
        hop = (self._hop_name, time.time_ns())
        good = out
        own = self.slice
        for m in out:
            try:
                m["trace"]["hops"].append(hop)
                if m["slice"] != own:
                    raise TypeError("another slice")
            except (KeyError, TypeError, AttributeError):
                good = [m for m in out if self._repair(m, hop)]
                break
        self.counters.out += len(good)
        return good

    def _repair(self, m: object, hop: tuple[str, int]) -> bool:
        """An output the NF built by hand: complete its envelope, or count it as an error."""
        if not isinstance(m, dict):
            self.counters.errors += 1
            return False
        m.setdefault("slice", self.slice)
        if m["slice"] != self.slice:
            # A message of this slice's traffic may never leave into another slice (a shared NF
            # serves several): whatever the NF wrote there, it is dropped and counted, not routed.
            self.counters.rejected += 1
            return False
        trace = m.get("trace")
        if not isinstance(trace, dict) or not isinstance(trace.get("hops"), list):
            m["trace"] = trace = {"id": "", "t0": time.time_ns(), "hops": []}
        m.setdefault("topic", "")
        if not trace["hops"] or trace["hops"][-1] is not hop:
            trace["hops"].append(hop)
        return True


def describe_fault(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
