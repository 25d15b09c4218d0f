"""arm64 flyslice and nf-runner images and OCI image indexes of amd64 + arm64, built on an amd64 host.

The build runs no arm64 code: the arm64 image is assembled from arm64 inputs that are fetched and
verified, then checked by reading its files (tests/cluster/test_arm64_emulated.py runs it afterwards
under QEMU user-mode emulation):

* Debian bookworm's arm64 packages (``DEBIAN_PACKAGES``: python3.11 and the libraries the amd64
  image's ``ldd`` list maps to, plus git), fetched by ``apt-get download`` with a private apt state
  under the cache (no ``dpkg --add-architecture`` on the host). apt checks the InRelease files
  against ``debian-archive-keyring`` and each .deb against the SHA256 the signed Packages lists,
  then ``dpkg-deb -x`` unpacks them into a staging root (merged /usr, as Debian's images are).
* The aarch64 wheels of flyslice's locked runtime dependencies: ``pip download --only-binary=:all:
  --platform manylinux..._aarch64 --require-hashes`` with requirements.lock's lines for exactly
  those distributions. The lock is hash-pinned for every wheel PyPI had when it was made, aarch64
  ones included, so pip refuses any file whose hash the lock does not list; each wheel is hashed
  again here against the lock before use (a cached one too).
* flyslice's own wheel (pure Python, from this checkout) and unchecked-hash .pyc (bytecode does not
  depend on the CPU; Debian's arm64 stdlib package ships no .pyc, so they are compiled here, by
  ``image.compile_pycs``: the same bytes whichever process builds the image).

Like ``image.flyslice_images``, one layer set makes two images: ``flyslice`` (agent, operator) and
the NF runner (VNF pods), differing only in their config (``image.image_configs``).

``verify_image`` then reads the finished tarball: every ELF file must be ``EM_AARCH64`` (e_machine
183), and every ELF's program interpreter and ``DT_NEEDED`` libraries must resolve inside the image
(``DT_RUNPATH``/``DT_RPATH`` with ``$ORIGIN``, then the Debian multiarch directories) — the
``ldd`` a foreign binary cannot be given. ``multiarch_index`` writes one OCI layout holding two
images under an image index with platforms linux/amd64 and linux/arm64 (``flyslice_multiarch``,
``runner_multiarch``); containerd picks the manifest of its own platform. Everything is cached
under ``${FLYSLICE_CACHE:-~/.cache/flyslice}/`` (``arm64/`` for the downloads, ``images/`` for the
tarballs); the same inputs give the same digests, whichever process builds them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import image
from image import ImageBuildError

ARCH = "arm64"
DEBIAN_TRIPLET = "aarch64-linux-gnu"
DEBIAN_SUITE = "bookworm"  # the host's Debian: the amd64 image is bookworm's python3.11 too
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
#: The Debian packages holding what the amd64 image's ``ldd`` list resolves to (``dpkg -S``), plus
#: libc6 and libgcc-s1 (the loader and libgcc_s) that dpkg -S does not name through /lib.
DEBIAN_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libgcc-s1",
    "libstdc++6", "libssl3", "libffi8", "zlib1g", "libexpat1", "libbz2-1.0", "liblzma5", "libcrypt1",
    "libsqlite3-0", "libncursesw6", "libtinfo6", "libreadline8", "libuuid1", "libnsl2", "libtirpc3",
    "libdb5.3", "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libkrb5support0", "libkeyutils1",
    "libcom-err2", "git", "libpcre2-8-0",
)  # fmt: skip
#: glibc 2.36 is bookworm's: a wheel needing more would not load there.
WHEEL_PLATFORMS = (
    "manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64", "manylinux_2_36_aarch64",
)  # fmt: skip
#: Bounds for the downloads (CI reaches Debian and PyPI; a hung mirror must not hang the suite).
FETCH_TIMEOUT_S = 300.0
#: PuLP's wheel bundles CBC for every platform; an arm64 image keeps only the linux/arm64 one.
PULP_CBC = "pulp/solverdir/cbc/"
PULP_CBC_KEEP = "pulp/solverdir/cbc/linux/arm64/"
EM_AARCH64 = 183
EM_X86_64 = 62
LIBRARY_DIRS = (f"usr/lib/{DEBIAN_TRIPLET}", f"lib/{DEBIAN_TRIPLET}", "usr/lib", "lib")


def arm64_cache() -> Path:
    return image.cache_dir().parent / ARCH


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: list[str], what: str, timeout: float = FETCH_TIMEOUT_S) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ImageBuildError(f"multiarch: {cmd[0]} is not installed ({what})") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(f"multiarch: {what}: no answer within {timeout:.0f} s") from exc
    if result.returncode:
        raise ImageBuildError(f"multiarch: {what} failed: {(result.stderr or result.stdout).strip()[-1500:]}")
    return result.stdout + result.stderr


# --- Debian arm64 packages ----------------------------------------------------------------------


def _apt(state: Path, *args: str) -> list[str]:
    """apt-get for arm64 with its own sources, lists and cache under ``state``: the host's apt state
    and architectures are left alone."""
    return [
        "apt-get", "-q",
        "-o", f"APT::Architecture={ARCH}", "-o", f"APT::Architectures::={ARCH}",
        "-o", f"Dir::Etc::SourceList={state / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache={state / 'cache'}",
        "-o", "Dir::State::status=/dev/null", "-o", "Debug::NoLocking=1", "-o", "Acquire::Languages=none",
        "-o", "APT::Sandbox::User=root" if os.geteuid() == 0 else "APT::Sandbox::User=" + str(os.getuid()),
        *args,
    ]  # fmt: skip


def fetch_debs() -> list[Path]:
    """The arm64 .deb files of ``DEBIAN_PACKAGES``, downloaded once (apt verifies the signed Release
    chain and each package's SHA256) and cached by package list."""
    key = hashlib.sha256(f"{DEBIAN_SUITE}:{' '.join(DEBIAN_PACKAGES)}".encode()).hexdigest()[:16]
    out = arm64_cache() / f"debs-{key}"
    if (out / ".complete").exists():
        return sorted(out.glob("*.deb"))
    if not KEYRING.exists():
        raise ImageBuildError(f"multiarch: {KEYRING}: missing (Debian package debian-archive-keyring)")
    state = arm64_cache() / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    signed = f"[arch={ARCH} signed-by={KEYRING}]"
    (state / "sources.list").write_text(
        f"deb {signed} {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n"
        f"deb {signed} {DEBIAN_MIRROR} {DEBIAN_SUITE}-updates main\n"
        f"deb {signed} {DEBIAN_SECURITY} {DEBIAN_SUITE}-security main\n"
    )
    log = _run(_apt(state, "update"), f"apt-get update ({DEBIAN_SUITE} {ARCH})")
    # apt only warns about a repository whose signature fails and goes on without it: refuse here.
    bad = [line for line in log.splitlines() if line.startswith(("E:", "Err:")) or "GPG error" in line]
    if bad:
        raise ImageBuildError(f"multiarch: apt-get update ({DEBIAN_SUITE} {ARCH}): {bad[0]}")
    tmp = Path(tempfile.mkdtemp(prefix="debs-tmp-", dir=arm64_cache()))
    try:
        subprocess_cwd = _apt(state, "download", *DEBIAN_PACKAGES)
        try:
            result = subprocess.run(
                subprocess_cwd, cwd=tmp, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ImageBuildError(
                f"multiarch: apt-get download: no answer within {FETCH_TIMEOUT_S:.0f} s"
            ) from exc
        if result.returncode:
            raise ImageBuildError(f"multiarch: apt-get download failed: {result.stderr.strip()[-1500:]}")
        got = sorted(tmp.glob("*.deb"))
        if len(got) != len(DEBIAN_PACKAGES):
            raise ImageBuildError(
                f"multiarch: apt-get download gave {len(got)} of {len(DEBIAN_PACKAGES)} packages"
            )
        (tmp / "SHA256SUMS").write_text("".join(f"{_sha256_file(d)}  {d.name}\n" for d in got))
        (tmp / ".complete").write_text("")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(out.glob("*.deb"))


def debian_root(debs: list[Path]) -> Path:
    """The packages unpacked (``dpkg-deb -x``) into one root with merged /usr: ``lib/...`` of a
    package lands in ``usr/lib/...`` and ``lib`` is a link to it, as on a bookworm system."""
    key = hashlib.sha256("".join(f"{_sha256_file(d)}\n" for d in debs).encode()).hexdigest()[:16]
    root = arm64_cache() / f"root-{key}"
    if (root / ".complete").exists():
        return root
    tmp = Path(tempfile.mkdtemp(prefix="root-tmp-", dir=arm64_cache()))
    try:
        raw = tmp / "raw"
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(raw)], f"dpkg-deb -x {deb.name}", timeout=120)
        merged = tmp / "root"
        (merged / "usr").mkdir(parents=True)
        for top in sorted(raw.iterdir()):
            if top.name in ("lib", "bin", "sbin") and not top.is_symlink():
                shutil.copytree(top, merged / "usr" / top.name, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copytree(top, merged / top.name, symlinks=True, dirs_exist_ok=True)
        for name in ("lib", "bin", "sbin"):
            if not (merged / name).exists():
                (merged / name).symlink_to(f"usr/{name}")
        (merged / ".complete").write_text("")
        shutil.rmtree(root, ignore_errors=True)
        merged.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


# --- aarch64 wheels -----------------------------------------------------------------------------


def lock_subset() -> tuple[str, dict[str, set[str]]]:
    """requirements.lock's entries (pins and hashes) for flyslice's runtime distributions only, and
    normalized name -> the sha256 hashes the lock allows for it."""
    names = {image._normalize(d.metadata["Name"]) for d in image.runtime_distributions()}
    lines: list[str] = []
    hashes: dict[str, set[str]] = {}
    keep = False
    current = ""
    for line in image.LOCK.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if match:
            current = image._normalize(match.group(1))
            keep = current in names
        if keep and not line.lstrip().startswith("#"):
            lines.append(line)
            hashes.setdefault(current, set()).update(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    missing = names - hashes.keys()
    if missing:
        raise ImageBuildError(
            f"multiarch: {image.LOCK.name}: no hashed entry for {', '.join(sorted(missing))}"
        )
    return "\n".join(lines) + "\n", hashes


def _wheel_name(path: Path) -> str:
    return image._normalize(path.name.split("-", 1)[0])


def fetch_wheels() -> list[Path]:
    """The aarch64 (or pure-Python) wheels of the locked runtime dependencies: pip checks each
    download against the lock's hashes (``--require-hashes``); checked again here, cache included."""
    subset, hashes = lock_subset()
    key = hashlib.sha256(f"{subset}{WHEEL_PLATFORMS}".encode()).hexdigest()[:16]
    out = arm64_cache() / f"wheels-{key}"
    if not (out / ".complete").exists():
        tmp = Path(tempfile.mkdtemp(prefix="wheels-tmp-", dir=arm64_cache()))
        try:
            (tmp / "requirements.txt").write_text(subset)
            platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
            _run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                 *platforms, "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                 "--require-hashes", "-r", str(tmp / "requirements.txt"), "--dest", str(tmp),
                 "--timeout", "30", "--retries", "2"],
                "pip download of the aarch64 wheels",
            )  # fmt: skip
            (tmp / ".complete").write_text("")
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    wheels = sorted(out.glob("*.whl"))
    for whl in wheels:
        if _sha256_file(whl) not in hashes.get(_wheel_name(whl), set()):
            raise ImageBuildError(f"multiarch: {whl}: sha256 not among {image.LOCK.name}'s hashes for it")
    if {_wheel_name(w) for w in wheels} != set(hashes):
        raise ImageBuildError(f"multiarch: {out}: wheels do not match the lock subset; delete it")
    for whl in wheels:
        tag = whl.name.removesuffix(".whl").split("-")[-1]
        if tag != "any" and "aarch64" not in tag:
            raise ImageBuildError(f"multiarch: {whl.name}: neither pure Python nor aarch64")
    return wheels


