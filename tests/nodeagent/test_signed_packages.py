"""Signed packages (issue 12, item 3): an NFPackage's module signature travels from the manifest
through validation and planning to the NFInstance spec, and a real agent verifies it before any of
the module's code runs; a namespace whose policy requires signatures refuses unsigned packages, and
its instances never run on an agent that has no key to check them with."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flyslice.nodeagent.agent import Agent
from flyslice.nodeagent.runtime.modules import BUILTIN_DIR, digest_of
from flyslice.nodeagent.spec import InstanceSpec
from flyslice.operator.intake.manifests import load_text
from flyslice.operator.intake.validation import PackagePolicy, ValidationResult, validate
from flyslice.operator.planning import plan, slice_actions
from tests.conftest import wait_for

MakeAgent = Callable[..., Agent]

MODULE = (BUILTIN_DIR / "broker.py").read_bytes()

MANIFESTS = """\
apiVersion: flyslice.io/v1alpha1
kind: EdgeNode
metadata: {{name: gw-1}}
spec:
  tier: gateway
  runtimes: [fnf]
  capacity: {{cpu: "1", memory: 512Mi}}
---
apiVersion: flyslice.io/v1alpha1
kind: NFPackage
metadata: {{name: broker, namespace: {ns}}}
spec:
  function: broker
  flavors:
    fnf:
      module: builtin:broker
      digest: {digest}
{signature}      resources: {{cpu: 20m, memory: 4Mi}}
---
apiVersion: flyslice.io/v1alpha1
kind: NetworkService
metadata: {{name: messaging, namespace: {ns}}}
spec:
  provides: [messaging]
  graph:
    roles:
      - {{name: broker, package: broker, scope: perSlice, tiers: [gateway]}}
---
apiVersion: flyslice.io/v1alpha1
kind: Slice
metadata: {{name: sensors, namespace: {ns}}}
spec:
  services: [messaging]
  qos: {{maxLatencyMs: 50}}
  attachments: [{{node: gw-1}}]
"""


def manifests(ns: str, signature: str) -> ValidationResult:
    line = f"      signature: {signature}\n" if signature else ""
    text = MANIFESTS.format(ns=ns, digest=digest_of(MODULE), signature=line)
    found, errors = load_text(text, "test.yaml")
    assert errors == []
    return validate(found, policy=PackagePolicy(frozenset({"secure"})))


def planned(result: ValidationResult) -> list[InstanceSpec]:
    """The NFInstance specs the control plane would write, as the agent reads them."""
    out = []
    for sp in plan(result.catalog).slices:
        assert sp.service is not None and sp.demand is not None, sp.placement.reasons
        for action in slice_actions(result.catalog, sp.slice, sp.service, sp.demand, sp.placement):
            out.append(InstanceSpec.from_object(action.as_object()))
    return out


def test_unsigned_package_in_a_namespace_that_requires_signatures_is_refused() -> None:
    result = manifests("secure", "")
    messages = [(e.object, e.path, e.message) for e in result.errors if e.severity == "error"]
    assert (
        "NFPackage/secure/broker",
        "spec.flavors.fnf.module",
        "namespace 'secure' requires signed packages (--require-signed-packages): add signature, "
        "the ed25519 signature of the module's bytes in base64",
    ) in messages
    # The package is invalid, so its slice is refused with it: nothing is placed, nothing runs.
    assert ("secure", "broker") not in result.catalog.packages
    assert planned_or_empty(result) == []
    # The same package elsewhere is fine: the policy is per namespace.
    assert manifests("open", "").ok


def planned_or_empty(result: ValidationResult) -> list[InstanceSpec]:
    """What would run; a slice whose service or package is invalid is not placed at all."""
    try:
        return planned(result)
    except AssertionError:
        return []


def test_signature_travels_to_the_agent_which_verifies_it(agents: MakeAgent) -> None:
    key = Ed25519PrivateKey.generate()
    signature = base64.b64encode(key.sign(MODULE)).decode()
    result = manifests("secure", signature)
    assert result.ok, [str(e) for e in result.errors]
    (spec,) = planned(result)
    assert spec.signature == signature and spec.signature_required
    assert spec.to_dict()["signatureRequired"] is True

    agent = agents(node="gw-1", trusted_keys=[key.public_key()])
    st = agent.converge([spec])
    assert st[spec.name].state == "Running", st[spec.name].message

    # A signature by another key, with the same (correct) digest, never runs.
    other = base64.b64encode(Ed25519PrivateKey.generate().sign(MODULE)).decode()
    (forged,) = planned(manifests("secure", other))
    st = agents(node="gw-1", state="other", trusted_keys=[key.public_key()]).converge([forged])
    assert st[forged.name].state == "Failed"
    assert "does not verify with any trusted key" in st[forged.name].message


def test_an_agent_without_trusted_keys_refuses_instances_that_require_a_signature(
    agents: MakeAgent,
) -> None:
    key = Ed25519PrivateKey.generate()
    (spec,) = planned(manifests("secure", base64.b64encode(key.sign(MODULE)).decode()))
    agent = agents(node="gw-1")
    st = agent.converge([spec])
    assert st[spec.name].state == "Failed"
    assert "requires signed packages, but this agent has no trusted key" in st[spec.name].message
    assert spec.name not in agent.platform.instances  # loaded nothing
    assert agent.loader.executions == 0

    # Without the policy the same agent runs it (the digest is still checked), and turning the
    # policy on later stops the running copy.
    st = agent.converge([replace(spec, signature_required=False)])
    assert st[spec.name].state == "Running", st[spec.name].message
    st = agent.converge([spec])
    assert st[spec.name].state == "Failed"
    wait_for(lambda: spec.name not in agent.platform.instances, timeout=5)


def test_flyslice_up_enforces_the_namespace_policy_end_to_end(tmp_path: Path) -> None:
    """A real ``flyslice up``: unsigned in a namespace that requires signatures never runs; signed
    and verified with ``--trusted-key`` reaches Ready."""
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "module-key.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    def up(name: str, signature: str) -> subprocess.CompletedProcess[str]:
        repo = tmp_path / name
        repo.mkdir()
        line = f"      signature: {signature}\n" if signature else ""
        (repo / "all.yaml").write_text(
            MANIFESTS.format(ns="secure", digest=digest_of(MODULE), signature=line)
        )
        return subprocess.run(
            [sys.executable, "-m", "flyslice.operator.cli", "up", str(repo), "--no-view",
             "--state-dir", str(tmp_path / f"state-{name}"), "--status-addr", "127.0.0.1:0",
             "--trusted-key", str(pem), "--require-signed-packages", "secure", "--exit-when-ready", "8"],
            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        )  # fmt: skip

    refused = up("unsigned", "")
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "namespace 'secure' requires signed packages (--require-signed-packages)" in refused.stderr
    signed = up("signed", base64.b64encode(key.sign(MODULE)).decode())
    assert signed.returncode == 0, signed.stderr[-2000:]
