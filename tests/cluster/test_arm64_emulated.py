"""The arm64 flyslice and nf-runner images, RUN here under QEMU user-mode emulation.

tests/cluster/test_multiarch_image.py only reads the arm64 images (ELF machine, libraries). Here
the arm64 flyslice image (``multiarch.arm64_images()``, cached; built when missing) is unpacked
into a temporary root (its gzip layers, in order) and its own aarch64 python3.11 runs flyslice
under ``qemu-aarch64-static -L <root>`` (Debian package qemu-user-static): every instruction of
Python, pydantic-core, PuLP's CBC... is aarch64, translated by QEMU; system calls go to this
host's kernel. That is the software a Raspberry Pi (64-bit OS) runs, not its hardware.

* ``flyslice validate examples/wildfire`` and ``flyslice plan examples/wildfire -o json`` run
  through the image's entrypoint script (its ``#!/usr/bin/python3.11 -I`` line applied as the
  kernel would). The runtime image has no highspy (no ``[highs]`` extra), so the default ILP
  solver is PuLP's bundled linux/arm64 CBC; the plan must place and admit exactly as the host's
  amd64 ``flyslice plan --solver cbc`` does (same CBC version, another CPU), and state the same
  objective as the host's default plan (HiGHS when highspy is installed). Timings are not compared.
* The nf-runner image's entrypoint (its config's ``Entrypoint``, same layers) serves a builtin
  broker on a loopback port and answers the data plane's liveness probe from this host.

How CBC runs: PuLP starts CBC as a child process (execve of ``pulp/solverdir/cbc/linux/arm64/cbc``,
a path fixed by PuLP; ``PULP_CBC_CMD`` takes no other path, and no environment variable changes
it). QEMU user mode does not emulate execve: the host kernel gets the aarch64 ELF and, without a
binfmt_misc entry, refuses it (ENOEXEC). Instead of registering binfmt_misc (machine-wide state),
this test's unpacked copy of the image gets, at exactly that path, a host ``/bin/sh`` script that
logs its call and ``exec``s ``qemu-aarch64-static -L <root>`` on the image's own CBC moved beside it
(``cbc.aarch64``, bytes unchanged and checked). Nothing else in the copy changes except absolute
symlinks, which are made relative so that they resolve inside the root as in a container, not on
the host (the image has one: Debian's ``usr/lib/python3.11/sitecustomize.py`` ->
``/etc/python3.11/sitecustomize.py``, dangling in the image; kept absolute, the emulated Python
would import the host's file). Nothing global is touched: no binfmt_misc, no mounts, no chroot, no registry; everything is in pytest's
temporary directory.

Skips without qemu-aarch64-static, except with ``FLYSLICE_REQUIRE_KUBE=1`` (CI: tools/test.sh
installs it), where that fails; skips like test_multiarch_image.py when the arm64 image cannot be
built (no apt-get, dpkg-deb or Debian's archive keyring).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flyslice.nodeagent.dataplane.transport import probe
from flyslice.nodeagent.runtime.modules import module_digest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "kubeenv"))

import image  # noqa: E402
import multiarch  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

QEMU = "qemu-aarch64-static"
#: One emulated command (python start, imports, the command) on a loaded 2-core machine.
EMULATED_TIMEOUT_S = 240.0
#: One host command (amd64 flyslice plan).
HOST_TIMEOUT_S = 120.0
#: PuLP's bundled CBC for linux/arm64, the only CBC the arm64 image keeps.
CBC = f"{image.SITE}/{multiarch.PULP_CBC_KEEP}cbc"
WILDFIRE = "examples/wildfire"


@dataclass(frozen=True)
class Root:
    """The unpacked arm64 image and how to run its programs."""

    qemu: str
    root: Path
    env: dict[str, str]
    cbc_log: Path  # one line per CBC run: the binary the wrapper exec'd and its arguments
    cbc_sha256: str  # of the image's CBC, as its layer holds it


def _config(img: image.Image) -> dict[str, Any]:
    """The image config blob of a single-image layout tarball."""
    with tarfile.open(img.path) as tar:
        member = tar.extractfile(f"blobs/sha256/{img.digest.removeprefix('sha256:')}")
        assert member is not None
        manifest = json.load(member)
        member = tar.extractfile(f"blobs/sha256/{manifest['config']['digest'].removeprefix('sha256:')}")
        assert member is not None
        config: dict[str, Any] = json.load(member)
        config["_layers"] = [d["digest"] for d in manifest["layers"]]
        return config


def unpack(img: image.Image, dest: Path) -> None:
    """``img``'s layers extracted in order into ``dest``, as a snapshotter stacks them. Images built
    here have no whiteouts (one is refused). Absolute symlinks are made relative: QEMU's ``-L``
    resolves a path in ``dest`` first, and an absolute link there would point at the host's file."""
    for layer in image.layers_of(img):
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob))) as tar:
            members = []
            for m in tar:
                if os.path.basename(m.name).startswith(".wh."):
                    raise AssertionError(
                        f"{img.path}: whiteout {m.name}: not expected in an image built here"
                    )
                if m.issym() and m.linkname.startswith("/"):
                    m.linkname = os.path.relpath(m.linkname.lstrip("/"), os.path.dirname(m.name) or ".")
                members.append(m)
            tar.extractall(dest, members=members, filter="tar")


