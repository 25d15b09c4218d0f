"""Build minimal OCI images here, with no registry and no container engine, for the real test nodes.

No registry is reachable from this machine and no Docker engine runs here, so images are assembled
file by file from the host and written as an OCI image layout tarball, which
``ctr -n k8s.io images import`` loads into a node's containerd:

* ``python_image`` — Debian's ``/usr/bin/python3.11``, the shared libraries ``ldd`` says it and
  its C extension modules need, and its standard library (without tests, IDLE, tkinter, ensurepip
  and the static build config): enough to run ``python3 -c ...`` in a pod.
* ``pause_image`` — the pod sandbox image: the static ``pause`` program that
  ``tools/kubeenv/build-node.sh`` compiles with gcc, alone in its rootfs.

Each image is one gzip layer written deterministically (sorted entries, mtime 0, uid/gid 0), so
the same host files give the same digest; images are cached under
``${FLYSLICE_CACHE:-~/.cache/flyslice}/images/``. The index names every image twice: by tag
(``flyslice.local/python:3.11``) and by digest (``flyslice.local/python@sha256:...``), because
containerd's CRI plugin resolves a digest reference only through an image record of that name.
Only the host's architecture is built (``amd64`` here); no multi-arch index yet.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import re
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Bump when the layout or contents of an image change, so cached tarballs are rebuilt.
IMAGE_FORMAT = 1
PYTHON = Path("/usr/bin/python3.11")
# Parts of the standard library a pod never needs; they are a third of its size.
STDLIB_SKIP = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
        "config-3.11-x86_64-linux-gnu",
    }
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class ImageBuildError(RuntimeError):
    """A file the image needs is missing on the host, or a tool failed; the message names it."""


@dataclass(frozen=True)
class Image:
    """An OCI layout tarball on disk and the references it carries."""

    path: Path
    repository: str  # flyslice.local/python
    tag: str
    digest: str  # sha256:... of the manifest

    @property
    def by_tag(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def by_digest(self) -> str:
        """The reference a Pod should use: immutable, and never pulled (no registry holds it)."""
        return f"{self.repository}@{self.digest}"


def cache_dir() -> Path:
    return Path(os.environ.get("FLYSLICE_CACHE") or Path.home() / ".cache" / "flyslice") / "images"


def oci_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


# --- file collection ----------------------------------------------------------------------------


class _Tree:
    """Host paths to copy into a rootfs, keeping every symlink on the way (Debian's /lib -> usr/lib)."""

    def __init__(self) -> None:
        self.files: dict[str, Path] = {}  # path in the image (no leading /) -> host file
        self.links: dict[str, str] = {}  # path in the image -> link target, as on the host
        self.dirs: set[str] = set()

    def add(self, host_path: Path | str, image_path: str | None = None) -> None:
        """Add a host file under the same path (or ``image_path``), resolving symlinks one component
        at a time so that each link is recreated in the image and its target copied too."""
        path = str(host_path)
        if not os.path.isabs(path):
            raise ImageBuildError(f"image: {path}: not an absolute path")
        if image_path is not None:
            self._add_file(Path(os.path.realpath(path)), image_path.lstrip("/"))
            return
        parts = [p for p in path.split("/") if p]
        current = ""
        for i, part in enumerate(parts):
            current = f"{current}/{part}"
            if os.path.islink(current):
                target = os.readlink(current)
                self.links[current.lstrip("/")] = target
                resolved = os.path.normpath(os.path.join(os.path.dirname(current), target))
                rest = "/".join(parts[i + 1 :])
                self.add(f"{resolved}/{rest}" if rest else resolved)
                return
        if not os.path.exists(path):
            raise ImageBuildError(f"image: {path}: no such file on this host")
        if os.path.isdir(path):
            self.dirs.add(path.lstrip("/"))
        else:
            self._add_file(Path(path), path.lstrip("/"))

    def _add_file(self, host: Path, name: str) -> None:
        if not host.is_file():
            raise ImageBuildError(f"image: {host}: no such file on this host")
        self.files[name] = host

    def add_tree(self, root: Path, skip: Iterable[str] = ()) -> None:
        skipped = set(skip)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in skipped)
            self.add(dirpath)
            for name in filenames:
                full = os.path.join(dirpath, name)
                if os.path.islink(full):
                    self.links[full.lstrip("/")] = os.readlink(full)
                else:
                    self.add(full)

    def add_with_libraries(self, binary: Path) -> None:
        """A dynamically linked file and every shared library ``ldd`` resolves for it."""
        self.add(binary)
        for lib in _ldd(binary):
            self.add(lib)

    def layer(self) -> bytes:
        """The tree as an uncompressed, reproducible tar: parents first, sorted, owned by root."""
        entries: dict[str, tuple[str, object]] = {}
        for name in self.dirs:
            entries[name] = ("dir", None)
        for name, target in self.links.items():
            entries[name] = ("link", target)
        for name, host in self.files.items():
            entries[name] = ("file", host)
        for name in list(entries):
            parent = os.path.dirname(name)
            while parent and parent not in entries:
                entries[parent] = ("dir", None)
                parent = os.path.dirname(parent)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(entries):
                kind, value = entries[name]
                info = tarfile.TarInfo(name)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o1777 if name == "tmp" else 0o755
                    tar.addfile(info)
                elif kind == "link":
                    info.type = tarfile.SYMTYPE
                    info.linkname = str(value)
                    info.mode = 0o777
                    tar.addfile(info)
                else:
                    assert isinstance(value, Path)
                    data = value.read_bytes()
                    info.size = len(data)
                    info.mode = 0o755 if value.stat().st_mode & stat.S_IXUSR else 0o644
                    tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()