# --- ELF ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Elf:
    """What the loader reads from an ELF file: its CPU, interpreter, needed libraries, search path."""

    machine: int
    interpreter: str | None
    needed: tuple[str, ...]
    runpath: tuple[str, ...]  # DT_RUNPATH, else DT_RPATH, split on ':'


def read_elf(data: bytes) -> Elf | None:
    """``data`` parsed as ELF (None if it is not one). Only 64-bit little-endian files get their
    dynamic section read (aarch64 and x86_64 are both); others report their machine alone."""
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return None
    little = data[5] == 1
    machine = int.from_bytes(data[18:20], "little" if little else "big")
    if data[4] != 2 or not little:
        return Elf(machine, None, (), ())
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None
    interpreter = None
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type == 1:  # PT_LOAD
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:  # PT_DYNAMIC
            dynamic = (p_offset, p_filesz)
        elif p_type == 3:  # PT_INTERP
            interpreter = data[p_offset : p_offset + p_filesz].split(b"\0", 1)[0].decode()
    if dynamic is None:
        return Elf(machine, interpreter, (), ())
    entries: list[tuple[int, int]] = []
    for off in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", data, off)
        if tag == 0:  # DT_NULL
            break
        entries.append((tag, value))
    strtab_vaddr = next((v for t, v in entries if t == 5), None)  # DT_STRTAB
    if strtab_vaddr is None:
        raise ImageBuildError("multiarch: ELF with a dynamic section but no DT_STRTAB")
    strtab = next(
        (off + strtab_vaddr - va for va, off, size in loads if va <= strtab_vaddr < va + size), None
    )
    if strtab is None:
        raise ImageBuildError("multiarch: ELF DT_STRTAB outside every PT_LOAD segment")

    def string(offset: int) -> str:
        start = strtab + offset
        return data[start : data.index(b"\0", start)].decode()

    needed = tuple(string(v) for t, v in entries if t == 1)  # DT_NEEDED
    runpath = [string(v) for t, v in entries if t == 29] or [string(v) for t, v in entries if t == 15]
    return Elf(machine, interpreter, needed, tuple(p for r in runpath for p in r.split(":") if p))


