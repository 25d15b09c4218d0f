"""TCP transport between agents (and between an agent and its VNF runners): newline-delimited
JSON envelopes, one message a line, batched per write.

With ``tls`` (a :class:`~flyslice.nodeagent.dataplane.tls.TlsFiles`) every connection is mutual TLS 1.3
from the installation's CA, and every message must name a slice the peer's certificate allows
(:mod:`tls`); a connection that fails the handshake and a message for another slice are dropped and
counted per reason in :data:`REJECTED` (``flyslice_dataplane_rejected_total``). Without ``tls`` the
transport is plain TCP and authenticates nothing.

The receiving side blocks its reader for up to ``backpressure_s`` when the slice's queue is full,
so a fast upstream is slowed down by TCP flow control before anything is dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flyslice.nodeagent.dataplane.bqueue import BoundedQueue
from flyslice.nodeagent.dataplane.chains import Sender
from flyslice.nodeagent.message import EnvelopeError, Message, check_envelope

if TYPE_CHECKING:  # tls imports cryptography: loaded only where TLS is configured
    from flyslice.nodeagent.dataplane.tls import PeerIdentity, TlsFiles

log = logging.getLogger("flyslice.nodeagent.transport")

_dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode
_loads = json.JSONDecoder().decode
MAX_LINE = 16 * 2**20  # one message may not exceed 16 MiB
#: A liveness probe is the line ``{"$probe": <id>}``; the listener answers ``{"$pong": <id>}`` on the same
#: connection. A process that exists but is frozen (SIGSTOP, a wedged interpreter) accepts the TCP
#: connection in the kernel yet never answers, which is what "the process exists" cannot tell.
PROBE_KEY = "$probe"
PONG_KEY = "$pong"
#: A control request is the line ``{"$control": {...}}``; a listener built with a ``control`` handler
#: answers ``{"$reply": {...}}`` on the same connection (the agent setting a shared VNF pod's tenants;
#: :mod:`flyslice.nodeagent.runtime.tenants`). A listener without one ignores it and counts an error.
CONTROL_KEY = "$control"
REPLY_KEY = "$reply"
#: ``control(request, peer)``: the reply to a control request; ``peer`` is the TLS identity of the
#: connection (None on plain TCP), which the handler must check itself.
ControlHandler = Callable[[dict[str, Any], "PeerIdentity | None"], dict[str, Any]]


#: Why a data-plane connection or message was refused (the ``reason`` label of the metric).
REJECT_REASONS = (
    "plaintext",  # not TLS at all: a plain-TCP client
    "no_certificate",  # TLS without a client certificate
    "untrusted_certificate",  # a certificate not issued by this installation's CA (or expired)
    "handshake",  # any other TLS failure (version, timeout, reset mid-handshake)
    "no_identity",  # a CA-issued certificate that names no agent and no slice
    "slice",  # a message for a slice the sender's certificate does not allow
)


class RejectCounter:
    """Process-wide counts of refused connections and messages, by reason.

    Process-wide because one metric covers every listener of the process (``flyslice up`` runs one
    agent per node in-process); each :class:`TcpIngress` also keeps its own counts.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)

    def add(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.counts[reason] = self.counts.get(reason, 0) + n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


REJECTED = RejectCounter()


def _classify_tls_error(exc: BaseException) -> str:
    import ssl  # only TLS listeners get here; plain agents on gateways never load libssl

    reason = str(getattr(exc, "reason", "") or "")
    if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG"):
        return "plaintext"
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "no_certificate"
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE" in reason:
        return "untrusted_certificate"
    return "handshake"


def _connect(address: str, timeout: float, tls: TlsFiles | None) -> socket.socket:
    sock = socket.create_connection(parse_address(address), timeout=timeout)
    if tls is None:
        return sock
    try:
        return tls.client_context().wrap_socket(sock)
    except BaseException:
        sock.close()
        raise


def parse_address(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address {addr!r} is not host:port")
    return host, int(port)


class ServerThread:
    """A socketserver served from a daemon thread: its bound address and one way to stop it.

    Shared by the data-plane ingress and the telemetry endpoints so both poll for shutdown the same
    way (0.2 s) and both report the port the kernel actually bound (``:0`` in tests).
    """

    def __init__(self, server: socketserver.BaseServer, host: str) -> None:
        self.server = server
        port = server.server_address[1]  # type: ignore[index]
        self.address = f"{host}:{port}"
        self._thread = threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TcpSender(Sender):
    """One connection to one address, fed by a bounded queue; reconnects with backoff."""

    def __init__(
        self,
        address: str | Callable[[], str],
        queue_size: int = 10_000,
        batch: int = 512,
        *,
        tls: TlsFiles | None = None,
    ) -> None:
        self.tls = tls
        # A callable address is re-read on every (re)connect: a VNF runner follows its agent's restarts.
        self._address = address
        self.address = address if isinstance(address, str) else address()
        self.queue: BoundedQueue[Message] = BoundedQueue(queue_size)
        self.batch = batch
        self.sent = 0
        self.accepted = 0
        self.connected = False
        self._unsent: list[Message] = []  # the batch being sent, until sendall succeeded
        self._reconnect = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"send-{self.address}", daemon=True)
        self._thread.start()

    def send_many(self, msgs: list[Message], timeout: float = 0.0) -> int:
        dropped = self.queue.put_many(msgs, timeout)
        self.accepted += len(msgs) - dropped
        return dropped

    def reconnect(self) -> None:
        """Open a new connection before the next batch: e.g. to present a renewed certificate that
        allows more slices (a shared VNF runner that gained a tenant); nothing queued is lost."""
        self._reconnect = True

    def _run(self) -> None:
        sock: socket.socket | None = None
        pending: bytes = b""
        count = 0
        backoff = 0.05
        while not self._stop.is_set():
            if not pending:
                msgs = self.queue.get_batch(self.batch, 0.2)
                if not msgs:
                    continue
                pending = ("\n".join(map(_dumps, msgs)) + "\n").encode()
                count = len(msgs)
                self._unsent = msgs
            if self._reconnect:  # checked after the batch was taken: it goes out on the new connection
                self._reconnect = False
                if sock is not None:
                    sock.close()
                    sock = None
            if sock is None:
                try:
                    if not isinstance(self._address, str):
                        self.address = self._address()
                    sock = _connect(self.address, 2.0, self.tls)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.connected = True
                    backoff = 0.05
                except (OSError, ValueError) as exc:  # ValueError: a malformed address read from a file
                    if self.tls is not None:
                        log.warning("data plane: TLS to %s failed: %s", self.address, exc)
                    self.connected = False
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
            try:
                sock.sendall(pending)
                self.sent += count
                pending = b""
                self._unsent = []
            except OSError:
                # The batch is kept and resent on the next connection (at-least-once over reconnects).
                self.connected = False
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def idle(self) -> bool:
        """Everything accepted so far has been handed to the kernel."""
        return self.sent >= self.accepted

    def close(self) -> list[Message]:
        """Stop; returns the messages not handed to the kernel yet (the caller may re-route them)."""
        self._stop.set()
        self.queue.wake()
        self._thread.join(2.0)
        rest = list(self._unsent)
        while len(self.queue):
            rest.extend(self.queue.get_batch(1 << 16, 0))
        return rest


class _Handler(socketserver.BaseRequestHandler):
    server: _Server
    #: TLS: how long a peer may take to complete the handshake (a silent socket must not pin a thread).
    HANDSHAKE_TIMEOUT_S = 5.0

    def setup(self) -> None:
        self.connection: socket.socket = self.request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer: PeerIdentity | None = None
        self.refused = False
        tls = self.server.ingress.tls
        if tls is None:
            return
        # The handshake runs here, in the connection's own thread, not in the accept loop: a slow or
        # hostile client delays only itself.
        from flyslice.nodeagent.dataplane.tls import identity_from_peercert

        self.connection.settimeout(self.HANDSHAKE_TIMEOUT_S)
        try:
            conn = tls.server_context().wrap_socket(self.connection, server_side=True)
        except (OSError, ValueError) as exc:  # SSLError is an OSError
            self._refuse(_classify_tls_error(exc), f"TLS handshake failed: {exc}")
            return
        conn.settimeout(None)
        self.connection = conn
        self.peer = identity_from_peercert(conn.getpeercert())
        if self.peer is None:
            self._refuse("no_identity", "certificate names no flyslice agent or slice")

    def _refuse(self, reason: str, why: str) -> None:
        self.refused = True
        self.server.ingress.reject(reason, f"{self.client_address[0]}: {why}; connection closed")

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.close()

    def handle(self) -> None:
        if self.refused:
            return
        ingress = self.server.ingress
        sock = self.connection
        peer = self.peer
        pending = b""
        while True:
            try:
                chunk = sock.recv(1 << 18)
            except OSError:
                return
            if not chunk:
                return
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()  # an incomplete last line waits for the next chunk
            if len(pending) > MAX_LINE:
                ingress.errors += 1
                ingress.last_error = (
                    f"{self.client_address[0]}: line over {MAX_LINE} bytes; connection closed"
                )
                return
            msgs = []
            loads = _loads
            for line in lines:
                if not line.strip():
                    continue
                obj = None
                try:
                    # str parses faster than bytes; invalid UTF-8 is a ValueError like bad JSON
                    obj = loads(line.decode())
                    msg = check_envelope(obj)
                    if peer is not None and not peer.allows(msg["slice"]):
                        # Bound to its slice: a component of slice B cannot inject into slice A.
                        ingress.reject(
                            "slice", f"{peer.name} may not send for slice {msg['slice']!r}; message dropped"
                        )
                        continue
                    msgs.append(msg)
                except (ValueError, EnvelopeError) as exc:
                    # A probe is not an envelope, so it costs the message path nothing: it is
                    # recognised only here, after check_envelope refused it.
                    if type(obj) is dict and PROBE_KEY in obj:
                        self._answer_probe(obj[PROBE_KEY])  # a gone prober ends the next recv
                        continue
                    if type(obj) is dict and type(obj.get(CONTROL_KEY)) is dict and ingress.control:
                        try:
                            reply = ingress.control(obj[CONTROL_KEY], peer)
                        except Exception as ctl_exc:  # a bad request never ends the listener
                            reply = {"error": f"control request failed: {ctl_exc}"}
                        self._answer(REPLY_KEY, reply)
                        continue
                    ingress.errors += 1
                    ingress.last_error = f"{self.client_address[0]}: {exc}"
            if msgs:
                ingress.received += len(msgs)
                # One lock round per batch, not per message; a full queue blocks this reader
                # (backpressure to the sender through TCP) for up to backpressure_s.
                ingress.deliver_many(msgs, ingress.backpressure_s)

    def _answer_probe(self, probe_id: object) -> None:
        """Echo a liveness probe on the connection it came on."""
        self._answer(PONG_KEY, probe_id)

    def _answer(self, key: str, value: object) -> None:
        with contextlib.suppress(OSError):
            self.connection.sendall(_dumps({key: value}).encode() + b"\n")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    ingress: TcpIngress


class TcpIngress:
    """Listens on host:port (port 0 = any free port; read ``address`` after start)."""

    def __init__(
        self,
        listen: str,
        deliver_many: Callable[[list[Message], float], int],
        backpressure_s: float = 1.0,
        *,
        tls: TlsFiles | None = None,
        control: ControlHandler | None = None,
    ) -> None:
        host, port = parse_address(listen)
        self.deliver_many = deliver_many
        self.control = control
        self.backpressure_s = backpressure_s
        self.tls = tls
        self.received = 0
        self.errors = 0
        self.last_error = ""
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        if tls is not None:  # fail here, at start, on unreadable credentials -- not per connection
            tls.server_context()
        server = _Server((host, port), _Handler)
        server.ingress = self
        self._serving = ServerThread(server, host)
        self.address = self._serving.address

    def reject(self, reason: str, why: str) -> None:
        """Count a refused connection or message (here and process-wide) and remember why."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        REJECTED.add(reason)
        self.last_error = why
        log.warning("data plane: %s", why)

    def close(self) -> None:
        self._serving.close()


def probe(address: str, timeout: float = 1.0, *, tls: TlsFiles | None = None) -> bool:
    """True when the data-plane listener at ``address`` answers a liveness probe within ``timeout``."""
    probe_id = time.monotonic_ns()
    deadline = time.monotonic() + timeout
    try:
        with _connect(address, timeout, tls) as s:
            s.sendall(_dumps({PROBE_KEY: probe_id}).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                s.settimeout(left)
                chunk = s.recv(256)
                if not chunk or len(reply) > 256:
                    return False
                reply += chunk
        answer = _loads(reply.decode())
    except (OSError, ValueError):
        return False
    return isinstance(answer, dict) and answer.get(PONG_KEY) == probe_id


def control_request(
    address: str, request: dict[str, Any], timeout: float = 5.0, *, tls: TlsFiles | None = None
) -> dict[str, Any]:
    """Send one control request to the listener at ``address`` and return its reply; OSError (or
    ValueError for a malformed reply) when there is none within ``timeout``."""
    deadline = time.monotonic() + timeout
    with _connect(address, timeout, tls) as s:
        s.sendall(_dumps({CONTROL_KEY: request}).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{address}: no reply to a control request within {timeout:g}s")
            s.settimeout(left)
            chunk = s.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"{address}: connection closed before the control reply")
            reply += chunk
            if len(reply) > MAX_LINE:
                raise ValueError(f"{address}: control reply over {MAX_LINE} bytes")
    answer = _loads(reply.decode())
    if not isinstance(answer, dict) or not isinstance(answer.get(REPLY_KEY), dict):
        raise ValueError(f"{address}: not a control reply: {reply[:120]!r}")
    result: dict[str, Any] = answer[REPLY_KEY]
    return result


def send_lines(
    address: str, msgs: list[Message], timeout: float = 5.0, *, tls: TlsFiles | None = None
) -> None:
    """Blocking one-shot send (CLI tools, tests)."""
    with _connect(address, timeout, tls) as s:
        s.sendall(b"".join(_dumps(m).encode() + b"\n" for m in msgs))
        time.sleep(0)
