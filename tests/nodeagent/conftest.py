"""Shared helpers for the node-agent tests: real sockets, real processes, loopback only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flyslice.nodeagent.agent import Agent, AgentConfig
from flyslice.nodeagent.dataplane.chains import DataPlane
from flyslice.nodeagent.runtime.modules import ModuleLoader, module_digest
from flyslice.nodeagent.runtime.platform import ModularPlatform
from flyslice.nodeagent.spec import InstanceSpec, NextHop
from tests.conftest import free_port, wait_for  # noqa: F401 - re-exported for the agent tests


def make_spec(
    name: str,
    module: str,
    config: dict[str, Any] | None = None,
    hops: list[str] | tuple[str, ...] = (),
    *,
    slice_: str = "s1",
    flavor: str = "fnf",
    node: str = "n1",
    hop_node: str | None = None,
    digest: str | None = None,
    memory: str = "",
    entrypoint: str = "NF",
) -> InstanceSpec:
    ref = module if ":" in module else f"builtin:{module}"
    return InstanceSpec(
        name=name,
        slice=slice_,
        role=name,
        package=ref.rsplit(":", 1)[-1].rsplit("/", 1)[-1],
        flavor=flavor,
        module=ref,
        digest=digest or module_digest(ref),
        entrypoint=entrypoint,
        image="ghcr.io/flyslice/nf-runner:0.1" if flavor == "vnf" else "",
        config=config or {},
        next_hops=tuple(NextHop(h, hop_node or node) for h in hops),
        node=node,
        memory=memory,
    )


class Sink:
    """Collects what reaches the end of a path on one data plane."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def __call__(self, inst: Any, msgs: list[dict[str, Any]]) -> None:
        self.messages.extend(msgs)

    def payloads(self) -> list[Any]:
        return [m["payload"] for m in self.messages]


@pytest.fixture
def plane() -> Iterator[DataPlane]:
    p = DataPlane("n1", queue_size=10_000)
    yield p
    p.stop()


@pytest.fixture
def platform(plane: DataPlane) -> ModularPlatform:
    return ModularPlatform(plane, ModuleLoader(), deadline_s=0.5, error_limit=3)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    made: list[Agent] = []

    def make(node: str = "n1", state: str | None = None, **kw: Any) -> Agent:
        kw.setdefault("resync_s", 0.2)
        kw.setdefault("retry_initial_s", 0.2)
        # file: modules are confined (none allowed by default); the tests write theirs here.
        kw.setdefault("module_dirs", (tmp_path,))
        a = Agent(AgentConfig(node=node, state_dir=tmp_path / (state or node), **kw))
        made.append(a)
        return a

    yield make
    for a in made:
        a.stop()
