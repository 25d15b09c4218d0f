"""The address a cluster agent publishes when ``--advertise`` is not given (nodeagent/kube/advertise.py).

Checked in real network namespaces made here (veth pairs, local addresses, routes), the way a gateway
sees its network: the choice is the kernel's, not a parsed configuration file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flyslice.nodeagent.kube.advertise import AdvertiseError, advertised_address, split_host_port

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and iproute2"
)


def test_an_explicit_advertise_or_a_named_listen_host_is_kept() -> None:
    assert advertised_address("0.0.0.0:7000", "gw-1.lab:7000", "https://10.0.0.1") == "gw-1.lab:7000"
    assert advertised_address("192.0.2.9:7000", None, "https://10.0.0.1") == "192.0.2.9:7000"


@pytest.mark.parametrize(
    ("listen", "advertise", "needle"),
    [
        ("0.0.0.0:7000", "gw-1", "'gw-1' is not host:port"),
        ("0.0.0.0:7000", "gw-1:99999", "'gw-1:99999' is not host:port"),
        ("0.0.0.0:0", None, "--listen 0.0.0.0:0 has no fixed port"),
        ("0.0.0.0:7000", "gw-1:0", "--advertise gw-1:0: port 0 cannot be dialled"),
        ("7000", None, "'7000' is not host:port"),
    ],
)
def test_bad_addresses_are_refused_by_name(listen: str, advertise: str | None, needle: str) -> None:
    with pytest.raises(AdvertiseError, match=needle.replace("[", r"\[")):
        advertised_address(listen, advertise, "https://10.0.0.1")


def test_ipv6_hosts_are_bracketed() -> None:
    assert split_host_port("[fd00::2]:7000") == ("fd00::2", 7000)


class Netns:
    """A network namespace with a veth pair to the root namespace; removed on close."""

    def __init__(self) -> None:
        self.name = f"fsadv-{uuid.uuid4().hex[:6]}"
        self.host_if = f"fa{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True)

    def veth(self, inner: str, address: str, host_address: str) -> None:
        subprocess.run(
            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", inner, "netns", self.name],
            check=True,
        )
        subprocess.run(["ip", "addr", "add", host_address, "dev", self.host_if], check=True)
        subprocess.run(["ip", "link", "set", self.host_if, "up"], check=True)
        self.ip("addr", "add", address, "dev", inner)
        self.ip("link", "set", inner, "up")

    def advertised(self, listen: str, server: str) -> subprocess.CompletedProcess[str]:
        """advertised_address() evaluated by a Python process inside the namespace."""
        code = (
            "import sys\nfrom flyslice.nodeagent.kube.advertise import advertised_address, AdvertiseError\n"
            f"try:\n    print(advertised_address({listen!r}, None, {server!r}))\n"
            "except AdvertiseError as e:\n    print(e, file=sys.stderr); sys.exit(1)\n"
        )
        cmd = ["ip", "netns", "exec", self.name, sys.executable, "-c", code]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)


@pytest.fixture
def netns() -> Iterator[Netns]:
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()


def _subnet() -> tuple[str, str]:
    """A /24 of 10.0.0.0/8 unlikely to collide with the test clusters' (pid-derived)."""
    third = 100 + os.getpid() % 100
    return f"10.231.{third}.2", f"10.231.{third}.1"


def _second_interface(netns: Netns) -> None:
    netns.ip("link", "add", "wlan0", "type", "veth", "peer", "name", "wlan0-peer")
    netns.ip("addr", "add", "198.51.100.7/24", "dev", "wlan0")
    netns.ip("link", "set", "wlan0", "up")
    netns.ip("link", "set", "wlan0-peer", "up")


@needs_netns
def test_the_address_facing_the_api_server_is_published(netns: Netns) -> None:
    mine, server = _subnet()
    netns.veth("eth0", f"{mine}/24", f"{server}/24")
    _second_interface(netns)  # which makes the interface fallback ambiguous: the route must decide
    result = netns.advertised("0.0.0.0:7000", f"https://{server}:6443")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{mine}:7000"  # the route's source, not 198.51.100.7


@needs_netns
def test_a_local_api_address_falls_back_to_the_one_interface_address(netns: Netns) -> None:
    """The test cluster's gateways (and a k3s server on the same Pi): the API server's address is local,
    so the route says nothing; the one non-loopback address is the one peers can reach."""
    mine, server = _subnet()
    netns.veth("eth0", f"{mine}/24", f"{server}/24")
    netns.ip("addr", "add", "10.0.0.1/32", "dev", "lo")  # a ClusterIP relay, as tools/kubeenv makes it
    result = netns.advertised("0.0.0.0:7000", "https://10.0.0.1:443")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{mine}:7000"


@needs_netns
def test_offline_with_no_route_it_still_tells_its_address(netns: Netns) -> None:
    """A gateway restarted while the API server is out of reach keeps serving: no route is needed."""
    mine, server = _subnet()
    netns.veth("eth0", f"{mine}/24", f"{server}/24")
    result = netns.advertised("0.0.0.0:7000", "https://203.0.113.50:6443")  # no route to it here
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{mine}:7000"


@needs_netns
def test_it_refuses_to_guess_between_interfaces(netns: Netns) -> None:
    mine, server = _subnet()
    netns.veth("eth0", f"{mine}/24", f"{server}/24")
    _second_interface(netns)
    result = netns.advertised("0.0.0.0:7000", "https://203.0.113.50:6443")
    assert result.returncode == 1
    assert "no route to the API server 203.0.113.50:6443" in result.stderr
    assert f"{mine}, 198.51.100.7" in result.stderr and "give --advertise HOST:PORT" in result.stderr


def test_the_agent_does_not_start_without_an_address_to_publish(tmp_path: Path) -> None:
    """``flyslice agent --kube`` exits 1 with one line naming the node and the option, before it
    serves anything (no API server is needed to get there)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    cmd = [sys.executable, "-m", "flyslice.nodeagent", "--kube", "--node", "gw-9", "--state-dir",
           str(tmp_path / "state"), "--kubeconfig", str(kubeconfig), "--insecure-plaintext",
           "--listen", "0.0.0.0:0"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stderr
    assert "the data-plane address of node gw-9: --listen 0.0.0.0:0 has no fixed port" in result.stderr