def _entry_argv(root: Path, entrypoint: list[str]) -> list[str]:
    """The entrypoint as host paths into ``root``, with a ``#!`` script's interpreter put in front
    (QEMU loads ELF files only; the kernel would do this for a container)."""
    program = root / entrypoint[0].lstrip("/")
    with program.open("rb") as f:
        head = f.readline()
    if head.startswith(b"#!"):
        interpreter, *opt = head[2:].decode().split(None, 1)
        return [str(root / interpreter.lstrip("/")), *(o.strip() for o in opt), str(program), *entrypoint[1:]]
    return [str(program), *entrypoint[1:]]


def _emulated(
    r: Root, argv: list[str], timeout: float = EMULATED_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [r.qemu, "-L", str(r.root), *argv], cwd=REPO, env=r.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"emulated {argv[-4:]}: no exit within {timeout:.0f} s\n{exc.stderr!r}") from exc


def _host_plan(*extra: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "flyslice.operator.cli", "plan", WILDFIRE, "-o", "json", *extra]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=HOST_TIMEOUT_S, check=False)
    assert out.returncode == 0, f"host {' '.join(cmd[3:])}: exit {out.returncode}\n{out.stderr[-2000:]}"
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def placement(doc: dict[str, Any]) -> dict[str, Any]:
    """What a plan decided: per slice admitted or not (and why), where each NF instance runs and in
    which flavour and shared instance, the shared instances, the nodes' resulting usage. Solver
    timings and path latencies (floats derived from the placement) are left out."""
    return {
        "slices": sorted(
            (
                s["namespace"], s["name"], s["admitted"], tuple(s["reasons"]),
                tuple(sorted((i["id"], i["node"], i["flavor"], i.get("sharedInstance", "")) for i in s["instances"])),
                tuple(sorted(p["name"] for p in s["paths"])),
            )
            for s in doc["slices"]
        ),
        "shared": sorted(
            (x["id"], x["node"], x["flavor"], json.dumps(x["tenants"], sort_keys=True)) for x in doc["sharedInstances"]
        ),
        "nodes": sorted((n["name"], n["cpu"]["usedMillis"], n["memory"]["usedBytes"]) for n in doc["nodes"]),
    }  # fmt: skip


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qemu() -> str:
    path = shutil.which(QEMU)
    if path is None:
        why = f"{QEMU} is not installed (Debian package qemu-user-static; tools/test.sh installs it)"
        if os.environ.get("FLYSLICE_REQUIRE_KUBE") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return path


