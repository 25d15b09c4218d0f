"""Deployment artefacts: the k3s manifests pass a real API server's dry run, run the right
commands with least privilege; the gateway install script and credential maker work for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubeenv
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def _render(kube_env: kubeenv.KubeEnv) -> list[dict[str, Any]]:
    out = kube_env.kubectl("kustomize", str(DEPLOY / "k3s")).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _workload(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.kube
def test_manifests_pass_a_server_side_dry_run(kube_env: kubeenv.KubeEnv, crds_installed: list[str]) -> None:
    rendered = kube_env.kubectl("kustomize", str(DEPLOY / "k3s")).stdout
    # A dry run creates nothing, so namespaced objects need their namespace to exist for real.
    kube_env.kubectl("apply", "-f", str(DEPLOY / "k3s" / "namespace.yaml"))
    out = kube_env.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == len(_render(kube_env)) and all(line.endswith("(server dry run)") for line in lines)
    kinds = {d["kind"] for d in _render(kube_env)}
    assert {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
            "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "Deployment",
            "DaemonSet", "Service"} <= kinds  # fmt: skip
    # The console Service reaches the operator's --status-addr port (console, /status, /metrics) by name,
    # as ClusterIP only: it is meant to be opened through the API server's service proxy.
    (svc,) = [
        d for d in _render(kube_env) if d["kind"] == "Service" and d["metadata"]["name"] == "flyslice-console"
    ]
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    op = _workload(_render(kube_env), "Deployment", "flyslice-operator")["spec"]["template"]
    # ... and only the leader: the operator labels its own pod flyslice.io/leader=true (not the template).
    selector = dict(svc["spec"]["selector"])
    assert selector.pop("flyslice.io/leader") == "true"
    assert "flyslice.io/leader" not in op["metadata"]["labels"]
    assert selector.items() <= op["metadata"]["labels"].items()
    pod_env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in op["spec"]["containers"][0]["env"]}
    assert pod_env["POD_NAME"] == "metadata.name" and pod_env["POD_NAMESPACE"] == "metadata.namespace"
    assert {"name": "http", "containerPort": 8081, "protocol": "TCP"} in op["spec"]["containers"][0]["ports"]
    # The probe port (8080, pod IP) serves only /healthz and /readyz; status goes to its own port.
    # All of the pod's own addresses: the Service reaches the pod IP, kubectl port-forward loopback.
    assert op["spec"]["containers"][0]["args"] == ["--status-addr", "0.0.0.0:8081"]


@pytest.mark.kube
def test_operator_and_agent_run_the_flyslice_commands(kube_env: kubeenv.KubeEnv) -> None:
    docs = _render(kube_env)
    operator = _workload(docs, "Deployment", "flyslice-operator")["spec"]["template"]["spec"]
    (op,) = operator["containers"]
    assert op["command"] == ["flyslice", "operator"]
    assert operator["serviceAccountName"] == "flyslice-operator"
    assert op["livenessProbe"]["httpGet"]["path"] == "/healthz"

    agent = _workload(docs, "DaemonSet", "flyslice-agent")["spec"]["template"]["spec"]
    (ag,) = agent["containers"]
    assert [*ag["command"], *ag["args"][:3]] == ["flyslice", "agent", "--node", "$(NODE_NAME)", "--kube"]
    env = {e["name"]: e for e in ag["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert agent["serviceAccountName"] == "flyslice-agent"
    assert agent["nodeSelector"]["flyslice.io/agent"] == "true"
    # Mutual TLS on the data plane, VNF pods included (their slice certificates: tests/kube/test_vnf_pod_certs.py):
    # the agent's default, a CSR to the operator's signer -- neither provided files nor plain TCP.
    assert "--insecure-plaintext" not in ag["args"] and "--tls-dir" not in ag["args"]


@pytest.mark.kube
def test_containers_run_unprivileged(kube_env: kubeenv.KubeEnv) -> None:
    for doc in _render(kube_env):
        if doc["kind"] not in ("Deployment", "DaemonSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
            assert "memory" in c["resources"]["limits"], c["name"]


def test_dockerfile_builds_every_component_for_each_target() -> None:
    text = DOCKERFILE.read_text()
    targets = {m.group(1): m.start() for m in re.finditer(r"^FROM \S+ AS (\S+)$", text, re.M)}
    assert {"operator", "agent", "nf-runner"} <= set(targets)
    entrypoints = dict(
        re.findall(r"^FROM \S+ AS (\S+)$(?:(?!^FROM ).)*?^ENTRYPOINT (\[.*?\])$", text, re.M | re.S)
    )
    assert json.loads(entrypoints["operator"]) == ["flyslice", "operator"]
    assert json.loads(entrypoints["agent"]) == ["flyslice", "agent"]
    assert json.loads(entrypoints["nf-runner"]) == ["python", "-I", "-m", "flyslice.nodeagent.runtime.runner"]
    # Every source directory the package is built from is copied into the image.
    package_dirs = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    )
    copied = set(re.findall(r"^COPY (\S+?)/? \S+$", text, re.M))
    assert {d.split("/")[0] for d in package_dirs} <= copied
    for src in copied:
        assert (REPO / src).exists(), src
    # The base image is multi-arch (official python images publish linux/amd64 and linux/arm64).
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim-bookworm AS wheels$", text, re.M)
    assert "--platform linux/amd64,linux/arm64" in text


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)


@pytest.mark.kube
def test_make_agent_kubeconfig_gets_a_node_identity_signed_by_the_cluster(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], tmp_path: Path
) -> None:
    kube_env.kubectl("apply", "-f", "-", input=kube_env.kubectl("kustomize", str(DEPLOY / "k3s")).stdout)
    script = DEPLOY / "gateway" / "make-agent-kubeconfig.sh"
    out = _run(["bash", str(script), "gw-pi-7", "--kubectl", str(kube_env.binaries.kubectl), "--days", "2"],
               env={**os.environ, "KUBECONFIG": str(kube_env.kubeconfig)})  # fmt: skip
    assert out.returncode == 0, out.stderr
    cfg = tmp_path / "gw-pi-7.kubeconfig"
    cfg.write_text(out.stdout)
    who = json.loads(kube_env.kubectl("auth", "whoami", "-o", "json", kubeconfig=cfg).stdout)["status"][
        "userInfo"
    ]
    assert who["username"] == "system:flyslice-agent:gw-pi-7"
    assert "system:flyslice-agents" in who["groups"]
    can = kube_env.kubectl("auth", "can-i", "patch", "nfinstances", "--subresource=status", "-A",
                           kubeconfig=cfg, check=False)  # fmt: skip
    assert can.stdout.strip() == "yes"
    assert "client-key-data" in out.stdout and "BEGIN" not in out.stdout  # key embedded, base64
    # The signing request is cleaned up.
    left = kube_env.kubectl("get", "csr", "-l", "flyslice.io/node=gw-pi-7", "-o", "name").stdout
    assert left.strip() == ""


def test_make_agent_kubeconfig_refuses_a_bad_node_name() -> None:
    out = _run(["bash", str(DEPLOY / "gateway" / "make-agent-kubeconfig.sh"), "Gateway_1"])
    assert out.returncode != 0 and "'Gateway_1' is not a valid EdgeNode name" in out.stderr


def _source_copy(dest: Path) -> Path:
    """The files the package is built from (as the Dockerfile copies them), outside the work tree
    so that pip's in-tree build leaves nothing behind in the repository."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dest / name)
    for d in ("flyslice_pkg", "crds", "operator", "solver", "nodeagent"):
        shutil.copytree(REPO / d, dest / d, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.mark.slow
def test_gateway_install_script_installs_a_working_agent_service(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    src = _source_copy(tmp_path / "src")
    root = tmp_path / "root"
    kubeconfig = tmp_path / "gw-1.kubeconfig"
    kubeconfig.write_text("users:\n- name: a\n  user:\n    client-certificate-data: eA==\n")
    out = _run([
        "bash", str(DEPLOY / "gateway" / "install.sh"), "--node", "gw-1", "--kubeconfig", str(kubeconfig),
        "--source", str(src), "--root", str(root), "--system-site-packages",
        "--pip-args", "--no-deps", "--agent-args", "--mqtt 127.0.0.1:1883",
    ], timeout=240)  # fmt: skip
    assert out.returncode == 0, out.stderr
    venv_flyslice = root / "opt" / "flyslice" / "venv" / "bin" / "flyslice"
    assert _run([str(venv_flyslice), "--help"]).returncode == 0
    env = (root / "etc" / "flyslice" / "agent.env").read_text()
    assert "FLYSLICE_NODE=gw-1\n" in env and "FLYSLICE_AGENT_ARGS=--no-pods --mqtt 127.0.0.1:1883\n" in env
    installed = root / "etc" / "flyslice" / "kubeconfig"
    assert stat.S_IMODE(installed.stat().st_mode) == 0o600
    unit = (root / "etc" / "systemd" / "system" / "flyslice-agent.service").read_text()
    assert "ExecStart=/opt/flyslice/venv/bin/flyslice agent --node ${FLYSLICE_NODE} --kube" in unit


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--node NAME is required"),
        (["--node", "GW 1", "--kubeconfig", "x"], "not a valid EdgeNode name"),
        (["--node", "gw-1", "--kubeconfig", "/nonexistent"], "cannot read kubeconfig"),
        (["--node", "gw-1", "--bogus"], "unknown option --bogus"),
        (["--node", "gw-1", "--no-tls"], "--no-tls is now --insecure-plaintext"),
    ],
)
def test_gateway_install_script_refuses_bad_input(args: list[str], message: str) -> None:
    out = _run(["bash", str(DEPLOY / "gateway" / "install.sh"), *args])
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_gateway_install_script_refuses_a_kubeconfig_without_credentials(tmp_path: Path) -> None:
    empty = tmp_path / "empty.kubeconfig"
    empty.write_text("apiVersion: v1\nkind: Config\n")
    out = _run(["bash", str(DEPLOY / "gateway" / "install.sh"), "--node", "gw-1", "--kubeconfig", str(empty),
                "--root", str(tmp_path / "r")])  # fmt: skip
    assert out.returncode != 0 and "holds no credentials" in out.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_is_valid(tmp_path: Path) -> None:
    unit = (DEPLOY / "gateway" / "flyslice-agent.service").read_text()
    # verify checks that ExecStart exists: point it at this interpreter for the check.
    unit = unit.replace("/opt/flyslice/venv/bin/flyslice", sys.executable)
    path = tmp_path / "flyslice-agent.service"
    path.write_text(unit)
    (tmp_path / "agent.env").write_text("FLYSLICE_NODE=gw-1\n")
    path.write_text(unit.replace("/etc/flyslice/agent.env", str(tmp_path / "agent.env")))
    out = _run(["systemd-analyze", "verify", str(path)])
    problems = [line for line in (out.stdout + out.stderr).splitlines() if "flyslice-agent.service" in line]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


@pytest.mark.kube
def test_workload_pod_templates_are_admitted_as_pods(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str]
) -> None:
    """Pod-level rules (service account exists, priority class allowed, security context valid)
    apply only when a controller creates the pods; no controller runs here, so create them in a
    dry run directly from the templates."""
    rendered = kube_env.kubectl("kustomize", str(DEPLOY / "k3s")).stdout
    kube_env.kubectl("apply", "-f", "-", input=rendered)
    for doc in _render(kube_env):
        if doc["kind"] not in ("Deployment", "DaemonSet"):
            continue
        template = doc["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{doc['metadata']['name']}-probe", "namespace": doc["metadata"]["namespace"],
                         "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
        }  # fmt: skip
        out = kube_env.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
        assert out.returncode == 0, f"{doc['kind']} {doc['metadata']['name']}: {out.stderr}"