class _Files:
    """A root file system as a map of paths (no leading /) to file bytes or link targets."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.links: dict[str, str] = {}

    def resolve(self, path: str, depth: int = 0) -> str | None:
        """``path`` with every symlink component followed inside this root; None if it is missing."""
        if depth > 40:
            return None
        parts = [p for p in path.split("/") if p and p != "."]
        current: list[str] = []
        for i, part in enumerate(parts):
            if part == "..":
                if current:
                    current.pop()
                continue
            current.append(part)
            joined = "/".join(current)
            if joined in self.links:
                target = self.links[joined]
                base = [] if target.startswith("/") else current[:-1]
                rest = "/".join([*base, target.lstrip("/"), *parts[i + 1 :]])
                return self.resolve(rest, depth + 1)
        joined = "/".join(current)
        return joined if joined in self.files else None


def _search_dirs(name: str, elf: Elf) -> list[str]:
    """Where ld.so looks for ``elf``'s libraries: DT_RUNPATH/RPATH ($ORIGIN = the file's directory),
    then the Debian multiarch defaults."""
    origin = os.path.dirname(name)
    own = [p.replace("${ORIGIN}", origin).replace("$ORIGIN", origin) for p in elf.runpath]
    return [*own, *LIBRARY_DIRS]


def _find(fs: _Files, lib: str, dirs: list[str]) -> str | None:
    if "/" in lib:
        return fs.resolve(lib)
    return next((found for d in dirs if (found := fs.resolve(f"{d}/{lib}"))), None)


def _unresolved(fs: _Files, name: str, elf: Elf) -> list[str]:
    """The interpreter and ``DT_NEEDED`` entries of ``elf`` (at ``name``) that ``fs`` lacks."""
    problems = []
    if elf.interpreter and fs.resolve(elf.interpreter) is None:
        problems.append(f"{name}: interpreter {elf.interpreter} missing")
    dirs = _search_dirs(name, elf)
    problems += [f"{name}: needs {lib}, not in the image" for lib in elf.needed if not _find(fs, lib, dirs)]
    return problems


@dataclass(frozen=True)
class Verified:
    """What ``verify_image`` checked: ELF files, libraries resolved, and the config's platform."""

    elf_files: int
    needed_resolved: int
    architecture: str


