"""Mutual TLS for the data plane: a per-installation CA, certificates that say which slices a peer may
send for, and the SSL contexts :mod:`transport` uses.

Identity is carried in the certificate's subjectAltName as URIs:

- ``flyslice://agent/<node>`` -- a node agent. Agents forward for every slice placed on their node, so
  an agent certificate may send for any slice.
- ``flyslice://slice/<slice>`` -- a component of one slice (a VNF runner). It may send only messages
  whose ``slice`` field names that slice; anything else it sends is dropped and counted.

A certificate with neither is refused at the handshake. Both sides verify the other's chain against
the installation's CA (TLS 1.3 only). The client does not check the server's name: addresses are
loopback or node IPs the agents learn from each other, so the server is authenticated as *some*
component of this installation, not as the one at that address (see docs/security.md).
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

URI_AGENT = "flyslice://agent/"
URI_SLICE = "flyslice://slice/"
#: Leaf certificates are issued afresh whenever an agent or runner starts; this bounds how long a
#: leaked leaf key stays useful without a restart (rotation: docs/security.md).
LEAF_DAYS = 90
CA_DAYS = 3650


@dataclass(frozen=True)
class PeerIdentity:
    """Who is on the other end of an authenticated connection, and what it may send."""

    name: str
    #: None: any slice (an agent); else exactly these slices.
    slices: frozenset[str] | None

    def allows(self, slice_: str) -> bool:
        return self.slices is None or slice_ in self.slices


def identity_from_peercert(cert: Mapping[str, Any] | None) -> PeerIdentity | None:
    """The flyslice identity in a verified peer certificate (``SSLSocket.getpeercert()``); None without one."""
    if not cert:
        return None
    sans = cert.get("subjectAltName") or ()
    uris = [str(v) for k, v in sans if k == "URI"]
    agents = [u[len(URI_AGENT) :] for u in uris if u.startswith(URI_AGENT)]
    slices = frozenset(u[len(URI_SLICE) :] for u in uris if u.startswith(URI_SLICE))
    if agents:
        return PeerIdentity(f"agent/{agents[0]}", None)
    if slices:
        return PeerIdentity("slice/" + ",".join(sorted(slices)), slices)
    return None


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable only by its owner, replacing any previous one atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class TlsFiles:
    """One component's credentials on disk: the CA to trust, its certificate and its key."""

    ca: Path
    cert: Path
    key: Path
    _contexts: dict[str, ssl.SSLContext] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def in_dir(cls, d: Path) -> TlsFiles:
        return cls(d / "ca.pem", d / "cert.pem", d / "key.pem")

    def _base(self, purpose: int) -> ssl.SSLContext:
        ctx = ssl.SSLContext(purpose)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx

    def server_context(self) -> ssl.SSLContext:
        if "server" not in self._contexts:
            self._contexts["server"] = self._base(ssl.PROTOCOL_TLS_SERVER)
        return self._contexts["server"]

    def client_context(self) -> ssl.SSLContext:
        if "client" not in self._contexts:
            ctx = self._base(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False  # see the module docstring: the chain is checked, not the name
            self._contexts["client"] = ctx
        return self._contexts["client"]


class CertificateAuthority:
    """The installation's data-plane CA: ``ca.pem`` (public) and ``ca.key`` (0600) in one directory."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, directory: Path) -> None:
        self.cert = cert
        self.key = key
        self.directory = directory
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @classmethod
    def load_or_create(cls, directory: Path, name: str = "flyslice data plane CA") -> CertificateAuthority:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_path, key_path = directory / "ca.pem", directory / "ca.key"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path}: not an EC private key")
            return cls(cert, key, directory)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(key, hashes.SHA256())
        )
        # Key first: a directory with ca.pem but no ca.key would be re-created on the next start.
        _write_private(key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))  # fmt: skip
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key, directory)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes, directory: Path = Path(".")) -> CertificateAuthority:
        """A CA held elsewhere than in files (cluster mode: the operator's Secret)."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the data-plane CA key is not an EC private key")
        return cls(cert, key, directory)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def sign(
        self,
        public_key: Any,
        common_name: str,
        *,
        node: str | None = None,
        slices: Iterable[str] = (),
        days: int = LEAF_DAYS,
    ) -> bytes:
        """A leaf certificate (PEM) for ``public_key`` naming an agent (``node``) or ``slices``."""
        uris = [x509.UniformResourceIdentifier(URI_AGENT + node)] if node else []
        uris += [x509.UniformResourceIdentifier(URI_SLICE + s) for s in sorted(set(slices))]
        if not uris:
            raise ValueError("a data-plane certificate needs a node or at least one slice")
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(uris), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, common_name: str, *, node: str | None = None, slices: Iterable[str] = ()
    ) -> tuple[bytes, bytes]:
        """A leaf certificate and key (PEM) for an agent (``node``) or a component of ``slices``."""
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return self.sign(key.public_key(), common_name, node=node, slices=slices), key_pem

    def issue_to(
        self, directory: Path, common_name: str, *, node: str | None = None, slices: Iterable[str] = ()
    ) -> TlsFiles:
        """Issue a leaf into ``directory`` (ca.pem, cert.pem, key.pem 0600) and return its files."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_pem, key_pem = self.issue(common_name, node=node, slices=slices)
        return write_tls_dir(directory, self.cert_pem, cert_pem, key_pem)


def write_tls_dir(directory: Path, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> TlsFiles:
    """``ca.pem``, ``cert.pem`` and ``key.pem`` (0600) in ``directory`` (0700), as ``--tls-dir`` reads them."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = TlsFiles.in_dir(directory)
    _write_private(files.key, key_pem)
    files.cert.write_bytes(cert_pem)
    files.ca.write_bytes(ca_pem)
    return files