@pytest.fixture(scope="module")
def arm64_pair() -> tuple[image.Image, image.Image]:
    """(flyslice, nf-runner) for arm64: ``arm64_images()``, from the cache or built now."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.skip(f"the arm64 build needs {tool} (Debian/Ubuntu host)")
    if not multiarch.KEYRING.exists():
        pytest.skip(f"the arm64 build needs {multiarch.KEYRING} (package debian-archive-keyring)")
    start = time.monotonic()
    pair = multiarch.arm64_images()
    print(f"\narm64 images (cache or build): {time.monotonic() - start:.1f} s")
    return pair


@pytest.fixture(scope="module")
def arm64_root(
    qemu: str, arm64_pair: tuple[image.Image, image.Image], tmp_path_factory: pytest.TempPathFactory
) -> Root:
    start = time.monotonic()
    base = tmp_path_factory.mktemp("arm64")
    root = base / "root"
    unpack(arm64_pair[0], root)
    cbc = root / CBC
    data = cbc.read_bytes()
    real = cbc.with_name("cbc.aarch64")
    cbc.rename(real)
    log = base / "cbc-runs.log"
    cbc.write_text(
        "#!/bin/sh\n"
        "# tests/cluster/test_arm64_emulated.py: the host kernel cannot exec the aarch64 CBC (no\n"
        "# binfmt_misc entry), so PuLP's call of it comes here and QEMU runs it.\n"
        f"printf '%s %s\\n' {shlex.quote(str(real))} \"$*\" >> {shlex.quote(str(log))}\n"
        f'exec {shlex.quote(qemu)} -L {shlex.quote(str(root))} {shlex.quote(str(real))} "$@"\n'
    )
    cbc.chmod(0o755)
    tmp = base / "tmp"  # outside the root: the emulated processes and CBC see one /tmp
    tmp.mkdir()
    env = dict(e.split("=", 1) for e in _config(arm64_pair[0])["config"]["Env"])
    env.update(HOME=str(base), TMPDIR=str(tmp), LANG="C.UTF-8")
    print(f"arm64 image unpacked: {time.monotonic() - start:.1f} s")
    return Root(qemu, root, env, log, hashlib.sha256(data).hexdigest())


# --- tests --------------------------------------------------------------------------------------

PROBE = """
import importlib.util, json, os, platform, sys
import flyslice, pulp, pydantic_core
from pulp.apis import coin_api
from flyslice.solver.backends import highs_available
print(json.dumps({
    "machine": platform.machine(), "executable": sys.executable, "path": sys.path,
    "files": {m.__name__: m.__file__ for m in (flyslice, pulp, pydantic_core._pydantic_core)},
    "cbc": os.path.realpath(coin_api.pulp_cbc_path),
    "highspy": importlib.util.find_spec("highspy") is not None, "highs": highs_available(),
    "sitecustomize": "sitecustomize" in sys.modules,
}))
"""


def test_the_images_python_runs_aarch64_and_only_the_images_files(arm64_root: Root) -> None:
    r = arm64_root
    start = time.monotonic()
    out = _emulated(r, [str(r.root / "usr/bin/python3.11"), "-I", "-c", PROBE])
    print(f"emulated python probe: {time.monotonic() - start:.1f} s")
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout)
    assert seen["machine"] == "aarch64"
    assert seen["executable"] == str(r.root / "usr/bin/python3.11")
    # Nothing from the host's Python: every import path and module is inside the unpacked image.
    assert seen["path"] and all(p.startswith(f"{r.root}/") for p in seen["path"] if p), seen["path"]
    assert not seen["sitecustomize"]  # its link dangles in the image, as in a container
    site = f"{r.root}/{image.SITE}/"
    assert seen["files"]["flyslice"] == f"{site}flyslice/__init__.py"
    assert seen["files"]["pulp"] == f"{site}pulp/__init__.py"
    core = seen["files"]["pydantic_core._pydantic_core"]
    assert core.startswith(site) and core.endswith("aarch64-linux-gnu.so")
    # The runtime image has no highspy: the default ILP solver is PuLP's bundled arm64 CBC.
    assert not seen["highspy"] and not seen["highs"]
    assert seen["cbc"] == str(r.root / CBC)


def test_validate_and_plan_wildfire_under_emulation_match_the_host(arm64_root: Root) -> None:
    r = arm64_root
    entry = _entry_argv(r.root, ["/usr/local/bin/flyslice"])
    assert entry[:2] == [str(r.root / "usr/bin/python3.11"), "-I"]  # the entrypoint's own #! line

    start = time.monotonic()
    valid = _emulated(r, [*entry, "validate", WILDFIRE])
    t_validate = time.monotonic() - start
    assert valid.returncode == 0, f"{valid.stdout}\n{valid.stderr[-3000:]}"
    host_valid = subprocess.run(
        [sys.executable, "-m", "flyslice.operator.cli", "validate", WILDFIRE], cwd=REPO, capture_output=True,
        text=True, timeout=HOST_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert (valid.stdout, valid.stderr) == (host_valid.stdout, host_valid.stderr)
    assert " 0 error(s)" in valid.stdout

    start = time.monotonic()
    planned = _emulated(r, [*entry, "plan", WILDFIRE, "-o", "json"])
    t_plan = time.monotonic() - start
    assert planned.returncode == 0, f"{planned.stdout[-2000:]}\n{planned.stderr[-3000:]}"
    arm = json.loads(planned.stdout)

    # CBC ran, and it was the image's aarch64 CBC: through the wrapper, under QEMU, bytes unchanged.
    runs = r.cbc_log.read_text().splitlines() if r.cbc_log.exists() else []
    real = (r.root / CBC).with_name("cbc.aarch64")
    assert runs and all(line.startswith(f"{real} ") for line in runs), runs
    assert hashlib.sha256(real.read_bytes()).hexdigest() == r.cbc_sha256
    elf = multiarch.read_elf(real.read_bytes())
    assert elf is not None and elf.machine == multiarch.EM_AARCH64
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        # Why the wrapper: this kernel does not run it itself (the plan failed with this error).
        with pytest.raises(OSError) as refused:
            subprocess.run([str(real), "-quit"], capture_output=True, timeout=10, check=False)
        assert refused.value.errno == errno.ENOEXEC  # Exec format error
    assert arm["solver"]["method"] == "ilp" and arm["solver"]["name"].lower() == "cbc"

    start = time.monotonic()
    host_cbc = _host_plan("--solver", "cbc")
    host_default = _host_plan()
    t_host = time.monotonic() - start
    print(
        f"emulated validate {t_validate:.1f} s, emulated plan {t_plan:.1f} s "
        f"(solver {arm['solver']['seconds']:.2f} s, {len(runs)} CBC run(s)); host plans {t_host:.1f} s; "
        f"arm64 {arm['solver']['status']} objective {arm['solver']['objective']}, host cbc "
        f"{host_cbc['solver']['objective']}, host {host_default['solver']['name']} {host_default['solver']['objective']}"
    )
    assert host_cbc["solver"]["name"].lower() == "cbc"
    assert placement(arm) == placement(host_cbc)
    assert arm["solver"]["guarantee"] == host_cbc["solver"]["guarantee"] == "Optimal"
    assert any(s["admitted"] for s in arm["slices"])
    # The host's default solver (HiGHS here) may pick another optimum on a tie: same admissions and
    # the same objective within the solvers' gap setting are what it must agree on.
    assert [(s["name"], s["admitted"]) for s in arm["slices"]] == [
        (s["name"], s["admitted"]) for s in host_default["slices"]
    ]
    gap = max(arm["solver"]["gap"] or 0.0, host_default["solver"]["gap"] or 0.0, 1e-6)
    a, b = arm["solver"]["objective"], host_default["solver"]["objective"]
    assert abs(a - b) <= gap * max(abs(a), abs(b), 1.0) + 1e-9, (a, b)


def test_arm64_runner_entrypoint_serves_under_emulation(
    arm64_root: Root, arm64_pair: tuple[image.Image, image.Image], tmp_path: Path
) -> None:
    app, runner = arm64_pair
    config = _config(runner)
    assert config["_layers"] == _config(app)["_layers"]  # same files: the unpacked root serves both
    entry = config["config"]["Entrypoint"]
    assert entry == image.RUNNER
    spec = {
        "name": "broker", "slice": "s1", "role": "broker", "package": "broker", "flavor": "vnf",
        "module": "builtin:broker", "digest": module_digest("builtin:broker"), "node": "pi",
    }  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    ready = tmp_path / "ready.json"
    argv = [*_entry_argv(arm64_root.root, entry), "--spec-file", str(tmp_path / "spec.json")]
    argv += ["--listen", "127.0.0.1:0", "--ready-file", str(ready)]
    log = (tmp_path / "runner.log").open("w")
    start = time.monotonic()
    proc = subprocess.Popen(
        [arm64_root.qemu, "-L", str(arm64_root.root), *argv], cwd=tmp_path, env=arm64_root.env,
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = start + EMULATED_TIMEOUT_S
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        t_ready = time.monotonic() - start
        assert ready.exists(), (
            f"runner not ready after {t_ready:.0f} s:\n{(tmp_path / 'runner.log').read_text()[-3000:]}"
        )
        served = json.loads(ready.read_text())
        assert served["pid"] == proc.pid  # user-mode emulation: the QEMU process is the runner
        assert probe(served["address"], timeout=10.0), served
        print(f"emulated nf-runner ready and probed: {time.monotonic() - start:.1f} s")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, (tmp_path / "runner.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
