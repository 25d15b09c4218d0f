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
import tempfile
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


def check_credentials(ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> x509.Certificate:
    """The leaf of ``cert_pem`` when the three make a usable set, else ValueError naming the file.

    Usable: ``ca.pem`` holds a certificate, ``key.pem`` is the private key of the leaf (the first
    certificate of ``cert.pem``) and the leaf has not expired. A pair caught half-written -- a new
    certificate next to the old key -- fails here and is never loaded. Whether the leaf chains to a CA
    the peers trust is theirs to check (at the handshake), not this side's.
    """
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError as exc:
        raise ValueError(f"ca.pem: no certificate ({exc})") from None
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise ValueError(f"cert.pem: no certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"key.pem: no usable private key ({exc})") from None
    leaf = chain[0]
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise ValueError("key.pem is not the key of cert.pem (a pair replaced half-way?)")
    if leaf.not_valid_after_utc <= datetime.datetime.now(datetime.UTC):
        raise ValueError(f"cert.pem expired at {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
    return leaf


Stamp = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class TlsFiles:
    """One component's credentials on disk: the CA to trust, its certificate and its key.

    The SSL contexts are built from one consistent snapshot of the three files and handed out per
    connection (:meth:`server_context`, :meth:`client_context`); :meth:`reload` builds new ones and
    swaps them in at once, so connections made afterwards present the new certificate (and trust the
    new ``ca.pem``) while established ones keep theirs.
    """

    ca: Path
    cert: Path
    key: Path
    _contexts: dict[str, ssl.SSLContext] = field(default_factory=dict, compare=False, repr=False)
    #: "stamp": (inode, mtime_ns, size) of ca, cert and key when last loaded; "failed": the stamp of
    #: files that did not load (not retried until they change again); "leaf": the loaded certificate.
    _state: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @classmethod
    def in_dir(cls, d: Path) -> TlsFiles:
        return cls(d / "ca.pem", d / "cert.pem", d / "key.pem")

    def _stamp(self) -> Stamp:
        # stat follows symlinks: a kubelet Secret volume swaps its ..data link, and each file's target
        # (a new inode) changes with it.
        return tuple(
            (st.st_ino, st.st_mtime_ns, st.st_size)
            for st in (p.stat() for p in (self.ca, self.cert, self.key))
        )

    def _load(self) -> None:
        """Build both contexts from one snapshot of the files and swap them in; raises (keeping the
        contexts in use) when the files are unreadable, changing under us or inconsistent."""
        before = self._stamp()
        ca_pem, cert_pem, key_pem = self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()
        if self._stamp() != before:
            raise ValueError("the files changed while being read")
        try:
            leaf = check_credentials(ca_pem, cert_pem, key_pem)
            contexts = _contexts_from(ca_pem, cert_pem, key_pem)
        except (ValueError, ssl.SSLError):
            self._state["failed"] = before
            raise
        self._contexts.update(contexts)
        self._state.update(stamp=before, leaf=leaf, failed=None)

    def server_context(self) -> ssl.SSLContext:
        with self._lock:
            if not self._contexts:
                self._load()
            return self._contexts["server"]

    def client_context(self) -> ssl.SSLContext:
        with self._lock:
            if not self._contexts:
                self._load()
            return self._contexts["client"]

    def reload(self) -> None:
        """Load the files again: connections made from now on present the new certificate;
        established ones keep theirs. A set that is not consistent (:func:`check_credentials`: a
        renewal half written, a key that is not the certificate's) leaves the old one in use and raises."""
        with self._lock:
            self._load()

    def changed(self) -> bool:
        """True when the files differ from those loaded and from the last set that failed to load."""
        try:
            stamp = self._stamp()
        except OSError:
            return False  # a file missing for a moment (being replaced): wait for the next look
        return bool(self._contexts) and stamp not in (self._state.get("stamp"), self._state.get("failed"))

    def reload_if_changed(self) -> bool:
        """Reload when ca.pem, cert.pem or key.pem changed on disk since they were loaded (a runner
        whose agent renewed its certificate; a ``--tls-dir`` whose files were replaced). True if it
        reloaded; a set that does not load is logged once and ignored until the files change again."""
        if not self.changed():
            return False
        try:
            self.reload()
        except (OSError, ValueError, ssl.SSLError) as exc:
            log.warning(
                "credentials in %s changed but are not loaded (the old ones stay): %s", self.cert.parent, exc
            )
            return False
        return True

    def loaded(self) -> x509.Certificate | None:
        """The certificate new connections present (None before the first load)."""
        leaf: x509.Certificate | None = self._state.get("leaf")
        return leaf

    def not_after(self) -> datetime.datetime:
        leaf = self.loaded()
        if leaf is not None:
            return leaf.not_valid_after_utc
        return x509.load_pem_x509_certificate(self.cert.read_bytes()).not_valid_after_utc

    def renewal_due(self) -> datetime.datetime:
        leaf = self.loaded()
        if leaf is not None:
            return renewal_due(leaf.public_bytes(serialization.Encoding.PEM))
        return renewal_due(self.cert.read_bytes())


def _contexts_from(ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> dict[str, ssl.SSLContext]:
    """Server and client contexts (TLS 1.3, peer certificate required) from credentials in memory.

    ``load_cert_chain`` reads only files: the checked bytes go through a private temporary directory
    (the credentials' own directory may be a read-only Secret volume), never the paths again.
    """
    contexts: dict[str, ssl.SSLContext] = {}
    with tempfile.TemporaryDirectory(prefix="flyslice-tls-") as tmp:  # mode 0700
        cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_file.write_bytes(cert_pem)
        _write_private(key_file, key_pem)
        for purpose, name in ((ssl.PROTOCOL_TLS_SERVER, "server"), (ssl.PROTOCOL_TLS_CLIENT, "client")):
            ctx = ssl.SSLContext(purpose)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=ca_pem.decode("ascii", "replace"))
            ctx.load_cert_chain(str(cert_file), str(key_file))
            if name == "client":
                ctx.check_hostname = False  # see the module docstring: the chain is checked, not the name
            contexts[name] = ctx
    return contexts


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
        lifetime: datetime.timedelta | None = None,
    ) -> bytes:
        """A leaf certificate (PEM) for ``public_key`` naming an agent (``node``) or ``slices``, valid
        for ``lifetime`` (else ``days``, else :attr:`leaf_lifetime`) from now."""
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
            .not_valid_after(
                now + (lifetime or (self.leaf_lifetime if days is None else datetime.timedelta(days=days)))
            )
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
    # Each file replaced at once; a reader that looks between two of them sees a key that is not the
    # certificate's, which TlsFiles refuses to load (check_credentials) until the set is whole.
    _write_private(files.key, key_pem)
    _write_atomic(files.cert, cert_pem)
    _write_atomic(files.ca, ca_pem)
    return files


class Renewer:
    """Renews one component's certificate while it runs: at :func:`renewal_due` of the certificate in
    use, ``renew`` writes a new key and certificate into ``files``' directory (for a cluster agent: a
    CSR, then the signer's answer), and the contexts load them (:meth:`TlsFiles.reload`). A failed
    renewal keeps the old certificate and is retried after ``retry_s``, doubling up to
    ``max_retry_s`` (a signer that is down is not hammered), until the old certificate expires and on.

    :meth:`status` and :meth:`gauges` say how it goes (the agent's heartbeat and ``/metrics``).
    """

    #: Longest single sleep: a suspended host or a clock step is noticed within this time.
    MAX_SLEEP_S = 3600.0

    def __init__(
        self,
        files: TlsFiles,
        renew: Callable[[], object] | None,
        *,
        retry_s: float = 30.0,
        max_retry_s: float = 600.0,
        start: bool = True,
    ) -> None:
        self.files = files
        self._renew = renew
        self.retry_s = retry_s
        self.max_retry_s = max(max_retry_s, retry_s)
        self.renewals = 0
        self.failures = 0
        #: Why the last attempt failed ('' once one succeeds).
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tls-renew {files.cert.parent}", daemon=True)
        if start:
            self._thread.start()

    def _run(self) -> None:
        backoff = self.retry_s
        while not self._stop.is_set():
            try:
                wait = (self.files.renewal_due() - datetime.datetime.now(datetime.UTC)).total_seconds()
            except (OSError, ValueError) as exc:
                log.warning("cannot read %s: %s", self.files.cert, exc)
                wait = backoff
            if wait > 0:
                self._stop.wait(min(wait, self.MAX_SLEEP_S))
                continue
            if self.attempt():
                backoff = self.retry_s
            else:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_retry_s)

    def attempt(self) -> bool:
        """One renewal now; True when the new certificate is in use."""
        assert self._renew is not None
        try:
            self._renew()
            self.files.reload()
        except Exception as exc:  # any failure (signer down, denied, bad answer): keep the old one
            self._failed(f"renewing the certificate in {self.files.cert.parent} failed: {exc}")
            return False
        self._renewed("renewed the data-plane certificate")
        return True

    def _failed(self, why: str) -> None:
        self.failures += 1
        self.last_error = why
        log.warning("%s (the current certificate stays in use until %s)", why, _iso(self.files.not_after()))

    def _renewed(self, how: str) -> None:
        self.renewals += 1
        self.last_error = ""
        leaf = self.files.loaded()
        log.info(
            "%s in %s: serial %x, valid until %s", how, self.files.cert.parent,
            leaf.serial_number if leaf else 0, _iso(self.files.not_after()),
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        """The certificate in use and how renewal goes. ``state``: ``Valid``, ``RenewalFailing`` (the
        last attempt failed; the current certificate is still valid) or ``Expired``."""
        leaf = self.files.loaded()
        not_after = self.files.not_after()
        expired = not_after <= datetime.datetime.now(datetime.UTC)
        return {
            "state": "Expired" if expired else ("RenewalFailing" if self.last_error else "Valid"),
            "serial": f"{leaf.serial_number:x}" if leaf else "",
            "notAfter": _iso(not_after),
            "renewals": self.renewals,
            "failures": self.failures,
            "lastError": self.last_error,
        }

    def gauges(self) -> dict[str, float]:
        """For ``/metrics`` (``flyslice_agent_<key>``)."""
        return {
            "dataplane_cert_not_after_timestamp_seconds": self.files.not_after().timestamp(),
            "dataplane_cert_renewals": float(self.renewals),
            "dataplane_cert_renewal_failures": float(self.failures),
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class TlsDirWatcher(Renewer):
    """Keeps a ``--tls-dir`` agent on the files someone else renews (cert-manager, a Secret mount, an
    operator's script): every ``interval_s`` it looks at ca.pem, cert.pem and key.pem (inode, mtime,
    size) and reloads them when they changed -- only as a consistent set (:func:`check_credentials`);
    a half-written or mismatched set counts as a failure and is ignored until the files change again."""

    def __init__(self, files: TlsFiles, *, interval_s: float = 1.0, start: bool = True) -> None:
        self.interval_s = interval_s
        super().__init__(files, None, retry_s=interval_s, start=start)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.attempt()

    def attempt(self) -> bool:
        if not self.files.changed():
            return False
        try:
            self.files.reload()
        except (OSError, ValueError, ssl.SSLError) as exc:
            self._failed(f"the files in {self.files.cert.parent} changed but are not loaded: {exc}")
            return False
        self._renewed("loaded the replaced data-plane certificate")
        return True


def _iso(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


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
