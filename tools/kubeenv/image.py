"""Build minimal OCI images here, with no registry and no container engine, for the real test nodes.

No registry is reachable from this machine and no Docker engine runs here, so images are assembled
file by file from the host and written as an OCI image layout tarball, which
``ctr -n k8s.io images import`` loads into a node's containerd:

* ``python_image`` — Debian's ``/usr/bin/python3.11``, the shared libraries ``ldd`` says it and
  its C extension modules need, and its standard library (without tests, IDLE, tkinter, ensurepip
  and the static build config): enough to run ``python3 -c ...`` in a pod.
* ``pause_image`` — the pod sandbox image: the static ``pause`` program that
  ``tools/kubeenv/build-node.sh`` compiles with gcc, alone in its rootfs.
* ``flyslice_images`` — the python image plus one layer: flyslice (``pip wheel`` of this checkout)
  and its runtime dependencies copied from the project's .venv, each checked against
  requirements.lock, with unchecked-hash .pyc files (compiled by ``compile_pycs`` in a fresh
  interpreter, so their bytes do not depend on the building process), and the host's ``git``
  (GitPython needs it).
  One layer set, two entrypoints: ``flyslice`` (agent, operator) and the NF runner (VNF pods, which
  the pod driver gives ``args`` only).
* ``wheelhouse`` — not an image: the same flyslice and dependencies as wheels, for ``pip install
  --no-index`` on a test gateway (deploy/gateway/install.sh).

Layers are gzip tars written deterministically (sorted entries, uid/gid 0, mtime 0 for files made
here, the host's mtime for host files so Debian's timestamp .pyc stay valid), so the same inputs
give the same digest, in any building process; images are cached under
``${FLYSLICE_CACHE:-~/.cache/flyslice}/images/``. The index names every image twice: by tag
(``flyslice.local/python:3.11``) and by digest (``flyslice.local/python@sha256:...``), because
containerd's CRI plugin resolves a digest reference only through an image record of that name.
Only the host's architecture is built here (``amd64``); tools/kubeenv/multiarch.py adds arm64
flyslice and nf-runner images from Debian's arm64 packages and aarch64 wheels, and indexes of both.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
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
# 3: .pyc compiled in a fresh interpreter (compile_pycs), the same bytes in any building process.
IMAGE_FORMAT = 3
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

    def __init__(self, *, keep_mtime: bool = False) -> None:
        self.files: dict[str, Path] = {}  # path in the image (no leading /) -> host file
        self.data: dict[str, tuple[bytes, int]] = {}  # path in the image -> (content, mode), made here
        self.links: dict[str, str] = {}  # path in the image -> link target, as on the host
        self.dirs: set[str] = set()
        # ``data`` paths of Python sources that get a .pyc: compiled together when the layer is made.
        self.python: set[str] = set()
        # Host files keep their mtime (whole seconds): Debian's .pyc files are timestamp-based, and
        # with mtime 0 every import would find them stale and compile the source again, at every
        # container start. Files made here (``data``) always get mtime 0.
        self.keep_mtime = keep_mtime

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
        """The tree as an uncompressed, reproducible tar: parents first, sorted, owned by root; the
        Python sources in ``python`` with their .pyc (one ``compile_pycs`` batch)."""
        sources = {name: self.data[name][0] for name in sorted(self.python) if name in self.data}
        tag = sys.implementation.cache_tag  # cpython-311, as Debian's python3.11 looks for
        for name, pyc in compile_pycs(sources).items():
            if pyc is not None:
                head, base = os.path.split(name)
                self.data[f"{head}/__pycache__/{base[:-3]}.{tag}.pyc"] = (pyc, 0o644)
        entries: dict[str, tuple[str, object]] = {}
        for name in self.dirs:
            entries[name] = ("dir", None)
        for name, target in self.links.items():
            entries[name] = ("link", target)
        for name, host in self.files.items():
            entries[name] = ("file", host)
        for name, blob in self.data.items():
            entries[name] = ("data", blob)
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
                elif kind == "data":
                    assert isinstance(value, tuple)
                    data, info.mode = value
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                else:
                    assert isinstance(value, Path)
                    data = value.read_bytes()
                    st = value.stat()
                    info.size = len(data)
                    info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                    if self.keep_mtime:
                        info.mtime = int(st.st_mtime)
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


@dataclass(frozen=True)
class Layer:
    """One image layer: its gzip blob and the digest of the uncompressed tar (the config's diff_id)."""

    blob: bytes
    diff_id: str

    @classmethod
    def of(cls, tar: bytes) -> Layer:
        return cls(gzip.compress(tar, compresslevel=6, mtime=0), _digest(tar))


def write_oci_layout(
    out: Path,
    layers: bytes | list[Layer],
    *,
    repository: str,
    tag: str,
    config: dict[str, object],
    architecture: str | None = None,
) -> Image:
    """An OCI image layout tarball at ``out`` (``layers``: one uncompressed tar, or layers base
    first); returns its references. ``architecture``: the OCI name of the CPU the files are built
    for (default: this host's; tools/kubeenv/multiarch.py passes ``arm64``)."""
    arch = architecture or oci_arch()
    stack = [Layer.of(layers)] if isinstance(layers, bytes) else layers
    image_config = _json(
        {
            "architecture": arch,
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in stack]},
            "history": [
                {"created_by": f"flyslice tools/kubeenv/image.py (format {IMAGE_FORMAT})"} for _ in stack
            ],
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _digest(image_config), "size": len(image_config)},
            "layers": [
                {"mediaType": OCI_LAYER, "digest": _digest(layer.blob), "size": len(layer.blob)}
                for layer in stack
            ],
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
                    "platform": {"architecture": arch, "os": "linux"},
                }
                for name, ref in ((f"{repository}:{tag}", tag), (f"{repository}@{digest}", digest))
            ],
        }
    )
    blobs = {_digest(b): b for b in (*(layer.blob for layer in stack), image_config, manifest)}
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
    """The cache path for an image whose content depends on ``inputs``: the host's files by path,
    size and mtime, this checkout's by content (a fresh clone's mtimes are new: by mtime, a CI run
    on a warm cache would rebuild the image every time)."""
    h = hashlib.sha256(f"{IMAGE_FORMAT}:{name}".encode())
    for p in inputs:
        if p.is_file() and p.resolve().is_relative_to(REPO):
            h.update(f"{p.resolve().relative_to(REPO)}:".encode() + hashlib.sha256(p.read_bytes()).digest())
            continue
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return cache_dir() / f"{name}-{h.hexdigest()[:16]}.oci.tar"