def verify_image(img: image.Image, machine: int = EM_AARCH64, architecture: str = ARCH) -> Verified:
    """Check an image tarball without running it: the config says ``architecture``; every ELF file
    is for ``machine``; each ELF's interpreter and needed libraries are in the image."""
    fs = _Files()
    with tarfile.open(img.path) as outer:

        def blob(digest: str) -> bytes:
            member = outer.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            if member is None:
                raise ImageBuildError(f"multiarch: {img.path}: blob {digest} missing")
            return member.read()

        manifest = json.loads(blob(img.digest))
        config = json.loads(blob(manifest["config"]["digest"]))
        for desc in manifest["layers"]:
            with tarfile.open(fileobj=io.BytesIO(blob(desc["digest"])), mode="r:gz") as layer:
                for member in layer:
                    name = member.name.removeprefix("./")
                    if member.issym():
                        fs.links[name] = member.linkname
                    elif member.isfile():
                        fobj = layer.extractfile(member)
                        fs.files[name] = fobj.read() if fobj else b""
    problems = []
    if config.get("architecture") != architecture or config.get("os") != "linux":
        problems.append(
            f"config platform {config.get('os')}/{config.get('architecture')}, not linux/{architecture}"
        )
    elf_files = resolved = 0
    for name, data in sorted(fs.files.items()):
        elf = read_elf(data)
        if elf is None:
            continue
        elf_files += 1
        if elf.machine != machine:
            problems.append(f"{name}: ELF machine {elf.machine}, not {machine}")
            continue
        missing = _unresolved(fs, name, elf)
        problems += missing
        resolved += len(elf.needed) - len(missing)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ImageBuildError(f"multiarch: {img.path.name}: {shown}")
    return Verified(elf_files, resolved, config["architecture"])


