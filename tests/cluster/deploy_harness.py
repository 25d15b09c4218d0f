"""flyslice installed on the real test nodes the way a user installs it (tests/cluster/test_deploy_k3s.py).

* ``write_overlay`` — a user's kustomization: ``deploy/k3s`` as its base, the images changed (to the
  flyslice image built here, by digest) and ``TEST_AGENT_ARGS`` added to the agents' arguments;
* ``gateway_kubeconfig`` / ``install_gateway`` / ``unit_command`` — a bare gateway as
  ``deploy/gateway`` sets one up: credentials from ``make-agent-kubeconfig.sh``, ``install.sh`` into a
  scratch root (the virtualenv filled from a local wheelhouse: no package index is reachable here),
  and the installed systemd unit's command line and environment, expanded as systemd would, with its
  absolute paths under that root (no systemd runs here);
* ``start_mosquitto`` — the MQTT broker the gateway's devices publish to, in the gateway's namespace;
* ``storage_rows`` — what the storage NF wrote, read inside its pod with ``kubectl exec``;
* ``Shared`` — one deployed cluster for several test modules (test_deploy_k3s.py, then
  test_faults_k3s.py): built by the first module that asks, kept while a later module still needs
  it, stopped after the last one or after a module that spends it (its faults leave it unfit).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "kubeenv"))

import image  # noqa: E402
import kubeenv  # noqa: E402
import nodes  # noqa: E402

DEPLOY = REPO / "deploy"
#: The unit's absolute paths that install.sh --root puts under its root.
UNIT_PATHS = ("/opt/flyslice", "/etc/flyslice", "/var/lib/flyslice")


#: What the test cluster adds to every agent's arguments: its "machines" share this one host, whose
#: load average (other tests, other work) is no node's own; reported, the operator would count it as
#: background use of each node's declared capacity and, under load, place nothing.
TEST_AGENT_ARGS = ("--no-load-report",)


def write_overlay(directory: Path, app: image.Image, agent_args: tuple[str, ...] = TEST_AGENT_ARGS) -> Path:
    """A kustomization in ``directory`` with ``deploy/k3s`` as its base that points the operator
    and agent images at ``app`` (by digest, as a registry-less cluster must) and appends
    ``agent_args`` to the agent DaemonSet's arguments."""
    directory.mkdir(parents=True, exist_ok=True)
    repository, digest = app.by_digest.split("@", 1)
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY / "k3s", directory)],
        "images": [
            {"name": f"ghcr.io/flyslice/{name}", "newName": repository, "digest": digest}
            for name in ("operator", "agent")
        ],
    }
    if agent_args:
        ops = [
            {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": a} for a in agent_args
        ]
        overlay["patches"] = [
            {"target": {"kind": "DaemonSet", "name": "flyslice-agent"}, "patch": json.dumps(ops)}
        ]
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    return directory


def gateway_kubeconfig(env: kubeenv.KubeEnv, node: str, server: str, out: Path) -> Path:
    """``deploy/gateway/make-agent-kubeconfig.sh NODE --server URL``, run as the cluster admin."""
    result = subprocess.run(
        ["bash", str(DEPLOY / "gateway" / "make-agent-kubeconfig.sh"), node, "--server", server,
         "--kubectl", str(env.binaries.kubectl)],
        env={**os.environ, "KUBECONFIG": str(env.kubeconfig), "KUBECTL_KUBERC": "false"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if result.returncode:
        raise AssertionError(f"make-agent-kubeconfig.sh {node} failed: {result.stderr}")
    out.write_text(result.stdout)
    out.chmod(0o600)
    return out


def install_gateway(host: nodes.Host, kubeconfig: Path, agent_args: str, wheels: tuple[Path, Path]) -> Any:
    """``deploy/gateway/install.sh`` into ``<host dir>/root``, run in the gateway's namespace and
    started, not awaited (two gateways install at once; the host's ``stop`` ends it). The virtualenv
    is filled from ``wheels`` (``image.wheelhouse()``: directory, flyslice wheel) with ``--no-index``."""
    directory, flyslice_wheel = wheels
    return host.spawn(
        "install",
        ["bash", str(DEPLOY / "gateway" / "install.sh"), "--node", host.name, "--kubeconfig", str(kubeconfig),
         "--source", str(flyslice_wheel), "--root", str(host.dir / "root"),
         "--pip-args", f"--no-index --find-links {directory}", "--agent-args", agent_args],
        # The system Python makes the virtualenv, as on a gateway (not this test's .venv).
        env={**os.environ, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip


def _under(root: Path, word: str) -> str:
    for prefix in UNIT_PATHS:
        if word == prefix or word.startswith(prefix + "/"):
            return str(root) + word
    return word


def unit_command(root: Path) -> tuple[list[str], dict[str, str]]:
    """The installed ``flyslice-agent.service``'s ExecStart and environment as systemd expands them
    (``${VAR}`` one word, ``$VAR`` split on white space), its paths moved under ``root``."""
    unit = (root / "etc" / "systemd" / "system" / "flyslice-agent.service").read_text()
    settings: dict[str, list[str]] = {}
    for line in unit.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", "[")):
            settings.setdefault(key.strip(), []).append(value.strip())
    variables: dict[str, str] = {}
    for env_file in settings.get("EnvironmentFile", []):
        for line in Path(_under(root, env_file)).read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#"):
                variables[key.strip()] = value
    for assignments in settings.get("Environment", []):
        for item in shlex.split(assignments):
            key, _, value = item.partition("=")
            variables[key] = _under(root, value)
    (exec_start,) = settings["ExecStart"]
    argv: list[str] = []
    for word in exec_start.split():
        braced = re.fullmatch(r"\$\{(\w+)\}", word)
        bare = re.fullmatch(r"\$(\w+)", word)
        if braced:
            argv.append(variables.get(braced.group(1), ""))
        elif bare:
            argv += variables.get(bare.group(1), "").split()
        else:
            argv.append(_under(root, word))
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(root)}
    env.update({k: v for k, v in variables.items() if k not in ("FLYSLICE_NODE", "FLYSLICE_AGENT_ARGS")})
    return argv, env


def start_mosquitto(host: nodes.Host, port: int = 1883) -> Any:
    """mosquitto in the gateway's namespace, on all its addresses: devices on the bridge publish to
    it, the agent subscribes on 127.0.0.1 (``--mqtt 127.0.0.1:1883``)."""
    conf = host.dir / "mosquitto.conf"
    conf.write_text(f"listener {port} 0.0.0.0\nallow_anonymous true\npersistence false\nlog_dest stdout\n")
    return host.spawn("mosquitto", ["/usr/sbin/mosquitto", "-c", str(conf)])


STORAGE_QUERY = textwrap.dedent(
    """
    import glob, json, sqlite3
    out = {}
    for path in glob.glob("/var/lib/flyslice/data/**/storage.sqlite", recursive=True):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            for topic, n in db.execute("SELECT topic, count(*) FROM series GROUP BY topic"):
                out[topic] = out.get(topic, 0) + n
    print(json.dumps(out))
    """
)


def storage_rows(env: kubeenv.KubeEnv, namespace: str, pod: str) -> dict[str, int]:
    """Rows per topic in the storage NF's SQLite file, read in its pod (``kubectl exec``: API server
    -> kubelet -> containerd), as an operator of the cluster would look."""
    result = env.kubectl(
        "-n", namespace, "exec", pod, "--", "python3", "-I", "-c", STORAGE_QUERY, check=False
    )
    if result.returncode:
        return {}
    rows: dict[str, int] = json.loads(result.stdout or "{}")
    return rows


class Shared:
    """Values module fixtures share (conftest.py's session fixture ``shared_clusters`` holds one).

    A cluster takes minutes to build and deploy; two modules with module fixtures of their own built it
    twice. Here the first module that asks builds it, a module's teardown keeps it while a module still
    to run (``session.items``, as ordered by conftest.py) asks for the same fixture, and stops it
    otherwise, or at once when the module declares it spends it (``SPENDS_SHARED``: its scenarios stop
    nodes, so no later module may get it; one that asks afterwards gets a new one). ``close`` (session
    end) stops whatever is left, e.g. after ``-x`` ended the run early."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[Any, contextlib.ExitStack]] = {}
        self._failed: dict[str, BaseException] = {}

    def module_fixture(
        self, request: pytest.FixtureRequest, factory: Callable[[], AbstractContextManager[Any]]
    ) -> Iterator[Any]:
        """The body of a module fixture (``yield from``) named like the shared value's key."""
        key = request.fixturename
        assert key is not None
        if key in self._failed:  # the build failed for an earlier module: the same error, not a second try
            raise self._failed[key]
        if key not in self._held:
            stack = contextlib.ExitStack()
            try:
                value = stack.enter_context(factory())
            except BaseException as exc:  # pytest.skip too: the next module skips the same way
                self._failed[key] = exc
                stack.close()
                raise
            self._held[key] = (value, stack)
        try:
            yield self._held[key][0]
        finally:
            if key in getattr(request.module, "SPENDS_SHARED", ()) or not _asked_later(request, key):
                self.release(key)

    def release(self, key: str) -> None:
        _value, stack = self._held.pop(key, (None, None))
        if stack is not None:
            stack.close()

    def close(self) -> None:
        for key in list(self._held):
            self.release(key)


def _asked_later(request: pytest.FixtureRequest, key: str) -> bool:
    """Whether a test of another module after this module's tests asks for fixture ``key``."""
    items = request.session.items
    mine = [i for i, item in enumerate(items) if getattr(item, "module", None) is request.module]
    later = items[max(mine) + 1 :] if mine else []
    return any(key in getattr(item, "fixturenames", ()) for item in later)