def layers_of(img: Image) -> list[Layer]:
    """The layers of an image built here, as they are in its tarball (to build another on top)."""
    with tarfile.open(img.path) as tar:

        def blob(digest: str) -> bytes:
            member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            assert member is not None
            return member.read()

        manifest = json.loads(blob(img.digest))
        config = json.loads(blob(manifest["config"]["digest"]))
        return [
            Layer(blob(desc["digest"]), diff_id)
            for desc, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True)
        ]


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
    tree = _Tree(keep_mtime=True)
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


# --- the flyslice image -------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
#: What ``pip wheel`` of the checkout reads: the same list deploy/docker/Dockerfile COPYs.
SOURCES = ("pyproject.toml", "README.md", "flyslice_pkg", "crds", "operator", "solver", "nodeagent")
SITE = "usr/local/lib/python3.11/dist-packages"  # on Debian's python3.11 sys.path, even with -I
LOCK = REPO / "requirements.lock"
#: The VNF pods' entrypoint: the pod driver passes only ``args`` (--listen, --uplink, ...).
RUNNER = ["/usr/bin/python3", "-I", "-m", "flyslice.nodeagent.runtime.runner"]
APP_UID = "10001:10001"  # deploy/docker/Dockerfile's unprivileged user
GIT = Path("/usr/bin/git")


