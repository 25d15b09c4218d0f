"""TCP transport between agents (and between an agent and its VNF runners): newline-delimited
JSON envelopes, one message a line, batched per write.

The receiving side blocks its reader for up to ``backpressure_s`` when the slice's queue is full,
so a fast upstream is slowed down by TCP flow control before anything is dropped.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable

from flyslice.nodeagent.dataplane.bqueue import BoundedQueue
from flyslice.nodeagent.dataplane.chains import Sender
from flyslice.nodeagent.message import EnvelopeError, Message, check_envelope

log = logging.getLogger("flyslice.nodeagent.transport")

_dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode
_loads = json.JSONDecoder().decode
MAX_LINE = 16 * 2**20  # one message may not exceed 16 MiB


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

    def __init__(self, address: str | Callable[[], str], queue_size: int = 10_000, batch: int = 512) -> None:
        # A callable address is re-read on every (re)connect: a VNF runner follows its agent's restarts.
        self._address = address
        self.address = address if isinstance(address, str) else address()
        self.queue: BoundedQueue[Message] = BoundedQueue(queue_size)
        self.batch = batch
        self.sent = 0
        self.accepted = 0
        self.connected = False
        self._unsent: list[Message] = []  # the batch being sent, until sendall succeeded
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"send-{self.address}", daemon=True)
        self._thread.start()

    def send_many(self, msgs: list[Message], timeout: float = 0.0) -> int:
        dropped = self.queue.put_many(msgs, timeout)
        self.accepted += len(msgs) - dropped
        return dropped

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
            if sock is None:
                try:
                    if not isinstance(self._address, str):
                        self.address = self._address()
                    sock = socket.create_connection(parse_address(self.address), timeout=2.0)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.connected = True
                    backoff = 0.05
                except (OSError, ValueError):  # ValueError: a malformed address read from a file
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


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        ingress = self.server.ingress
        sock = self.connection
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
                try:
                    # str parses faster than bytes; invalid UTF-8 is a ValueError like bad JSON
                    msgs.append(check_envelope(loads(line.decode())))
                except (ValueError, EnvelopeError) as exc:
                    ingress.errors += 1
                    ingress.last_error = f"{self.client_address[0]}: {exc}"
            if msgs:
                ingress.received += len(msgs)
                # One lock round per batch, not per message; a full queue blocks this reader
                # (backpressure to the sender through TCP) for up to backpressure_s.
                ingress.deliver_many(msgs, ingress.backpressure_s)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    ingress: TcpIngress


class TcpIngress:
    """Listens on host:port (port 0 = any free port; read ``address`` after start)."""

    def __init__(
        self, listen: str, deliver_many: Callable[[list[Message], float], int], backpressure_s: float = 1.0
    ) -> None:
        host, port = parse_address(listen)
        self.deliver_many = deliver_many
        self.backpressure_s = backpressure_s
        self.received = 0
        self.errors = 0
        self.last_error = ""
        server = _Server((host, port), _Handler)
        server.ingress = self
        self._serving = ServerThread(server, host)
        self.address = self._serving.address

    def close(self) -> None:
        self._serving.close()


def send_lines(address: str, msgs: list[Message], timeout: float = 5.0) -> None:
    """Blocking one-shot send (CLI tools, tests)."""
    host, port = parse_address(address)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"".join(_dumps(m).encode() + b"\n" for m in msgs))
        time.sleep(0)
