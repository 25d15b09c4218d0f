"""The flyslice image's inputs, without building it (a build takes about a minute; the VNF pod test
in this directory builds and runs it): which distributions go in, that they must match
requirements.lock, and that the parts that make the digest are deterministic."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "kubeenv"))

import image  # noqa: E402


def test_runtime_dependencies_are_the_locked_closure_without_test_tools() -> None:
    names = {d.metadata["Name"].lower().replace("_", "-") for d in image.runtime_distributions()}
    # Direct dependencies and ones only reached transitively (kubernetes -> urllib3, aiohttp -> yarl).
    assert {"kubernetes", "pulp", "kopf", "cryptography", "pyyaml", "urllib3", "yarl"} <= names
    # Test tools and extras are in the same .venv and lock, never in the image.
    assert not names & {"pytest", "mypy", "hypothesis", "ruff", "highspy", "topohub", "flyslice"}


def test_a_dependency_not_at_its_locked_version_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "requirements.lock"
    pinned = [line for line in image.LOCK.read_text().splitlines() if not line.startswith("pyyaml==")]
    lock.write_text("\n".join([*pinned, "pyyaml==0.0.1 \\"]) + "\n")
    monkeypatch.setattr(image, "LOCK", lock)
    with pytest.raises(
        image.ImageBuildError, match=r"(?i)pyyaml 6\.\S+ in .* is not what requirements.lock pins \(0\.0\.1\)"
    ):
        image.runtime_distributions()


def test_pyc_is_unchecked_hash_and_the_same_for_the_same_source() -> None:
    a = image._pyc(b"x = 1\n", "usr/lib/m.py")
    assert a is not None and a == image._pyc(b"x = 1\n", "usr/lib/m.py")
    flags = int.from_bytes(a[4:8], "little")
    assert flags == 0b01  # hash-based (bit 0), not checked against the source (bit 1 clear)
    assert image._pyc(b"x = 2\n", "usr/lib/m.py") != a
    assert image._pyc(b"def (:\n", "usr/lib/bad.py") is None


def test_same_layers_same_digest_and_a_changed_file_changes_it(tmp_path: Path) -> None:
    def build(content: bytes, out: Path) -> image.Image:
        tree = image._Tree()
        image._add_python_file(tree, f"{image.SITE}/m.py", content, 0o644)
        return image.write_oci_layout(
            out, [image.Layer.of(tree.layer())], repository="t/x", tag="1", config={"Cmd": ["m"]}
        )

    first = build(b"x = 1\n", tmp_path / "a.tar")
    assert build(b"x = 1\n", tmp_path / "b.tar").digest == first.digest
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert build(b"x = 2\n", tmp_path / "c.tar").digest != first.digest
    # Layers read back from a tarball are the ones written (what flyslice_images stacks on python).
    (layer,) = image.layers_of(first)
    assert (
        image.write_oci_layout(
            tmp_path / "d.tar", [layer], repository="t/x", tag="1", config={"Cmd": ["m"]}
        ).digest
        == first.digest
    )


def test_prune_keeps_the_newest_and_the_recent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("FLYSLICE_CACHE", str(tmp_path))
    images = tmp_path / "images"
    images.mkdir()
    made = []
    for i in range(5):
        f = images / f"flyslice-{i}.oci.tar"
        f.write_bytes(b"")
        age = 7200 if i < 4 else 60  # four old ones, one written a minute ago
        os.utime(f, (f.stat().st_atime - age - i, f.stat().st_mtime - age - i))
        made.append(f)
    (images / "python-x.oci.tar").write_bytes(b"")
    removed = image._prune(keep={made[3]}, newest=1)
    # Newest by mtime is the recent one (kept, also too young); 3 is in keep; 0-2 go. Others untouched.
    assert sorted(removed) == made[:3]
    assert sorted(p.name for p in images.iterdir()) == [
        "flyslice-3.oci.tar",
        "flyslice-4.oci.tar",
        "python-x.oci.tar",
    ]


def test_cache_key_is_content_for_checkout_files_and_stat_for_host_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh clone (same content, new mtimes) finds the python and pause images in a warm cache;
    a changed checkout file, or a host file with a new size or mtime, gives a new cache path."""
    import os

    checkout, host = tmp_path / "checkout", tmp_path / "host"
    checkout.mkdir()
    host.mkdir()
    monkeypatch.setattr(image, "REPO", checkout)
    monkeypatch.setenv("FLYSLICE_CACHE", str(tmp_path / "cache"))
    mine, theirs = checkout / "image.py", host / "python3.11"
    mine.write_text("v1\n")
    theirs.write_bytes(b"\x7fELF")
    first = image._cached("python", [theirs, mine])
    assert first.parent == tmp_path / "cache" / "images" and first.name.startswith("python-")
    os.utime(mine, ns=(1, 1))  # as a clone writes it: same bytes, another mtime
    assert image._cached("python", [theirs, mine]) == first
    assert image._cached("pause", [theirs, mine]) != first
    mine.write_text("v2\n")
    assert image._cached("python", [theirs, mine]) != first
    mine.write_text("v1\n")
    os.utime(theirs, ns=(1, 1))  # a host file replaced (an upgraded package): rebuilt
    assert image._cached("python", [theirs, mine]) != first
