"""The SFC component: per-slice chains of hosted NFs, routing to next hops, fault containment.

Each slice has one worker thread and one bounded ingress queue. The worker runs messages through
the slice's local NFs in chain order by direct calls (no queue between local NFs, which is what
makes a hop cheap), then hands outputs for other nodes or for VNFs to a TCP sender. All calls into
a slice's NFs -- processing, timers, install, update, stop -- happen on that worker thread, so a
hot swap happens between two batches and no message is ever half-processed by two versions.

Fault containment: an NF that raises too often, outgrows its memory budget or blocks past its
deadline is failed (its messages are dropped and counted: the chain fails closed). A blocked NF is
left behind on its old thread: the watchdog raises an exception into it and hands the slice to a
fresh worker thread, so the rest of the slice and every other slice keep flowing.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from flyslice.nodeagent.dataplane.bqueue import BoundedQueue
from flyslice.nodeagent.dataplane.hosted import HostedNF
from flyslice.nodeagent.message import Message
from flyslice.nodeagent.sdk import Timer
from flyslice.nodeagent.spec import NextHop

log = logging.getLogger("flyslice.nodeagent.dataplane")

T = TypeVar("T")
BATCH = 256
#: How long a sender may go unused (no local instance's next hop resolves to its address) before it is
#: closed and what it still holds is routed again (e.g. to where the next hop moved). A grace period,
#: not "at once": an instance reinstalled in place drops its hops for a moment and must keep its sender.
SENDER_GRACE_S = 2.0
#: How often the watchdog thread looks for unused senders.
SENDER_SWEEP_S = 0.5
#: Messages a worker's batch produced for other local workers: handed over once the batch is done.
Held = dict["SliceWorker", list[Message]]


class DeadlineExceeded(BaseException):
    """Raised into a worker thread stuck in an NF past its deadline (BaseException: NFs rarely catch it)."""


def copy_message(m: Message) -> Message:
    trace = m["trace"]
    return {**m, "trace": {**trace, "hops": list(trace["hops"])}}


class SliceWorker:
    def __init__(self, plane: DataPlane, slice_name: str, queue_size: int) -> None:
        self.plane = plane
        self.slice = slice_name
        self.queue: BoundedQueue[Message] = BoundedQueue(queue_size)
        self.instances: dict[str, HostedNF] = {}
        self._timers: list[tuple[float, int, Timer, HostedNF]] = []
        self._seq = itertools.count()
        self._controls: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._controls_lock = threading.Lock()
        #: (instance being called, perf_counter_ns at call start) -- read by the watchdog.
        self.current: tuple[HostedNF, int] | None = None
        self.epoch = 0
        self.stopping = False
        self.thread = self._spawn()

    def _spawn(self) -> threading.Thread:
        t = threading.Thread(
            target=self._run, args=(self.epoch,), name=f"slice-{self.slice}-{self.epoch}", daemon=True
        )
        t.start()
        return t

    # -- control (runs on the worker thread between batches) ------------------------------------

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        if threading.current_thread() is self.thread:
            return fn()
        fut: Future[T] = Future()
        with self._controls_lock:
            self._controls.append((fn, fut))
        self.queue.wake()
        return fut.result(timeout)

    def _run_controls(self) -> None:
        with self._controls_lock:
            controls, self._controls = self._controls, []
        for fn, fut in controls:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def schedule(self, inst: HostedNF, timer: Timer) -> None:
        heapq.heappush(self._timers, (time.monotonic() + timer.interval_s, next(self._seq), timer, inst))

    # -- the loop ----------------------------------------------------------------------------------

    def _run(self, epoch: int) -> None:
        try:
            while not self.stopping and epoch == self.epoch:
                if self._controls:
                    self._run_controls()
                timeout = None
                if self._timers:
                    timeout = max(0.0, self._timers[0][0] - time.monotonic())
                batch = self.queue.get_batch(BATCH, timeout)  # None: sleep until a message or a wake()
                if epoch != self.epoch:
                    self.queue.put_many(batch)  # a newer worker owns the slice now
                    return
                if batch:
                    held: Held = {}
                    try:
                        self._dispatch(batch, epoch, held)
                    finally:
                        self._flush(held)
                if self._timers and self._timers[0][0] <= time.monotonic():
                    held = {}
                    try:
                        self._fire_timers(epoch, held)
                    finally:
                        self._flush(held)
        except DeadlineExceeded:
            return  # abandoned by the watchdog; a fresh thread carries on
        except Exception:  # a bug in the agent itself must not silently kill a slice
            log.exception("slice worker %s crashed; restarting it", self.slice)
            if epoch == self.epoch and not self.stopping:
                self.epoch += 1
                self.thread = self._spawn()

    def _flush(self, held: Held) -> None:
        """Hand what this batch produced for other local workers over, one queue operation (and one
        wake-up) per worker per batch -- not one per instance: a shared instance's worker runs many
        tenants' small groups per batch, and waking the next worker for each cost more than the work."""
        for w, msgs in held.items():
            self.plane._put(w, msgs)
        held.clear()

    def _dispatch(self, batch: list[Message], epoch: int, held: Held) -> None:
        groups: dict[str, list[Message]] = {}
        for m in batch:
            groups.setdefault(m["to"], []).append(m)
        for name, msgs in groups.items():
            inst = self.instances.get(name)
            if inst is None:
                self.plane.forward_to_instance(name, msgs)
            else:
                self._run_chain(inst, msgs, epoch, held)

    def _run_chain(self, first: HostedNF, msgs: list[Message], epoch: int, held: Held) -> None:
        stack = [(first, msgs)]
        while stack:
            if epoch != self.epoch:
                return  # abandoned while this thread was stuck: the new worker owns the NFs
            inst, batch = stack.pop()
            if not inst.running:
                inst.counters.dropped += len(batch)
                continue
            self.current = (inst, time.perf_counter_ns())
            outs = inst.process_batch(batch)
            self.current = None
            if epoch != self.epoch:
                return
            if inst.memory_budget is not None:
                self._check_memory(inst)
            if not inst.next_hops:
                # The path ends at this NF: account end-to-end latency on arrival here, whether or
                # not it emits anything (a database consumes what it stores).
                if inst.running:
                    self.plane.sink(inst, batch, outs)
                continue
            if outs:
                self._route(inst, outs, stack, held)

    def _route(
        self, inst: HostedNF, outs: list[Message], stack: list[tuple[HostedNF, list[Message]]], held: Held
    ) -> None:
        hops = inst.next_hops
        if not hops:  # timer output of the last NF of a path
            self.plane.sink(inst, [], outs)
            return
        last = len(hops) - 1
        routed = [m for m in outs if "route" in m]
        if routed:
            # Addressed (route) to none of this instance's next hops -- e.g. another slice's instance
            # named by a shared NF: it goes nowhere, and that is counted.
            names = {h.instance for h in hops}
            inst.counters.dropped += sum(1 for m in routed if not names.intersection(m["route"]))
        for i, hop in enumerate(hops):
            sel = [m for m in outs if "route" not in m or hop.instance in m["route"]]
            if not sel:
                continue
            if i < last:
                sel = [copy_message(m) for m in sel]
            target = self.instances.get(hop.instance)
            if target is not None and target.slice == inst.slice:
                stack.append((target, sel))
            else:
                self.plane.forward(hop, sel, held)

    def _fire_timers(self, epoch: int, held: Held) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer, inst = heapq.heappop(self._timers)
            if timer.cancelled or not inst.running or self.instances.get(inst.name) is not inst:
                continue
            self.current = (inst, time.perf_counter_ns())
            outs = inst.run_timer(timer.callback)
            self.current = None
            if epoch != self.epoch:
                return
            if inst.memory_budget is not None:  # state can grow from timers alone
                self._check_memory(inst)
            if inst.running and not timer.cancelled:
                heapq.heappush(self._timers, (now + timer.interval_s, next(self._seq), timer, inst))
            if outs:
                stack: list[tuple[HostedNF, list[Message]]] = []
                self._route(inst, outs, stack, held)
                for target, msgs in stack:
                    self._run_chain(target, msgs, epoch, held)

    def _check_memory(self, inst: HostedNF) -> None:
        now = time.monotonic()
        if now < inst.next_memory_check or inst.memory_budget is None:
            return
        inst.next_memory_check = now + self.plane.memory_check_interval_s
        budget = inst.memory_budget
        size = inst.memory_size()
        if size > budget:
            inst.fail(f"memory budget exceeded: holds over {size // 1024} KiB, budget {budget // 1024} KiB")

    # -- watchdog hooks ----------------------------------------------------------------------------

    def abandon_stuck(self, inst: HostedNF, waited_ns: int) -> None:
        """Called by the watchdog: fail ``inst`` and move the slice to a fresh thread."""
        old = self.thread
        inst.fail(
            f"blocked for {waited_ns / 1e6:.0f} ms in one call, deadline {inst.deadline_ns / 1e6:.0f} ms"
        )
        self.current = None
        self.epoch += 1
        if old.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(old.ident), ctypes.py_object(DeadlineExceeded)
            )
        self.thread = self._spawn()
        # Controls queued for the old thread would otherwise wait forever.
        self.queue.wake()

    def stop(self) -> None:
        self.stopping = True
        self.queue.wake()
        if self.thread is not threading.current_thread():
            self.thread.join(2.0)


