"""One trust policy for every flavour: the agent's trusted keys bind VNF runners (processes and pods)
exactly as they bind fNF modules, and a runner never imports code from the directory it was
launched from (issue 12, item 1). Real agents, real runner processes, real files."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flyslice.nodeagent.agent import Agent
from flyslice.nodeagent.kube.pod_driver import KubernetesPodDriver, pod_manifest
from flyslice.nodeagent.message import new_message
from flyslice.nodeagent.runtime.modules import BUILTIN_DIR, digest_of, public_key_b64
from flyslice.nodeagent.spec import InstanceSpec
from tests.conftest import wait_for

from .conftest import Sink, make_spec

MakeAgent = Callable[..., Agent]

#: Imported instead of the stdlib's argparse, it leaves a marker file: proof that it ran.
TRAP = "from pathlib import Path\nPath({marker!r}).write_text('imported')\nraise SystemExit(97)\n"


def signed_module(
    tmp_path: Path, key: Ed25519PrivateKey, name: str = "broker_copy.py"
) -> tuple[str, str, str]:
    """A copy of the builtin broker as a file: module with its (ref, digest, signature)."""
    path = tmp_path / name
    data = (BUILTIN_DIR / "broker.py").read_bytes()
    path.write_bytes(data)
    return f"file:{path}", digest_of(data), base64.b64encode(key.sign(data)).decode()


def vnf(
    name: str, ref: str, digest: str, signature: str = "", slice_: str = "s1", hops: tuple[str, ...] = ()
) -> InstanceSpec:
    spec = make_spec(name, ref, None, hops, flavor="vnf", digest=digest, slice_=slice_)
    return replace(spec, signature=signature)


def runner_cmdline(agent: Agent, name: str) -> list[str]:
    obs = agent.vnf.observe(name)
    assert obs is not None and obs.pid is not None
    return [str(a) for a in psutil.Process(obs.pid).cmdline()]


def test_unsigned_or_tampered_vnf_is_refused_under_a_signing_policy(
    agents: MakeAgent, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    agent = agents(trusted_keys=[key.public_key()])
    ref, digest, signature = signed_module(tmp_path, key)
    # Tampered: other bytes, with a digest that matches them (the package was rewritten) but the
    # signature still over the original -- only the signature check can catch it.
    tampered = tmp_path / "tampered.py"
    tampered.write_bytes((BUILTIN_DIR / "broker.py").read_bytes() + b"\nEVIL = 1\n")
    forged_key = Ed25519PrivateKey.generate()
    by_other_key = base64.b64encode(forged_key.sign((BUILTIN_DIR / "broker.py").read_bytes())).decode()
    agent.converge(
        [
            vnf("good", ref, digest, signature, hops=("out",)),
            # A VNF's output comes back to the agent: the signed fNF at the end shows the path works.
            replace(make_spec("out", ref, digest=digest), signature=signature),
            vnf("unsigned", ref, digest, slice_="s2"),
            vnf("tampered", f"file:{tampered}", digest_of(tampered.read_bytes()), signature, slice_="s3"),
            vnf("other-key", ref, digest, by_other_key, slice_="s4"),
            # The same unsigned module as an fNF: one policy, one answer.
            replace(make_spec("unsigned-fnf", ref, digest=digest, slice_="s5"), signature=""),
        ]
    )
    wait_for(lambda: agent.status()["good"].state == "Running", timeout=20)
    wait_for(
        lambda: all(agent.status()[n].state == "Failed" for n in ("unsigned", "tampered", "other-key")), 20
    )
    st = agent.status()
    assert "has no signature" in st["unsigned"].message
    assert "does not verify with any trusted key" in st["tampered"].message
    assert "does not verify with any trusted key" in st["other-key"].message
    assert st["unsigned-fnf"].state == "Failed" and "has no signature" in st["unsigned-fnf"].message
    # The policy reached the runner on its command line, and the signed VNF carries traffic.
    assert public_key_b64(key.public_key()) in runner_cmdline(agent, "good")
    sink = Sink()
    agent.on_sink(sink)
    agent.plane.deliver(new_message("s1", "t", {"v": 1}))
    wait_for(lambda: sink.payloads() == [{"v": 1}])


def test_runner_started_under_another_key_set_is_replaced_not_adopted(
    agents: MakeAgent, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    ref, digest, _ = signed_module(tmp_path, key)
    old = agents(state="shared")
    old.converge([vnf("v", ref, digest)])  # no policy yet: the unsigned VNF runs
    wait_for(lambda: old.status()["v"].state == "Running", timeout=20)
    old.stop(stop_vnfs=False)
    new = agents(state="shared", trusted_keys=[key.public_key()])
    # The next agent requires signatures: the runner that was never verified under them must go.
    wait_for(lambda: new.status()["v"].state == "Failed", timeout=20)
    assert "has no signature" in new.status()["v"].message


def test_a_stdlib_named_module_in_the_launch_directory_is_never_imported(
    agents: MakeAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch = tmp_path / "manifest-repo"
    on_path = tmp_path / "pythonpath"
    for d in (launch, on_path):
        d.mkdir()
        (d / "argparse.py").write_text(TRAP.format(marker=str(d / "imported")))
    # The trap works: a runner started the way it used to be (python -m, in that directory) runs it.
    plain = subprocess.run(
        [sys.executable, "-m", "flyslice.nodeagent.runtime.runner", "--help"],
        cwd=launch, capture_output=True, timeout=30,
    )  # fmt: skip
    assert plain.returncode == 97 and (launch / "imported").exists()
    (launch / "imported").unlink()

    monkeypatch.chdir(launch)  # `cd repo && flyslice up .`
    monkeypatch.setenv("PYTHONPATH", str(on_path))  # and a PYTHONPATH pointing at another copy
    agent = agents(state=str(tmp_path / "state"))
    sink = Sink()
    agent.on_sink(sink)
    agent.converge([make_spec("v", "broker", None, ["out"], flavor="vnf"), make_spec("out", "broker")])
    wait_for(lambda: agent.status()["v"].state == "Running", timeout=20)
    agent.plane.deliver(new_message("s1", "t", {"v": 1}))
    wait_for(lambda: sink.payloads() == [{"v": 1}])
    assert "-I" in runner_cmdline(agent, "v")
    assert not (launch / "imported").exists() and not (on_path / "imported").exists()
    obs = agent.vnf.observe("v")
    assert obs is not None and obs.pid is not None
    assert psutil.Process(obs.pid).cwd() != str(launch)


def test_pods_get_the_policy_and_image_only_vnfs_are_refused_under_it() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    spec = make_spec("v", "broker", flavor="vnf")
    b64 = public_key_b64(key)
    pod = pod_manifest(
        spec, node_name="k1", namespace="ns", agent_address="10.0.0.1:7000", trusted_keys_b64=[b64]
    )
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--trusted-key-data") + 1] == b64
    assert (
        "--trusted-key-data"
        not in pod_manifest(spec, node_name="k1", namespace="ns", agent_address="10.0.0.1:7000")["spec"][
            "containers"
        ][0]["args"]
    )

    class NoCreate:  # a refused instance is only looked up (to stop an earlier pod), never created
        def list_namespaced_pod(self, *args: object, **kwargs: object) -> object:
            return type("PodList", (), {"items": []})()

        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"API call {name} made for a refused instance")

    driver = KubernetesPodDriver(
        NoCreate(), namespace="ns", node_name="k1", agent_address="a:1", trusted_keys=[key]
    )
    # Without an imageSignature nothing covers an image-only VNF (tests/nodeagent/test_image_signatures.py
    # and tests/kube/test_image_signatures_on_cluster.py cover signed images).
    with pytest.raises(
        ValueError, match="image-only VNF without imageSignature, and this agent has trusted keys"
    ):
        driver.ensure(replace(spec, module="", digest=""))


def test_the_runner_itself_verifies_signatures_passed_as_key_data(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    ref, digest, signature = signed_module(tmp_path, key)
    spec_file = tmp_path / "spec.json"
    b64 = public_key_b64(key.public_key())

    def run(sig: str) -> subprocess.CompletedProcess[str]:
        spec_file.write_text(__import__("json").dumps(vnf("x", ref, digest, sig).to_dict()))
        return subprocess.run(
            [sys.executable, "-I", "-m", "flyslice.nodeagent.runtime.runner", "--spec-file", str(spec_file),
             "--trusted-key-data", b64, "--ready-file", str(tmp_path / "ready"), "--parent-pid", "1"],
            capture_output=True, text=True, timeout=30, env={**os.environ},
        )  # fmt: skip

    refused = run("")
    assert refused.returncode == 3 and "has no signature" in refused.stderr
    assert not (tmp_path / "ready").exists()
    # Signed: it loads and serves (then stops by itself: --parent-pid 1 is not its parent).
    served = run(signature)
    assert served.returncode == 0, served.stderr
    assert (tmp_path / "ready").exists()
