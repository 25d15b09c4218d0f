"""The arm64 flyslice and nf-runner images and the amd64 + arm64 indexes (tools/kubeenv/multiarch.py).

Here the arm64 images are checked by reading them (tests/cluster/test_arm64_emulated.py runs them
under QEMU user-mode emulation): every ELF file is EM_AARCH64 and every ELF's interpreter and
DT_NEEDED libraries are inside the image; the checker itself is shown to reject an x86-64 image
and an arm64 image missing one library. The nf-runner image is the flyslice image's layers with
the runner's config. The indexes list linux/amd64 and linux/arm64, and the same inputs give the
same digests: a fresh build is compared with the cached build of an earlier run (another
process), or, on a cold cache, with a second build.

* The ELF reader and the index need no download and always run.
* The arm64 build downloads Debian arm64 packages (apt, signed Release chain) and aarch64 wheels
  (pip, requirements.lock's hashes) once into ${FLYSLICE_CACHE:-~/.cache/flyslice}/arm64; each
  download is bounded (multiarch.FETCH_TIMEOUT_S). It skips only without apt-get, dpkg-deb or
  Debian's archive keyring.
* A real containerd node (tools/kubeenv/nodes.py) imports the index and runs its amd64 variant in
  a pod: only with FLYSLICE_REQUIRE_KUBE=1 and the node binaries, like the other tests here.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "kubeenv"))

import image  # noqa: E402
import multiarch  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _tiny(tmp: Path, name: str, arch: str, content: bytes = b"x = 1\n") -> image.Image:
    tree = image._Tree()
    tree.data["m.py"] = (content, 0o644)
    return image.write_oci_layout(
        tmp / f"{name}.tar", [image.Layer.of(tree.layer())], repository=f"t/{name}", tag="1",
        config={"Cmd": ["m"]}, architecture=arch,
    )  # fmt: skip


def _index_doc(img: image.Image) -> tuple[dict[str, Any], dict[str, Any]]:
    """(index.json, the image index it names) of a layout tarball."""
    with tarfile.open(img.path) as tar:
        top = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        inner = json.load(tar.extractfile(f"blobs/sha256/{img.digest.removeprefix('sha256:')}"))  # type: ignore[arg-type]
    return top, inner


def test_read_elf_agrees_with_ldd_on_the_host_python() -> None:
    elf = multiarch.read_elf(image.PYTHON.read_bytes())
    assert elf is not None and elf.machine == multiarch.EM_X86_64
    ldd = image._ldd(image.PYTHON)
    assert elf.interpreter in ldd
    # Every DT_NEEDED name is one ldd resolved (ldd adds the vDSO-free transitive ones too).
    assert elf.needed and {n for n in elf.needed} <= {os.path.basename(p) for p in ldd}
    assert multiarch.read_elf(b"#!/bin/sh\n") is None


def test_index_lists_both_platforms_and_is_deterministic(tmp_path: Path) -> None:
    amd, arm = _tiny(tmp_path, "a", "amd64"), _tiny(tmp_path, "b", "arm64")
    multi = multiarch.multiarch_index([arm, amd], tmp_path / "m1.tar", "t/multi", "1")
    top, inner = _index_doc(multi)
    assert inner["mediaType"] == multiarch.OCI_INDEX
    assert [(m["digest"], m["platform"]) for m in inner["manifests"]] == [
        (amd.digest, {"architecture": "amd64", "os": "linux"}),
        (arm.digest, {"architecture": "arm64", "os": "linux"}),
    ]
    names = [m["annotations"]["io.containerd.image.name"] for m in top["manifests"]]
    assert names == ["t/multi:1", f"t/multi@{multi.digest}"]
    again = multiarch.multiarch_index([amd, arm], tmp_path / "m2.tar", "t/multi", "1")
    assert again.digest == multi.digest
    assert (tmp_path / "m1.tar").read_bytes() == (tmp_path / "m2.tar").read_bytes()
    with pytest.raises(image.ImageBuildError, match="two images for one platform"):
        multiarch.multiarch_index(
            [amd, _tiny(tmp_path, "c", "amd64", b"y = 2\n")], tmp_path / "m3.tar", "t/m", "1"
        )


# --- the real arm64 build -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def arm64_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[image.Image, image.Image]:
    """(flyslice, nf-runner) for arm64, built now (not taken from the cache)."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.skip(f"the arm64 build needs {tool} (Debian/Ubuntu host)")
    if not multiarch.KEYRING.exists():
        pytest.skip(f"the arm64 build needs {multiarch.KEYRING} (package debian-archive-keyring)")
    tmp = tmp_path_factory.mktemp("arm64")
    tag, _app, _runner = multiarch.arm64_cache_paths()  # arm64_images' tag: index.json names it
    return multiarch.build_arm64_images(tmp / "a.oci.tar", tmp / "r.oci.tar", tag=tag)


