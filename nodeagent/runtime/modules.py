"""Module references, integrity checks and loading of NF code (fNF and VNF runner alike).

A reference is ``builtin:<name>`` (``nodeagent/nfs/<name>.py`` shipped with flyslice) or
``file:<absolute path>``. The loader reads the bytes once, checks their sha256 against the
package's digest (and an ed25519 signature when trusted keys are configured) and only then
compiles and executes *those same bytes* — the file is never read again, so a file swapped after
the check cannot slip in. Code is cached by digest: equal digests mean equal bytes, so every
instance of one package shares one module object (this is what keeps an idle fNF small).
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import threading
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flyslice.nodeagent.sdk import NetworkFunction

if TYPE_CHECKING:  # cryptography costs ~6 MB of RSS: imported only when signing is configured
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "nfs"
_BUILTIN_RE = re.compile(r"^builtin:([a-z][a-z0-9_]*)$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class ModuleRefError(ValueError):
    """A module reference that is malformed or points at nothing."""


class IntegrityError(ValueError):
    """Module bytes whose digest or signature does not match; the module is never executed."""


class EntrypointError(ValueError):
    """The module ran but does not define a usable NF class."""


def resolve_ref(ref: str, module_dirs: Sequence[Path] | None = None) -> Path:
    """The file a reference names. With ``module_dirs`` (an agent's ``--module-dir`` list; empty:
    none allowed), a ``file:`` module must lie inside one of them once symlinks and ``..`` are
    resolved; ``builtin:`` modules are not affected. ``None``: no confinement (library use)."""
    m = _BUILTIN_RE.match(ref)
    if m:
        path = BUILTIN_DIR / f"{m.group(1)}.py"
    elif ref.startswith("file:"):
        path = Path(ref.removeprefix("file:"))
        if not path.is_absolute():
            raise ModuleRefError(f"module {ref!r}: file: references need an absolute path")
        if module_dirs is not None:
            path = _confined(ref, path, module_dirs)
    else:
        raise ModuleRefError(f"module {ref!r}: expected builtin:<name> or file:<absolute path>")
    if not path.is_file():
        raise ModuleRefError(f"module {ref!r}: no such file {path}")
    return path


def _confined(ref: str, path: Path, module_dirs: Sequence[Path]) -> Path:
    # Resolved, so neither a symlink in the allowed directory nor '..' leads out of it; the caller
    # then reads the resolved path, not the one the reference spelled.
    real = path.resolve()
    if not module_dirs:
        raise ModuleRefError(
            f"module {ref!r}: file: modules are not allowed on this agent "
            "(no --module-dir configured; builtin: modules are)"
        )
    allowed = [Path(d).resolve() for d in module_dirs]
    if not any(real.is_relative_to(d) for d in allowed):
        raise ModuleRefError(
            f"module {ref!r}: {real} is outside the allowed module directories "
            f"({', '.join(map(str, allowed))}; see --module-dir)"
        )
    return real


def read_module_bytes(ref: str, module_dirs: Sequence[Path] | None = None) -> bytes:
    path = resolve_ref(ref, module_dirs)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModuleRefError(f"module {ref!r}: cannot read {path}: {exc}") from exc


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def module_digest(ref: str) -> str:
    """``sha256:<hex>`` of the module's exact bytes, the value an NFPackage's ``digest`` must hold."""
    return digest_of(read_module_bytes(ref))


def load_public_key(data: bytes | str) -> Ed25519PublicKey:
    """A trusted key given as PEM, or as the 32 raw bytes (or their base64)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = data.encode() if isinstance(data, str) else data
    if raw.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(raw)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("trusted key is not an ed25519 public key")
        return key
    if len(raw) != 32:
        raw = base64.b64decode(raw)
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_b64(key: Ed25519PublicKey) -> str:
    """The key's 32 raw bytes in base64: how a trusted key travels to a runner (argv, pod args).

    Public keys are not secrets, so argv is fine; passing the bytes themselves (not a path) means no
    file the runner later reads can be swapped between the agent's choice and the runner's check.
    """
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


