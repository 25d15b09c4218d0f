"""Real git remotes on loopback for the GitSource tests.

``Upstream`` is a bare repository (what a forge holds) plus a work clone that commits and pushes to it
(with ``--force`` for history rewrites). ``GitDaemon`` serves the bare repositories with a real
``git daemon`` (git://), ``SmartHttpServer`` with ``git http-backend`` (CGI) behind a threaded WSGI
server, ``DumbHttpServer`` as plain static files. All listen on 127.0.0.1 and are stopped by their
fixtures.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

GIT_ID = ["-c", "user.name=Alice", "-c", "user.email=alice@example.com", "-c", "commit.gpgsign=false"]


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "LC_ALL": "C", **(env or {})},
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result.stdout.strip()


class Upstream:
    """A bare remote ``<base>/<name>.git`` and a work clone that pushes to it."""

    def __init__(self, base: Path, name: str = "fleet") -> None:
        self.base = base
        self.name = name
        self.bare = base / f"{name}.git"
        self.work = base / f"{name}-work"
        git(base, "init", "-q", "--bare", "-b", "main", str(self.bare))
        git(base, "init", "-q", "-b", "main", str(self.work))
        git(self.work, "remote", "add", "origin", str(self.bare))

    def commit(
        self,
        files: dict[str, str | None],
        message: str = "change",
        *,
        sign: list[str] | None = None,
        env: dict[str, str] | None = None,
        push: bool = True,
    ) -> str:
        """Write (or, with None, delete) files, commit (signed with ``sign`` git options) and push."""
        for rel, text in files.items():
            target = self.work / rel
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        git(self.work, "add", "-A")
        sign_args = ["-S"] if sign else []
        git(
            self.work,
            *GIT_ID,
            *(sign or []),
            "commit",
            "-q",
            "--allow-empty",
            *sign_args,
            "-m",
            message,
            env=env,
        )
        if push:
            self.push()
        return self.head()

    def head(self, rev: str = "HEAD") -> str:
        return git(self.work, "rev-parse", rev)

    def push(self, *refs: str, force: bool = False) -> None:
        git(
            self.work,
            "push",
            "-q",
            *(["--force"] if force else []),
            "origin",
            *(refs or ["HEAD:refs/heads/main"]),
        )
        git(self.bare, "update-server-info")  # for dumb HTTP

    def rewrite_last(self, files: dict[str, str | None], message: str) -> str:
        """Replace the last commit and force-push: the old tip disappears from the branch."""
        git(self.work, "reset", "-q", "--hard", "HEAD~1")
        sha = self.commit(files, message, push=False)
        self.push(force=True)
        return sha

    def tag(self, name: str, *, annotated: bool = False, rev: str = "HEAD", force: bool = False) -> None:
        args = ["-a", "-m", name] if annotated else []
        git(self.work, *GIT_ID, "tag", *(["-f"] if force else []), *args, name, rev)
        self.push(f"refs/tags/{name}", force=force)


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    base = tmp_path / "remotes"
    base.mkdir()
    up = Upstream(base)
    up.commit(
        {
            "deploy/nodes.yaml": "kind: EdgeNode\n",
            "deploy/extra/slice.yaml": "kind: Slice\n",
            "README": "hello\n",
        },
        "initial",
    )
    return up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


class GitDaemon:
    """``git daemon --export-all`` on 127.0.0.1; stop() and start() again on the same port."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str = "fleet") -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "git",
                "daemon",
                "--export-all",
                "--reuseaddr",
                "--informative-errors",
                f"--base-path={self.base}",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                str(self.base),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends the daemon and its children
        )
        wait_listening(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def git_daemon(upstream: Upstream) -> Iterator[GitDaemon]:
    daemon = GitDaemon(upstream.base)
    daemon.start()
    yield daemon
    daemon.stop()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class SmartHttpServer:
    """``git http-backend`` (smart HTTP) behind a WSGI server; optional HTTP basic auth."""

    def __init__(self, base: Path, auth: tuple[str, str] | None = None) -> None:
        self.base = base
        self.auth = auth
        self.seen_authorization: list[str] = []
        self.server = make_server(
            "127.0.0.1", 0, self._app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, name: str = "fleet") -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        header = environ.get("HTTP_AUTHORIZATION", "")
        if header:
            self.seen_authorization.append(header)
        if self.auth is not None:
            expected = "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            if header != expected:
                start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"')])
                return [b"unauthorized\n"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        cgi_env = {k: v for k, v in environ.items() if isinstance(v, str) and (k.isupper())}
        cgi_env.update(
            {
                "GIT_PROJECT_ROOT": str(self.base),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": self.auth[0] if self.auth else "",
                "PATH": os.environ.get("PATH", ""),
            }
        )
        if "HTTP_GIT_PROTOCOL" in environ:
            cgi_env["GIT_PROTOCOL"] = environ["HTTP_GIT_PROTOCOL"]
        result = subprocess.run(
            ["git", "http-backend"], input=body, env=cgi_env, capture_output=True, timeout=30
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        headers = []
        status = "200 OK"
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = value.strip()
            elif key:
                headers.append((key, value.strip()))
        start_response(status, headers)
        return [payload]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def http_server(upstream: Upstream) -> Iterator[SmartHttpServer]:
    server = SmartHttpServer(upstream.base)
    yield server
    server.stop()


class DumbHttpServer:
    """The bare repositories as static files (git's dumb HTTP protocol)."""

    def __init__(self, base: Path) -> None:
        handler = type("Handler", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})

        def factory(*args: Any) -> SimpleHTTPRequestHandler:
            return handler(*args, directory=str(base))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), factory)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, name: str = "fleet") -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@dataclass(frozen=True)