# --- the arm64 image ----------------------------------------------------------------------------


def _tree_files(root: Path) -> _Files:
    """The files and links under ``root`` (contents not read: for path resolution only)."""
    fs = _Files()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            if full.is_symlink():
                fs.links[rel] = os.readlink(full)
            elif full.is_file():
                fs.files[rel] = b""
    return fs


class _Root:
    """Selects files of the Debian staging root for an image, following symlinks and libraries."""

    def __init__(self, root: Path, tree: image._Tree, root_fs: _Files) -> None:
        self.root = root
        self.root_fs = root_fs
        self.tree = tree
        self.fs = _Files()  # what the image holds so far, for library resolution

    def add(self, rel: str) -> str:
        """``rel`` (a path in the root) and, through every symlink on the way, what it points to;
        returns the real file's path."""
        parts = [p for p in rel.split("/") if p]
        current = ""
        for i, part in enumerate(parts):
            current = f"{current}/{part}".lstrip("/")
            if current in self.root_fs.links:
                target = self.root_fs.links[current]
                self.tree.links[current] = target
                self.fs.links[current] = target
                base = "" if target.startswith("/") else os.path.dirname(current)
                rest = "/".join(parts[i + 1 :])
                joined = os.path.normpath(os.path.join(base, target.lstrip("/")))
                return self.add(f"{joined}/{rest}" if rest else joined)
        if current not in self.root_fs.files:
            raise ImageBuildError(f"multiarch: {current}: not in the Debian {ARCH} packages ({self.root})")
        self.tree.files[current] = self.root / current
        self.fs.files[current] = b""
        return current

    def add_with_libraries(self, rel: str, data: bytes | None = None) -> None:
        """An ELF file (from the root, or ``data`` already in the tree at ``rel``) and the closure of
        what it needs that the image lacks, taken from the root's library directories."""
        if data is None:
            real = self.add(rel)
            data = (self.root / real).read_bytes()
        else:
            real = rel
            self.fs.files[rel] = b""
        todo = [(real, data)]
        while todo:
            name, blob = todo.pop()
            elf = read_elf(blob)
            if elf is None:
                continue
            if elf.machine != EM_AARCH64:
                raise ImageBuildError(f"multiarch: {name}: ELF machine {elf.machine}, not aarch64")
            dirs = _search_dirs(name, elf)
            for lib in [*([elf.interpreter] if elf.interpreter else []), *elf.needed]:
                if _find(self.fs, lib, dirs):
                    continue
                found = _find(self.root_fs, lib, dirs)
                if found is None:
                    raise ImageBuildError(
                        f"multiarch: {name} needs {lib}: in none of the Debian {ARCH} packages "
                        f"(add its package to DEBIAN_PACKAGES)"
                    )
                # Add by the name the loader asks for, so the symlinks on that path come along.
                asked = (
                    lib.lstrip("/")
                    if "/" in lib
                    else next(f"{d}/{lib}" for d in dirs if self.root_fs.resolve(f"{d}/{lib}"))
                )
                todo.append((found, (self.root / self.add(asked)).read_bytes()))