def _ldd(binary: Path) -> list[str]:
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError as exc:
        raise ImageBuildError("image: ldd is not installed (Debian package libc-bin)") from exc
    libs: list[str] = []
    for line in out.splitlines():
        # "libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            libs.append(match.group(1))
        elif "not found" in line:
            raise ImageBuildError(f"image: {binary}: library {line.split()[0]} not found on this host")
    return libs


# --- OCI layout ---------------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_oci_layout(
    out: Path,
    layer_tar: bytes,
    *,
    repository: str,
    tag: str,
    config: dict[str, object],
) -> Image:
    """One-layer OCI image layout tarball at ``out``; returns its references."""
    compressed = gzip.compress(layer_tar, compresslevel=6, mtime=0)
    image_config = _json(
        {
            "architecture": oci_arch(),
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
            "history": [{"created_by": f"flyslice tools/kubeenv/image.py (format {IMAGE_FORMAT})"}],
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _digest(image_config), "size": len(image_config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": _digest(compressed), "size": len(compressed)}],
        }
    )
    digest = _digest(manifest)
    descriptor = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)}
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    **descriptor,
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": ref,
                    },
                    "platform": {"architecture": oci_arch(), "os": "linux"},
                }
                for name, ref in ((f"{repository}:{tag}", tag), (f"{repository}@{digest}", digest))
            ],
        }
    )
    blobs = {_digest(b): b for b in (compressed, image_config, manifest)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        members = [("oci-layout", _json({"imageLayoutVersion": "1.0.0"})), ("index.json", index)]
        members += [(f"blobs/sha256/{d.removeprefix('sha256:')}", b) for d, b in sorted(blobs.items())]
        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return Image(out, repository, tag, digest)


def _cached(name: str, inputs: Iterable[Path]) -> Path:
    """The cache path for an image whose content depends on ``inputs`` (their paths, sizes, mtimes)."""
    h = hashlib.sha256(f"{IMAGE_FORMAT}:{name}".encode())
    for p in inputs:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return cache_dir() / f"{name}-{h.hexdigest()[:16]}.oci.tar"


def _load(path: Path, repository: str, tag: str) -> Image:
    with tarfile.open(path) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        index = json.load(member)
    return Image(path, repository, tag, index["manifests"][0]["digest"])


def python_image(repository: str = "flyslice.local/python", tag: str = "3.11") -> Image:
    """The host's Debian python3.11 with its libraries and standard library, as an OCI tarball."""
    if not PYTHON.exists():
        raise ImageBuildError(f"image: {PYTHON} not found (Debian package python3.11-minimal)")
    stdlib = Path("/usr/lib/python3.11")
    dynload = stdlib / "lib-dynload"
    out = _cached("python", [PYTHON, stdlib, dynload, Path(__file__)])
    if out.exists():
        return _load(out, repository, tag)
    tree = _Tree()
    tree.add_with_libraries(PYTHON)
    tree.add_tree(stdlib, skip=STDLIB_SKIP)
    for ext in sorted(dynload.glob("*.so")):
        for lib in _ldd(ext):
            tree.add(lib)
    tree.links["usr/bin/python3"] = "python3.11"
    tree.dirs.update({"tmp", "proc", "sys", "dev", "etc"})
    return write_oci_layout(
        out,
        tree.layer(),
        repository=repository,
        tag=tag,
        config={
            "Env": ["PATH=/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"],
            "Cmd": ["/usr/bin/python3"],
            "WorkingDir": "/",
        },
    )


def pause_image(pause_binary: Path, repository: str = "flyslice.local/pause", tag: str = "1") -> Image:
    """The sandbox image: a static ``pause`` binary at ``/pause`` (built by build-node.sh)."""
    if not os.access(pause_binary, os.X_OK):
        raise ImageBuildError(f"image: {pause_binary}: not an executable (run tools/kubeenv/build-node.sh)")
    out = _cached("pause", [pause_binary, Path(__file__)])
    if out.exists():
        return _load(out, repository, tag)
    tree = _Tree()
    tree.add(pause_binary, "/pause")
    return write_oci_layout(
        out,
        tree.layer(),
        repository=repository,
        tag=tag,
        config={"Entrypoint": ["/pause"], "WorkingDir": "/"},
    )


if __name__ == "__main__":  # build both images and print their references
    py = python_image()
    print(f"{py.by_digest}  {py.path} ({py.path.stat().st_size // 1024} KiB)")
    if len(sys.argv) > 1:
        pz = pause_image(Path(sys.argv[1]))
        print(f"{pz.by_digest}  {pz.path}")
