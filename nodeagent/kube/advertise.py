"""The address other agents reach this one at, when ``--advertise`` is not given.

An agent that listens on a wildcard (``0.0.0.0:7000``, the default) cannot publish that: peers would
dial themselves. Like the kubelet's node-IP choice, the agent publishes the local address the kernel
uses to reach the API server: on a gateway that is the interface facing the cluster, which is where
the other agents are. When that says nothing (the API server's address is local to this host, e.g. a
k3s server on the same Pi or a relay, or there is no route while offline), the one address of an up,
non-loopback interface is used; with several the agent refuses to guess. An explicit ``--advertise``
always wins (several interfaces, NAT, a DNS name).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import psutil

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


class AdvertiseError(ValueError):
    """No address can be told for this agent: the message says what to give instead."""


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); a clear error for anything else."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise AdvertiseError(f"{address!r} is not host:port")
    return host.strip("[]") if host.startswith("[") else host, int(port)


def route_source_ip(server_url: str) -> str:
    """The local IP the kernel picks to reach ``server_url`` (a URL or host:port). A connected UDP
    socket sends nothing: connect() only chooses the route and the source address."""
    parts = urlsplit(server_url if "//" in server_url else f"//{server_url}")
    if not parts.hostname:
        raise AdvertiseError(f"API server {server_url!r} has no host")
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(sockaddr)
            source = str(probe.getsockname()[0])
    except OSError as exc:
        raise AdvertiseError(f"no route to the API server {parts.hostname}:{port}: {exc}") from exc
    if ipaddress.ip_address(source).is_unspecified:
        raise AdvertiseError(f"no local address routes to the API server {parts.hostname}:{port}")
    return source


def interface_ips(exclude: set[str]) -> list[str]:
    """Addresses of the interfaces that are up and not loopback (no link-local ones), minus ``exclude``."""
    stats = psutil.net_if_stats()
    out = []
    for name, addrs in psutil.net_if_addrs().items():
        st = stats.get(name)
        if st is None or not st.isup or "loopback" in getattr(st, "flags", "").split(","):
            continue
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = ipaddress.ip_address(a.address.split("%")[0])
            if not (ip.is_loopback or ip.is_link_local or str(ip) in exclude):
                out.append(str(ip))
    return sorted(set(out), key=lambda a: (":" in a, a))  # IPv4 first


def node_ip(server_url: str) -> str:
    """The address to publish: the route's source towards the API server, else the host's one
    interface address (see the module docstring)."""
    host = urlsplit(server_url if "//" in server_url else f"//{server_url}").hostname or ""
    try:
        source = route_source_ip(server_url)
        if source != host and not ipaddress.ip_address(source).is_loopback:
            return source
        why = f"the API server {host} is local to this host"
    except AdvertiseError as exc:
        source, why = "", str(exc)
    candidates = interface_ips({host})
    ipv4 = [c for c in candidates if ":" not in c]
    if len(ipv4) == 1 or (not ipv4 and len(candidates) == 1):
        return (ipv4 or candidates)[0]
    if not candidates and source:
        return source  # only loopback here: a one-machine setup, where it is right
    found = ", ".join(candidates) if candidates else "no interface address"
    raise AdvertiseError(f"{why}, and this host has {found} to choose from")


def advertised_address(listen: str, advertise: str | None, server_url: str) -> str:
    """``advertise`` if given, else ``listen`` if it names a host, else the route's source IP with
    the listen port. Raises AdvertiseError naming the option to set."""
    if advertise:
        if split_host_port(advertise)[1] == 0:
            raise AdvertiseError(f"--advertise {advertise}: port 0 cannot be dialled")
        return advertise
    host, port = split_host_port(listen)
    if host not in WILDCARDS:
        return listen
    if port == 0:
        raise AdvertiseError(f"--listen {listen} has no fixed port to publish; give --advertise HOST:PORT")
    try:
        ip = node_ip(server_url)
    except AdvertiseError as exc:
        raise AdvertiseError(
            f"--listen {listen} is a wildcard and {exc}; give --advertise HOST:PORT"
        ) from exc
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
