"""git over ssh:// against a real sshd on loopback: the source's own key and known_hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from flyslice.operator.gitops.fetcher import FetchError, GitCredentials, GitSource, GitSourceSpec

from .conftest import SshKeys, SshServer, Upstream

pytestmark = pytest.mark.timeout(60)


def test_fetch_with_key_file_and_known_hosts(
    upstream: Upstream, ssh_server: SshServer, ssh_keys: SshKeys, tmp_path: Path
) -> None:
    creds = GitCredentials(ssh_key_file=ssh_keys.trusted_key, known_hosts_file=ssh_server.known_hosts)
    source = GitSource(GitSourceSpec(url=ssh_server.url(), path="deploy", credentials=creds), tmp_path / "c")
    snap = source.fetch()
    assert snap.revision == upstream.head()
    assert (snap.root / "nodes.yaml").read_text() == "kind: EdgeNode\n"


def test_identity_and_known_hosts_from_a_secret(
    upstream: Upstream, ssh_server: SshServer, ssh_keys: SshKeys, tmp_path: Path
) -> None:
    key_text = ssh_keys.trusted_key.read_text()
    secret = {"identity": key_text.encode(), "known_hosts": ssh_server.known_hosts.read_bytes()}
    creds = GitCredentials.from_secret_data(secret)
    source = GitSource(GitSourceSpec(url=ssh_server.url(), credentials=creds), tmp_path / "c")
    assert source.fetch().revision == upstream.head()
    for written in ("identity", "known_hosts"):
        assert (tmp_path / "c" / "auth" / written).stat().st_mode & 0o077 == 0
    assert key_text not in repr(creds) and key_text not in str(source.status)


def test_unauthorized_key_and_unknown_host_are_refused(
    upstream: Upstream, ssh_server: SshServer, ssh_keys: SshKeys, tmp_path: Path
) -> None:
    wrong_key = GitCredentials(ssh_key_file=ssh_keys.untrusted_key, known_hosts_file=ssh_server.known_hosts)
    source = GitSource(GitSourceSpec(url=ssh_server.url(), credentials=wrong_key), tmp_path / "a")
    with pytest.raises(FetchError, match="Permission denied"):
        source.fetch()
    assert source.status.last_error_reason == "AuthenticationFailed"

    impostor = tmp_path / "known_hosts"
    impostor.write_text(
        f"[127.0.0.1]:{ssh_server.port} {ssh_keys.untrusted_key.with_suffix('.pub').read_text()}"
    )
    creds = GitCredentials(ssh_key_file=ssh_keys.trusted_key, known_hosts_file=impostor)
    mitm = GitSource(GitSourceSpec(url=ssh_server.url(), credentials=creds), tmp_path / "b")
    with pytest.raises(FetchError, match="Host key verification failed"):
        mitm.fetch()
    assert mitm.status.last_error_reason == "HostKeyVerificationFailed"
