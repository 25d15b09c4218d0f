"""file: modules confined to the agent's --module-dir directories (issue 12, item 3): real agents,
real runner processes, real files, symlinks and '..' paths. builtin: modules are unaffected."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from flyslice.nodeagent.agent import Agent
from flyslice.nodeagent.runtime.drivers import LocalProcessDriver
from flyslice.nodeagent.runtime.modules import (
    BUILTIN_DIR,
    ModuleLoader,
    ModuleRefError,
    digest_of,
    read_module_bytes,
)
from tests.conftest import wait_for

from .conftest import make_spec

MakeAgent = Callable[..., Agent]
BROKER = (BUILTIN_DIR / "broker.py").read_bytes()


def module_file(path: Path) -> tuple[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BROKER)
    return f"file:{path}", digest_of(BROKER)


def test_loader_confines_file_modules(tmp_path: Path) -> None:
    allowed = tmp_path / "modules"
    inside, _ = module_file(allowed / "nf.py")
    outside, _ = module_file(tmp_path / "elsewhere" / "nf.py")
    (allowed / "link.py").symlink_to(tmp_path / "elsewhere" / "nf.py")

    assert read_module_bytes(inside, [allowed]) == BROKER
    with pytest.raises(ModuleRefError, match=r"is outside the allowed module directories"):
        read_module_bytes(outside, [allowed])
    # Neither a symlink in the allowed directory nor '..' leads out of it.
    with pytest.raises(ModuleRefError, match=r"elsewhere/nf.py is outside"):
        read_module_bytes(f"file:{allowed / 'link.py'}", [allowed])
    with pytest.raises(ModuleRefError, match=r"is outside"):
        read_module_bytes(f"file:{allowed}/../elsewhere/nf.py", [allowed])
    # A sibling whose name merely starts like the allowed directory is not inside it.
    sibling, _ = module_file(tmp_path / "modules-evil" / "nf.py")
    with pytest.raises(ModuleRefError, match=r"is outside"):
        read_module_bytes(sibling, [allowed])
    with pytest.raises(ModuleRefError, match=r"file: modules are not allowed on this agent"):
        read_module_bytes(inside, [])
    # builtin: is not affected, even with no directory allowed; None (library use) confines nothing.
    assert read_module_bytes("builtin:broker", []) == BROKER
    assert read_module_bytes(outside, None) == BROKER
    assert ModuleLoader(module_dirs=[]).executions == 0


def test_agent_refuses_file_modules_outside_its_dirs(agents: MakeAgent, tmp_path: Path) -> None:
    allowed = tmp_path / "modules"
    inside, digest = module_file(allowed / "nf.py")
    outside, _ = module_file(tmp_path / "elsewhere" / "nf.py")
    agent = agents(module_dirs=(allowed,))
    st = agent.converge(
        [
            make_spec("in", inside, digest=digest),
            make_spec("out", outside, digest=digest),
            make_spec("builtin", "broker"),
        ]
    )
    assert st["in"].state == "Running", st["in"].message
    assert st["builtin"].state == "Running", st["builtin"].message
    assert st["out"].state == "Failed"
    assert "is outside the allowed module directories" in st["out"].message
    assert "out" not in agent.platform.instances

    # The default: no directory, no file: module at all; builtin: still runs.
    default = agents(node="n1", state="default", module_dirs=())
    st = default.converge([make_spec("in", inside, digest=digest), make_spec("b", "broker")])
    assert st["in"].state == "Failed" and "not allowed on this agent" in st["in"].message
    assert st["b"].state == "Running"
    assert default.loader.executions == 1  # only the builtin ran


def test_vnf_runners_get_and_apply_the_same_confinement(agents: MakeAgent, tmp_path: Path) -> None:
    allowed = tmp_path / "modules"
    inside, digest = module_file(allowed / "nf.py")
    agent = agents(module_dirs=(allowed,))
    assert isinstance(agent.vnf, LocalProcessDriver)
    assert agent.vnf.module_dirs == [allowed.resolve()]

    # The runner itself refuses a module outside its --module-dir, before running any NF code.
    outside, _ = module_file(tmp_path / "elsewhere" / "nf.py")
    spec = make_spec("v", outside, digest=digest, flavor="vnf")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    result = subprocess.run(
        [sys.executable, "-I", "-m", "flyslice.nodeagent.runtime.runner", "--spec-file", str(spec_file),
         "--listen", "127.0.0.1:0", "--ready-file", str(tmp_path / "ready"), "--module-dir", str(allowed)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "is outside the allowed module directories" in result.stderr
    assert not (tmp_path / "ready").exists()

    # And a VNF inside the allowed directory runs under the agent.
    agent.converge([make_spec("v", inside, digest=digest, flavor="vnf")])
    wait_for(lambda: agent.status()["v"].state == "Running", timeout=20)
    obs = agent.vnf.observe("v")
    assert obs is not None and obs.pid is not None
    cmdline = psutil.Process(obs.pid).cmdline()
    assert "--confine-modules" in cmdline
    assert cmdline[cmdline.index("--module-dir") + 1] == str(allowed.resolve())
