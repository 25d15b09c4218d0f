"""Commit-signature policy: is this commit signed by a key we trust (GPG or SSH)?

Verification is git's own (``%G?`` and friends), run against trust material private to one source:
a GNUPGHOME holding only the trusted GPG public keys, and an allowed-signers file holding only the
trusted SSH keys. The user's own keyring and git config play no part, so a key trusted on this
machine for other reasons is not trusted by a GitSource.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import git

from flyslice.operator.gitops.sources import FetchError
from flyslice.operator.gitops.spec import GitSpecError, SignaturePolicy

RefusalReason = Literal["unsigned", "untrusted-key", "bad-signature", "expired", "revoked", "unverifiable"]
SignatureFormat = Literal["gpg", "ssh", "x509", ""]


class SignatureRejected(FetchError):
    """The resolved commit is not signed by a trusted key; the last good revision keeps running."""

    def __init__(
        self, revision: str, reason: RefusalReason, detail: str, *, commit: str | None = None
    ) -> None:
        #: The revision that was to be applied (the tip the ref resolved to).
        self.revision = revision
        #: The commit that failed the policy: the tip itself, or a commit between the last
        #: accepted revision and the tip.
        self.commit = commit or revision
        self.reason = reason
        self.detail = detail
        where = "" if self.commit == revision else f"commit {self.commit[:12]} in the pushed range: "
        super().__init__(
            f"commit {revision[:12]} refused by the signature policy: {reason} ({where}{detail})"
        )


@dataclass(frozen=True)
class SignatureCheck:
    revision: str
    accepted: bool
    reason: RefusalReason | None
    format: SignatureFormat
    #: Who signed: the GPG user id or the SSH allowed-signers principal; empty if unknown.
    signer: str
    #: The signing key: GPG fingerprint or SSH key fingerprint.
    key: str
    detail: str


class SignatureVerifier:
    """Checks commits against one :class:`SignaturePolicy`; trust material lives under ``workdir``."""

    def __init__(self, policy: SignaturePolicy, workdir: Path, *, timeout_s: float = 30.0) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self._gnupghome = workdir / "gnupg"
        self._allowed_signers = workdir / "allowed_signers"
        self.trusted_gpg_fingerprints: frozenset[str] = frozenset()
        if policy.mode == "required":
            self._prepare(workdir)

    def _prepare(self, workdir: Path) -> None:
        # Rebuilt from the policy every time, so a key removed from the policy stops being trusted.
        shutil.rmtree(self._gnupghome, ignore_errors=True)
        workdir.mkdir(parents=True, exist_ok=True)
        self._gnupghome.mkdir(mode=0o700)
        self._allowed_signers.write_text(self.policy.ssh_allowed_signers)
        if self.policy.gpg_public_keys:
            self.trusted_gpg_fingerprints = self._import_gpg_keys()

    def _gpg(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GNUPGHOME": str(self._gnupghome)}
        try:
            return subprocess.run(
                ["gpg", "--batch", "--no-tty", "--no-autostart", *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=env,
                timeout=self.timeout_s,
                check=False,
            )
        except FileNotFoundError as exc:
            raise GitSpecError("spec.verify", "gpg is not installed; it is needed to trust GPG keys") from exc

    def _import_gpg_keys(self) -> frozenset[str]:
        for i, key in enumerate(self.policy.gpg_public_keys):
            result = self._gpg("--status-fd", "1", "--import", stdin=key)
            if "IMPORT_OK" not in result.stdout:
                raise GitSpecError(
                    f"spec.verify.gpgPublicKeys[{i}]",
                    "is not an ASCII-armoured GPG public key (gpg imported nothing)",
                )
        listing = self._gpg("--with-colons", "--list-keys").stdout
        return frozenset(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))

    def check(self, repo: git.Repo, revision: str) -> SignatureCheck:
        """The verdict on one commit (with mode ``none`` every commit is accepted unchecked)."""
        if self.policy.mode == "none":
            return SignatureCheck(revision, True, None, "", "", "", "signature policy is none")
        fmt = _signature_format(repo, revision, self.timeout_s)
        if not fmt:
            return SignatureCheck(revision, False, "unsigned", "", "", "", "the commit carries no signature")
        if fmt == "x509":
            return SignatureCheck(
                revision, False, "unverifiable", fmt, "", "", "x509 signatures are not supported"
            )
        if fmt == "gpg" and not self.policy.gpg_public_keys:
            return SignatureCheck(
                revision, False, "untrusted-key", fmt, "", "", "GPG-signed, but no GPG key is trusted"
            )
        if fmt == "ssh" and not self.policy.ssh_allowed_signers.strip():
            return SignatureCheck(
                revision, False, "untrusted-key", fmt, "", "", "SSH-signed, but no SSH key is trusted"
            )
        out = repo.git.execute(
            [
                "git",
                "-c",
                f"gpg.ssh.allowedSignersFile={self._allowed_signers}",
                "-c",
                "gpg.program=gpg",
                "-c",
                "log.showSignature=false",
                "log",
                "-1",
                "--no-walk",
                "--format=%G?%x00%GS%x00%GK%x00%GF%x00%GP",
                revision,
                "--",
            ],
            env={"GNUPGHOME": str(self._gnupghome)},
            kill_after_timeout=self.timeout_s,
        )
        code, signer, key, fpr, primary = (str(out).strip("\n").split("\x00") + [""] * 5)[:5]
        return self._verdict(revision, fmt, code, signer, fpr or key, primary or fpr)

    def _verdict(
        self, revision: str, fmt: SignatureFormat, code: str, signer: str, key: str, primary: str
    ) -> SignatureCheck:
        def refuse(reason: RefusalReason, detail: str) -> SignatureCheck:
            return SignatureCheck(revision, False, reason, fmt, signer, key, detail)

        # %G?: G good+trusted, U good but unknown validity, B bad, X/Y expired sig/key, R revoked,
        # E cannot check (usually: key not known), N none.
        if code == "B":
            return refuse(
                "bad-signature", f"the {fmt} signature does not match the commit (key {key or '?'})"
            )
        if code in ("X", "Y"):
            return refuse("expired", f"signature by {signer or key} has expired")
        if code == "R":
            return refuse("revoked", f"signed by revoked key {key}")
        if code == "N":
            return refuse("unsigned", "the commit carries no signature")
        if fmt == "ssh":
            # For SSH, G means the key matched a principal in our allowed signers; U means it did not.
            if code == "G":
                return SignatureCheck(revision, True, None, fmt, signer, key, f"signed by {signer} ({key})")
            return refuse("untrusted-key", f"SSH key {key or '?'} is not in the trusted allowed signers")
        # GPG: our private keyring holds only trusted keys, so a good signature (G or U) is trusted if
        # its primary key is one we imported; E means gpg had no such key.
        if code in ("G", "U") and (
            primary in self.trusted_gpg_fingerprints or key in self.trusted_gpg_fingerprints
        ):
            return SignatureCheck(
                revision, True, None, fmt, signer, primary, f"signed by {signer} ({primary})"
            )
        if code in ("G", "U", "E"):
            return refuse("untrusted-key", f"GPG key {key or '?'} is not a trusted key")
        return refuse("unverifiable", f"git reported signature state {code!r}")

    def require(self, repo: git.Repo, revision: str) -> SignatureCheck:
        """The verdict, or :class:`SignatureRejected` with the reason if the commit is refused."""
        verdict = self.check(repo, revision)
        if not verdict.accepted:
            assert verdict.reason is not None
            raise SignatureRejected(revision, verdict.reason, verdict.detail)
        return verdict

    def require_range(self, repo: git.Repo, revision: str, accepted: tuple[str, ...]) -> SignatureCheck:
        """Require a trusted signature on ``revision`` and on every commit reachable from it that
        no previously ``accepted`` revision reaches (``git rev-list revision --not accepted…``).

        Checking only the tip would let a signer vouch, unknowingly, for unsigned commits pushed
        underneath it (a signed merge or a signed commit on top of someone else's work). The
        accepted revisions were themselves checked this way, so by induction every commit since
        the first accepted tip is verified. With no accepted revision (the first fetch) only the
        tip is checked: the history before it is the trust anchor, as in Flux's ``HEAD`` mode.
        An accepted revision missing from the cache means the range cannot be computed: refused
        rather than silently narrowed to the tip.
        """
        if self.policy.mode == "none":
            return self.check(repo, revision)
        bases: list[str] = []
        for base in dict.fromkeys(accepted):
            if not base or base == revision:
                continue
            if not _has_commit(repo, base, self.timeout_s):
                raise SignatureRejected(
                    revision,
                    "unverifiable",
                    f"the last accepted revision {base[:12]} is not in the cache, so the commits "
                    "since it cannot be listed; delete the source's cache to re-anchor on the tip",
                )
            bases.append(base)
        commits = [revision]
        if bases:
            # Oldest first (parents before children), so the first refusal reported is the
            # earliest bad commit; a merge's side branch is covered too.
            listing = str(
                repo.git.execute(
                    ["git", "rev-list", "--topo-order", "--reverse", revision, "--not", *bases, "--"],
                    kill_after_timeout=self.timeout_s,
                )
            )
            commits = listing.split() or [revision]
        tip: SignatureCheck | None = None
        for i, commit in enumerate(commits, 1):
            verdict = self.check(repo, commit)
            if not verdict.accepted:
                assert verdict.reason is not None
                detail = verdict.detail
                if commit != revision:
                    detail += f"; {i} of {len(commits)} new commits since {bases[0][:12]}"
                raise SignatureRejected(revision, verdict.reason, detail, commit=commit)
            if commit == revision:
                tip = verdict
        # The tip is always in the listing (it is not reachable from a different accepted base).
        return tip if tip is not None else self.check(repo, revision)


def _has_commit(repo: git.Repo, sha: str, timeout_s: float) -> bool:
    try:
        repo.git.execute(["git", "cat-file", "-e", f"{sha}^{{commit}}"], kill_after_timeout=timeout_s)
    except git.GitCommandError:
        return False
    return True


def _signature_format(repo: git.Repo, revision: str, timeout_s: float) -> SignatureFormat:
    """The kind of the commit's own signature (its gpgsig header, not a merged tag's)."""
    raw = str(repo.git.execute(["git", "cat-file", "commit", revision], kill_after_timeout=timeout_s))
    signature: list[str] = []
    in_sig = False
    for line in raw.split("\n\n", 1)[0].splitlines():
        if line.startswith(("gpgsig ", "gpgsig-sha256 ")):
            in_sig = True
            signature.append(line)
        elif in_sig and line.startswith(" "):
            signature.append(line)
        else:
            in_sig = False
    text = "\n".join(signature)
    if not text:
        return ""
    if "BEGIN SSH SIGNATURE" in text:
        return "ssh"
    if "BEGIN PGP SIGNATURE" in text:
        return "gpg"
    return "x509"