class GpgKeys:
    home: Path
    trusted_fpr: str
    trusted_public: str
    untrusted_fpr: str

    def sign_args(self, fpr: str) -> list[str]:
        return ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={fpr}"]

    @property
    def env(self) -> dict[str, str]:
        return {"GNUPGHOME": str(self.home)}


@pytest.fixture(scope="session")
def gpg_keys() -> Iterator[GpgKeys]:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed (apt-get install gnupg)")
    # A short path: gpg-agent's socket lives in GNUPGHOME and socket paths are limited to ~100 bytes.
    home = Path(tempfile.mkdtemp(prefix="fsg"))
    home.chmod(0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}

    def gpg(*args: str) -> str:
        out = subprocess.run(
            ["gpg", "--batch", *args], env=env, capture_output=True, text=True, timeout=60, check=True
        )
        return out.stdout

    def new_key(uid: str) -> str:
        gpg("--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
        listing = gpg("--with-colons", "--list-keys", uid)
        return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))

    alice = new_key("Alice <alice@example.com>")
    mallory = new_key("Mallory <mallory@example.com>")
    yield GpgKeys(home, alice, gpg("--armor", "--export", alice), mallory)
    subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, timeout=30, check=False)
    shutil.rmtree(home, ignore_errors=True)


@dataclass(frozen=True)
class SshKeys:
    trusted_key: Path
    untrusted_key: Path
    allowed_signers: str

    def sign_args(self, key: Path) -> list[str]:
        return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}"]


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> SshKeys:
    base = tmp_path_factory.mktemp("sshkeys")
    keys = []
    for name in ("alice", "mallory"):
        key = base / name
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
            check=True,
            timeout=30,
        )
        keys.append(key)
    allowed = f"alice@example.com {keys[0].with_suffix('.pub').read_text().strip()}\n"
    return SshKeys(keys[0], keys[1], allowed)


class SshServer:
    """A real OpenSSH ``sshd`` on 127.0.0.1 that accepts one client key, for git over ssh://."""

    def __init__(self, base: Path, client_public_key: str) -> None:
        self.base = base
        self.dir = Path(tempfile.mkdtemp(prefix="fss"))
        self.host_key = self.dir / "host_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)], check=True, timeout=30
        )
        (self.dir / "authorized_keys").write_text(client_public_key)
        self.port = free_port()
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    "PidFile none",
                    "UsePAM no",
                    "StrictModes no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        self.proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_listening(self.port)
        self.known_hosts = self.dir / "known_hosts"
        host_pub = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")

    def url(self, name: str = "fleet") -> str:
        user = (
            os.environ.get("USER")
            or subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        )
        return f"ssh://{user}@127.0.0.1:{self.port}{self.base}/{name}.git"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def ssh_server(upstream: Upstream, ssh_keys: SshKeys) -> Iterator[SshServer]:
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("sshd is not installed (apt-get install openssh-server)")
    try:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    except OSError as exc:
        pytest.skip(f"cannot prepare /run/sshd for sshd: {exc}")
    server = SshServer(upstream.base, ssh_keys.trusted_key.with_suffix(".pub").read_text())
    yield server
    server.stop()
