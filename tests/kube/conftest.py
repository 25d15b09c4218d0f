"""Fixtures for tests against a real kube-apiserver + etcd (see tools/kubeenv/kubeenv.py).

Tests here are marked ``kube``; without the binaries (``bash tools/kubeenv/build.sh``) they skip
with the reason, unless ``FLYSLICE_REQUIRE_KUBE=1`` makes a missing environment a failure (CI).
One API server serves the whole session; each test works in its own namespace and names.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "kubeenv"))

import kubeenv  # noqa: E402

Kubectl = Callable[..., CompletedProcess[str]]


@pytest.fixture(scope="session")
def kube_env() -> kubeenv.KubeEnv:
    return kubeenv.env_or_skip()


@pytest.fixture(scope="session")
def kubeconfig(kube_env: kubeenv.KubeEnv) -> Path:
    """Admin (system:masters) kubeconfig of the test API server."""
    return kube_env.kubeconfig


@pytest.fixture(scope="session")
def kubectl(kube_env: kubeenv.KubeEnv) -> Kubectl:
    """``kubectl(*args, input=None, check=True, kubeconfig=None)`` against the test API server."""
    return kube_env.kubectl


@pytest.fixture(scope="session")
def crds_installed(kube_env: kubeenv.KubeEnv) -> list[str]:
    """Apply every ``crds/*.yaml`` once and wait until each is Established; the CRD names."""
    return kube_env.install_crds(sorted((REPO / "crds").glob("*.yaml")))


@pytest.fixture
def namespace(kube_env: kubeenv.KubeEnv) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to go)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube_env.kubectl("create", "namespace", name)
    yield name
    kube_env.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def custom_api(kube_env: kubeenv.KubeEnv) -> Iterator[Any]:
    """One keep-alive ``CustomObjectsApi`` for hundreds of dry runs (a kubectl process each would take
    a minute)."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(kube_env.kubeconfig))
    yield client.CustomObjectsApi(api_client)
    api_client.close()


@pytest.fixture(scope="module")
def dry_run_namespace(kube_env: kubeenv.KubeEnv, request: pytest.FixtureRequest) -> Iterator[str]:
    """One namespace for every dry run of a test module (dry runs store nothing), named after it."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = f"dry-{module.replace('_', '-')}"[:63]
    kube_env.kubectl("create", "namespace", name, check=False)
    yield name
    kube_env.kubectl("delete", "namespace", name, "--wait=false", check=False)