def _source_files() -> list[Path]:
    files: list[Path] = []
    for name in SOURCES:
        top = REPO / name
        if top.is_file():
            files.append(top)
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            files += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith(".pyc")]
    return files


def _locked_versions() -> dict[str, set[str]]:
    """``requirements.lock``: normalized name -> the versions pinned (one per environment marker)."""
    pins: dict[str, set[str]] = {}
    for line in LOCK.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)", line)
        if match:
            pins.setdefault(_normalize(match.group(1)), set()).add(match.group(2))
    return pins


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_distributions() -> list[importlib.metadata.Distribution]:
    """flyslice's runtime dependencies (no extras), transitively, as installed in this Python's
    environment (the project's .venv), each checked against ``requirements.lock``."""
    from packaging.requirements import Requirement

    pins = _locked_versions()
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [Requirement(r) for r in importlib.metadata.requires("flyslice") or []]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = _normalize(req.name)
        if key in found:
            continue
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise ImageBuildError(
                f"image: {req.name} (a flyslice dependency) is not installed in {sys.prefix}"
            ) from exc
        if dist.version not in pins.get(key, set()):
            raise ImageBuildError(
                f"image: {req.name} {dist.version} in {sys.prefix} is not what {LOCK.name} pins "
                f"({', '.join(sorted(pins.get(key, set()))) or 'nothing'}); run bash tools/test.sh to sync"
            )
        found[key] = dist
        todo += [Requirement(r) for r in dist.requires or []]
    return [found[k] for k in sorted(found)]


#: The interpreter that compiles every .pyc made here: the one the amd64 images run.
PYC_COMPILER = PYTHON
#: Bound for one batch (the arm64 stdlib or a flyslice layer: a few thousand files, 10-30 s).
COMPILE_TIMEOUT_S = 600.0
#: Run by ``PYC_COMPILER -I -S -B -W ignore``: reads a marshal list of (path bytes, source bytes),
#: writes a marshal list of unchecked-hash .pyc bytes (None: not Python 3.11). Why a fresh process:
#: marshal writes a string as "interned" when the process has interned it, and whether the shared
#: one-character strings ("{", ":") are interned depends on what the process imported before (136
#: .pyc of the arm64 image differed between two building processes). Here nothing is imported but
#: what -I -S starts with, all 256 of them are interned first (so neither that start nor the files
#: before in the batch decide), warnings are not formatted (that would import modules mid-batch),
#: and paths arrive as bytes (a str sent by marshal could arrive interned).
_COMPILE_SCRIPT = """
import _imp, marshal, sys
import _frozen_importlib_external as ext
for i in range(256):
    sys.intern(chr(i))
out = []
for path, source in marshal.loads(sys.stdin.buffer.read()):
    try:
        code = compile(source, path.decode(), "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):
        out.append(None)
        continue
    out.append(bytes(ext._code_to_hash_pyc(code, _imp.source_hash(ext._RAW_MAGIC_NUMBER, source), False)))
sys.stdout.buffer.write(marshal.dumps(out))
"""


