"""GitSourceSpec from a GitSource object: defaults, every field, and errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flyslice.operator.gitops.fetcher import (
    GitCredentials,
    GitRef,
    GitSourceSpec,
    GitSpecError,
    SignaturePolicy,
    parse_interval,
)
from flyslice.operator.gitops.spec import redact_url


def obj(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": "fleet", "namespace": "edge"},
        "spec": {"url": "https://git.example.com/acme/fleet.git", **spec},
    }


def test_defaults_match_the_crd() -> None:
    spec = GitSourceSpec.from_manifest(obj())
    assert spec.ref == GitRef("branch", "main")
    assert (spec.path, spec.interval_s, spec.prune, spec.suspend) == (".", 60.0, True, False)
    assert spec.verify.mode == "none"


def test_every_field() -> None:
    keys = SignaturePolicy(mode="required", ssh_allowed_signers="a@b ssh-ed25519 AAAA\n")
    spec = GitSourceSpec.from_manifest(
        obj(
            ref={"tag": "v1.2"},
            path="clusters/edge/",
            interval="1m30s",
            prune=False,
            suspend=True,
            verify={"mode": "required"},
        ),
        credentials=GitCredentials(username="bot", token="t"),
        verify_keys=keys,
    )
    assert spec.ref == GitRef("tag", "v1.2")
    assert spec.path == "clusters/edge"
    assert spec.interval_s == 90.0
    assert (spec.prune, spec.suspend) == (False, True)
    assert spec.verify.mode == "required" and spec.verify.ssh_allowed_signers == keys.ssh_allowed_signers
    assert "token='t'" not in repr(spec)


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"url": None}, "spec.url", "is required"),
        ({"url": "--upload-pack=touch /tmp/x"}, "spec.url", "must not start with '-'"),
        ({"url": "ext::sh -c touch% /tmp/x"}, "spec.url", "remote helpers"),
        ({"url": "ftp://example.com/x.git"}, "spec.url", "scheme 'ftp' is not one of"),
        ({"ref": {"branch": "main", "tag": "v1"}}, "spec.ref", "exactly one of branch, tag and commit"),
        ({"ref": {"commit": "XYZ"}}, "spec.ref.commit", "7-40 digit lowercase hex"),
        ({"ref": {"bramch": "main"}}, "spec.ref.bramch", "unknown field"),
        ({"path": "../etc"}, "spec.path", "must not leave the repository"),
        ({"path": "/abs"}, "spec.path", "relative to the repository root"),
        ({"interval": "soon"}, "spec.interval", "not a duration"),
        ({"interval": "0s"}, "spec.interval", "longer than zero"),
        ({"prune": "yes"}, "spec.prune", "true or false"),
        ({"verify": {"mode": "sometimes"}}, "spec.verify.mode", "not one of none, required"),
        ({"verify": {"mode": "required"}}, "spec.verify.secretRef", "needs trusted keys"),
    ],
)
def test_errors_name_the_object_and_field(spec: dict[str, Any], field: str, message: str) -> None:
    manifest = obj(**spec)
    if spec.get("url", "") is None:
        del manifest["spec"]["url"]
    with pytest.raises(GitSpecError) as err:
        GitSourceSpec.from_manifest(manifest)
    assert err.value.field_path == field
    assert str(err.value).startswith(f"GitSource/edge/fleet: {field}: ")
    assert message in str(err.value)


def test_intervals() -> None:
    assert parse_interval("500ms") == 0.5
    assert parse_interval("2h") == 7200.0
    assert parse_interval("1d1h1m1s") == 90061.0
    assert parse_interval(15) == 15.0


def test_credentials_are_resolved_late_and_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = GitCredentials(token_env="FLYSLICE_SPEC_TOKEN")
    with pytest.raises(GitSpecError, match="FLYSLICE_SPEC_TOKEN is not set"):
        creds.resolve_token()
    monkeypatch.setenv("FLYSLICE_SPEC_TOKEN", "abc")
    assert creds.resolve_token() == "abc"
    token_file = tmp_path / "t"
    with pytest.raises(GitSpecError, match="cannot read"):
        GitCredentials(token_file=token_file).resolve_token()
    from_secret = GitCredentials.from_secret_data({"username": b"bot", "password": b"pw", "identity": b"KEY"})
    assert (from_secret.username, from_secret.resolve_token(), from_secret.uses_ssh) == ("bot", "pw", True)
    assert "pw" not in repr(from_secret) and "KEY" not in repr(from_secret)


def test_redact_url() -> None:
    assert redact_url("https://user:tok@host.example/x.git") == "https://***@host.example/x.git"
    assert redact_url("https://tok@host.example/x.git") == "https://***@host.example/x.git"
    assert redact_url("ssh://git@host.example/x.git") == "ssh://git@host.example/x.git"
    assert redact_url("git://127.0.0.1:9418/x.git") == "git://127.0.0.1:9418/x.git"
