"""The flyslice image's inputs, without building it (a build takes about a minute; the VNF pod test
in this directory builds and runs it): which distributions go in, that they must match
requirements.lock, and that the parts that make the digest are deterministic, in any process."""

from __future__ import annotations

import json
import subprocess
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


def test_pyc_is_unchecked_hash_and_the_same_for_the_same_source(tmp_path: Path) -> None:
    a = image._pyc(b"x = 1\n", "usr/lib/m.py")
    assert a is not None and a == image._pyc(b"x = 1\n", "usr/lib/m.py")
    flags = int.from_bytes(a[4:8], "little")
    assert flags == 0b01  # hash-based (bit 0), not checked against the source (bit 1 clear)
    assert image._pyc(b"x = 2\n", "usr/lib/m.py") != a
    assert image._pyc(b"def (:\n", "usr/lib/bad.py") is None
    # The image's python3.11 loads it without checking the source: beside a source saying x = 2,
    # the module still has the compiled x = 1 (Python would recompile a checked or stale .pyc).
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "m.py").write_text("x = 2\n")
    (tmp_path / "__pycache__" / f"m.{sys.implementation.cache_tag}.pyc").write_bytes(a)
    script = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import m; print(m.x)"
    run = subprocess.run(
        [str(image.PYTHON), "-I", "-B", "-c", script], capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == "1"


#: One-character strings are process-wide singletons, interned or not by whatever ran before (a
#: module whose .pyc marks "{" interned interns it on import); marshal writes the flag it finds.
_PUNCTUATION = b"T = ['{', '}', ':', ',', '[', ']', '%', '!', '&', '*', '|', '>', '-', '?', '.', '@']\n"
#: Builds the .pyc of the sources on stdin (JSON: image path -> text) in a new process, after
#: importing ``argv[2]`` (comma-separated modules), with image.compile_pycs and the way image.py
#: compiled before (in the building process), and prints both as JSON.
_BUILD_IN_A_PROCESS = """
import importlib, json, sys
from importlib._bootstrap_external import _code_to_hash_pyc
from importlib.util import source_hash
sys.path.insert(0, sys.argv[1])
import image
for name in filter(None, sys.argv[2].split(",")):
    importlib.import_module(name)
sources = {k: v.encode() for k, v in json.load(sys.stdin).items()}
new = image.compile_pycs(sources)
old = {k: _code_to_hash_pyc(compile(v, "/" + k, "exec", dont_inherit=True), source_hash(v), False).hex()
       for k, v in sources.items()}
print(json.dumps({k: [new[k].hex(), old[k]] for k in sources}))
"""


def _build_in_a_process(sources: dict[str, bytes], imports: str) -> dict[str, list[str]]:
    run = subprocess.run(
        [sys.executable, "-c", _BUILD_IN_A_PROCESS, str(REPO / "tools" / "kubeenv"), imports],
        input=json.dumps({k: v.decode() for k, v in sources.items()}), capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    result: dict[str, list[str]] = json.loads(run.stdout)
    return result


def test_pyc_bytes_do_not_depend_on_what_the_building_process_imported() -> None:
    """The same sources give byte-identical .pyc from a bare process and from one that imported
    yaml, kopf, pydantic and git first; compiled in the building process (as before
    image.compile_pycs), the second process's bytes differ. A file's .pyc is also the same alone
    as in a batch with others."""
    import yaml

    yaml_dir = Path(yaml.__file__).parent
    sources = {f"{image.SITE}/punctuation.py": _PUNCTUATION}
    for name in ("tokens.py", "emitter.py", "scanner.py"):
        sources[f"{image.SITE}/yaml/{name}"] = (yaml_dir / name).read_bytes()
    bare = _build_in_a_process(sources, "")
    loaded = _build_in_a_process(sources, "yaml,kopf,pydantic,git")
    assert {k: v[0] for k, v in bare.items()} == {k: v[0] for k, v in loaded.items()}
    header = (image._pyc(b"", "x.py") or b"")[:8]  # magic number, flags: unchecked hash
    assert all(bytes.fromhex(v[0])[:8] == header for v in bare.values())
    # What the old in-process compile gave: the imports changed the bytes (the test's control).
    changed = sorted(k for k in sources if bare[k][1] != loaded[k][1])
    assert changed, "these imports no longer change in-process .pyc: pick other modules for this test"
    alone = {k: image.compile_pycs({k: v})[k] for k, v in sources.items()}
    assert {k: (v or b"").hex() for k, v in alone.items()} == {k: v[0] for k, v in bare.items()}


def test_a_missing_compiler_fails_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image, "PYC_COMPILER", tmp_path / "python3.11")
    with pytest.raises(
        image.ImageBuildError, match=r"python3\.11 not found \(Debian package python3\.11-minimal\)"
    ):
        image.compile_pycs({"m.py": b"x = 1\n"})
    assert image.compile_pycs({}) == {}  # nothing to compile: no process, no error


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
