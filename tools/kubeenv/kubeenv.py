"""A real Kubernetes control plane on loopback for tests and benchmarks.

``KubeEnv`` starts etcd and kube-apiserver (and, when built, a kube-controller-manager running
only the garbage collector, namespace and service-account controllers) on random free loopback
ports in a temporary directory, with RBAC authorization, service-account token signing keys and
a client-certificate CA, writes an admin kubeconfig, waits for ``/readyz`` and tears everything
down in bounded time. No kubelet or container runtime exists here: Pod objects are stored but
never run.

The binaries come from ``tools/kubeenv/build.sh`` (built from Go modules, cached under
``${FLYSLICE_CACHE:-~/.cache/flyslice}/kube-v<version>/bin``)::

    from kubeenv import KubeEnv  # tools/kubeenv on sys.path
    with KubeEnv() as env:
        env.kubectl("apply", "-f", "crds/")
        agent_a = env.user_kubeconfig("system:flyslice-agent:gw-1", groups=["system:flyslice-agents"])
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

K8S_VERSION = os.environ.get("FLYSLICE_K8S_VERSION", "1.35.4")
ETCD_VERSION = os.environ.get("FLYSLICE_ETCD_VERSION", "3.6.16")
BUILD_SCRIPT = Path(__file__).resolve().parent / "build.sh"
ADMIN_USER = "flyslice-test-admin"
SERVICE_CIDR = "10.0.0.0/24"  # required by the API server; nothing routes to it but nodes.py's relay
#: The ``kubernetes`` Service's ClusterIP (the range's first address, as the API server assigns it):
#: in the serving certificate, because in-cluster clients dial it (KUBERNETES_SERVICE_HOST).
SERVICE_IP = str(ipaddress.ip_network(SERVICE_CIDR).network_address + 1)
#: What kube-controller-manager runs by default: only what objects need without kubelets.
CONTROLLERS = ("garbagecollector", "namespace", "serviceaccount", "serviceaccount-token", "csrsigning")


class KubeEnvUnavailable(RuntimeError):
    """The binaries are not built; the message says how to build them."""


class KubeEnvError(RuntimeError):
    """A component failed to start or a kubectl call failed; carries the relevant log tail."""


def cache_dir() -> Path:
    return Path(os.environ.get("FLYSLICE_CACHE") or Path.home() / ".cache" / "flyslice")


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kubectl: Path
    kube_controller_manager: Path | None  # optional: GC, namespace deletion, default service accounts


def find_binaries(bin_dir: Path | None = None) -> Binaries:
    """The cached binaries, or ``KubeEnvUnavailable`` naming the build command."""
    bin_dir = bin_dir or cache_dir() / f"kube-v{K8S_VERSION}" / "bin"
    needed = {name: bin_dir / name for name in ("etcd", "kube-apiserver", "kubectl")}
    missing = [name for name, path in needed.items() if not os.access(path, os.X_OK)]
    if missing:
        raise KubeEnvUnavailable(
            f"{', '.join(missing)} not built in {bin_dir}; run `bash tools/kubeenv/build.sh` "
            f"(builds Kubernetes v{K8S_VERSION} and etcd v{ETCD_VERSION} from Go modules, once)"
        )
    kcm = bin_dir / "kube-controller-manager"
    return Binaries(
        etcd=needed["etcd"],
        kube_apiserver=needed["kube-apiserver"],
        kubectl=needed["kubectl"],
        kube_controller_manager=kcm if os.access(kcm, os.X_OK) else None,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- certificates -------------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class CertificateAuthority:
    """A throw-away CA: signs the API server's serving certificate and client certificates."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str = "flyslice-test-ca") -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self,
        common_name: str,
        *,
        organizations: Iterable[str] = (),
        ips: Sequence[str] = (),
        dns: Sequence[str] = (),
        server: bool = False,
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM). Kubernetes reads a client cert's CN as the user, each O as a group."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        sans += [x509.DNSName(d) for d in dns]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _pem_cert(cert), _pem_key(key)


