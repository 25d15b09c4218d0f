"""`flyslice validate PATH... [-o json]`: exit codes, human and machine output."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from flyslice.operator.cli import main

REPO = Path(__file__).resolve().parents[2]
WILDFIRE = REPO / "examples" / "wildfire"
DDOS = REPO / "examples" / "ddos"
CORPUS = REPO / "tests" / "invalid"

WILDFIRE_OBJECTS = [
    "EdgeNode/cloud",
    "EdgeNode/fog-1",
    "EdgeNode/gw-1",
    "EdgeNode/gw-2",
    "NFPackage/default/broker",
    "NFPackage/default/storage",
    "NFPackage/default/stream-processor",
    "NetworkService/default/iot-data-pipeline",
    "Slice/default/wildfire",
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["validate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_directory_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(WILDFIRE))
    assert (code, out, err) == (0, "9 valid object(s), 0 error(s)\n", "")


def test_invalid_file_exits_1_and_prints_where_and_what(capsys: pytest.CaptureFixture[str]) -> None:
    f = CORPUS / "unknown-field-typo.yaml"
    code, out, err = run(capsys, str(f))
    assert code == 1
    assert out == "0 valid object(s), 1 error(s)\n"
    assert err == (
        f"error: {f}:8: Slice/cameras: spec.qos.maxLatency: unknown field 'maxLatency': did you mean "
        "'maxLatencyMs' (required here)? Valid fields here are availability, maxLatencyMs\n"
    )


def test_json_output_structure(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    shutil.copytree(WILDFIRE, tmp_path / "repo")
    bad = tmp_path / "repo" / "zz-bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n---\n"
        "apiVersion: flyslice.io/v1alpha1\nkind: EdgeNode\nmetadata: {name: gw-9}\n"
        "spec: {tier: gateway, runtimes: [fnf], capacity: {cpu: '1', memory: 12Q}}\n"
    )
    code, out, err = run(capsys, str(tmp_path / "repo"), "-o", "json")
    assert code == 1 and err == ""
    doc = json.loads(out)
    assert set(doc) == {"valid", "objects", "errors"}
    assert doc["valid"] is False
    assert doc["objects"] == WILDFIRE_OBJECTS
    assert doc["errors"] == [
        {
            "file": str(bad),
            "line": 1,
            "object": "ConfigMap/notes",
            "path": "",
            "message": "skipped: v1 ConfigMap is not a flyslice.io object",
            "severity": "note",
        },
        {
            "file": str(bad),
            "line": 8,
            "object": "EdgeNode/gw-9",
            "path": "spec.capacity.memory",
            "message": "'12Q' is not a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi: unknown suffix 'Q'; "
            "use Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024) or n, u, m, k, M, G, T, P, E (powers of 1000)",
            "severity": "error",
        },
    ]


def test_notes_alone_do_not_fail_the_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "other.yaml"
    f.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n")
    code, out, err = run(capsys, str(f), str(WILDFIRE))
    assert code == 0
    assert err == f"note: {f}:1: Deployment/web: skipped: apps/v1 Deployment is not a flyslice.io object\n"
    assert out == "9 valid object(s), 0 error(s)\n"


def test_multi_document_file_and_several_paths(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    combined = tmp_path / "all.yaml"
    combined.write_text("---\n".join(f.read_text() for f in sorted(WILDFIRE.glob("*.yaml"))))
    code, out, _ = run(capsys, str(combined), "-o", "json")
    assert code == 0 and json.loads(out) == {"valid": True, "objects": WILDFIRE_OBJECTS, "errors": []}
    # `flyslice validate examples/*/`: every example at once, names must not collide.
    examples = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir() and p.name != "__pycache__")
    code, out, _ = run(capsys, *(str(p) for p in examples), "-o", "json")
    doc = json.loads(out)
    # wildfire 9 + ddos 8 + shared-gateways 11
    assert code == 0 and len(doc["objects"]) == 28 and "Slice/default/home-iot-protection" in doc["objects"]


def test_the_same_objects_given_twice_are_duplicates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(DDOS / "slice.yaml"), str(DDOS), "-o", "json")
    doc = json.loads(out)
    assert code == 1
    assert [e["message"].split(";")[0] for e in doc["errors"]] == [
        f"duplicate: Slice/home-iot-protection is already defined at {DDOS / 'slice.yaml'}:6"
    ]


def test_missing_path_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope"))
    assert code == 1
    assert err == f"error: {tmp_path / 'nope'}: no such file or directory\n"


def test_every_corpus_file_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(p for p in CORPUS.glob("*.yaml") if p.name != "expected.yaml")
    for f in files:
        code, out, _ = run(capsys, str(f), "-o", "json")
        doc = json.loads(out)
        assert code == 1 and doc["valid"] is False and doc["errors"], f


def test_console_script_as_a_subprocess() -> None:
    ok = subprocess.run(
        ["flyslice", "validate", "examples/ddos", "-o", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["objects"] == [
        "EdgeNode/core-dc",
        "EdgeNode/cpe-home-1",
        "EdgeNode/cpe-home-2",
        "EdgeNode/pop-1",
        "NFPackage/default/firewall",
        "NFPackage/default/rate-limiter",
        "NetworkService/default/iot-ddos-mitigation",
        "Slice/default/home-iot-protection",
    ]
    bad = subprocess.run(
        ["flyslice", "validate", "tests/invalid/service-graph-cycle.yaml", "tests/invalid/non-utf8.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert bad.stdout == "3 valid object(s), 2 error(s)\n"
    assert bad.stderr.splitlines() == [
        "error: tests/invalid/non-utf8.yaml:6: file is not UTF-8 text: byte 0xe9 at column 16 is not valid UTF-8; "
        "save the file as UTF-8 (is it Latin-1, UTF-16 or binary?)",
        "error: tests/invalid/service-graph-cycle.yaml:53: NetworkService/edge-protection: spec.graph.edges[2]: "
        "this edge audit -> firewall closes a cycle in the service graph: firewall -> limiter -> audit -> firewall; "
        "traffic must flow one way, from the attachments to the sinks: remove or reverse an edge",
    ]


def test_usage_errors_exit_2() -> None:
    out = subprocess.run(["flyslice", "validate"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "PATH" in out.stderr
    out = subprocess.run(
        ["flyslice", "validate", "x", "-o", "xml"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "invalid choice: 'xml'" in out.stderr
