"""Render docs/resources.md from the CRDs, so the reference never drifts from the schemas.

python tools/gen_resource_docs.py          # rewrite docs/resources.md
python tools/gen_resource_docs.py --check  # exit 1 when it is out of date (CI)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from flyslice.crds import API_VERSION, KINDS, crd_documents, openapi_schema

OUT = Path(__file__).resolve().parents[1] / "docs" / "resources.md"


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "quantity"
    t = str(node.get("type", "object"))
    if t == "array":
        return f"[]{_type(node.get('items', {}))}"
    if "enum" in node:
        return " \\| ".join(str(e) for e in node["enum"])
    return t


def _rows(node: dict[str, Any], prefix: str, required: set[str]) -> list[str]:
    rows = []
    for name, child in node.get("properties", {}).items():
        if name in ("apiVersion", "kind", "metadata"):
            continue
        path = f"{prefix}.{name}" if prefix else name
        desc = " ".join(str(child.get("description", "")).split())
        req = " (required)" if name in required else ""
        rows.append(f"| `{path}` | {_type(child)}{req} | {desc} |")
        target = child.get("items", child) if child.get("type") == "array" else child
        rows.extend(
            _rows(
                target, path + ("[]" if child.get("type") == "array" else ""), set(target.get("required", []))
            )
        )
    return rows


def render() -> str:
    out = [
        "# Resource reference",
        "",
        f"Generated from `crds/` by `python tools/gen_resource_docs.py`; do not edit by hand. API version `{API_VERSION}`.",
    ]
    for kind in KINDS:
        crd = crd_documents()[kind]
        schema = openapi_schema(kind)
        names = crd["spec"]["names"]
        out += ["", f"## {kind}", "", " ".join(str(schema.get("description", "")).split()), ""]
        out += [f"Scope: {crd['spec']['scope']}. Short names: {', '.join(names.get('shortNames', []))}.", ""]
        out += ["| field | type | description |", "| --- | --- | --- |"]
        out += _rows(schema, "", set(schema.get("required", [])))
        rules = [
            (path, r) for path, node in _walk(schema, "") for r in node.get("x-kubernetes-validations", [])
        ]
        if rules:
            out += ["", "Rules the API server enforces (CEL), also checked by `flyslice validate`:", ""]
            out += [f"- `{path or '.'}`: {r['message']}" for path, r in rules]
    return "\n".join(out) + "\n"


def _walk(node: dict[str, Any], prefix: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(prefix, node)]
    for name, child in node.get("properties", {}).items():
        found += _walk(child, f"{prefix}.{name}" if prefix else name)
    if isinstance(node.get("items"), dict):
        found += _walk(node["items"], prefix + "[]")
    return found


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python tools/gen_resource_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
