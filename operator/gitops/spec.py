"""The GitSource spec as a typed, immutable value: what to fetch, how to authenticate, what to trust.

It mirrors the ``GitSource`` CRD (``crds/gitsource.yaml``). Secrets are never stored in a field that
``repr`` shows: a token or an SSH key is either named indirectly (an environment variable or a file)
or held in a ``repr=False`` field, so logging a spec cannot leak it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

RefKind = Literal["branch", "tag", "commit"]
SignatureMode = Literal["none", "required"]

_INTERVAL_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_INTERVAL = re.compile(r"^([0-9]+(ms|s|m|h|d))+$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
#: Flux's default; the CRD defaults ``interval`` to the same.
DEFAULT_INTERVAL_S = 60.0


class GitSpecError(ValueError):
    """A GitSource spec that cannot be followed; the message names the field."""

    def __init__(self, field_path: str, message: str, source: str = "") -> None:
        self.field_path = field_path
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field_path}: {message}")


@dataclass(frozen=True)
class GitRef:
    """Exactly one of a branch to follow, a tag, or a commit to pin (full or abbreviated SHA)."""

    kind: RefKind = "branch"
    name: str = "main"

    def __post_init__(self) -> None:
        if self.kind not in ("branch", "tag", "commit"):
            raise GitSpecError("spec.ref", f"unknown ref kind {self.kind!r}; use branch, tag or commit")
        if not self.name:
            raise GitSpecError(f"spec.ref.{self.kind}", "must not be empty")
        if self.kind == "commit" and not _COMMIT.match(self.name):
            raise GitSpecError("spec.ref.commit", f"{self.name!r} is not a 7-40 digit lowercase hex SHA")
        if self.kind != "commit" and (self.name.startswith("-") or ".." in self.name or " " in self.name):
            raise GitSpecError(f"spec.ref.{self.kind}", f"{self.name!r} is not a valid git ref name")

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class GitCredentials:
    """How to authenticate to the remote. Nothing secret is shown by ``repr``.

    HTTPS: a token (or password) sent as HTTP basic auth, read from ``token_env`` (an environment
    variable name), ``token_file``, or ``token`` (for callers that already hold it, e.g. from a
    Kubernetes Secret). SSH: a private key file (or key text) and optionally a known_hosts file.
    """

    username: str = "git"
    token_env: str | None = None
    token_file: Path | None = None
    token: str | None = field(default=None, repr=False)
    ssh_key_file: Path | None = None
    ssh_key: str | None = field(default=None, repr=False)
    known_hosts_file: Path | None = None
    #: known_hosts text (e.g. from a Secret); written next to the cache when ``known_hosts_file`` is unset.
    known_hosts: str | None = None

    def resolve_token(self) -> str | None:
        """The HTTPS secret, read now (so a rotated file or variable is picked up on the next fetch)."""
        if self.token:
            return self.token
        if self.token_env:
            value = os.environ.get(self.token_env)
            if not value:
                raise GitSpecError(
                    "credentials.tokenEnv", f"environment variable {self.token_env} is not set"
                )
            return value
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip()
            except OSError as exc:
                raise GitSpecError(
                    "credentials.tokenFile", f"cannot read {self.token_file}: {exc.strerror}"
                ) from exc
        return None

    @property
    def uses_ssh(self) -> bool:
        return self.ssh_key_file is not None or self.ssh_key is not None

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str | bytes]) -> GitCredentials:
        """From a Secret's data, with Flux's key names: username, password (or token/bearerToken),
        identity, known_hosts."""

        def text(key: str) -> str | None:
            value = data.get(key)
            if value is None:
                return None
            return value.decode() if isinstance(value, bytes) else value

        token = text("password") or text("token") or text("bearerToken")
        return cls(
            username=text("username") or "git",
            token=token,
            ssh_key=text("identity"),
            known_hosts=text("known_hosts"),
        )


@dataclass(frozen=True)
class SignaturePolicy:
    """Commit-signature policy: with ``required``, a revision is applied only if it and every commit
    since the last accepted revision are signed by a trusted key (the first fetch: the tip only).

    Trusted keys: ASCII-armoured GPG public keys (``gpg_public_keys``, each one or more keys) and/or
    an SSH allowed-signers text (``ssh_allowed_signers``, the format of ``ssh-keygen -Y verify``).
    """

    mode: SignatureMode = "none"
    gpg_public_keys: tuple[str, ...] = ()
    ssh_allowed_signers: str = ""

    def __post_init__(self) -> None:
        if self.mode not in ("none", "required"):
            raise GitSpecError("spec.verify.mode", f"{self.mode!r} is not one of none, required")
        if self.mode == "required" and not self.gpg_public_keys and not self.ssh_allowed_signers.strip():
            raise GitSpecError(
                "spec.verify", "mode required needs trusted keys: GPG public keys and/or SSH allowed signers"
            )

    @classmethod
    def from_files(
        cls,
        mode: SignatureMode,
        gpg_key_files: tuple[Path, ...] = (),
        ssh_allowed_signers_file: Path | None = None,
    ) -> SignaturePolicy:
        try:
            keys = tuple(p.read_text() for p in gpg_key_files)
            signers = ssh_allowed_signers_file.read_text() if ssh_allowed_signers_file else ""
        except OSError as exc:
            raise GitSpecError(
                "spec.verify", f"cannot read trusted keys {exc.filename}: {exc.strerror}"
            ) from exc
        return cls(mode=mode, gpg_public_keys=keys, ssh_allowed_signers=signers)


@dataclass(frozen=True)
class GitSourceSpec:
    """What one GitSource follows. ``path`` is a directory inside the repository (``.`` is the root)."""

    url: str
    ref: GitRef = GitRef()
    path: str = "."
    interval_s: float = DEFAULT_INTERVAL_S
    credentials: GitCredentials = GitCredentials()
    verify: SignaturePolicy = SignaturePolicy()
    prune: bool = True
    suspend: bool = False
    #: Upper bound for one git command (fetch, archive); a hung remote becomes a fetch error.
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.url:
            raise GitSpecError("spec.url", "must not be empty")
        check_url(self.url)
        object.__setattr__(self, "path", normalize_repo_path(self.path))
        if self.interval_s <= 0:
            raise GitSpecError("spec.interval", f"must be positive, got {self.interval_s}")
        if self.timeout_s <= 0:
            raise GitSpecError("spec.timeout", f"must be positive, got {self.timeout_s}")

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    @classmethod
    def from_manifest(
        cls,
        obj: Mapping[str, Any],
        *,
        credentials: GitCredentials | None = None,
        verify_keys: SignaturePolicy | None = None,
    ) -> GitSourceSpec:
        """From a GitSource object (a CR or YAML in git). The secrets its ``secretRef`` fields name are
        resolved by the caller and passed as ``credentials`` and ``verify_keys`` (whose mode is
        overridden by ``spec.verify.mode``)."""
        meta = obj.get("metadata") or {}
        name = f"GitSource/{meta.get('namespace', 'default')}/{meta.get('name', '?')}"
        spec = obj.get("spec")
        if not isinstance(spec, Mapping):
            raise GitSpecError("spec", "must be a mapping", name)
        try:
            return cls(
                url=_str(spec, "url", required=True),
                ref=_ref(spec.get("ref")),
                path=_str(spec, "path") or ".",
                interval_s=parse_interval(spec.get("interval", "1m"), "spec.interval"),
                credentials=credentials or GitCredentials(),
                verify=_verify(spec.get("verify"), verify_keys),
                prune=_bool(spec, "prune", True),
                suspend=_bool(spec, "suspend", False),
            )
        except GitSpecError as exc:
            raise GitSpecError(exc.field_path, str(exc).split(": ", 1)[-1], name) from None


#: Transports git may use for a GitSource (also enforced with GIT_ALLOW_PROTOCOL when git runs).
ALLOWED_SCHEMES = ("https", "http", "ssh", "git", "file")
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:")


def check_url(url: str) -> None:
    """A repository URL git can fetch without surprises: one of :data:`ALLOWED_SCHEMES`, an scp-like
    ``user@host:path``, or a local path. Never something git would read as an option."""
    if url.startswith("-"):
        raise GitSpecError("spec.url", f"{redact_url(url)!r} must not start with '-'")
    if any(ch in url for ch in "\n\r\0"):
        raise GitSpecError("spec.url", "must not contain control characters")
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        if scheme not in ALLOWED_SCHEMES:
            raise GitSpecError("spec.url", f"scheme {scheme!r} is not one of {', '.join(ALLOWED_SCHEMES)}")
    elif "::" in url:
        raise GitSpecError("spec.url", "git remote helpers (<transport>::<address>) are not allowed")


def parse_interval(value: object, field_path: str = "spec.interval") -> float:
    """``1m30s`` -> 90.0 (the CRD's duration syntax: ms, s, m, h, d)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _INTERVAL.match(value):
        seconds = sum(int(n) * _UNIT_S[u] for n, u in _INTERVAL_PART.findall(value))
    else:
        raise GitSpecError(field_path, f"{value!r} is not a duration like 30s, 5m or 1h30m")
    if seconds <= 0:
        raise GitSpecError(field_path, f"{value!r} must be longer than zero")
    return seconds


def normalize_repo_path(path: str) -> str:
    """A relative POSIX path inside the repository, ``.`` for the root; no escaping with ``..``."""
    p = PurePosixPath(path.strip() or ".")
    if p.is_absolute():
        raise GitSpecError("spec.path", f"{path!r} must be relative to the repository root")
    if ".." in p.parts:
        raise GitSpecError("spec.path", f"{path!r} must not leave the repository (contains ..)")
    return str(p)


def redact_url(url: str) -> str:
    """The URL without a password or token in its user-info part (``https://TOKEN@host`` included)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    if parts.scheme in ("http", "https"):
        userinfo = "***"
    elif parts.password is not None:
        userinfo = f"{parts.username}:***"
    else:
        return url  # ssh://git@host/...: a user name, nothing secret
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query, parts.fragment))


def _str(spec: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = spec.get(key)
    if value is None:
        if required:
            raise GitSpecError(f"spec.{key}", "is required")
        return ""
    if not isinstance(value, str):
        raise GitSpecError(f"spec.{key}", f"must be a string, got {type(value).__name__}")
    return value


def _bool(spec: Mapping[str, Any], key: str, default: bool) -> bool:
    value = spec.get(key, default)
    if not isinstance(value, bool):
        raise GitSpecError(f"spec.{key}", f"must be true or false, got {value!r}")
    return value


def _ref(ref: object) -> GitRef:
    if ref is None:
        return GitRef()
    if not isinstance(ref, Mapping):
        raise GitSpecError("spec.ref", "must be a mapping with one of branch, tag, commit")
    present = [k for k in ("branch", "tag", "commit") if ref.get(k) is not None]
    unknown = sorted(set(ref) - {"branch", "tag", "commit"})
    if unknown:
        raise GitSpecError(f"spec.ref.{unknown[0]}", "unknown field; use exactly one of branch, tag, commit")
    if len(present) != 1:
        raise GitSpecError("spec.ref", f"set exactly one of branch, tag and commit (got {present or 'none'})")
    kind = present[0]
    value = ref[kind]
    if not isinstance(value, str):
        raise GitSpecError(f"spec.ref.{kind}", f"must be a string, got {type(value).__name__}")
    return GitRef(kind, value)  # type: ignore[arg-type]


def _verify(verify: object, keys: SignaturePolicy | None) -> SignaturePolicy:
    if verify is None:
        return SignaturePolicy()
    if not isinstance(verify, Mapping):
        raise GitSpecError("spec.verify", "must be a mapping")
    mode = verify.get("mode", "none")
    if mode not in ("none", "required"):
        raise GitSpecError("spec.verify.mode", f"{mode!r} is not one of none, required")
    if mode == "none":
        return SignaturePolicy()
    if keys is None:
        raise GitSpecError("spec.verify.secretRef", "mode required needs trusted keys, none were provided")
    return SignaturePolicy(
        mode="required", gpg_public_keys=keys.gpg_public_keys, ssh_allowed_signers=keys.ssh_allowed_signers
    )