@pytest.fixture(scope="module")
def arm64(arm64_pair: tuple[image.Image, image.Image]) -> image.Image:
    return arm64_pair[0]


def _config(img: image.Image) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, config) of a single-image layout tarball."""
    with tarfile.open(img.path) as tar:

        def blob(digest: str) -> Any:
            member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            assert member is not None
            return json.load(member)

        manifest = blob(img.digest)
        return manifest, blob(manifest["config"]["digest"])


def test_arm64_image_is_all_aarch64_with_its_libraries_inside(arm64: image.Image) -> None:
    checked = multiarch.verify_image(arm64)
    assert checked.architecture == "arm64"
    assert checked.elf_files >= 60 and checked.needed_resolved >= 100  # python, extensions, libs, git
    fs = _files(arm64)
    python = multiarch.read_elf(fs["usr/bin/python3.11"])
    assert python is not None and python.machine == multiarch.EM_AARCH64
    assert python.interpreter == "/lib/ld-linux-aarch64.so.1"
    ssl = next(n for n in fs if n.startswith("usr/lib/python3.11/lib-dynload/_ssl."))
    assert ssl.endswith("aarch64-linux-gnu.so")
    assert "libssl.so.3" in multiarch.read_elf(fs[ssl]).needed  # type: ignore[union-attr]
    # Locked dependencies are the aarch64 builds: pydantic-core's extension, PuLP's arm64 CBC only.
    site = image.SITE
    core = [n for n in fs if n.startswith(f"{site}/pydantic_core/_pydantic_core.")]
    assert core and multiarch.read_elf(fs[core[0]]).machine == multiarch.EM_AARCH64  # type: ignore[union-attr]
    cbc = sorted(
        n for n in fs if n.startswith(f"{site}/{multiarch.PULP_CBC}") and n.endswith(("/cbc", ".exe"))
    )
    assert cbc == [f"{site}/{multiarch.PULP_CBC_KEEP}cbc"]
    assert f"{site}/flyslice/operator/cli.py" in fs and "usr/bin/git" in fs


def test_verify_rejects_foreign_elf_and_a_missing_library(arm64: image.Image, tmp_path: Path) -> None:
    amd64, _runner = image.flyslice_images()
    with pytest.raises(image.ImageBuildError, match=r"usr/bin/python3\.11: ELF machine 62, not 183"):
        multiarch.verify_image(amd64)
    # The same arm64 layers without libssl.so.3: _ssl (and others) must be reported.
    layers = []
    for layer in image.layers_of(arm64):
        out = io.BytesIO()
        with (
            tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob))) as src,
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
        ):
            for m in src:
                if not m.name.endswith("/libssl.so.3"):
                    dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        layers.append(image.Layer.of(out.getvalue()))
    broken = image.write_oci_layout(
        tmp_path / "broken.tar", layers, repository="t/b", tag="1", config={}, architecture="arm64"
    )
    with pytest.raises(
        image.ImageBuildError, match=r"_ssl\.cpython-311-aarch64-linux-gnu\.so: needs libssl\.so\.3"
    ):
        multiarch.verify_image(broken)


def test_arm64_build_is_deterministic(arm64_pair: tuple[image.Image, image.Image]) -> None:
    """The fresh build gives the bytes of ``arm64_images()``: the cached build of an earlier run (in
    another process, with other modules imported: .pyc are compiled by image.compile_pycs in a fresh
    interpreter), or, on a cold cache, a second build made now. (Another helper editing the
    checkout's sources between the two builds changes flyslice's layer: then this fails.)"""
    _tag, cached_path, _runner_path = multiarch.arm64_cache_paths()
    from_cache = cached_path.exists()
    cached = multiarch.arm64_images()
    for fresh, earlier in zip(arm64_pair, cached, strict=True):
        how = f"cached {time.ctime(earlier.path.stat().st_mtime)}" if from_cache else "built again now"
        assert earlier.digest == fresh.digest, f"{earlier.path} ({how}) differs from {fresh.path}"
        assert earlier.path.read_bytes() == fresh.path.read_bytes()


def test_arm64_runner_is_the_flyslice_layers_with_the_runner_config(
    arm64_pair: tuple[image.Image, image.Image], tmp_path: Path
) -> None:
    app, runner = arm64_pair
    (app_manifest, app_config), (manifest, config) = _config(app), _config(runner)
    assert config["architecture"] == "arm64" and config["os"] == "linux"
    assert config["config"]["Entrypoint"] == image.RUNNER
    assert config["config"]["User"] == image.APP_UID == app_config["config"]["User"]
    assert config["config"]["ExposedPorts"] == {"7000/tcp": {}}
    assert app_config["config"]["Entrypoint"] == ["/usr/local/bin/flyslice"]
    # Same layer blobs (containerd stores them once), other config, so another digest.
    assert manifest["layers"] == app_manifest["layers"] and len(manifest["layers"]) == 2
    assert config["rootfs"] == app_config["rootfs"] and runner.digest != app.digest
    checked = multiarch.verify_image(runner)
    assert checked.architecture == "arm64" and checked.elf_files >= 60
    # The amd64 runner has the same config but its own architecture.
    _amd64_app, amd64_runner = image.flyslice_images()
    _m, amd64_config = _config(amd64_runner)
    assert amd64_config["config"] == config["config"] and amd64_config["architecture"] == "amd64"
    multi = multiarch.runner_multiarch(runner, cache=tmp_path)
    top, inner = _index_doc(multi)
    assert [(m["digest"], m["platform"]["architecture"]) for m in inner["manifests"]] == [
        (amd64_runner.digest, "amd64"),
        (runner.digest, "arm64"),
    ]
    assert top["manifests"][1]["annotations"]["io.containerd.image.name"] == (
        f"flyslice.local/nf-runner-multiarch@{multi.digest}"
    )
    assert multiarch.runner_multiarch(runner, cache=tmp_path) == multi  # cached by both digests


def test_downloaded_wheels_are_the_locks(arm64: image.Image) -> None:
    _subset, hashes = multiarch.lock_subset()
    wheels = multiarch.fetch_wheels()  # cached: re-hashed against the lock
    assert {multiarch._wheel_name(w) for w in wheels} == set(hashes)
    assert any("aarch64" in w.name for w in wheels)
    assert not any("x86_64" in w.name for w in wheels)


def _files(img: image.Image) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for layer in image.layers_of(img):
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob))) as tar:
            for m in tar:
                if m.isfile():
                    data = tar.extractfile(m)
                    out[m.name] = data.read() if data else b""
    return out


# --- containerd imports the index and runs the amd64 variant -------------------------------------


@pytest.fixture(scope="module")
def cluster(
    arm64: image.Image, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, image.Image]]:
    if os.environ.get("FLYSLICE_REQUIRE_KUBE") != "1":
        pytest.skip(
            "real nodes run only with FLYSLICE_REQUIRE_KUBE=1 (and after tools/kubeenv/build-node.sh)"
        )
    import kubeenv
    import nodes

    try:
        binaries = nodes.find_node_binaries()
    except nodes.NodesUnavailable as exc:
        pytest.skip(str(exc))
    amd64, _runner = image.flyslice_images()
    multi = multiarch.multiarch_index(
        [amd64, arm64],
        tmp_path_factory.mktemp("multi") / "m.oci.tar",
        "flyslice.local/flyslice-multiarch",
        "t",
    )
    with kubeenv.KubeEnv(kubeenv.find_binaries(), extra_apiserver_args=nodes.APISERVER_ARGS) as env:
        c = nodes.NodeCluster(env, binaries, images=[multi]).start()
        try:
            c.add_node(f"multi-{c.id}")
            yield c, multi
        finally:
            assert c.stop() == []


def test_containerd_imports_the_index_and_runs_the_amd64_variant(cluster: tuple[Any, image.Image]) -> None:
    c, multi = cluster
    (node,) = c.nodes
    listed = node.ctr("images", "ls")
    row = next(line for line in listed.splitlines() if line.startswith(multi.by_digest))
    assert multiarch.OCI_INDEX in row and "linux/amd64" in row and "linux/arm64" in row
    ns = f"ma-{uuid.uuid4().hex[:8]}"
    env = c.env
    env.kubectl("create", "namespace", ns)
    try:
        script = "import platform, flyslice.operator.cli; print('machine', platform.machine())"
        pod = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
            "spec": {
                "nodeName": node.name, "restartPolicy": "Never", "automountServiceAccountToken": False,
                "enableServiceLinks": False, "dnsPolicy": "Default", "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "main", "image": multi.by_digest, "imagePullPolicy": "Never",
                                "command": ["/usr/bin/python3", "-I", "-c", script]}],
            },
        }  # fmt: skip
        env.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(pod))
        deadline = time.monotonic() + 120
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = env.kubectl_json("-n", ns, "get", "pod", "probe").get("status", {})
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            time.sleep(0.3)
        assert status.get("phase") == "Succeeded", f"{json.dumps(status)}\n{node.logs('kubelet', 25)}"
        assert "machine x86_64" in env.kubectl("-n", ns, "logs", "probe").stdout
        assert status["containerStatuses"][0]["imageID"].endswith(multi.digest)
    finally:
        env.kubectl("delete", "namespace", ns, "--wait=false", check=False)
