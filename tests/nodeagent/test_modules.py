"""Integrity: a module runs only if the exact bytes match the digest (and signature, if required)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flyslice.nodeagent.runtime.modules import (
    BUILTIN_DIR,
    EntrypointError,
    IntegrityError,
    ModuleLoader,
    ModuleRefError,
    load_public_key,
    module_digest,
)

MARKER_MODULE = """
from pathlib import Path
from flyslice.nodeagent.sdk import NetworkFunction
Path({marker!r}).write_text("imported")
class NF(NetworkFunction):
    pass
"""


def write_module(tmp_path: Path, name: str = "m.py") -> tuple[Path, Path]:
    marker = tmp_path / f"{name}.imported"
    path = tmp_path / name
    path.write_text(MARKER_MODULE.format(marker=str(marker)))
    return path, marker


def test_builtin_digest_is_sha256_of_the_shipped_file() -> None:
    data = (BUILTIN_DIR / "broker.py").read_bytes()
    assert module_digest("builtin:broker") == "sha256:" + hashlib.sha256(data).hexdigest()


def test_tampered_module_is_refused_and_never_imported(tmp_path: Path) -> None:
    path, marker = write_module(tmp_path)
    digest = module_digest(f"file:{path}")
    path.write_text(path.read_text() + "\n# tampered\n")
    loader = ModuleLoader()
    with pytest.raises(IntegrityError, match="digest mismatch"):
        loader.nf_class(f"file:{path}", digest)
    assert not marker.exists()
    assert loader.executions == 0


def test_matching_module_is_executed_once_and_shared(tmp_path: Path) -> None:
    path, marker = write_module(tmp_path)
    ref, digest = f"file:{path}", module_digest(f"file:{path}")
    loader = ModuleLoader()
    a = loader.nf_class(ref, digest)
    b = loader.nf_class(ref, digest)
    assert a is b and marker.read_text() == "imported"
    assert loader.executions == 1


@pytest.mark.parametrize(
    ("ref", "error", "match"),
    [
        ("builtin:does_not_exist", ModuleRefError, "no such file"),
        ("file:relative/path.py", ModuleRefError, "absolute path"),
        ("http://example.com/x.py", ModuleRefError, "expected builtin"),
    ],
)
def test_bad_references_are_named(ref: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ModuleLoader().load(ref, "sha256:" + "0" * 64)


def test_malformed_digest_is_refused() -> None:
    with pytest.raises(IntegrityError, match="not sha256"):
        ModuleLoader().load("builtin:broker", "md5:abc")


def test_entrypoint_must_be_a_network_function(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text("class NF:\n    pass\n")
    with pytest.raises(EntrypointError, match="not a NetworkFunction"):
        ModuleLoader().nf_class(f"file:{path}", module_digest(f"file:{path}"))
    with pytest.raises(EntrypointError, match="'Missing'"):
        ModuleLoader().nf_class(f"file:{path}", module_digest(f"file:{path}"), "Missing")


def test_signature_required_and_verified_when_keys_are_configured(tmp_path: Path) -> None:
    path, marker = write_module(tmp_path)
    ref, digest = f"file:{path}", module_digest(f"file:{path}")
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    loader = ModuleLoader([load_public_key(pem)])
    with pytest.raises(IntegrityError, match="no signature"):
        loader.load(ref, digest)
    other = base64.b64encode(Ed25519PrivateKey.generate().sign(path.read_bytes())).decode()
    with pytest.raises(IntegrityError, match="does not verify"):
        loader.load(ref, digest, other)
    assert not marker.exists()
    good = base64.b64encode(key.sign(path.read_bytes())).decode()
    loader.load(ref, digest, good)
    assert marker.exists()
