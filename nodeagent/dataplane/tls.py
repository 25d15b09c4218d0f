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
import logging
import os
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

URI_AGENT = "flyslice://agent/"
URI_SLICE = "flyslice://slice/"
#: Leaf certificates are issued afresh whenever an agent or runner starts, and renewed (new key and
#: certificate) at :data:`RENEW_FRACTION` of their lifetime while it runs (rotation: docs/security.md).
LEAF_DAYS = 90
CA_DAYS = 3650
#: Certificates are back-dated by this much, so that a peer whose clock is a little behind accepts them.
BACKDATE = datetime.timedelta(minutes=5)
#: A leaf is renewed once this fraction of its lifetime (from issue, not from the back-dated
#: notBefore) has passed, leaving a third of it to retry a failed renewal.
RENEW_FRACTION = 2 / 3


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


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` at once, so that a reader never sees half of a renewed certificate."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def renewal_due(cert_pem: bytes) -> datetime.datetime:
    """When a leaf should be renewed: :data:`RENEW_FRACTION` of the way from its issue to its notAfter."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    issued = cert.not_valid_before_utc + BACKDATE
    return issued + (cert.not_valid_after_utc - issued) * RENEW_FRACTION


@dataclass(frozen=True)
class TlsFiles:
    """One component's credentials on disk: the CA to trust, its certificate and its key."""

    ca: Path
    cert: Path
    key: Path
    _contexts: dict[str, ssl.SSLContext] = field(default_factory=dict, compare=False, repr=False)
    #: (inode, mtime_ns, size) of cert.pem when the contexts last loaded it; see :meth:`reload_if_changed`.
    _loaded: list[tuple[int, int, int]] = field(default_factory=list, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @classmethod
    def in_dir(cls, d: Path) -> TlsFiles:
        return cls(d / "ca.pem", d / "cert.pem", d / "key.pem")

    def _base(self, purpose: int) -> ssl.SSLContext:
        ctx = ssl.SSLContext(purpose)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(self.ca))
        self._stamp()
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx

    def _stamp(self) -> None:
        st = self.cert.stat()
        self._loaded[:] = [(st.st_ino, st.st_mtime_ns, st.st_size)]

    def server_context(self) -> ssl.SSLContext:
        with self._lock:
            if "server" not in self._contexts:
                self._contexts["server"] = self._base(ssl.PROTOCOL_TLS_SERVER)
            return self._contexts["server"]

    def client_context(self) -> ssl.SSLContext:
        with self._lock:
            if "client" not in self._contexts:
                ctx = self._base(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False  # see the module docstring: the chain is checked, not the name
                self._contexts["client"] = ctx
            return self._contexts["client"]

    def reload(self) -> None:
        """Load cert.pem and key.pem again into the contexts already handed out: connections made
        from now on present the new certificate; established ones keep theirs. The pair is tried on a
        scratch context first, so a mismatched pair (a renewal half written) leaves the old one in use
        and raises."""
        with self._lock:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(self.cert), str(self.key))
            self._stamp()
            for ctx in self._contexts.values():
                ctx.load_cert_chain(str(self.cert), str(self.key))

    def reload_if_changed(self) -> bool:
        """Reload when cert.pem changed on disk since it was loaded (a runner whose agent renewed its
        certificate). True if it reloaded; a failed attempt is retried on the next call."""
        try:
            st = self.cert.stat()
        except OSError:
            return False
        if not self._contexts or self._loaded == [(st.st_ino, st.st_mtime_ns, st.st_size)]:
            return False
        try:
            self.reload()
        except (OSError, ssl.SSLError) as exc:
            log.warning("certificate in %s changed but does not load yet: %s", self.cert.parent, exc)
            return False
        return True

    def not_after(self) -> datetime.datetime:
        return x509.load_pem_x509_certificate(self.cert.read_bytes()).not_valid_after_utc

    def renewal_due(self) -> datetime.datetime:
        return renewal_due(self.cert.read_bytes())


class CertificateAuthority:
    """The installation's data-plane CA: ``ca.pem`` (public) and ``ca.key`` (0600) in one directory."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, directory: Path) -> None:
        self.cert = cert
        self.key = key
        self.directory = directory
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        #: Lifetime of the leaves :meth:`issue` makes (internal: tests shorten it to watch renewal).
        self.leaf_lifetime = datetime.timedelta(days=LEAF_DAYS)

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
        days: int | None = None,
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
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + (self.leaf_lifetime if days is None else datetime.timedelta(days=days)))
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

    def renew(self, directory: Path) -> TlsFiles:
        """A new key and certificate in ``directory`` for the identity its current certificate names."""
        old = x509.load_pem_x509_certificate(TlsFiles.in_dir(directory).cert.read_bytes())
        uris = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = uris.get_values_for_type(x509.UniformResourceIdentifier)
        nodes = [u[len(URI_AGENT) :] for u in names if u.startswith(URI_AGENT)]
        slices = [u[len(URI_SLICE) :] for u in names if u.startswith(URI_SLICE)]
        cns = old.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = str(cns[0].value) if cns else directory.name
        return self.issue_to(directory, common_name, node=nodes[0] if nodes else None, slices=slices)

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
    # Key, then certificate, each replaced at once: a reader that sees the new certificate also sees
    # its key (TlsFiles.reload_if_changed keys on cert.pem).
    _write_private(files.key, key_pem)
    _write_atomic(files.cert, cert_pem)
    _write_atomic(files.ca, ca_pem)
    return files


class Renewer:
    """Renews one component's certificate while it runs: at :func:`renewal_due` of the current
    certificate, ``renew`` writes a new key and certificate into ``files``' directory, and the contexts
    already in use load them (:meth:`TlsFiles.reload`). A failed renewal is retried every
    ``retry_s`` until the old certificate expires."""

    def __init__(self, files: TlsFiles, renew: Callable[[], object], *, retry_s: float = 30.0) -> None:
        self.files = files
        self._renew = renew
        self.retry_s = retry_s
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tls-renew {files.cert.parent}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = (self.files.renewal_due() - datetime.datetime.now(datetime.UTC)).total_seconds()
            except (OSError, ValueError) as exc:
                log.warning("cannot read %s: %s", self.files.cert, exc)
                wait = self.retry_s
            if wait > 0:
                self._stop.wait(wait)
                continue
            try:
                self._renew()
                self.files.reload()
                self.renewals += 1
                log.info("renewed the data-plane certificate in %s", self.files.cert.parent)
            except Exception as exc:  # keep the old certificate; retry
                log.warning("renewing the certificate in %s failed: %s", self.files.cert.parent, exc)
                self._stop.wait(self.retry_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def load_tls_dir(directory: Path) -> TlsFiles:
    """The credentials in ``--tls-dir``, checked now (a bad file is a start failure, not a dead port)."""
    tls = TlsFiles.in_dir(directory)
    for f in (tls.ca, tls.cert, tls.key):
        if not f.is_file():
            raise ValueError(f"{f.name} is missing (give ca.pem, cert.pem and key.pem)")
    try:
        tls.server_context()
        tls.client_context()
    except ssl.SSLError as exc:
        raise ValueError(f"unusable certificate or key: {exc}") from exc
    return tls
