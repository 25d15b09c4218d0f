"""Local endpoints against a browser: the status API, the webhook and the operator's probe port refuse
foreign Host headers (DNS rebinding) and cross-origin reads; the probe port serves only the probes;
a remote caller gets no host paths (issue 12, item 4). Real servers on real sockets."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flyslice.operator.gitops.webhook import WebhookReceiver, sign
from flyslice.operator.local_guard import ALLOWED_HOSTS_ENV, redact_paths
from flyslice.operator.status_api import ProbeServer, StatusServer

DOC = {"stateDir": "/home/alice/.local/state/flyslice", "url": "http://example.org/a/b", "ratio": "3/4"}


async def request(
    port: int,
    path: str,
    headers: dict[str, str],
    *,
    method: str = "GET",
    body: bytes = b"",
    host: str = "127.0.0.1",
) -> tuple[int, str]:
    def call() -> tuple[int, str]:
        conn = http.client.HTTPConnection(host, port, timeout=5)
        # skip_host: the test sets Host itself, as a rebinding browser would.
        conn.putrequest(method, path, skip_host=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        out = (resp.status, resp.read().decode())
        conn.close()
        return out

    return await asyncio.get_running_loop().run_in_executor(None, call)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_status_api_refuses_foreign_hosts_and_cross_origin_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOWED_HOSTS_ENV, "flyslice.internal")

    async def body() -> None:
        server = StatusServer(lambda: DOC, lambda: True)
        await server.start("127.0.0.1:0")
        p = server.port
        try:
            for ok_host in (
                f"127.0.0.1:{p}",
                f"localhost:{p}",
                f"[::1]:{p}",
                "flyslice.internal",
                "10.1.2.3:80",
            ):
                status, _ = await request(p, "/status", {"Host": ok_host})
                assert status == 200, ok_host
            # DNS rebinding: the attacker's name in Host; a missing Host is refused too.
            assert (await request(p, "/status", {"Host": f"evil.example:{p}"}))[0] == 421
            assert (await request(p, "/healthz", {"Host": "localhost.evil.example"}))[0] == 421
            assert (await request(p, "/status", {}))[0] in (400, 421)  # aiohttp itself may refuse first
            # Cross-origin: another site, or another port on this host, cannot read.
            host = {"Host": f"127.0.0.1:{p}"}
            assert (await request(p, "/status", {**host, "Origin": "http://evil.example"}))[0] == 403
            assert (await request(p, "/status", {**host, "Origin": "http://127.0.0.1:3000"}))[0] == 403
            assert (await request(p, "/status", {**host, "Origin": "null"}))[0] == 403
            assert (await request(p, "/status", {**host, "Sec-Fetch-Site": "cross-site"}))[0] == 403
            same = await request(p, "/status", {**host, "Origin": f"http://127.0.0.1:{p}"})
            assert same[0] == 200
            # A loopback caller is on this host: it sees the paths as they are.
            assert json.loads(same[1]) == DOC
        finally:
            await server.stop()

    run(body)


def _non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing address
            ip = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_remote_callers_get_no_host_paths() -> None:
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("no non-loopback IPv4 address on this machine")

    async def body() -> None:
        server = StatusServer(lambda: DOC, lambda: True)
        await server.start(f"{ip}:0")
        try:
            status, text = await request(server.port, "/status", {"Host": f"{ip}:{server.port}"}, host=ip)
            assert status == 200
            doc: dict[str, Any] = json.loads(text)
            assert doc == {"stateDir": "<path>", "url": "http://example.org/a/b", "ratio": "3/4"}
        finally:
            await server.stop()

    run(body)


def test_redaction_keeps_urls_and_replaces_paths_in_nested_values() -> None:
    doc = {
        "a": ["module 'file:/srv/nf/x.py': bad", {"b": "cannot write /var/lib/f/desired.json: full"}],
        "n": 3,
    }
    assert redact_paths(doc) == {
        "a": ["module 'file:<path>': bad", {"b": "cannot write <path>: full"}],
        "n": 3,
    }


def test_probe_port_serves_only_the_probes() -> None:
    async def body() -> None:
        healthy = [True]
        probes = ProbeServer(lambda: healthy[0])
        await probes.start("127.0.0.1:0")
        p, host = probes.port, {"Host": f"127.0.0.1:{probes.port}"}
        try:
            assert await request(p, "/healthz", host) == (200, "ok")
            assert await request(p, "/readyz", host) == (200, "ok")
            healthy[0] = False
            assert (await request(p, "/healthz", host))[0] == 503
            for path in ("/status", "/metrics", "/console/", "/console/state", "/"):
                assert (await request(p, path, host))[0] == 404, path
            assert (await request(p, "/healthz", {"Host": "evil.example"}))[0] == 421
        finally:
            await probes.stop()

    run(body)


def test_webhook_refuses_foreign_hosts_before_anything_else() -> None:
    async def body() -> None:
        pushed: list[str] = []
        hooks = WebhookReceiver()
        hooks.register("src", "s3cret", lambda payload: pushed.append("push") or True)
        port = await hooks.start()
        payload = json.dumps({"ref": "refs/heads/main"}).encode()
        signed = {"X-Hub-Signature-256": sign("s3cret", payload), "X-GitHub-Event": "push"}
        try:
            status, _ = await request(
                port, "/hooks/src", {**signed, "Host": "evil.example"}, method="POST", body=payload
            )
            assert status == 421 and pushed == []
            status, _ = await request(
                port, "/hooks/src", {**signed, "Host": f"127.0.0.1:{port}", "Origin": "http://evil.example"},
                method="POST", body=payload,
            )  # fmt: skip
            assert status == 403 and pushed == []
            status, _ = await request(
                port, "/hooks/src", {**signed, "Host": f"127.0.0.1:{port}"}, method="POST", body=payload
            )
            assert status == 202 and pushed == ["push"]
        finally:
            await hooks.stop()

    run(body)