# --- processes ----------------------------------------------------------------------------------


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def _stop(proc: _Proc, timeout: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``timeout``: never hangs."""
    if proc.popen.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.popen.pid, signal.SIGTERM)
    try:
        proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(5)


class KubeEnv:
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback; see the module docstring."""

    def __init__(
        self,
        binaries: Binaries | None = None,
        *,
        workdir: Path | None = None,
        controller_manager: bool = True,
        start_timeout: float = 90.0,
        extra_apiserver_args: Sequence[str] = (),
        extra_controllers: Sequence[str] = (),
    ) -> None:
        """``extra_controllers``: kube-controller-manager controllers beyond ``CONTROLLERS``, for
        real nodes (``deployment``, ``replicaset``, ``daemonset``, ``root-ca-cert-publisher``)."""
        self.binaries = binaries or find_binaries()
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="flyslice-kube-"))
        self.want_controller_manager = (
            controller_manager and self.binaries.kube_controller_manager is not None
        )
        self.start_timeout = start_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.controllers = [*CONTROLLERS, *(c for c in extra_controllers if c not in CONTROLLERS)]
        self._procs: list[_Proc] = []
        self.ca: CertificateAuthority | None = None
        self.server = ""
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self._minted = 0

    # -- lifecycle --

    def __enter__(self) -> KubeEnv:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> KubeEnv:
        atexit.register(self.stop)  # a crashed test run still leaves no process behind
        try:
            self._write_pki()
            etcd_url = self._start_etcd()
            self._start_apiserver(etcd_url)
            if self.want_controller_manager:
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every component (API server first, etcd last) and delete the work directory."""
        for proc in reversed(self._procs):
            _stop(proc, timeout)
        self._procs.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.stop)

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.popen.poll() is None for p in self._procs)

    def logs(self, name: str, lines: int = 50) -> str:
        """The tail of a component's log: ``etcd``, ``kube-apiserver`` or ``kube-controller-manager``."""
        for proc in self._procs:
            if proc.name == name:
                return proc.tail(lines)
        return ""

    def pids(self) -> dict[str, int]:
        return {p.name: p.popen.pid for p in self._procs}

    # -- credentials --

    def user_kubeconfig(self, user: str, groups: Iterable[str] = (), *, name: str | None = None) -> Path:
        """A kubeconfig authenticating as ``user`` in ``groups`` with a client certificate from the test CA.

        This is how a bare gateway's agent authenticates (``system:flyslice-agent:<node>`` in group
        ``system:flyslice-agents``), like a kubelet's ``system:node:<node>``.
        """
        assert self.ca is not None, "KubeEnv is not started"
        cert, key = self.ca.issue(user, organizations=groups)
        user_entry = {
            "client-certificate-data": _b64(cert),
            "client-key-data": _b64(key),
        }
        return self._write_kubeconfig(name or _file_safe(user), user_entry)

    def service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        *,
        create: bool = True,
        duration: str = "1h",
        bound_pod: str | None = None,
    ) -> Path:
        """A kubeconfig with a TokenRequest token for service account ``namespace/name``.

        ``bound_pod`` binds the token to that pod (in ``namespace``); when the pod is scheduled to a
        Node object, the API server adds the node name to the token's user info (extra
        ``authentication.kubernetes.io/node-name``), which is how a DaemonSet agent proves its node.
        """
        if create:
            self.kubectl("create", "namespace", namespace, check=False)
            self.kubectl("-n", namespace, "create", "serviceaccount", name, check=False)
        args = ["-n", namespace, "create", "token", name, f"--duration={duration}"]
        if bound_pod:
            args += ["--bound-object-kind=Pod", f"--bound-object-name={bound_pod}"]
        token = self.kubectl(*args).stdout.strip()
        return self._write_kubeconfig(f"sa-{namespace}-{name}", {"token": token})

    # -- kubectl --

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this server; ``check`` raises ``KubeEnvError`` with stderr."""
        cmd = [str(self.binaries.kubectl), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "KUBECTL_KUBERC": "false"},
        )
        if check and result.returncode != 0:
            raise KubeEnvError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def kubectl_json(self, *args: str, kubeconfig: Path | None = None) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json", kubeconfig=kubeconfig).stdout)

    def install_crds(self, paths: Sequence[Path], timeout: float = 60.0) -> list[str]:
        """Server-side apply CRD files and wait until every one is Established; their names."""
        names: list[str] = []
        for path in paths:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
            names += [d["metadata"]["name"] for d in docs if d.get("kind") == "CustomResourceDefinition"]
        args = [a for path in paths for a in ("-f", str(path))]
        self.kubectl("apply", "--server-side", "--field-manager=flyslice-kubeenv", *args)
        if names:
            self.kubectl(
                "wait",
                "--for=condition=Established",
                f"--timeout={int(timeout)}s",
                *[f"crd/{n}" for n in names],
                timeout=timeout + 10,
            )
        return names

    def api_requests(self, group: str | None = None) -> dict[tuple[str, str], float]:
        """Requests the API server has served so far, by (verb, resource), from its
        ``apiserver_request_total`` metric; ``group`` keeps one API group (``"flyslice.io"``,
        ``""`` for the core group). Benchmarks take the difference of two readings."""
        from prometheus_client.parser import text_string_to_metric_families

        text = self.kubectl("get", "--raw", "/metrics").stdout
        counts: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "apiserver_request":
                continue
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                labels = sample.labels
                if group is not None and labels.get("group", "") != group:
                    continue
                key = (labels.get("verb", ""), labels.get("resource", ""))
                counts[key] = counts.get(key, 0.0) + sample.value
        return counts

    # -- internals --

    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority.create()
        (pki / "ca.crt").write_bytes(_pem_cert(self.ca.cert))
        (pki / "ca.key").write_bytes(_pem_key(self.ca.key))
        cert, key = self.ca.issue(
            "kube-apiserver",
            server=True,
            ips=["127.0.0.1", SERVICE_IP],
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        )
        (pki / "apiserver.crt").write_bytes(cert)
        (pki / "apiserver.key").write_bytes(key)
        # Service-account tokens are signed with an RSA key, as kubeadm does.
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (pki / "sa.key").write_bytes(_pem_key(sa_key))
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        for path in pki.iterdir():
            path.chmod(0o600)

    def _spawn(self, name: str, args: list[str]) -> _Proc:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        proc = _Proc(name, popen, log)
        self._procs.append(proc)
        return proc

    def _start_etcd(self) -> str:
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        proc = self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=flyslice-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=flyslice-test={peer_url}",
                "--log-level=warn",
                # Test data is thrown away: skip fsync, which dominates etcd latency on shared disks.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=2147483648",
            ],
        )
        self._wait_http(proc, f"{client_url}/health", lambda body: b'"health":"true"' in body)
        return client_url

    def _start_apiserver(self, etcd_url: str) -> None:
        pki = self.workdir / "pki"
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        proc = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # No kubelets: the 'kubernetes' Service would point at a loopback address, which
                # Endpoints validation refuses; nothing here needs it.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
                *self.extra_apiserver_args,
            ],
        )
        self._write_admin_kubeconfig()
        self._wait_http(proc, f"{self.server}/readyz", lambda body: body.strip() == b"ok", tls=True)

    def _start_controller_manager(self) -> None:
        assert self.binaries.kube_controller_manager is not None
        pki = self.workdir / "pki"
        proc = self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                # By default only what objects need without kubelets: ownerReference garbage
                # collection (an NFInstance goes with its Slice), namespace deletion, default service
                # accounts, and signing of approved client-certificate requests (how a bare gateway
                # gets credentials); real nodes add workload controllers (``extra_controllers``).
                f"--controllers={','.join(self.controllers)}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--v=1",
            ],
        )
        deadline = time.monotonic() + self.start_timeout
        # Ready once the default service account of 'default' exists (the serviceaccount controller runs).
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise KubeEnvError(
                    f"kube-controller-manager exited ({proc.popen.returncode}):\n{proc.tail()}"
                )
            if self.kubectl("-n", "default", "get", "serviceaccount", "default", check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise KubeEnvError(f"kube-controller-manager not ready in {self.start_timeout}s:\n{proc.tail()}")

    def _write_admin_kubeconfig(self) -> None:
        assert self.ca is not None
        cert, key = self.ca.issue(ADMIN_USER, organizations=["system:masters"])
        self._write_kubeconfig(
            "admin",
            {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)},
            path=self.kubeconfig,
        )

    def _write_kubeconfig(self, name: str, user: dict[str, str], path: Path | None = None) -> Path:
        assert self.ca is not None
        if path is None:
            self._minted += 1
            path = self.workdir / "kubeconfigs" / f"{self._minted:03d}-{name}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "flyslice-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(_pem_cert(self.ca.cert)),
                    },
                }
            ],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": "flyslice-test", "user": name}}],
            "current-context": name,
        }
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path

    def _wait_http(self, proc: _Proc, url: str, ok: Any, *, tls: bool = False) -> None:
        context: ssl.SSLContext | None = None
        if tls:
            assert self.ca is not None
            pki = self.workdir / "pki"
            context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            cert, key = self.ca.issue(ADMIN_USER, organizations=["system:masters"])
            (pki / "probe.crt").write_bytes(cert)
            (pki / "probe.key").write_bytes(key)
            context.load_cert_chain(pki / "probe.crt", pki / "probe.key")
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise KubeEnvError(
                    f"{proc.name} exited ({proc.popen.returncode}) while starting:\n{proc.tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                    body = resp.read()
                    if ok(body):
                        return
                    last = body.decode(errors="replace")
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise KubeEnvError(
            f"{proc.name} not ready at {url} in {self.start_timeout}s ({last}):\n{proc.tail()}"
        )


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


_shared: KubeEnv | None = None
_shared_failure: KubeEnvError | None = None


def shared_env() -> KubeEnv:
    """One environment per process, started on first use and stopped at exit.

    Every pytest fixture (in any conftest) and benchmark that asks for it gets the same API server,
    so a test session starts etcd and kube-apiserver once. Tests sharing it use their own
    namespaces and object names. Raises ``KubeEnvUnavailable`` when the binaries are not built.
    """
    global _shared, _shared_failure
    if _shared_failure is not None:  # do not make every test of a session wait for a broken start
        raise _shared_failure
    if _shared is None or not _shared.running:
        for attempt in (1, 2):  # a second try covers a free port taken between choice and bind
            try:
                _shared = KubeEnv().start()  # start() registers the atexit stop
                break
            except KubeEnvError as exc:
                if attempt == 2:
                    _shared_failure = exc
                    raise
    assert _shared is not None
    return _shared


def env_or_skip() -> KubeEnv:
    """``shared_env()`` for a pytest fixture: skips with the build command when the binaries are
    missing, or fails when ``FLYSLICE_REQUIRE_KUBE=1`` (CI after ``build.sh``)."""
    import pytest

    try:
        return shared_env()
    except KubeEnvUnavailable as exc:
        if os.environ.get("FLYSLICE_REQUIRE_KUBE") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


class FakeKubelet:
    """A FAKE kubelet: no container runtime exists here, so this registers a Node object and
    writes pod status the way a kubelet would, for tests of code that creates pods and then
    waits for them to run. It never runs anything."""

    def __init__(self, env: KubeEnv, node: str, labels: dict[str, str] | None = None) -> None:
        self.env = env
        self.node = node
        self.labels = {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux", **(labels or {})}

    def register(self) -> None:
        """Create the Node object and report it Ready."""
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": self.labels}}
        self.env.kubectl("apply", "-f", "-", input=json.dumps(node))
        status = {"conditions": [_condition("Ready", "True", "KubeletReady")]}
        self._patch_status("node", self.node, [], status)

    def run_pod(self, namespace: str, name: str, pod_ip: str = "127.0.0.1") -> None:
        """Report pod ``namespace/name`` Running and Ready, as its kubelet would once started."""
        pod = self.env.kubectl_json("-n", namespace, "get", "pod", name)
        if pod["spec"].get("nodeName") != self.node:
            raise KubeEnvError(
                f"pod {namespace}/{name} is bound to {pod['spec'].get('nodeName')!r}, not {self.node}"
            )
        now = _now()
        status = {
            "phase": "Running",
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "hostIP": "127.0.0.1",
            "startTime": now,
            "conditions": [
                _condition(t, "True", "") for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": now}},
                }
                for c in pod["spec"]["containers"]
            ],
        }
        self._patch_status("pod", name, ["-n", namespace], status)

    def fail_pod(
        self, namespace: str, name: str, reason: str = "CrashLoopBackOff", message: str = ""
    ) -> None:
        """Report the pod's containers waiting in ``reason``, as a kubelet does for a crashing container."""
        pod = self.env.kubectl_json("-n", namespace, "get", "pod", name)
        status = {
            "phase": "Running",
            "conditions": [_condition("Ready", "False", "ContainersNotReady")],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 3,
                    "state": {"waiting": {"reason": reason, "message": message}},
                }
                for c in pod["spec"]["containers"]
            ],
        }
        self._patch_status("pod", name, ["-n", namespace], status)

    def _patch_status(self, kind: str, name: str, ns: list[str], status: dict[str, Any]) -> None:
        self.env.kubectl(
            "patch",
            kind,
            name,
            *ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, status: str, reason: str) -> dict[str, str]:
    cond = {"type": kind, "status": status, "lastTransitionTime": _now()}
    if reason:
        cond["reason"] = reason
    return cond


def build(quiet: bool = False) -> Binaries:
    """Run ``build.sh`` (seconds when cached) and return the binaries."""
    subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, capture_output=quiet)
    return find_binaries()


if __name__ == "__main__":  # manual smoke run: start, print the kubeconfig, wait for Ctrl-C
    with KubeEnv() as env:
        print(f"export KUBECONFIG={env.kubeconfig}  # {env.server}; Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