class Sender:
    """Where the data plane hands messages leaving this process (implemented by transport)."""

    def send_many(self, msgs: list[Message], timeout: float = 0.0) -> int:
        """Queue for sending, waiting up to ``timeout`` s for room; returns how many were dropped."""
        raise NotImplementedError

    def close(self) -> list[Message]:
        """Stop sending; returns what was not sent."""
        return []


class DataPlane:
    """Routes messages to local slice workers, local VNFs and other nodes' agents."""

    def __init__(
        self,
        node: str,
        *,
        queue_size: int = 10_000,
        sender_factory: Callable[[str], Sender] | None = None,
        peers: dict[str, str] | None = None,
        memory_check_interval_s: float = 1.0,
        watchdog_interval_s: float = 0.05,
        forward_backpressure_s: float = 1.0,
    ) -> None:
        self.node = node
        self.queue_size = queue_size
        self.workers: dict[str, SliceWorker] = {}
        self.where: dict[str, SliceWorker] = {}  # instance -> worker of its slice (fNFs)
        self.vnf_addresses: dict[str, str] = {}  # local VNF instance -> host:port
        self.entries: dict[str, list[str]] = {}  # slice -> local instances that take ingress
        self.peers = peers if peers is not None else {}  # node -> its agent's host:port
        self.sender_factory = sender_factory
        self.senders: dict[str, Sender] = {}
        #: Senders closed because nothing routed to them any more (counted; their backlog re-routed).
        self.senders_retired = 0
        self._unused_since: dict[str, float] = {}  # sender address -> when it was first seen unused
        self.memory_check_interval_s = memory_check_interval_s
        #: How long a slice worker waits for room in a full sender queue before dropping: a slow
        #: next hop slows this slice down (and, through its queue, the ingress) before anything is lost.
        self.forward_backpressure_s = forward_backpressure_s
        self.unroutable = 0
        self.forward_dropped = 0
        self.sinks: list[Callable[[HostedNF, list[Message]], None]] = []
        #: When set, everything not local goes there (a VNF runner sends all outputs to its agent).
        self.default_route: str | None = None
        self.known_hops: dict[str, NextHop] = {}  # next hops of local instances, by instance name
        self._hops: dict[str, tuple[str, tuple[NextHop, ...]]] = {}  # every local instance: slice, hops
        #: Slice of every local instance (fNF, tenant of a shared instance, VNF): a message addressed
        #: to one of them (``to``) must belong to its slice, or it is dropped and counted here.
        self.slice_of: dict[str, str] = {}
        #: Messages refused because ``to`` named an instance of another slice, by that instance.
        self.rejected_for: dict[str, int] = {}
        self.rejected = 0
        #: Messages dropped by a full worker queue, by the instance they were addressed to.
        self.queue_dropped_for: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watchdog = threading.Thread(
            target=self._watch, args=(watchdog_interval_s,), name="fnf-watchdog", daemon=True
        )
        self._watchdog.start()

    # -- topology ----------------------------------------------------------------------------------

    def worker(self, slice_name: str) -> SliceWorker:
        with self._lock:
            w = self.workers.get(slice_name)
            if w is None:
                w = self.workers[slice_name] = SliceWorker(self, slice_name, self.queue_size)
            return w

    def set_topology(
        self, name: str, slice_name: str, hops: tuple[NextHop, ...], vnf_address: str | None = None
    ) -> None:
        """Record a local instance (fNF, or VNF with its address) and recompute the slice's entries."""
        with self._lock:
            self._hops[name] = (slice_name, hops)
            self.slice_of[name] = slice_name
            old = self.vnf_addresses.get(name)
            if vnf_address is not None:
                self.vnf_addresses[name] = vnf_address
            self._recompute_entries()
        if old is not None and old != vnf_address and vnf_address is not None:
            self._retire_sender(old)

    def retire_if_empty(self, slice_name: str) -> None:
        """Stop the worker thread of a slice that has no local fNF left (its queue is dropped)."""
        with self._lock:
            w = self.workers.get(slice_name)
            if w is None or w.instances or any(x is w for x in self.where.values()):
                return
            del self.workers[slice_name]
        w.queue.dropped += len(w.queue)
        w.stop()

    def forget(self, name: str) -> None:
        with self._lock:
            self._hops.pop(name, None)
            self.slice_of.pop(name, None)
            self.rejected_for.pop(name, None)
            self.queue_dropped_for.pop(name, None)
            old = self.vnf_addresses.pop(name, None)
            self.where.pop(name, None)
            self._recompute_entries()
        if old is not None:
            self._retire_sender(old)

    def _retire_sender(self, addr: str) -> None:
        """Close the sender of an address nothing routes to any more (a replaced or removed VNF),
        so its thread does not retry forever; what it had not sent is routed again by ``to``."""
        with self._lock:
            if addr in self.vnf_addresses.values() or addr in self.peers.values():
                return
            sender = self.senders.pop(addr, None)
        if sender is not None:
            unsent = sender.close()
            if unsent:
                self.deliver_many(unsent)

    def _addresses_in_use(self) -> set[str]:
        """Every address ``forward`` / ``forward_to_instance`` may send to now: local VNFs, the default
        route, and the receiver of each local instance's next hops (its own address, else its node's
        agent from the peer table, which ``refresh_peers`` may change). Called with the lock held."""
        used = set(self.vnf_addresses.values())
        if self.default_route:
            used.add(self.default_route)
        for hop in self.known_hops.values():
            if hop.address:
                used.add(hop.address)
            elif hop.node != self.node and (peer := self.peers.get(hop.node)):
                used.add(peer)
        return used

    def retire_unused_senders(self, grace_s: float = SENDER_GRACE_S) -> list[str]:
        """Close the senders no next hop resolves to any more for ``grace_s`` or longer, and route what
        they had not handed to the kernel again by its ``to``; the addresses retired.

        Why: a next hop that moved to another node (its node lost, the operator placed it elsewhere)
        leaves the sender to the old node's agent behind. Without this it redials a dead address for
        ever and the messages queued for it while the node was dying are never delivered; routed
        again they go to where the hop is now (after the messages sent there meanwhile: order across
        a move is not kept). What a dead peer's kernel had already accepted is lost either way."""
        gone = self._take_unused_senders(grace_s)
        self._close_and_reroute(gone)
        return [addr for addr, _ in gone]

    def _take_unused_senders(self, grace_s: float) -> list[tuple[str, Sender]]:
        """Unregister (under the lock, cheap) the senders unused for ``grace_s``; the caller closes them."""
        now = time.monotonic()
        gone: list[tuple[str, Sender]] = []
        with self._lock:
            used = self._addresses_in_use()
            for addr in list(self._unused_since):
                if addr in used or addr not in self.senders:
                    del self._unused_since[addr]
            for addr in list(self.senders):
                if addr in used:
                    continue
                since = self._unused_since.setdefault(addr, now)
                if now - since >= grace_s:
                    gone.append((addr, self.senders.pop(addr)))
                    del self._unused_since[addr]
            self.senders_retired += len(gone)
        return gone

    def _close_and_reroute(self, gone: list[tuple[str, Sender]]) -> None:
        for addr, sender in gone:
            unsent = sender.close()
            log.info("data plane: no next hop goes to %s any more; its sender closed, %d message(s) "
                     "routed again", addr, len(unsent))  # fmt: skip
            if unsent:
                self.deliver_many(unsent)

    def _recompute_entries(self) -> None:
        targets = {h.instance for _, hops in self._hops.values() for h in hops}
        self.known_hops = {h.instance: h for _, hops in self._hops.values() for h in hops}
        entries: dict[str, list[str]] = {}
        for name, (slice_name, _) in sorted(self._hops.items()):
            if name not in targets:
                entries.setdefault(slice_name, []).append(name)
        self.entries = entries

    # -- ingress -----------------------------------------------------------------------------------

    def deliver(self, msg: Message, timeout: float = 0.0) -> bool:
        """Accept one checked envelope; False when it was dropped (queue full, nowhere to go, or
        addressed to an instance of another slice)."""
        to = msg.get("to")
        if to is None:
            entries = self.entries.get(msg["slice"])
            if not entries:
                self.unroutable += 1
                return False
            ok = True
            for i, name in enumerate(entries):
                m = msg if i == len(entries) - 1 else copy_message(msg)
                m["to"] = name
                ok = self._deliver_to(name, m, timeout) and ok
            return ok
        if self.slice_of.get(to, msg["slice"]) != msg["slice"]:
            self._reject(to, 1)
            return False
        return self._deliver_to(to, msg, timeout)

    def deliver_many(self, msgs: list[Message], timeout: float = 0.0) -> int:
        """``deliver`` for a batch (one queue operation per worker); returns how many were dropped."""
        batches: dict[SliceWorker, list[Message]] = {}
        dropped = 0
        slice_of = self.slice_of
        for msg in msgs:
            to = msg.get("to")
            if to is not None:
                own = slice_of.get(to)
                if own is not None and own != msg["slice"]:
                    # Addressed to another slice's instance (a forged slice, or a "to" naming another
                    # slice's tenant of a shared NF): never delivered.
                    self._reject(to, 1)
                    dropped += 1
                    continue
                targets = [(to, msg)]
            else:
                entries = self.entries.get(msg["slice"])
                if not entries:
                    self.unroutable += 1
                    dropped += 1
                    continue
                targets = [
                    (n, msg if i == len(entries) - 1 else copy_message(msg)) for i, n in enumerate(entries)
                ]
            for name, m in targets:
                m["to"] = name
                w = self.where.get(name)
                if w is not None:
                    batches.setdefault(w, []).append(m)
                else:
                    dropped += self.forward_to_instance(name, [m])
        for w, batch in batches.items():
            dropped += self._put(w, batch, timeout)
        return dropped

    def _put(self, w: SliceWorker, msgs: list[Message], timeout: float = 0.0) -> int:
        """Queue for a worker; what a full queue drops is counted against the instances it was for."""
        rest = w.queue.put_many_rest(msgs, timeout)
        if rest:
            with self._lock:
                for m in rest:
                    name = m.get("to", "")
                    self.queue_dropped_for[name] = self.queue_dropped_for.get(name, 0) + 1
        return len(rest)

    def _reject(self, name: str, n: int) -> None:
        with self._lock:
            self.rejected += n
            self.rejected_for[name] = self.rejected_for.get(name, 0) + n
        log.debug("dropped %d message(s) addressed to %s from another slice", n, name)

    def _deliver_to(self, name: str, msg: Message, timeout: float) -> bool:
        w = self.where.get(name)
        if w is not None:
            return self._put(w, [msg], timeout) == 0
        return self.forward_to_instance(name, [msg]) == 0

    def forward_to_instance(self, name: str, msgs: list[Message]) -> int:
        """Messages addressed to an instance that is not a local fNF: a local VNF or a known hop."""
        addr = self.vnf_addresses.get(name)
        if addr is not None:
            return self._send(addr, msgs)
        hop = self.known_hops.get(name)
        if (hop is not None and hop.node != self.node) or self.default_route:
            before = self.unroutable
            self.forward(hop or NextHop(name, ""), msgs)
            return self.unroutable - before
        self.unroutable += len(msgs)
        return len(msgs)

    def forward(self, hop: NextHop, msgs: list[Message], held: Held | None = None) -> None:
        """Send outputs to a next hop that is not a local fNF of the same slice (``held``: collect those
        for another local worker there, for the calling worker to hand over at the end of its batch)."""
        own = self.slice_of.get(hop.instance)
        if own is not None:
            wrong = [m for m in msgs if m["slice"] != own]
            if wrong:  # a next hop in another slice: this slice's traffic never goes there
                self._reject(hop.instance, len(wrong))
                msgs = [m for m in msgs if m["slice"] == own]
        w = self.where.get(hop.instance)
        if w is not None:  # local fNF (possibly just installed): through its queue
            for m in msgs:
                m["to"] = hop.instance
                m.pop("route", None)
            if held is not None:
                held.setdefault(w, []).extend(msgs)
            else:
                self._put(w, msgs)
            return
        addr: str | None = self.vnf_addresses.get(hop.instance) or self.default_route or hop.address
        if not addr and hop.node != self.node:
            addr = self.peers.get(hop.node)
        if not addr:  # e.g. a local instance not installed yet: never loop back to ourselves
            self.unroutable += len(msgs)
            return
        for m in msgs:
            m["to"] = hop.instance
            m.pop("route", None)
        self._send(addr, msgs)

    def _send(self, addr: str, msgs: list[Message]) -> int:
        sender = self.senders.get(addr)
        if sender is None:
            if self.sender_factory is None:
                self.unroutable += len(msgs)
                return len(msgs)
            with self._lock:
                sender = self.senders.get(addr)
                if sender is None:
                    sender = self.senders[addr] = self.sender_factory(addr)
        dropped = sender.send_many(msgs, self.forward_backpressure_s)
        self.forward_dropped += dropped
        return dropped

    def sink(self, inst: HostedNF, arrived: list[Message], outs: list[Message]) -> None:
        """Messages at the last NF of their path: account end-to-end latency of what arrived there,
        tell observers what it emitted."""
        now = time.time_ns()
        c = inst.counters
        for m in arrived:
            c.e2e_ns += now - m["trace"]["t0"]
        c.e2e_count += len(arrived)
        if outs:
            for fn in self.sinks:
                fn(inst, outs)

    # -- watchdog ----------------------------------------------------------------------------------

    def _watch(self, interval: float) -> None:
        next_sweep = time.monotonic() + SENDER_SWEEP_S
        while not self._stop.wait(interval):
            if time.monotonic() >= next_sweep and self.senders:
                next_sweep = time.monotonic() + SENDER_SWEEP_S
                self._sweep_senders()
            now = time.perf_counter_ns()
            for w in list(self.workers.values()):
                cur = w.current
                if cur is not None and now - cur[1] > cur[0].deadline_ns:
                    log.warning("instance %s blocked past its deadline; failing it", cur[0].name)
                    w.abandon_stuck(cur[0], now - cur[1])

    def _sweep_senders(self) -> None:
        """Find unused senders on the watchdog thread (a few set operations) but close them on a thread
        of their own: closing one waits for its thread (up to 2 s when it is mid-connect to a dead
        address), which must not delay the stuck-NF checks."""
        gone = self._take_unused_senders(SENDER_GRACE_S)
        if gone:

            def close() -> None:
                try:
                    self._close_and_reroute(gone)
                except Exception:  # a bug here must not end the watchdog's sweeps
                    log.exception("data plane: closing unused senders failed")

            threading.Thread(target=close, name="sender-retire", daemon=True).start()

    def dropped_total(self) -> int:
        return sum(w.queue.dropped for w in self.workers.values()) + self.unroutable + self.forward_dropped

    def stop(self) -> None:
        self._stop.set()
        for w in list(self.workers.values()):
            w.stop()
        for sender in list(self.senders.values()):
            sender.close()
        self.senders.clear()