class ModuleLoader:
    """Verifies and executes NF modules; thread-safe; caches verified code by digest."""

    def __init__(
        self, trusted_keys: Iterable[Ed25519PublicKey] = (), module_dirs: Iterable[Path] | None = None
    ) -> None:
        self.trusted_keys = list(trusted_keys)
        #: Where ``file:`` modules may live (see :func:`resolve_ref`); None: anywhere.
        self.module_dirs: tuple[Path, ...] | None = None if module_dirs is None else tuple(module_dirs)
        self._cache: dict[str, types.ModuleType] = {}
        self._lock = threading.Lock()
        #: How many times module bytes were actually executed (tests assert no double loads).
        self.executions = 0

    def verify(self, ref: str, data: bytes, digest: str, signature: str = "") -> None:
        if not _DIGEST_RE.match(digest or ""):
            raise IntegrityError(f"module {ref!r}: digest {digest!r} is not sha256:<64 hex digits>")
        actual = digest_of(data)
        if actual != digest:
            raise IntegrityError(
                f"module {ref!r}: digest mismatch: package says {digest}, bytes are {actual}"
            )
        if not self.trusted_keys:
            return
        from cryptography.exceptions import InvalidSignature

        if not signature:
            raise IntegrityError(
                f"module {ref!r}: a signing key is configured but the module has no signature"
            )
        try:
            sig = base64.b64decode(signature, validate=True)
        except ValueError as exc:
            raise IntegrityError(f"module {ref!r}: signature is not valid base64") from exc
        for key in self.trusted_keys:
            try:
                key.verify(sig, data)
                return
            except InvalidSignature:
                continue
        raise IntegrityError(f"module {ref!r}: signature does not verify with any trusted key")

    def load(self, ref: str, digest: str, signature: str = "") -> types.ModuleType:
        data = read_module_bytes(ref, self.module_dirs)
        self.verify(ref, data, digest, signature)
        with self._lock:
            cached = self._cache.get(digest)
            if cached is not None:
                return cached
            name = f"flyslice_fnf_{digest[7:23]}"
            module = types.ModuleType(name)
            module.__file__ = f"<{ref} {digest[:19]}>"
            # Registered so that dataclasses, pickling and tracebacks can find the module by name.
            sys.modules[name] = module
            try:
                code = compile(data, module.__file__, "exec")
                self.executions += 1
                exec(code, module.__dict__)
            except BaseException:
                sys.modules.pop(name, None)
                raise
            self._cache[digest] = module
            return module

    def cached_digests(self) -> set[str]:
        with self._lock:
            return set(self._cache)

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Forget every cached module whose digest is not in ``keep``; returns the digests dropped.

        Without this every fNF update or uninstall left its module in ``sys.modules`` and in the
        cache for the life of the agent. Dropping both references lets the garbage collector free
        the module (its classes and functions form cycles, so the *cyclic* collector does it, at
        its next run). Instances still running a dropped module keep it alive through their class;
        a later load of the same digest then executes the verified bytes again. One loader per
        platform: ``keep`` must name every digest any user of this loader still needs.
        """
        wanted = set(keep)
        with self._lock:
            dropped = [d for d in self._cache if d not in wanted]
            for digest in dropped:
                module = self._cache.pop(digest)
                if sys.modules.get(module.__name__) is module:
                    del sys.modules[module.__name__]
        return dropped

    def nf_class(
        self, ref: str, digest: str, entrypoint: str = "NF", signature: str = ""
    ) -> type[NetworkFunction]:
        module = self.load(ref, digest, signature)
        cls = getattr(module, entrypoint or "NF", None)
        if not isinstance(cls, type) or not issubclass(cls, NetworkFunction):
            raise EntrypointError(
                f"module {ref!r}: entrypoint {entrypoint!r} is not a NetworkFunction subclass"
            )
        return cls
