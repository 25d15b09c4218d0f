"""Manifest validation end to end: the invalid corpus, whole directories, the CRDs, the examples.

Every corpus file under tests/invalid/ must produce exactly the findings listed for it in
tests/invalid/expected.yaml (file, line, object, JSON path, message) and nothing else.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from flyslice.crds import API_VERSION, KINDS, crd_documents, openapi_schema, strict_schema
from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.manifests import MAX_FILE_BYTES, load_paths, load_text
from flyslice.operator.intake.validation import validate, validate_paths

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "invalid"
EXPECTED: dict[str, list[dict[str, Any]]] = yaml.safe_load((CORPUS / "expected.yaml").read_text())
EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())
CORPUS_FILES = sorted(p.name for p in CORPUS.iterdir() if p.is_file() and p.name != "expected.yaml")


def _finding(e: ManifestError, file: str, expected: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {"line": e.line, "object": e.object, "path": e.path, "severity": e.severity}
    if "contains" in expected:
        found["contains"] = expected["contains"] if expected["contains"] in e.message else e.message
    else:
        found["message"] = e.message.replace(file, "{file}")
    return found


def _wanted(expected: dict[str, Any]) -> dict[str, Any]:
    return {"severity": "error", **expected}


# -- the invalid corpus ------------------------------------------------------------------


def test_corpus_is_large_and_every_file_has_expectations() -> None:
    assert len(CORPUS_FILES) >= 45
    assert sorted(EXPECTED) == CORPUS_FILES, "tests/invalid/expected.yaml and the corpus files disagree"
    for name, findings in EXPECTED.items():
        assert findings, f"{name} must fail with at least one finding"
        assert any(f.get("severity", "error") == "error" for f in findings), f"{name} must hold an error"


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_invalid_corpus(name: str) -> None:
    path = str(CORPUS / name)
    result = validate_paths([path])
    expected = EXPECTED[name]
    assert all(e.file == path for e in result.errors)
    assert len(result.errors) == len(expected), "\n".join(str(e) for e in result.errors)
    found = [_finding(e, path, want) for e, want in zip(result.errors, expected, strict=True)]
    assert found == [_wanted(w) for w in expected]
    assert not result.ok


def test_a_ten_megabyte_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "huge.yaml"
    doc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n"
    line = "  k{:07d}: " + "x" * 80 + "\n"
    with big.open("w") as f:
        f.write(doc)
        i = 0
        while f.tell() < 10 * 2**20:
            f.write(line.format(i))
            i += 1
    (tmp_path / "node.yaml").write_text(_gateway("gw-1"))
    result = validate_paths([str(tmp_path)])
    size = big.stat().st_size / 2**20
    assert [(e.file, e.line, e.object, e.path, e.message) for e in result.errors] == [
        (
            str(big),
            0,
            "",
            "",
            f"file is {size:.1f} MiB; flyslice reads manifest files up to {MAX_FILE_BYTES // 2**20} MiB "
            "(the API server stores objects up to 1.5 MiB): split it",
        )
    ]
    assert list(result.catalog.nodes) == ["gw-1"], "the big file must not stop the valid one"


@pytest.mark.parametrize(
    ("schema", "value", "found"),
    [
        (
            {"type": "object", "additionalProperties": False},
            {"x": 1},
            [(("x",), "unknown field 'x': no fields are allowed here")],
        ),
        ({"type": "number", "exclusiveMinimum": 0}, 0, [((), "must be greater than 0, got 0")]),
        ({"type": "number", "exclusiveMaximum": 1}, 2, [((), "must be less than 1, got 2")]),
        (
            {"enum": ["allow", "drop"]},
            "alow",
            [((), "must be one of allow, drop; got string 'alow'; did you mean 'allow'?")],
        ),
        ({"type": "array", "minItems": 2}, [1], [((), "must have at least 2 items, has 1")]),
        ({"type": "string", "maxLength": 3}, "abcd", [((), "must be at most 3 characters long, is 4")]),
        (
            {"type": "integer"},
            "5",
            [((), "must be an integer, got string '5': write the number without quotes or units, e.g. 5")],
        ),
        (
            {"type": "object", "required": ["rate"], "properties": {"rate": {"type": "number"}}},
            {},
            [(("rate",), "required field 'rate' is missing")],
        ),
        ({"const": 1}, 2, [((), "1 was expected")]),
    ],
)
def test_explain_error_phrases_config_schema_findings(
    schema: dict[str, Any], value: Any, found: list[Any]
) -> None:
    from flyslice.operator.intake.schema_check import explain_error

    (err,) = jsonschema.Draft202012Validator(schema).iter_errors(value)
    assert explain_error(err) == found


# -- whole runs: good objects survive bad ones, every error is reported --------------------


def _gateway(name: str, extra: str = "") -> str:
    return (
        f"apiVersion: {API_VERSION}\nkind: EdgeNode\nmetadata:\n  name: {name}\n"
        f"spec:\n  tier: gateway\n  runtimes: [fnf]\n  capacity: {{cpu: '1', memory: 512Mi}}\n{extra}"
    )


def _copy_wildfire(dest: Path) -> Path:
    shutil.copytree(REPO / "examples" / "wildfire", dest)
    return dest


def test_one_invalid_object_does_not_keep_the_valid_ones_out_of_the_catalog(tmp_path: Path) -> None:
    repo = _copy_wildfire(tmp_path / "repo")
    # A broken file and a broken object next to the valid example.
    (repo / "broken.yaml").write_text("apiVersion: flyslice.io/v1alpha1\nkind: EdgeNode\nmetadata: [\n")
    (repo / "extra.yaml").write_text(_gateway("gw-3").replace("512Mi", "12Q") + "---\n" + _gateway("gw-4"))
    result = validate_paths([str(repo)])
    assert [(Path(e.file).name, e.line, e.object, e.path) for e in result.errors] == [
        ("broken.yaml", 3, "EdgeNode/<no name>", ""),
        ("extra.yaml", 8, "EdgeNode/gw-3", "spec.capacity.memory"),
    ]
    assert sorted(result.catalog.nodes) == ["cloud", "fog-1", "gw-1", "gw-2", "gw-4"]
    assert sorted(k[1] for k in result.catalog.packages) == ["broker", "storage", "stream-processor"]
    assert list(result.catalog.services) == [("default", "iot-data-pipeline")]
    assert list(result.catalog.slices) == [("default", "wildfire")]
    assert ("EdgeNode", "", "gw-4") in result.sources and ("EdgeNode", "", "gw-3") not in result.sources


def test_every_error_of_a_run_is_reported_not_just_the_first(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(_gateway("gw-a").replace("tier: gateway", "tier: edge"))
    (tmp_path / "b.yaml").write_text("\t- not yaml\n")
    (tmp_path / "c.yaml").write_text(
        _gateway("gw-c", "  links:\n    - {node: nowhere, latencyMs: 1}\n")
        + "---\n"
        + _gateway("gw-d").replace("cpu: '1'", "cpu: 1.5")
    )
    result = validate_paths([str(tmp_path)])
    assert [(Path(e.file).name, e.line, e.path) for e in result.errors] == [
        ("a.yaml", 6, "spec.tier"),
        ("b.yaml", 1, ""),
        ("c.yaml", 10, "spec.links[0].node"),
        ("c.yaml", 19, "spec.capacity.cpu"),
    ]
    assert not result.catalog.nodes


def test_objects_of_other_api_groups_are_skipped_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "all.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n---\n"
        + _gateway("gw-1")
    )
    result = validate_paths([str(tmp_path)])
    assert result.ok
    assert [(e.line, e.object, e.severity, e.message) for e in result.errors] == [
        (1, "ConfigMap/settings", "note", "skipped: v1 ConfigMap is not a flyslice.io object"),
        (6, "Deployment/web", "note", "skipped: apps/v1 Deployment is not a flyslice.io object"),
    ]
    assert list(result.catalog.nodes) == ["gw-1"]


def test_yaml_that_is_no_kubernetes_object_is_skipped_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(
        'version: "3"\nservices:\n  mqtt: {image: eclipse-mosquitto}\n'
    )
    (tmp_path / "node.yaml").write_text(_gateway("gw-1"))
    result = validate_paths([str(tmp_path)])
    assert result.ok and list(result.catalog.nodes) == ["gw-1"]
    assert [(e.line, e.object, e.path, e.severity, e.message) for e in result.errors] == [
        (
            1,
            "",
            "",
            "note",
            "skipped: not a Kubernetes object (no apiVersion, kind, metadata or spec; top-level keys: version, services)",
        )
    ]


def test_a_node_with_a_broken_link_still_counts_as_a_host_for_roles() -> None:
    # The only gateway has a dangling link; the role check must not add a misleading
    # "no EdgeNode on tier gateway" on top of the one real mistake.
    text = (
        _gateway("gw-1", "  links:\n    - {node: fog-9, latencyMs: 1}\n")
        + "---\n"
        + (CORPUS / "dangling-package.yaml")
        .read_text()
        .split("---\n", 1)[1]
        .replace("ratelimiter", "rate-limiter")
    )
    manifests, errors = load_text(text, "m.yaml")
    assert not errors
    result = validate(manifests)
    assert [(e.object, e.path) for e in result.errors] == [("EdgeNode/gw-1", "spec.links[0].node")]
    assert list(result.catalog.services) == [("default", "edge-protection")]


def test_a_slice_may_supply_config_its_service_role_leaves_out() -> None:
    # The limiter role has no config; rate-limiter requires `rate`; the slice supplies it.
    text = (CORPUS / "missing-required-config.yaml").read_text() + "  config:\n    limiter: {rate: 50}\n"
    result = validate(load_text(text, "s.yaml")[0])
    assert result.errors == [], [str(e) for e in result.errors]
    (sl,) = result.catalog.slices.values()
    assert sl.config == {"limiter": {"rate": 50}}


def test_duplicate_names_in_different_namespaces_are_distinct() -> None:
    pkg = (CORPUS / "module-bad-reference.yaml").read_text().replace("./firewall.py", "builtin:firewall")
    text = pkg.replace("name: firewall", "name: firewall\n  namespace: a") + "---\n" + pkg
    result = validate(load_text(text, "p.yaml")[0])
    assert result.ok, [str(e) for e in result.errors]
    assert sorted(result.catalog.packages) == [("a", "firewall"), ("default", "firewall")]


# -- the CRDs: descriptions everywhere, structural schemas -------------------------------


def _walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _fields(kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, node in _walk(openapi_schema(kind), kind):
        for name, child in node.get("properties", {}).items():
            yield f"{path}.{name}", child


@pytest.mark.parametrize("kind", KINDS)
def test_every_crd_field_has_a_description(kind: str) -> None:
    # The root metadata is ObjectMeta: the API server documents it and allows no more than
    # name/generateName restrictions there, so it is the one field exempt.
    missing = [
        path
        for path, child in _fields(kind)
        if path != f"{kind}.metadata" and not str(child.get("description", "")).strip()
    ]
    assert not missing, f"fields without a description: {missing}"
    assert str(openapi_schema(kind).get("description", "")).strip()


@pytest.mark.parametrize("kind", KINDS)
def test_crd_schema_is_structural(kind: str) -> None:
    problems: list[str] = []
    for path, node in _walk(openapi_schema(kind), kind):
        int_or_string = node.get("x-kubernetes-int-or-string")
        if "type" not in node and not int_or_string and not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: no type")
        if int_or_string and (
            "type" in node or node.get("anyOf") not in (None, [{"type": "integer"}, {"type": "string"}])
        ):
            problems.append(f"{path}: int-or-string must be anyOf [integer, string] without a type")
        if "nullable" in node and (not isinstance(node["nullable"], bool) or "type" not in node):
            problems.append(f"{path}: nullable must be a boolean next to a type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties are mutually exclusive")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            problems.append(f"{path}: an array needs one items schema")
        if "properties" in node and node.get("type") != "object":
            problems.append(f"{path}: properties on a non-object")
        for req in node.get("required", []):
            if req not in node.get("properties", {}):
                problems.append(f"{path}: required field {req!r} is not declared")
        list_type = node.get("x-kubernetes-list-type")
        items = node.get("items") if isinstance(node.get("items"), dict) else {}
        if list_type == "map":
            keys = node.get("x-kubernetes-list-map-keys", [])
            if not keys or any(k not in items.get("required", []) for k in keys):
                problems.append(f"{path}: list-map keys must be required fields of the items")
        if list_type == "set" and items.get("type") in ("object", "array"):
            problems.append(f"{path}: a set must hold scalars")
        for value in node.get("enum", []):
            if not _has_type(value, node.get("type")):
                problems.append(f"{path}: enum value {value!r} is not a {node.get('type')}")
        if "default" in node:
            try:
                jsonschema.Draft4Validator(node).validate(node["default"])
            except jsonschema.ValidationError as exc:
                problems.append(f"{path}: default does not validate: {exc.message}")
        if "pattern" in node:
            re.compile(node["pattern"])
        for rule in node.get("x-kubernetes-validations", []):
            try:
                celpy.Environment().compile(rule["rule"])
            except Exception as exc:
                problems.append(f"{path}: CEL rule {rule['rule']!r} does not compile: {exc}")
            if not rule.get("message"):
                problems.append(f"{path}: CEL rule {rule['rule']!r} has no message")
    assert not problems, "\n".join(problems)


def _has_type(value: Any, t: str | None) -> bool:
    types: dict[str | None, Any] = {
        "string": str,
        "integer": int,
        "number": int | float,
        "boolean": bool,
        None: object,
    }
    return isinstance(value, types.get(t, object))


@pytest.mark.parametrize("kind", KINDS)
def test_crd_document_is_consistent(kind: str) -> None:
    doc = crd_documents()[kind]
    names, spec = doc["spec"]["names"], doc["spec"]
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1" and doc["kind"] == "CustomResourceDefinition"
    assert doc["metadata"]["name"] == f"{names['plural']}.{spec['group']}"
    assert names["plural"] == names["plural"].lower() and names["singular"] == kind.lower()
    assert spec["scope"] in ("Namespaced", "Cluster")
    (version,) = spec["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    if "status" in schema["properties"]:
        assert version["subresources"]["status"] == {}
    for column in version.get("additionalPrinterColumns", []):
        # .status.conditions[?(@.type=="Ready")].status -> status, conditions, (items), status
        parts = re.sub(r"\[[^\]]*\]", "", column["jsonPath"]).lstrip(".").split(".")
        if parts[0] == "metadata":
            continue
        node = schema
        for part in parts:
            if node.get("type") == "array":
                node = node["items"]
            assert part in node.get("properties", {}), (
                f"printer column {column['name']} -> {column['jsonPath']}"
            )
            node = node["properties"][part]


@pytest.mark.parametrize("kind", KINDS)
def test_strict_schema_closes_every_object_but_preserved_ones(kind: str) -> None:
    for path, node in _walk(strict_schema(kind), kind):
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            assert node.get("additionalProperties") is False, path
    assert "additionalProperties" not in openapi_schema(kind), "the CRD itself must stay as written"


# -- the CRDs' CEL rules: what the API server refuses, validate refuses too ----------------


def _rules(kind: str) -> set[str]:
    return {
        r["rule"]
        for _, node in _walk(openapi_schema(kind), kind)
        for r in node.get("x-kubernetes-validations", [])
    }


def test_every_cel_rule_the_server_enforces_is_enforced_by_validate() -> None:
    """validate re-implements the CEL rules of the main kinds in Python (better messages).

    For every corpus file and example, any schema-valid object that breaks a CEL rule must get an
    error from validate; and the corpus must break every CEL rule of every kind at least once.
    """
    from flyslice.operator.intake.cel_rules import cel_errors
    from flyslice.operator.intake.schema_check import schema_errors

    broken_rules: set[str] = set()
    evaluated: dict[str, list[ManifestError]] = {}  # corpus files share objects; celpy is slow
    sources = [CORPUS / n for n in CORPUS_FILES] + EXAMPLES
    for source in sources:
        manifests, _ = load_paths([source])
        result = validate(manifests)
        rejected = {e.object for e in result.errors if e.severity == "error"}
        for m in manifests:
            if m.kind not in KINDS or m.api_version != API_VERSION or schema_errors(m):
                continue
            key = json.dumps([m.kind, m.data], sort_keys=True, default=str)
            if key not in evaluated:
                evaluated[key] = cel_errors(m)
            failed = evaluated[key]
            assert all(e.severity == "error" for e in failed), f"a CEL rule could not run on {m.ref}"
            if failed:
                assert m.ref in rejected, (
                    f"{source.name}: {m.ref} breaks {failed[0].message!r} but validate passes it"
                )
            for rule in _rules(m.kind):
                messages = {
                    str(r.get("message"))
                    for _, n in _walk(openapi_schema(m.kind), m.kind)
                    for r in n.get("x-kubernetes-validations", [])
                    if r["rule"] == rule
                }
                if any(e.message in messages for e in failed):
                    broken_rules.add(rule)
    every_rule = set().union(*(_rules(k) for k in KINDS))
    assert every_rule - broken_rules == set(), "no corpus file breaks these CEL rules"


# -- the examples ------------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_validates_clean(example: Path) -> None:
    result = validate_paths([str(example)])
    assert result.errors == [], [str(e) for e in result.errors]
    assert result.catalog.slices, "an example should declare at least one slice"


def test_all_examples_validate_together_without_name_clashes() -> None:
    result = validate_paths([str(p) for p in EXAMPLES])
    assert result.errors == [], [str(e) for e in result.errors]
    # Every slice of every example, none lost to a name clash (an example may hold several).
    assert len(result.catalog.slices) == sum(len(validate_paths([str(p)]).catalog.slices) for p in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_has_a_readme_saying_what_it_shows(example: Path) -> None:
    readme = example / "README.md"
    assert readme.is_file(), f"{example.relative_to(REPO)} needs a short README.md (issue 2, item 6)"
    assert len(readme.read_text().split()) >= 30


def test_ddos_example_places_firewall_and_rate_limiter_at_the_customer_edge() -> None:
    from flyslice.operator.planning.pipeline import plan
    from flyslice.operator.planning.plan_format import plan_document

    result = validate_paths([str(REPO / "examples" / "ddos")])
    doc = plan_document(plan(result.catalog), result.errors)
    (sl,) = doc["slices"]
    assert sl["admitted"], sl["reasons"]
    placed = sorted((i["role"], i["attachment"], i["node"], i["flavor"]) for i in sl["instances"])
    assert placed == [
        ("firewall", "cpe-home-1", "cpe-home-1", "fnf"),
        ("firewall", "cpe-home-2", "cpe-home-2", "fnf"),
        ("limiter", "cpe-home-1", "cpe-home-1", "fnf"),
        ("limiter", "cpe-home-2", "cpe-home-2", "fnf"),
    ]


def test_ddos_role_configs_satisfy_the_builtin_modules_own_schemas() -> None:
    # The package's configSchema is what validate checks; the module's config_schema is what
    # the agent enforces when it configures the NF. Both must accept the example's config.
    from flyslice.nodeagent.nfs import firewall, rate_limiter

    result = validate_paths([str(REPO / "examples" / "ddos")])
    (service,) = result.catalog.services.values()
    modules = {"firewall": firewall.NF.config_schema, "rate-limiter": rate_limiter.NF.config_schema}
    for role in service.roles:
        jsonschema.validate(dict(role.config), modules[role.package])
        package = result.catalog.packages[("default", role.package)]
        jsonschema.validate(dict(role.config), dict(package.config_schema))
