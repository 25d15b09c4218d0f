"""Telemetry: Prometheus metrics and the agent's HTTP endpoints (heartbeat: see heartbeat.py).

Endpoints: ``GET /healthz`` (200 healthy / 503 not), ``GET /metrics`` (Prometheus text),
``GET /status`` (JSON: heartbeat + per-instance status), ``POST /ingress`` (an envelope or a
list of them; 202 accepted, 400 bad input naming the problem, 503 when queues are full).
Metrics are read from the agent's counters at scrape time, so the data path pays nothing for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from flyslice.nodeagent.dataplane.transport import REJECTED, ServerThread, parse_address
from flyslice.nodeagent.message import EnvelopeError, Message, device_envelope
from flyslice.nodeagent.spec import InstanceStatus


def dataplane_rejected_family() -> CounterMetricFamily:
    """``flyslice_dataplane_rejected_total{reason}``: data-plane connections and messages refused in
    this process (every listener: ``flyslice up`` runs one agent per node in-process)."""
    fam = CounterMetricFamily(
        "flyslice_dataplane_rejected",
        "Data-plane connections (failed mutual-TLS handshake) and messages (slice not allowed by the "
        "sender's certificate) refused, by reason",
        labels=["reason"],
    )
    for reason, n in sorted(REJECTED.snapshot().items()):
        fam.add_metric([reason], float(n))
    return fam


class DataplaneRejectCollector(Collector):
    """Adds :func:`dataplane_rejected_family` to a registry (the operator's, in ``flyslice up``)."""

    def collect(self) -> Iterator[Any]:
        yield dataplane_rejected_family()


class AgentCollector(Collector):
    def __init__(self, node: str, statuses: Callable[[], Iterable[tuple[str, InstanceStatus]]],
                 extra: Callable[[], dict[str, float]],
                 shared: Callable[[], dict[str, dict[str, Any]]] | None = None) -> None:  # fmt: skip
        self.node = node
        self.statuses = statuses
        self.extra = extra
        #: name -> statistics of each shared instance (``Agent.shared_instances``).
        self.shared = shared

    def collect(self) -> Iterator[Any]:
        labels = ["node", "instance", "slice"]
        fams = {
            key: CounterMetricFamily(
                f"flyslice_instance_{key}_messages", f"Messages {key} by the instance", labels=labels
            )
            for key in ("in", "out", "dropped", "errors", "rejected")
        }
        latency = GaugeMetricFamily(
            "flyslice_instance_processing_latency_seconds", "Mean processing time per message", labels=labels
        )
        e2e = GaugeMetricFamily(
            "flyslice_instance_e2e_latency_seconds",
            "Mean end-to-end latency of messages whose path ended at the instance (sinks)",
            labels=labels,
        )
        restarts = CounterMetricFamily(
            "flyslice_instance_restarts",
            "Restarts of the instance after a failure (crash, hang, frozen VNF)",
            labels=labels,
        )
        state = GaugeMetricFamily(
            "flyslice_instance_state",
            "1 for the instance's current state",
            labels=[*labels, "state", "flavor"],
        )
        for slice_, st in self.statuses():
            lv = [self.node, st.name, slice_]
            for key, fam in fams.items():
                fam.add_metric(lv, float(st.counters.get(key, 0)))
            if st.latency_ms is not None:
                latency.add_metric(lv, st.latency_ms / 1000)
            if st.e2e_latency_ms is not None:
                e2e.add_metric(lv, st.e2e_latency_ms / 1000)
            state.add_metric([*lv, st.state, st.flavor], 1.0)
            restarts.add_metric(lv, float(st.restarts))
        yield from fams.values()
        yield restarts
        yield latency
        yield e2e
        yield state
        yield dataplane_rejected_family()
        if self.shared is not None:
            yield from self._shared_families(self.shared())
        for key, value in self.extra().items():
            yield GaugeMetricFamily(
                f"flyslice_agent_{key}", f"Agent {key.replace('_', ' ')}", value=value, labels=None
            )

    def _shared_families(self, shared: dict[str, dict[str, Any]]) -> Iterator[Any]:
        """Per shared instance: tenants, and its queue drops -- the overload signal for scale-out."""
        labels = ["node", "shared_instance"]
        tenants = GaugeMetricFamily(
            "flyslice_shared_instance_tenants",
            "Tenants (NFInstances) served by the shared instance",
            labels=labels,
        )
        dropped = CounterMetricFamily(
            "flyslice_shared_instance_queue_dropped_messages",
            "Messages the shared instance's full queue dropped (all tenants)",
            labels=labels,
        )
        rate = GaugeMetricFamily(
            "flyslice_shared_instance_queue_drops_per_second",
            "Queue drops per second over the last 10 s",
            labels=labels,
        )
        overloaded = GaugeMetricFamily(
            "flyslice_shared_instance_overloaded",
            "1 while the shared instance's queue drops messages second after second (sustained overload)",
            labels=labels,
        )
        for name, doc in sorted(shared.items()):
            lv = [self.node, name]
            tenants.add_metric(lv, float(len(doc.get("tenants", ()))))
            dropped.add_metric(lv, float(doc.get("queueDropped", 0)))
            rate.add_metric(lv, float(doc.get("queueDropsPerSecond", 0.0)))
            overloaded.add_metric(lv, 1.0 if doc.get("overloaded") else 0.0)
        yield from (tenants, dropped, rate, overloaded)


class TelemetryServer:
    def __init__(
        self,
        listen: str,
        *,
        registry: CollectorRegistry,
        status: Callable[[], dict[str, Any]],
        healthy: Callable[[], tuple[bool, str]],
        deliver: Callable[[Message, float], bool] | None = None,
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, obj: Any) -> None:
                self._send(code, json.dumps(obj, default=str).encode())

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    ok, detail = outer.healthy()
                    self._json(200 if ok else 503, {"healthy": ok, "detail": detail})
                elif path == "/metrics":
                    self._send(
                        200, generate_latest(outer.registry), "text/plain; version=0.0.4; charset=utf-8"
                    )
                elif path == "/status":
                    self._json(200, outer.status())
                else:
                    self._json(404, {"error": f"no such endpoint {path}"})

            def do_POST(self) -> None:
                if self.path.split("?", 1)[0] != "/ingress" or outer.deliver is None:
                    self._json(404, {"error": f"no such endpoint {self.path}"})
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length < 0:
                    self._json(400, {"error": "bad Content-Length"})
                    return
                if length > 8 * 2**20:
                    self._json(413, {"error": "body over 8 MiB"})
                    return
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                    items = body if isinstance(body, list) else [body]
                    msgs = [device_envelope(m) for m in items]
                except (ValueError, EnvelopeError) as exc:
                    self._json(400, {"error": f"bad ingress body: {exc}"})
                    return
                accepted = sum(1 for m in msgs if outer.deliver(m, 0.0))
                dropped = len(msgs) - accepted
                self._json(503 if dropped else 202, {"accepted": accepted, "dropped": dropped})

        self.registry = registry
        self.status = status
        self.healthy = healthy
        self.deliver = deliver
        server = ThreadingHTTPServer(parse_address(listen), Handler)
        server.daemon_threads = True
        self._serving = ServerThread(server, parse_address(listen)[0])
        self.address = self._serving.address

    def close(self) -> None:
        self._serving.close()