def _python_layer(root: Path) -> bytes:
    """Debian's arm64 python3.11, its stdlib (as image.python_image trims it, with .pyc made here)
    and the libraries it and its extension modules need."""
    tree = image._Tree(keep_mtime=True)
    sel = _Root(root, tree, _tree_files(root))
    sel.add_with_libraries("usr/bin/python3.11")
    stdlib = root / "usr/lib/python3.11"
    skip = (image.STDLIB_SKIP - {"config-3.11-x86_64-linux-gnu"}) | {f"config-3.11-{DEBIAN_TRIPLET}"}
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and d != "__pycache__")
        for name in sorted(filenames):
            host = Path(dirpath) / name
            rel = str(host.relative_to(root))
            if host.is_symlink():
                tree.links[rel] = os.readlink(host)
            elif name.endswith(".py"):
                image._add_python_file(tree, rel, host.read_bytes(), 0o644)
            else:
                sel.add(rel)
    for ext in sorted((stdlib / "lib-dynload").glob("*.so")):
        sel.add_with_libraries(str(ext.relative_to(root)))
    tree.links["usr/bin/python3"] = "python3.11"
    tree.dirs.update({"tmp", "proc", "sys", "dev", "etc"})
    return tree.layer()


def _flyslice_layer(root: Path, wheels: list[Path], python_files: _Files) -> bytes:
    """The aarch64 wheels unpacked as pip would into ``image.SITE`` (PuLP's CBC for linux/arm64
    only), flyslice's own wheel, git, and the Debian libraries their ELF files need."""
    tree = image._Tree(keep_mtime=True)
    sel = _Root(root, tree, _tree_files(root))
    sel.fs.files.update(python_files.files)  # libraries the python layer already has
    sel.fs.links.update(python_files.links)
    elves: list[tuple[str, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="flyslice-arm64-") as tmp:
        own = image._flyslice_wheel(Path(tmp))
        for whl in [*wheels, own]:
            with zipfile.ZipFile(whl) as z:
                for info in sorted(z.infolist(), key=lambda i: i.filename):
                    rel = info.filename
                    if info.is_dir() or (rel.startswith(PULP_CBC) and not rel.startswith(PULP_CBC_KEEP)):
                        continue
                    if ".data/" in rel.split("/", 1)[0] + "/":
                        kind, _, rest = rel.split("/", 1)[1].partition("/")
                        if kind not in ("purelib", "platlib"):
                            continue  # scripts (the image has its own entry points), headers, data
                        rel = rest
                    data = z.read(info)
                    mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
                    path = f"{image.SITE}/{rel}"
                    image._add_python_file(tree, path, data, mode)
                    sel.fs.files[path] = b""
                    if data[:4] == b"\x7fELF":
                        elves.append((path, data))
    for path, data in elves:  # after all files are in: wheels bundle libraries (*.libs) beside them
        sel.add_with_libraries(path, data)
    sel.add_with_libraries("usr/bin/git")
    script = (
        b"#!/usr/bin/python3.11 -I\nimport sys\nfrom flyslice.operator.cli import main\nsys.exit(main())\n"
    )
    tree.data["usr/local/bin/flyslice"] = (script, 0o755)
    tree.dirs.update({"var/lib/flyslice", "var/lib/flyslice/data"})
    return tree.layer()


def _layer_files(tar: bytes) -> _Files:
    fs = _Files()
    with tarfile.open(fileobj=io.BytesIO(tar)) as layer:
        for member in layer:
            if member.issym():
                fs.links[member.name] = member.linkname
            elif member.isfile():
                fs.files[member.name] = b""
    return fs


def build_arm64_images(
    out: Path,
    runner_out: Path,
    repository: str = "flyslice.local/flyslice",
    runner_repository: str = "flyslice.local/nf-runner",
    tag: str = "arm64",
) -> tuple[image.Image, image.Image]:
    """The arm64 (flyslice, nf-runner) images at ``out`` and ``runner_out``, always built
    (``arm64_images`` caches them): the same two layers, ``image.image_configs``' two configs."""
    root = debian_root(fetch_debs())
    wheels = fetch_wheels()
    python = _python_layer(root)
    app = _flyslice_layer(root, wheels, _layer_files(python))
    layers = [image.Layer.of(python), image.Layer.of(app)]
    app_config, runner_config = image.image_configs()
    runner = image.write_oci_layout(
        runner_out, layers, repository=runner_repository, tag=tag, config=runner_config, architecture=ARCH
    )
    flyslice = image.write_oci_layout(
        out, layers, repository=repository, tag=tag, config=app_config, architecture=ARCH
    )
    return flyslice, runner


def _arm64_key() -> str:
    """The arm64 images' inputs: Debian packages (by file name, which carries the version: a
    re-download with newer security updates is a new key), locked wheels (by hash), sources, the
    .pyc compiler, these modules."""
    subset, _ = lock_subset()
    h = hashlib.sha256(f"{image.IMAGE_FORMAT}:{DEBIAN_SUITE}:{DEBIAN_PACKAGES}:{WHEEL_PLATFORMS}".encode())
    h.update(subset.encode())
    h.update(f"{[d.name for d in fetch_debs()]}:{image.compiler_key()}".encode())
    for path in [*image._source_files(), Path(__file__), Path(image.__file__)]:
        h.update(f"{path.relative_to(image.REPO)}\0".encode() + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def arm64_cache_paths() -> tuple[str, Path, Path]:
    """(tag, flyslice tarball, nf-runner tarball) in ``images/`` for the current inputs."""
    key = _arm64_key()
    return (
        f"{key}-arm64",
        image.cache_dir() / f"flyslice-arm64-{key}.oci.tar",
        image.cache_dir() / f"nf-runner-arm64-{key}.oci.tar",
    )


def arm64_images(
    repository: str = "flyslice.local/flyslice", runner_repository: str = "flyslice.local/nf-runner"
) -> tuple[image.Image, image.Image]:
    """``build_arm64_images``, cached under ``images/`` by their inputs (``_arm64_key``)."""
    tag, out, runner_out = arm64_cache_paths()
    if out.exists() and runner_out.exists():
        return image._load(out, repository, tag), image._load(runner_out, runner_repository, tag)
    return build_arm64_images(out, runner_out, repository, runner_repository, tag)


def arm64_flyslice(repository: str = "flyslice.local/flyslice") -> image.Image:
    """The arm64 flyslice image (``arm64_images``)."""
    return arm64_images(repository=repository)[0]


def arm64_runner(repository: str = "flyslice.local/nf-runner") -> image.Image:
    """The arm64 nf-runner image (``arm64_images``): the flyslice image's layers, the runner's entrypoint."""
    return arm64_images(runner_repository=repository)[1]


# --- the index ----------------------------------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def multiarch_index(images: list[image.Image], out: Path, repository: str, tag: str) -> image.Image:
    """One OCI layout with ``images`` (single-platform tarballs built here) under an image index that
    lists each manifest with its platform; ``index.json`` names that index by tag and by digest, as
    image.write_oci_layout names a single image. The returned digest is the index's."""
    blobs: dict[str, bytes] = {}
    manifests = []
    for img in images:
        with tarfile.open(img.path) as tar:
            for member in tar:
                if member.isfile() and member.name.startswith("blobs/sha256/"):
                    fobj = tar.extractfile(member)
                    assert fobj is not None
                    blobs["sha256:" + member.name.rsplit("/", 1)[1]] = fobj.read()
        manifest = json.loads(blobs[img.digest])
        config = json.loads(blobs[manifest["config"]["digest"]])
        manifests.append(
            {
                "mediaType": image.OCI_MANIFEST,
                "digest": img.digest,
                "size": len(blobs[img.digest]),
                "platform": {"architecture": config["architecture"], "os": config["os"]},
            }
        )
    platforms = [m["platform"]["architecture"] for m in manifests]  # type: ignore[index]
    if len(set(platforms)) != len(platforms):
        raise ImageBuildError(f"multiarch: two images for one platform: {platforms}")
    manifests.sort(key=lambda m: str(m["platform"]))
    index = image._json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
    digest = image._digest(index)
    blobs[digest] = index
    top = image._json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_INDEX,
                    "digest": digest,
                    "size": len(index),
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": ref,
                    },
                }
                for name, ref in ((f"{repository}:{tag}", tag), (f"{repository}@{digest}", digest))
            ],
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        members = [("oci-layout", image._json({"imageLayoutVersion": "1.0.0"})), ("index.json", top)]
        members += [(f"blobs/sha256/{d.removeprefix('sha256:')}", b) for d, b in sorted(blobs.items())]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return image.Image(out, repository, tag, digest)


