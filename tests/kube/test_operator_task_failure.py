"""The leading operator's tasks on the real API server: kopf runs under a uid with no user name (a
container without /etc/passwd, as the image built in tools/kubeenv/image.py), and a task that ends by
itself is logged with its error and makes the process exit non-zero instead of a silent 0."""

from __future__ import annotations

import asyncio
import getpass
import logging
import uuid
from typing import Any

import kubeenv
import pytest

from flyslice.operator.kube import dataplane_ca
from flyslice.operator.kube.kopf_operator import OperatorOptions, run_operator

from .operator_harness import operator_kubeconfig

pytestmark = [pytest.mark.kube, pytest.mark.timeout(90)]


def _options(kube_env: kubeenv.KubeEnv, namespace: str) -> OperatorOptions:
    return OperatorOptions(
        kubeconfig=str(operator_kubeconfig(kube_env)), namespaces=(namespace,),
        lease_name=f"task-{uuid.uuid4().hex[:8]}", liveness=None, lease_duration_s=4, renew_s=1, retry_s=1,
    )  # fmt: skip


async def _run_until(opts: OperatorOptions, stop_after_s: float) -> int:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(stop_after_s, stop.set)
    return await asyncio.wait_for(run_operator(opts, stop), stop_after_s + 30)


def test_kopf_runs_under_a_uid_without_a_user_name(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found: 10001")

    monkeypatch.setattr(getpass, "getuser", no_user)
    caplog.set_level(logging.INFO, logger="flyslice.operator")
    assert asyncio.run(_run_until(_options(kube_env, namespace), 6.0)) == 0
    assert "became leader" in caplog.text and "ended while leading" not in caplog.text


def test_a_task_that_ends_while_leading_is_logged_and_exits_non_zero(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    async def broken(self: Any, stop: asyncio.Event) -> None:
        raise RuntimeError("the CA Secret cannot be written")

    monkeypatch.setattr(dataplane_ca.DataplaneSigner, "run", broken)
    caplog.set_level(logging.INFO, logger="flyslice.operator")
    assert asyncio.run(_run_until(_options(kube_env, namespace), 20.0)) == 1
    assert "the data-plane signer ended while leading: the CA Secret cannot be written" in caplog.text
