"""Commit-signature policy with real GPG keys (temporary GNUPGHOME) and real SSH signing keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from flyslice.operator.gitops.fetcher import GitSource, GitSourceSpec, GitSpecError, SignaturePolicy
from flyslice.operator.gitops.signatures import SignatureRejected

from .conftest import GIT_ID, GpgKeys, SshKeys, Upstream, git

pytestmark = pytest.mark.timeout(90)


def tamper(upstream: Upstream) -> str:
    """Change the message of the signed tip without re-signing it, and force-push the result."""
    raw = git(upstream.work, "cat-file", "commit", "HEAD") + "\n"
    forged = raw.replace("\n\nsigned ok", "\n\nsigned ok, then edited")
    assert forged != raw
    path = upstream.work / "forged"
    path.write_text(forged)
    sha = git(upstream.work, "hash-object", "-t", "commit", "-w", str(path))
    git(upstream.work, "update-ref", "refs/heads/main", sha)
    upstream.push(force=True)
    return sha


def gpg_source(upstream: Upstream, keys: GpgKeys, cache: Path) -> GitSource:
    policy = SignaturePolicy(mode="required", gpg_public_keys=(keys.trusted_public,))
    return GitSource(GitSourceSpec(url=str(upstream.bare), verify=policy), cache)


def test_policy_none_accepts_unsigned(upstream: Upstream, tmp_path: Path) -> None:
    source = GitSource(GitSourceSpec(url=str(upstream.bare)), tmp_path / "c")
    assert source.fetch().revision == upstream.head()


def test_gpg_required_accepts_trusted_and_refuses_the_rest(
    upstream: Upstream, gpg_keys: GpgKeys, tmp_path: Path
) -> None:
    source = gpg_source(upstream, gpg_keys, tmp_path / "c")
    with pytest.raises(SignatureRejected) as err:
        source.fetch()  # the initial commit is unsigned
    assert err.value.reason == "unsigned"
    assert source.last_good is None

    good = upstream.commit(
        {"deploy/nodes.yaml": "signed\n"},
        "signed ok",
        sign=gpg_keys.sign_args(gpg_keys.trusted_fpr),
        env=gpg_keys.env,
    )
    snap = source.fetch()
    assert snap.revision == good
    assert source.status.signed_by == "Alice <alice@example.com>"
    assert source.last_signature is not None and source.last_signature.key == gpg_keys.trusted_fpr

    untrusted = upstream.commit(
        {"deploy/nodes.yaml": "evil\n"},
        "evil",
        sign=gpg_keys.sign_args(gpg_keys.untrusted_fpr),
        env=gpg_keys.env,
    )
    with pytest.raises(SignatureRejected) as err:
        source.fetch()
    assert err.value.reason == "untrusted-key" and err.value.revision == untrusted
    # The refused commit is recorded; what runs stays the last good one.
    status = source.status
    assert status.refused_revision == untrusted
    assert status.last_fetched_revision == good
    assert status.last_error_reason == "SignatureRefused"
    assert "untrusted-key" in status.conditions["Ready"].message
    assert source.last_good == snap and (snap.root / "deploy/nodes.yaml").read_text() == "signed\n"

    git(upstream.work, "reset", "-q", "--hard", good)
    upstream.push(force=True)
    assert source.fetch() == snap
    forged = tamper(upstream)
    with pytest.raises(SignatureRejected) as err:
        source.fetch()
    assert err.value.reason == "bad-signature" and err.value.revision == forged


def test_a_key_in_the_users_own_keyring_is_not_trusted(
    upstream: Upstream, gpg_keys: GpgKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The process's GNUPGHOME knows (and fully owns) Mallory's key; the policy trusts only Alice.
    monkeypatch.setenv("GNUPGHOME", str(gpg_keys.home))
    upstream.commit(
        {"x": "1\n"}, "by mallory", sign=gpg_keys.sign_args(gpg_keys.untrusted_fpr), env=gpg_keys.env
    )
    with pytest.raises(SignatureRejected) as err:
        gpg_source(upstream, gpg_keys, tmp_path / "c").fetch()
    assert err.value.reason == "untrusted-key"


def test_ssh_required_accepts_allowed_signer_only(
    upstream: Upstream, ssh_keys: SshKeys, gpg_keys: GpgKeys, tmp_path: Path
) -> None:
    policy = SignaturePolicy(mode="required", ssh_allowed_signers=ssh_keys.allowed_signers)
    source = GitSource(GitSourceSpec(url=upstream.bare.as_uri(), verify=policy), tmp_path / "c")

    good = upstream.commit({"x": "1\n"}, "signed ok", sign=ssh_keys.sign_args(ssh_keys.trusted_key))
    assert source.fetch().revision == good
    assert source.status.signed_by == "alice@example.com"

    upstream.commit({"x": "2\n"}, "mallory", sign=ssh_keys.sign_args(ssh_keys.untrusted_key))
    with pytest.raises(SignatureRejected) as err:
        source.fetch()
    assert err.value.reason == "untrusted-key"

    # A valid GPG signature does not satisfy a policy that trusts only SSH keys.
    upstream.commit({"x": "3\n"}, "gpg", sign=gpg_keys.sign_args(gpg_keys.trusted_fpr), env=gpg_keys.env)
    with pytest.raises(SignatureRejected) as err:
        source.fetch()
    assert err.value.reason == "untrusted-key"

    git(upstream.work, "reset", "-q", "--hard", good)
    upstream.push(force=True)
    forged = tamper(upstream)
    with pytest.raises(SignatureRejected) as err:
        source.fetch()
    assert (err.value.reason, err.value.revision) == ("bad-signature", forged)
    assert source.last_good is not None and source.last_good.revision == good


def test_mixed_policy_trusts_both_kinds(
    upstream: Upstream, ssh_keys: SshKeys, gpg_keys: GpgKeys, tmp_path: Path
) -> None:
    policy = SignaturePolicy(
        mode="required",
        gpg_public_keys=(gpg_keys.trusted_public,),
        ssh_allowed_signers=ssh_keys.allowed_signers,
    )
    source = GitSource(GitSourceSpec(url=str(upstream.bare), verify=policy), tmp_path / "c")
    by_ssh = upstream.commit({"x": "1\n"}, "ssh", sign=ssh_keys.sign_args(ssh_keys.trusted_key))
    assert source.fetch().revision == by_ssh
    by_gpg = upstream.commit(
        {"x": "2\n"}, "gpg", sign=gpg_keys.sign_args(gpg_keys.trusted_fpr), env=gpg_keys.env
    )
    assert source.fetch().revision == by_gpg


def test_policy_needs_valid_trusted_keys(tmp_path: Path) -> None:
    with pytest.raises(GitSpecError, match=r"spec\.verify: mode required needs trusted keys"):
        SignaturePolicy(mode="required")
    bad = SignaturePolicy(mode="required", gpg_public_keys=("not a key",))
    with pytest.raises(GitSpecError, match=r"spec.verify.gpgPublicKeys\[0\]"):
        GitSource(GitSourceSpec(url="/nowhere", verify=bad), tmp_path / "c")


def test_every_commit_of_a_pushed_range_is_verified(
    upstream: Upstream, gpg_keys: GpgKeys, tmp_path: Path
) -> None:
    sign = gpg_keys.sign_args(gpg_keys.trusted_fpr)
    source = gpg_source(upstream, gpg_keys, tmp_path / "c")
    # The first fetch anchors on its tip: the unsigned initial commit beneath it is history.
    base = upstream.commit({"x": "1\n"}, "signed base", sign=sign, env=gpg_keys.env)
    assert source.fetch().revision == base
    source.mark_applied(base)

    # One push of three commits, the middle one unsigned, under a validly signed tip.
    first = upstream.commit({"x": "2\n"}, "signed 1", sign=sign, env=gpg_keys.env, push=False)
    middle = upstream.commit({"x": "3\n"}, "unsigned", push=False)
    tip = upstream.commit({"x": "4\n"}, "signed 2", sign=sign, env=gpg_keys.env, push=False)
    upstream.push()
    with pytest.raises(SignatureRejected) as err:
        source.fetch()
    assert (err.value.reason, err.value.revision, err.value.commit) == ("unsigned", tip, middle)
    assert f"commit {middle[:12]} in the pushed range" in str(err.value)
    assert source.status.refused_revision == tip and source.status.last_fetched_revision == base
    assert source.last_good is not None and source.last_good.revision == base
    assert first != middle

    # Signing more on top does not launder the unsigned commit underneath.
    upstream.commit({"x": "5\n"}, "signed 3", sign=sign, env=gpg_keys.env)
    with pytest.raises(SignatureRejected) as err:
        source.fetch()
    assert err.value.commit == middle

    # A signed merge of an unsigned side branch: the side branch's commit is checked too.
    git(upstream.work, "reset", "-q", "--hard", base)
    git(upstream.work, "checkout", "-q", "-b", "side")
    side = upstream.commit({"y": "1\n"}, "unsigned side", push=False)
    git(upstream.work, "checkout", "-q", "main")
    upstream.commit({"x": "6\n"}, "signed main", sign=sign, env=gpg_keys.env, push=False)
    git(
        upstream.work, *GIT_ID, *sign, "merge", "-q", "--no-ff", "-S", "-m", "merge", "side", env=gpg_keys.env
    )
    upstream.push(force=True)
    with pytest.raises(SignatureRejected) as err:
        source.fetch()
    assert (err.value.reason, err.value.commit) == ("unsigned", side)

    # Force-pushed back to a fully signed range: accepted, and the range is measured from the
    # last accepted revision, so the unsigned initial commit never counts.
    git(upstream.work, "reset", "-q", "--hard", base)
    upstream.commit({"x": "7\n"}, "signed a", sign=sign, env=gpg_keys.env, push=False)
    good = upstream.commit({"x": "8\n"}, "signed b", sign=sign, env=gpg_keys.env, push=False)
    upstream.push(force=True)
    assert source.fetch().revision == good
    assert source.status.refused_revision == ""


def test_range_is_measured_from_the_last_accepted_revision_after_a_restart(
    upstream: Upstream, gpg_keys: GpgKeys, tmp_path: Path
) -> None:
    sign = gpg_keys.sign_args(gpg_keys.trusted_fpr)
    base = upstream.commit({"x": "1\n"}, "signed base", sign=sign, env=gpg_keys.env)
    source = gpg_source(upstream, gpg_keys, tmp_path / "c")
    assert source.fetch().revision == base
    source.mark_applied(base)
    middle = upstream.commit({"x": "2\n"}, "unsigned", push=False)
    upstream.commit({"x": "3\n"}, "signed", sign=sign, env=gpg_keys.env)
    # A new GitSource on the same cache (an operator restart) still knows where the range starts.
    restarted = gpg_source(upstream, gpg_keys, tmp_path / "c")
    with pytest.raises(SignatureRejected) as err:
        restarted.fetch()
    assert err.value.commit == middle
