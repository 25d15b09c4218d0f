"""The embedded mode's node runtime: a real :class:`flyslice.nodeagent.Agent` per EdgeNode, in-process.

fNFs load inside each agent; VNFs start as local processes (the agent's local-process driver),
since the embedded mode has no container runtime. Agents reach each other over TCP on loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flyslice.nodeagent.agent import Agent, AgentConfig
from flyslice.nodeagent.dataplane.tls import CertificateAuthority
from flyslice.nodeagent.spec import InstanceSpec
from flyslice.operator.planning.actions import InstanceAction
from flyslice.operator.reconcile import InstanceObservation, NodeObservation

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class LocalAgentRuntime:
    def __init__(
        self,
        node: str,
        state_dir: Path,
        peers: dict[str, str],
        mqtt: tuple[str, int] | None = None,
        ca: CertificateAuthority | None = None,
        trusted_keys: Sequence[Ed25519PublicKey] = (),
        module_dirs: Sequence[Path] = (),
        agent_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.node = node
        #: More AgentConfig fields for every agent (e.g. ``queue_size``, ``resync_s``).
        self._agent_options = dict(agent_options or {})
        #: Where file: modules may live (``up --module-dir``); empty: builtin: modules only.
        self._module_dirs = tuple(module_dirs)
        #: Module-signing keys (``up --trusted-key``): every agent verifies fNFs and VNF runners with them.
        self._trusted_keys = list(trusted_keys)
        #: The installation's data-plane CA (``flyslice up``: ``<state>/pki``); None = plain TCP.
        self._ca = ca
        self._state_dir = state_dir
        self._peers = peers
        self._mqtt = mqtt
        self.agent: Agent | None = None
        self._last_beat: float | None = None
        self._events_seen = 0  # the last agent event handed to the controller (drain_events)
        #: Node load reported to the controller. The embedded agents share one machine, so its real
        #: load says nothing about a simulated node: None unless set (demos of the 15 % rule).
        self.load: float | None = None
        #: What the last :meth:`observe` read, for the status document (``flyslice up`` has no agent
        #: /status of its own): each shared instance on this node, and each instance's counters.
        self.shared_instances: dict[str, dict[str, Any]] = {}
        self.counters: dict[str, dict[str, int]] = {}
        self.start()

    def start(self) -> None:
        # A fresh agent certificate at every start: restarting an agent rotates its key.
        tls = (
            self._ca.issue_to(self._state_dir / "tls", f"agent {self.node}", node=self.node)
            if self._ca is not None
            else None
        )
        self.agent = Agent(
            AgentConfig(
                node=self.node,
                state_dir=self._state_dir,
                peers=dict(self._peers),
                mqtt=self._mqtt,
                # Devices attached to this node publish under flyslice/<node>/<slice>/...
                mqtt_prefix=f"flyslice/{self.node}",
                # Nothing adopts the runners of a `flyslice up` that was killed until the next `up`:
                # they stop with this process rather than run unsupervised.
                vnfs_die_with_agent=True,
                tls=tls,
                tls_issuer=self._ca,
                trusted_keys=list(self._trusted_keys),
                module_dirs=self._module_dirs,
                **self._agent_options,
            )
        )
        self._events_seen = 0
        self._peers[self.node] = self.agent.address
        self._last_beat = time.time()

    def update_peers(self) -> None:
        if self.agent is not None:
            self.agent.plane.peers.update(self._peers)

    def kill(self) -> None:
        """Stop the agent abruptly, as a crash would: its heartbeat stops, its VNF processes stay."""
        if self.agent is not None:
            self.agent.stop(stop_vnfs=False)
            self.agent = None

    async def converge(self, actions: Sequence[InstanceAction]) -> None:
        agent = self.agent
        if agent is None:
            return
        specs = [InstanceSpec.from_object(a.as_object()) for a in actions]
        await asyncio.to_thread(agent.converge, specs)

    def observe(self) -> tuple[NodeObservation, Mapping[tuple[str, str], InstanceObservation]]:
        agent = self.agent
        if agent is None:
            self.shared_instances, self.counters = {}, {}
            return NodeObservation(heartbeat_at=self._last_beat, load=self.load), {}
        healthy, _ = agent.healthy()
        if healthy:
            self._last_beat = time.time()
        instances = {}
        counters: dict[str, dict[str, int]] = {}
        for name, st in agent.status().items():
            spec = agent.desired.get(name)
            ns = spec.namespace if spec else "default"
            instances[(ns, name)] = InstanceObservation(
                st.state,
                self.node,
                st.message,
                st.e2e_latency_ms,
                restarts=st.restarts,
                # The scale-out signal: this tenant's shared instance drops messages sample after sample.
                shared_instance=st.shared_instance or "",
                shared_overloaded=bool(st.counters.get("sharedOverloaded")),
            )
            counters[name] = {k: int(v) for k, v in st.counters.items() if isinstance(v, int | float)}
        self.counters = counters
        self.shared_instances = agent.shared_instances()
        return NodeObservation(heartbeat_at=self._last_beat, load=self.load), instances

    def warnings(self) -> list[str]:
        """What the agent cannot do although it runs (an unreachable MQTT broker), one line each."""
        agent = self.agent
        return [] if agent is None else agent.warnings()

    def drain_events(self) -> list[str]:
        """The agent's failure, restart and removal events since the last call, as one line each."""
        agent = self.agent
        if agent is None:
            return []
        new = agent.events_since(self._events_seen)
        if new:
            self._events_seen = new[-1].seq
        return [f"node {self.node}: {e}" for e in new]

    async def stop(self) -> None:
        agent, self.agent = self.agent, None
        self._peers.pop(self.node, None)
        if agent is not None:
            await asyncio.to_thread(agent.stop)


class LocalAgentFleet:
    """Creates one :class:`LocalAgentRuntime` per EdgeNode and keeps their peer tables in sync."""

    def __init__(
        self,
        state_root: Path,
        mqtt: tuple[str, int] | None = None,
        ca: CertificateAuthority | None = None,
        trusted_keys: Sequence[Ed25519PublicKey] = (),
        module_dirs: Sequence[Path] = (),
        agent_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.state_root = state_root
        self.module_dirs = tuple(module_dirs)
        self.agent_options = dict(agent_options or {})
        self.mqtt = mqtt
        self.ca = ca
        self.trusted_keys = list(trusted_keys)
        self.peers: dict[str, str] = {}
        self.runtimes: dict[str, LocalAgentRuntime] = {}

    def __call__(self, node: str, _catalog: object) -> LocalAgentRuntime:
        runtime = LocalAgentRuntime(
            node, self.state_root / node, self.peers, self.mqtt, self.ca, self.trusted_keys, self.module_dirs,
            self.agent_options,
        )  # fmt: skip
        self.runtimes[node] = runtime
        for r in self.runtimes.values():
            r.update_peers()
        return runtime
