"""Run the shipped health checks as Argo CD and Flux would: the Lua in a real Lua 5.1 interpreter
(Argo CD's gopher-lua is Lua 5.1), the CEL with cel-python in Flux's evaluation order."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ARGOCD_CM = REPO / "deploy" / "health" / "argocd-cm.yaml"
FLUX_KUSTOMIZATION = REPO / "deploy" / "health" / "flux-kustomization.yaml"


def _lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string literal is a valid Lua 5.1 string literal for our text
    if isinstance(value, list):
        return "{" + ", ".join(_lua_literal(v) for v in value) + "}"
    return "{" + ", ".join(f"[{json.dumps(k)}] = {_lua_literal(v)}" for k, v in value.items()) + "}"


def lua_binary() -> str:
    lua = shutil.which("lua5.1") or shutil.which("lua")
    if lua is None:
        why = "lua5.1 is not installed (apt-get install -y lua5.1)"
        if os.environ.get("FLYSLICE_REQUIRE_LUA") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return lua


def argo_health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """(hs.status, hs.message) from the argocd-cm script for ``kind``, as Argo CD calls it."""
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    script = data[f"resource.customizations.health.flyslice.io_{kind}"]
    program = (
        f"local obj = {_lua_literal(obj)}\n"
        f"local hs = (function(obj)\n{script}\nend)(obj)\n"
        'io.write(hs.status, "\\t", tostring(hs.message))\n'
    )
    out = subprocess.run([lua_binary(), "-"], input=program, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    status, _, message = out.stdout.partition("\t")
    return status, message


def flux_health(kind: str, obj: dict[str, Any]) -> str:
    """Current, InProgress or Failed, as Flux's kstatus-with-CEL reader computes it.

    Flux first checks ``status.observedGeneration`` against ``metadata.generation``, then evaluates
    ``inProgress``, ``failed`` and ``current`` in that order; no match is InProgress.
    """
    spec = yaml.safe_load(FLUX_KUSTOMIZATION.read_text())["spec"]
    (check,) = [c for c in spec["healthCheckExprs"] if c["kind"] == kind]
    status = obj.get("status") or {}
    gen, observed = obj.get("metadata", {}).get("generation"), status.get("observedGeneration")
    if gen is not None and observed is not None and gen != observed:
        return "InProgress"
    env = celpy.Environment()
    activation = {"status": celpy.json_to_cel(status), "metadata": celpy.json_to_cel(obj.get("metadata", {}))}
    for name, result in (("inProgress", "InProgress"), ("failed", "Failed"), ("current", "Current")):
        if name in check and bool(env.program(env.compile(check[name])).evaluate(activation)):
            return result
    return "InProgress"
