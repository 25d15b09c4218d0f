"""Reading manifests: files, directories, multi-document YAML, line numbers, hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest

from flyslice.operator.intake import manifests
from flyslice.operator.intake.manifests import (
    Manifest,
    discover,
    format_path,
    load_file,
    load_paths,
    load_text,
)

TWO_DOCS = """\
# leading comment
apiVersion: flyslice.io/v1alpha1
kind: EdgeNode
metadata:
  name: gw-1
spec:
  tier: gateway
  runtimes: [fnf]
  links:
    - node: fog-1
      latencyMs: 1
    - {node: cloud, latencyMs: 9}
---
---
apiVersion: flyslice.io/v1alpha1
kind: Slice
metadata:
  name: cams
  namespace: iot
spec:
  attachments:
    - node: gw-1
"""


def test_every_field_keeps_its_line() -> None:
    found, errors = load_text(TWO_DOCS, "two.yaml")
    assert errors == []
    node, sl = found
    assert (node.file, node.line, node.kind, node.name, node.namespace) == (
        "two.yaml",
        2,
        "EdgeNode",
        "gw-1",
        "",
    )
    assert node.lines[("spec", "tier")] == 7
    assert node.lines[("spec", "runtimes", 0)] == 8
    assert node.lines[("spec", "links", 0)] == 10
    assert node.lines[("spec", "links", 0, "latencyMs")] == 11
    assert node.lines[("spec", "links", 1, "node")] == 12
    assert (sl.line, sl.ref, sl.api_version) == (15, "Slice/iot/cams", "flyslice.io/v1alpha1")
    assert sl.line_of(("spec", "attachments", 0, "node")) == 22


def test_line_of_a_missing_field_is_its_deepest_existing_parent() -> None:
    (node, _), _ = load_text(TWO_DOCS, "two.yaml")
    assert node.line_of(("spec", "capacity", "cpu")) == 6
    assert node.line_of(("spec", "links", 5, "node")) == 9
    assert node.line_of(()) == 2
    err = node.error(("spec", "capacity"), "boom")
    assert (err.file, err.line, err.object, err.path, err.message) == (
        "two.yaml",
        6,
        "EdgeNode/gw-1",
        "spec.capacity",
        "boom",
    )
    assert str(err) == "two.yaml:6: EdgeNode/gw-1: spec.capacity: boom"


def test_ref_of_incomplete_objects() -> None:
    assert Manifest("f", 1, {}).ref == "<no kind>/<no name>"
    assert Manifest("f", 1, {"kind": "Slice", "metadata": "x"}).ref == "Slice/<no name>"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("spec",), "spec"),
        (("spec", "links", 3, "node"), "spec.links[3].node"),
        ((0, "a"), "[0].a"),
    ],
)
def test_format_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_path(path) == text


def test_discover_walks_directories_in_order_and_skips_hidden_and_other_files(tmp_path: Path) -> None:
    for rel in [
        "b.yaml",
        "a/z.yml",
        "a/y.yaml",
        ".git/config.yaml",
        "a/.hidden/x.yaml",
        "notes.txt",
        "c.json",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x: 1\n")
    explicit = tmp_path / "c.json"
    files, errors = discover([tmp_path, explicit, tmp_path / "missing"])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/y.yaml", "a/z.yml", "b.yaml", "c.json"]
    assert [(e.file, e.message) for e in errors] == [(str(tmp_path / "missing"), "no such file or directory")]


def test_load_paths_reads_every_file_and_collects_every_error(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(TWO_DOCS)
    (tmp_path / "bad.yaml").write_text("a: [\n")
    (tmp_path / "empty.yaml").write_text("\n\n")
    found, errors = load_paths([tmp_path])
    assert [m.ref for m in found] == ["EdgeNode/gw-1", "Slice/iot/cams"]
    assert sorted(Path(e.file).name for e in errors) == ["bad.yaml", "empty.yaml"]


def test_documents_before_a_syntax_error_are_kept() -> None:
    text = TWO_DOCS.split("---\n")[0] + "---\nkind: [\n"
    found, errors = load_text(text, "f.yaml")
    assert [m.ref for m in found] == ["EdgeNode/gw-1"]
    assert [e.line for e in errors] == [14]
    assert errors[0].message == (
        "YAML syntax error: the file ends in the middle of a value (expected the node content, but found "
        "'<stream end>'); is a closing ']', '}' or quote missing?"
    )


def test_null_and_empty_documents_are_skipped() -> None:
    found, errors = load_text("--- ~\n---\n" + TWO_DOCS.split("---\n")[0], "f.yaml")
    assert ([m.ref for m in found], errors) == (["EdgeNode/gw-1"], [])


def test_merge_keys_are_not_duplicate_keys() -> None:
    text = (
        "apiVersion: flyslice.io/v1alpha1\nkind: EdgeNode\nmetadata: {name: gw-1}\n"
        "spec:\n  <<: &base {tier: gateway, runtimes: [fnf]}\n  <<: {capacity: {cpu: '1', memory: 1Gi}}\n"
        "  availability: 0.9\n"
    )
    (m,), errors = load_text(text, "f.yaml")
    assert errors == []
    assert m.data["spec"]["tier"] == "gateway" and m.data["spec"]["capacity"]["memory"] == "1Gi"


def test_a_duplicate_key_rejects_its_document_but_not_the_others() -> None:
    bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n"
    found, errors = load_text(bad + "---\n" + TWO_DOCS.split("---\n")[0], "f.yaml")
    assert [m.ref for m in found] == ["EdgeNode/gw-1"]
    assert [(e.line, e.object, e.path) for e in errors] == [(5, "ConfigMap/b", "metadata.name")]
    assert errors[0].message.startswith("duplicate key 'name' (first at line 4)")


def test_alias_expansion_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifests, "MAX_ALIAS_EXPANSION", 10)
    small = "kind: X\nmetadata: {name: a}\nd: &d [1, 2]\nuse: [*d, *d]\n"
    assert load_text(small, "f.yaml")[1] == []
    big = "kind: X\nmetadata: {name: a}\nd: &d [1, 2, 3, 4]\nuse: [*d, *d, *d, *d]\n"
    ((err),) = load_text(big, "f.yaml")[1]
    assert (err.line, err.object, err.path) == (4, "X/a", "use[2]")
    assert "more than 10 extra values" in err.message


def test_byte_order_mark_and_crlf_line_endings(tmp_path: Path) -> None:
    f = tmp_path / "win.yaml"
    f.write_bytes(b"\xef\xbb\xbf" + TWO_DOCS.replace("\n", "\r\n").encode())
    (node, _), errors = load_file(f)
    assert errors == [] and node.lines[("spec", "tier")] == 7


def test_utf16_file_is_reported_as_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "u16.yaml"
    f.write_bytes(TWO_DOCS.encode("utf-16"))
    found, (err,) = load_file(f)
    assert found == [] and err.line == 1
    assert err.message.startswith("file is not UTF-8 text: byte 0xff at column 1 is not valid UTF-8")


def test_an_unreadable_path_is_an_error_not_a_crash(tmp_path: Path) -> None:
    found, (err,) = load_file(tmp_path)
    assert found == [] and err.message == "cannot read file: Is a directory"


def test_single_quoted_strings_do_not_trigger_the_unclosed_quote_hint() -> None:
    text = "a: 'he said \"hi'\nb: c\n d: e\n"
    (err,) = load_text(text, "f.yaml")[1]
    assert "quoted string" not in err.message and err.line == 3


def test_unclosed_flow_mapping_points_at_its_opening_line() -> None:
    text = "a: 1\nb: {c: 1\nd: 2\n"
    (err,) = load_text(text, "f.yaml")[1]
    assert err.line == 2
    assert err.message.startswith("YAML syntax error: the mapping opened with '{' on this line is not closed")
    assert err.message.endswith("add the missing '}' (column 4)")


def test_a_duplicate_key_inside_an_anchor_is_reported_once() -> None:
    text = "kind: X\nmetadata: {name: a}\nbase: &b {x: 1, x: 2}\nuse: [*b, *b]\n"
    errors = load_text(text, "f.yaml")[1]
    assert [(e.line, e.path) for e in errors] == [(3, "base.x")]


def test_alias_items_point_at_their_own_line() -> None:
    text = "kind: X\nmetadata: {name: a}\nbase: &b [1]\nuse:\n  - 0\n  - *b\n"
    (m,), errors = load_text(text, "f.yaml")
    assert errors == [] and m.lines[("use", 1)] == 6 and m.lines[("base",)] == 3


def test_a_syntax_error_names_the_object_it_is_in() -> None:
    broken = TWO_DOCS.replace("    - node: gw-1", "    - node: gw-1\n   oops: [")
    found, (err,) = load_text(broken, "f.yaml")
    assert [m.ref for m in found] == ["EdgeNode/gw-1"]
    assert (err.line, err.object) == (23, "Slice/iot/cams")
    # No kind in the broken document: no guess.
    (err,) = load_text("a: 1\n b: 2\n", "g.yaml")[1]
    assert err.object == ""