def compile_pycs(sources: dict[str, bytes]) -> dict[str, bytes | None]:
    """Image path -> an unchecked-hash .pyc (PEP 552) of its source: valid whatever the file's
    mtime, and the same bytes for the same source whichever process builds the image (one fresh
    ``PYC_COMPILER`` for the whole batch, see ``_COMPILE_SCRIPT``). None for a file that is not
    Python 3.11 (templates, files for other Pythons: compileall skips them as well)."""
    if not sources:
        return {}
    import marshal

    names = list(sources)
    batch = marshal.dumps([(("/" + name).encode(), bytes(sources[name])) for name in names])
    cmd = [str(PYC_COMPILER), "-I", "-S", "-B", "-W", "ignore", "-c", _COMPILE_SCRIPT]
    try:
        result = subprocess.run(cmd, input=batch, capture_output=True, timeout=COMPILE_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise ImageBuildError(
            f"image: {PYC_COMPILER} not found (Debian package python3.11-minimal): it compiles the .pyc"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(
            f"image: compiling {len(names)} files with {PYC_COMPILER}: "
            f"no result within {COMPILE_TIMEOUT_S:.0f} s"
        ) from exc
    if result.returncode:
        err = result.stderr.decode(errors="replace").strip()[-1500:]
        raise ImageBuildError(f"image: compiling {len(names)} files with {PYC_COMPILER} failed: {err}")
    pycs = marshal.loads(result.stdout)
    if not isinstance(pycs, list) or len(pycs) != len(names):
        raise ImageBuildError(f"image: {PYC_COMPILER} returned no .pyc list for {len(names)} files")
    return dict(zip(names, pycs, strict=True))


def compiler_key() -> str:
    """The .pyc compiler's identity for cache keys (path, size, mtime, as ``_cached`` keys host files)."""
    st = PYC_COMPILER.stat()
    return f"{PYC_COMPILER}:{st.st_size}:{st.st_mtime_ns}"


def _pyc(source: bytes, image_path: str) -> bytes | None:
    """``compile_pycs`` of one file."""
    return compile_pycs({image_path: source})[image_path]


def _add_python_file(tree: _Tree, image_path: str, data: bytes, mode: int) -> None:
    """A file for the image; a ``.py`` also gets its .pyc when ``tree.layer()`` is made."""
    tree.data[image_path] = (data, mode)
    if image_path.endswith(".py"):
        tree.python.add(image_path)


def _flyslice_wheel(workdir: Path) -> Path:
    """``pip wheel`` of a copy of the checkout's sources (no build dirs left in the tree)."""
    import shutil

    src = workdir / "src"
    for path in _source_files():
        dest = src / path.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--wheel-dir", str(workdir / "wheels"), str(src)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wheels = sorted((workdir / "wheels").glob("flyslice-*.whl"))
    if result.returncode or len(wheels) != 1:
        raise ImageBuildError(f"image: pip wheel of {REPO} failed: {result.stderr.strip()[-2000:]}")
    return wheels[0]


def _flyslice_layer() -> bytes:
    """flyslice (its wheel, unpacked as pip would) and its locked dependencies' files, with .pyc."""
    import tempfile
    import zipfile

    tree = _Tree(keep_mtime=True)  # only the system libraries are host files here
    system_libs: set[str] = set()
    for dist in runtime_distributions():
        for f in dist.files or []:
            rel = str(f)
            if rel.startswith("..") or "__pycache__" in f.parts or rel.endswith(".pyc"):
                continue  # console scripts (the image has its own) and the .venv's .pyc
            host = Path(str(dist.locate_file(f)))
            if not host.is_file():
                raise ImageBuildError(f"image: {host}: listed in {dist.metadata['Name']}'s RECORD, missing")
            data = host.read_bytes()
            mode = 0o755 if host.stat().st_mode & stat.S_IXUSR else 0o644
            _add_python_file(tree, f"{SITE}/{rel}", data, mode)
            if data[:4] == b"\x7fELF":
                # C extensions and bundled programs need the host's system libraries too (rpds-py:
                # libgcc_s.so.1; PuLP's cbc: libstdc++.so.6); those a wheel bundles (numpy.libs)
                # resolve inside site-packages and were copied above.
                site = str(Path(str(dist.locate_file(""))).resolve())
                system_libs.update(lib for lib in _ldd(host) if not os.path.realpath(lib).startswith(site))
    for lib in sorted(system_libs):
        tree.add(lib)
    # GitPython (a runtime dependency) refuses to import without the git program, and the operator
    # imports it at start (GitSources): the host's git and its libraries, no remote helpers.
    tree.add_with_libraries(GIT)
    with (
        tempfile.TemporaryDirectory(prefix="flyslice-image-") as tmp,
        zipfile.ZipFile(_flyslice_wheel(Path(tmp))) as wheel,
    ):
        for info in sorted(wheel.infolist(), key=lambda i: i.filename):
            if not info.is_dir():
                _add_python_file(tree, f"{SITE}/{info.filename}", wheel.read(info), 0o644)
    # The console script pip would write, with -I as the runner uses: no PYTHON* variable, user site
    # or working directory decides what the agent or operator imports.
    script = (
        b"#!/usr/bin/python3.11 -I\nimport sys\nfrom flyslice.operator.cli import main\nsys.exit(main())\n"
    )
    tree.data["usr/local/bin/flyslice"] = (script, 0o755)
    tree.dirs.update({"var/lib/flyslice", "var/lib/flyslice/data"})
    return tree.layer()


def _flyslice_inputs_key(base: Image) -> str:
    """Everything the flyslice layer is made of: sources, locked dependency RECORDs, this module, git."""
    h = hashlib.sha256(f"{IMAGE_FORMAT}:{base.digest}".encode())
    if GIT.exists():  # (missing: the build says so)
        h.update(hashlib.sha256(GIT.read_bytes()).digest())
    for path in [*_source_files(), Path(__file__)]:
        h.update(f"{path.relative_to(REPO)}\0".encode() + hashlib.sha256(path.read_bytes()).digest())
    for dist in runtime_distributions():
        h.update(f"{dist.metadata['Name']}=={dist.version}\0{dist.read_text('RECORD')}".encode())
    return h.hexdigest()[:16]


def image_configs() -> tuple[dict[str, object], dict[str, object]]:
    """The image configs of (flyslice, nf-runner), for every architecture: same environment and user,
    entrypoint ``flyslice`` or the NF runner (which listens on 7000 unless its args say otherwise)."""
    common: dict[str, object] = {
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"],
        "WorkingDir": "/var/lib/flyslice",
        "User": APP_UID,
    }
    return (
        {**common, "Entrypoint": ["/usr/local/bin/flyslice"]},
        {**common, "Entrypoint": list(RUNNER), "ExposedPorts": {"7000/tcp": {}}},
    )


def flyslice_images(
    repository: str = "flyslice.local/flyslice", runner_repository: str = "flyslice.local/nf-runner"
) -> tuple[Image, Image]:
    """(flyslice, nf-runner): ``python_image`` plus flyslice and its locked runtime dependencies.

    Both carry the same two layers (stored once in containerd); only the entrypoint differs:
    ``flyslice`` (agent and operator: ``flyslice agent ...``, ``flyslice operator ...``) and the NF
    runner, because the pod driver gives a VNF pod ``args`` and no ``command``. The tag is the
    input key, so a changed source or lock gives a new tag and digest; the same inputs the same
    digest (files sorted, owned by root, mtime 0, unchecked-hash .pyc from ``compile_pycs``).
    """
    base = python_image()
    key = _flyslice_inputs_key(base)
    out = cache_dir() / f"flyslice-{key}.oci.tar"
    runner_out = cache_dir() / f"nf-runner-{key}.oci.tar"
    if out.exists() and runner_out.exists():
        return _load(out, repository, key), _load(runner_out, runner_repository, key)
    layers = [*layers_of(base), Layer.of(_flyslice_layer())]
    app_config, runner_config = image_configs()
    runner = write_oci_layout(runner_out, layers, repository=runner_repository, tag=key, config=runner_config)
    app = write_oci_layout(out, layers, repository=repository, tag=key, config=app_config)
    _prune({out, runner_out})
    return app, runner


def _prune(keep: set[Path], newest: int = 6, min_age_s: float = 3600.0) -> list[Path]:
    """Every source edit makes a new 70 MB pair: remove flyslice/nf-runner tarballs beyond the
    ``newest`` few that are also older than ``min_age_s`` (a test started meanwhile may be about
    to import one). The paths removed."""
    import time

    removed = []
    for prefix in ("flyslice-", "nf-runner-"):
        tarballs = sorted(
            cache_dir().glob(f"{prefix}*.oci.tar"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for old in tarballs[newest:]:
            if old not in keep and time.time() - old.stat().st_mtime > min_age_s:
                old.unlink(missing_ok=True)
                removed.append(old)
    return removed


# --- a wheelhouse for machines without containers ----------------------------------------------


def _wheel_tag(dist: importlib.metadata.Distribution) -> str:
    """The compressed tag set of an installed wheel (``py3-none-any``, ``cp311-cp311-manylinux_...``)."""
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]  # fmt: skip
    if not tags:
        raise ImageBuildError(
            f"image: {dist.metadata['Name']} was not installed from a wheel (no WHEEL tags)"
        )
    parts = [t.split("-") for t in tags]
    return "-".join(".".join(sorted({p[i] for p in parts})) for i in range(3))


def _repack(dist: importlib.metadata.Distribution, out_dir: Path) -> Path:
    """A wheel of an installed distribution, from the files its RECORD lists (site-packages only:
    pip writes console scripts again from entry_points.txt), with a RECORD of their hashes."""
    import base64
    import zipfile

    files = [f for f in dist.files or [] if not str(f).startswith("..") and "__pycache__" not in f.parts]
    info = next(str(f.parent) for f in files if f.parent.name.endswith(".dist-info"))
    installer_made = {f"{info}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    out = out_dir / f"{name}-{dist.version}-{_wheel_tag(dist)}.whl"
    records = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as whl:
        for f in sorted(files, key=str):
            rel = str(f)
            if rel in installer_made or rel.endswith(".pyc"):
                continue
            host = Path(str(dist.locate_file(f)))
            data = host.read_bytes()
            entry = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = (0o755 if host.stat().st_mode & stat.S_IXUSR else 0o644) << 16
            whl.writestr(entry, data, zipfile.ZIP_DEFLATED)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{rel},sha256={digest},{len(data)}")
        records.append(f"{info}/RECORD,,")
        whl.writestr(
            zipfile.ZipInfo(f"{info}/RECORD", date_time=(1980, 1, 1, 0, 0, 0)), "\n".join(records) + "\n"
        )
    return out


def wheelhouse() -> tuple[Path, Path]:
    """(directory, flyslice wheel): flyslice built from this checkout and its locked runtime
    dependencies repacked from the project's .venv, for ``pip install --no-index --find-links DIR``
    where no package index is reachable (deploy/gateway/install.sh on a test gateway). Cached by the
    same inputs as the flyslice image."""
    import shutil
    import tempfile
    import time

    key = _flyslice_inputs_key(python_image())
    out = cache_dir().parent / f"wheels-{key}"
    if not out.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix="wheels-tmp-", dir=cache_dir().parent))
        try:
            shutil.copy(_flyslice_wheel(tmp / "build"), tmp)
            shutil.rmtree(tmp / "build")
            for dist in runtime_distributions():
                _repack(dist, tmp)
            try:
                tmp.rename(out)
            except OSError:
                # Another process (a parallel test worker) built the same inputs first: use its copy.
                if not out.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in cache_dir().parent.glob("wheels-*"):
            # Every source edit makes a new one (about 50 MB): drop those an hour old (a run started
            # meanwhile may still be installing from one; a failed build's temporary ones too).
            if old != out and old.is_dir() and time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
    (wheel,) = out.glob("flyslice-*.whl")
    return out, wheel


if __name__ == "__main__":  # build both images and print their references
    for img in (python_image(), *flyslice_images()):
        print(f"{img.by_digest}  {img.path} ({img.path.stat().st_size // 1024} KiB)")
    if len(sys.argv) > 1:
        pz = pause_image(Path(sys.argv[1]))
        print(f"{pz.by_digest}  {pz.path}")