def _cached_index(
    name: str, amd64: image.Image, arm64: image.Image, repository: str, cache: Path | None
) -> image.Image:
    """``multiarch_index`` of ``amd64`` and ``arm64`` in ``cache`` (default ``images/``), cached by
    both digests."""
    key = hashlib.sha256(f"{amd64.digest}{arm64.digest}".encode()).hexdigest()[:16]
    out = (cache or image.cache_dir()) / f"{name}-{key}.oci.tar"
    if out.exists():
        with tarfile.open(out) as tar:
            member = tar.extractfile("index.json")
            assert member is not None
            digest = json.load(member)["manifests"][0]["digest"]
        return image.Image(out, repository, key, digest)
    return multiarch_index([amd64, arm64], out, repository, key)


def flyslice_multiarch(
    arm64: image.Image | None = None,
    repository: str = "flyslice.local/flyslice-multiarch",
    cache: Path | None = None,
) -> image.Image:
    """The flyslice image for linux/amd64 (image.flyslice_images, this host's files) and linux/arm64
    (``arm64``, default ``arm64_flyslice()``) under one index, cached by both digests in ``cache``
    (default ``images/``)."""
    amd64, _runner = image.flyslice_images()
    return _cached_index("flyslice-multiarch", amd64, arm64 or arm64_flyslice(), repository, cache)


def runner_multiarch(
    arm64: image.Image | None = None,
    repository: str = "flyslice.local/nf-runner-multiarch",
    cache: Path | None = None,
) -> image.Image:
    """The nf-runner image for linux/amd64 (image.flyslice_images) and linux/arm64 (``arm64``,
    default ``arm64_runner()``) under one index, cached by both digests in ``cache``."""
    _app, amd64 = image.flyslice_images()
    return _cached_index("nf-runner-multiarch", amd64, arm64 or arm64_runner(), repository, cache)


if __name__ == "__main__":  # build, verify and print the references
    arm, arm_runner = arm64_images()
    for img in (arm, arm_runner):
        print(f"{img.by_digest}  {img.path} ({img.path.stat().st_size // 1024} KiB)  {verify_image(img)}")
    for multi in (flyslice_multiarch(arm), runner_multiarch(arm_runner)):
        print(f"{multi.by_digest}  {multi.path} ({multi.path.stat().st_size // 1024} KiB)")
