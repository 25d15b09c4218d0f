"""Rotating the module-signing key without an outage (docs/security.md, *Rotating signing keys*): an
agent accepts a signature by any of its trusted keys, so the procedure "add the new key, re-sign the
packages, remove the old key" keeps every instance running at every step, and after the last step a
package still signed by the old key is refused. Real agents on one state directory (restarted as an
operator would restart them), real VNF runner processes, real files."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flyslice.nodeagent.agent import Agent
from flyslice.nodeagent.runtime.modules import public_key_b64
from flyslice.nodeagent.spec import InstanceSpec
from tests.conftest import wait_for

from .conftest import make_spec
from .test_trust_policy import runner_cmdline, signed_module, vnf

MakeAgent = Callable[..., Agent]


def _states(agent: Agent) -> dict[str, str]:
    return {name: st.state for name, st in agent.status().items()}


def test_add_new_key_resign_remove_old_key_keeps_everything_running(
    agents: MakeAgent, tmp_path: Path
) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ref, digest, by_old = signed_module(tmp_path, old)
    data = Path(ref.removeprefix("file:")).read_bytes()
    by_new = base64.b64encode(new.sign(data)).decode()

    def instances(fnf_sig: str, vnf_sig: str, laggard_sig: str | None = None) -> list[InstanceSpec]:
        specs = [
            replace(make_spec("f", ref, digest=digest), signature=fnf_sig),
            vnf("v", ref, digest, vnf_sig, slice_="s2"),
        ]
        if laggard_sig is not None:  # a package nobody re-signed
            specs.append(replace(make_spec("g", ref, digest=digest, slice_="s3"), signature=laggard_sig))
        return specs

    # Before: every agent trusts the old key; the packages are signed with it.
    before = agents(state="shared", trusted_keys=[old.public_key()])
    before.converge(instances(by_old, by_old, by_old))
    wait_for(lambda: set(_states(before).values()) == {"Running"}, timeout=20)
    before.stop(stop_vnfs=False)

    # 1. Add the new key: the agent trusts both. What was signed with the old key keeps running...
    both = agents(state="shared", trusted_keys=[old.public_key(), new.public_key()])
    wait_for(lambda: set(_states(both).values()) == {"Running"}, timeout=20)
    assert {public_key_b64(old.public_key()), public_key_b64(new.public_key())} <= set(
        runner_cmdline(both, "v")
    )
    # 2. ...and re-signed packages run next to one that is not re-signed yet: both keys verify.
    both.converge(instances(by_new, by_new, by_old))
    wait_for(
        lambda: set(_states(both).values()) == {"Running"} and both.actual["v"].signature == by_new,
        timeout=20,
    )
    both.stop(stop_vnfs=False)

    # 3. Remove the old key: the re-signed packages run; the one still signed by the old key is refused.
    after = agents(state="shared", trusted_keys=[new.public_key()])
    wait_for(lambda: _states(after) == {"f": "Running", "v": "Running", "g": "Failed"}, timeout=20)
    assert "signature does not verify with any trusted key" in after.status()["g"].message
    assert public_key_b64(old.public_key()) not in runner_cmdline(after, "v")
    # A new fNF or VNF package signed only by the removed key is refused in either flavour.
    late = [
        replace(make_spec("f2", ref, digest=digest, slice_="s4"), signature=by_old),
        vnf("v2", ref, digest, by_old, slice_="s5"),
    ]
    after.converge([*instances(by_new, by_new), *late])
    refused = "signature does not verify with any trusted key"
    # The VNF's runner refuses the module and exits; the agent retries it with back-off, never Running.
    wait_for(lambda: all(refused in after.status()[n].message for n in ("f2", "v2")), timeout=20)
    st = after.status()
    assert st["f2"].state == "Failed" and st["v2"].state != "Running"
    assert st["f"].state == st["v"].state == "Running"
