"""Mutated manifest sets for fuzzing ``flyslice validate`` and ``flyslice plan``, and their contract.

Shared by ``tests/fuzz/test_manifest_fuzz.py`` (Hypothesis supplies the random source, so CI is
reproducible) and ``benchmarks/suite_fuzz.py`` (a seeded ``random.Random``, for long campaigns): every
mutation is written once here, against nothing but ``randint``.

A mutant starts from an example set (``examples/wildfire``, ``examples/ddos``) and applies one to three
steps: numeric edges, deletions, type swaps, unicode, anchors and aliases, duplicate keys, deep nesting on
the parsed documents, then truncation, stray bytes and line edits on the rendered text. Values that
``yaml.safe_dump`` cannot produce (``1.0e999999`` unquoted, 5000 digits, tags, anchors, duplicate keys)
are :class:`Raw` YAML text written verbatim.

The contract (issue 9): no exception escapes ``main``; the exit code is one of 0 success, 1 invalid
input / not admitted, 2 usage, 3 internal error, and never 3; ``validate`` answers in under a second;
whatever ``validate`` accepts, ``plan`` handles (exit 0 or 1), and ``-o json`` output is JSON.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import os
import re
import signal
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import yaml

from flyslice.operator.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = ("wildfire", "ddos")

#: The documented exit codes of the CLI (issue 9, part 4).
EXIT_CODES = {0: "success", 1: "invalid input or not admitted", 2: "usage error", 3: "internal error"}
#: The contract: ``validate`` answers within this, per set, in CPU seconds of this process: what the
#: input costs, not how busy the machine is (a parallel test run doubles the wall time).
VALIDATE_LIMIT_S = 1.0
#: A call still running after this is interrupted (SIGALRM) and reported as a hang, so that one input
#: cannot stall CI for minutes. A single long C call (the issue's ``memory: "1e999999"``, 64 s inside
#: decimal) is interrupted only when it returns; benchmarks/suite_fuzz.py kills its worker instead.
HANG_LIMIT_S = {"validate": 10.0, "plan": 30.0}
#: The ILP is given this budget on the examples that run it; generous for sets of this size.
PLAN_TIME_LIMIT_S = "2"

T = TypeVar("T")


class Rng(Protocol):
    """What the mutations need from a random source: ``random.Random`` and Hypothesis' ``st.randoms()``."""

    def randint(self, a: int, b: int) -> int: ...


def pick(rng: Rng, options: Sequence[T]) -> T:
    return options[rng.randint(0, len(options) - 1)]


def weighted(rng: Rng, options: Sequence[tuple[int, T]]) -> T:
    r = rng.randint(0, sum(w for w, _ in options) - 1)
    for w, option in options:
        if r < w:
            return option
        r -= w
    raise AssertionError("unreachable")


def chance(rng: Rng, percent: int) -> bool:
    return rng.randint(0, 99) < percent


# --------------------------------------------------------------------------------------------------------
# The example sets


@dataclass(frozen=True)
class ManifestSet:
    name: str
    #: file name -> text, in name order
    files: dict[str, str]


@functools.cache
def example_sets() -> tuple[ManifestSet, ...]:
    sets = []
    for name in EXAMPLES:
        d = REPO / "examples" / name
        files = {p.name: p.read_text() for p in sorted(d.glob("*.yaml"))}
        if not files:
            raise FileNotFoundError(f"no manifests in {d}")
        sets.append(ManifestSet(name, files))
    return tuple(sets)


def example_set(name: str) -> ManifestSet:
    return next(s for s in example_sets() if s.name == name)


@functools.cache
def _parsed(set_name: str, file: str) -> tuple[Any, ...]:
    return tuple(d for d in yaml.safe_load_all(example_set(set_name).files[file]) if d is not None)


@functools.cache
def _crd_schemas() -> dict[str, dict[str, Any]]:
    """openAPIV3Schema by kind, to add fields the examples leave out (``Slice.spec.priority``...)."""
    schemas = {}
    for f in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(f.read_text())
        version = next(v for v in crd["spec"]["versions"] if v.get("storage", True))
        schemas[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return schemas


def _schema_at(kind: Any, path: tuple[Any, ...]) -> dict[str, Any] | None:
    schema: Any = _crd_schemas().get(kind) if isinstance(kind, str) else None
    for key in path:
        if not isinstance(schema, dict):
            return None
        if isinstance(key, int):
            schema = schema.get("items")
        elif isinstance(key, str) and key in schema.get("properties", {}):
            schema = schema["properties"][key]
        elif isinstance(schema.get("additionalProperties"), dict):
            schema = schema["additionalProperties"]
        else:
            return None
    return schema if isinstance(schema, dict) else None


# --------------------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, eq=False)  # identity hash: two equal Raw keys in one mapping are a duplicate key
class Raw:
    """YAML text written verbatim where a value or a mapping key goes."""

    text: str

    def __str__(self) -> str:
        return _short(self.text)


BIG = str(10**400)
NINES = "9" * 5000

NUMBERS = [
    "0", "-0", "1", "-1", "0.5", "-1.5", "0.0", "-0.0", "1.0e-300",
    "2147483648", "9223372036854775807", "9223372036854775808", "-9223372036854775809",
    "18446744073709551616", BIG, "-" + BIG, "1" + "0" * 400, "1" + "0" * 4299, NINES, "-" + NINES,
    ".nan", ".NaN", ".inf", "-.inf", "+.inf", ".Inf",
    "1.0e999999", "-1.0e999999", "1.0e-999999", "1.0e308", "1.7976931348623157e+308", "4.9e-324",
    "1e999999", "1e400", "0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", "0o777", "0b101", "1_000_000", "190:20:30",
    "-1:00", "!!float nan", "!!float 1e999999", "!!float -inf", "!!int " + BIG, "!!int x", "!!float x",
]  # fmt: skip
QUANTITIES = [
    '"1e9999999"', '"1e5000"', '"1e999999"', '"-1e5000"', '"1e-5000"', '"1E400"', '"1e308"', '"0"', '"-1"',
    '"0.000000000000000000000000001"', f'"{NINES}"', f'"{NINES}Mi"', f'"{BIG}m"', '"1e400Gi"', '"1Ei"',
    '"8Ei"', '"NaN"', '"nan"', '"Infinity"', '"-inf"', '"+1"', '".5"', '"5."', '"1.5m"', '"0.5"', '"1.5e3"',
    '"1e3Ki"', '"1 Gi"', '"1gi"', '""', '"0x10"', '"\u0663"', '"\uff11"', '"1\\u00a0Gi"', "1e9999999",
    "1e5000Mi", "512Mi", "200m", "1.5", "16",
]  # fmt: skip
DURATIONS = [
    f'"{NINES}h"', '"9999999999999999999999d"', '"0h"', '"0ms"', '"-1h"', '"1e400h"', '"1.5h"', '"PT7H"',
    '"1h30m"', '"' + "1h" * 2000 + '"', '"\u0667h"', '"7H"', "7h", f'"{BIG}s"', '"99999999999999999999ms"',
    "7", "7.5", '"0h0m0s1ms"', '"1d1d"',
]  # fmt: skip
SCALARS = [
    "null", "~", "true", "false", "yes", "no", "on", "off", '""', '" "', '"x"', "2001-12-14",
    "2001-12-14t21:59:43.10-05:00", "[]", "{}", "[1, 2]", "{a: 1}", "[[]]", "[null]", "{[a]: 1}", "{{}: 1}",
    "!!binary aGVsbG8=", "!!set {a, b}", "!!omap [{a: 1}, {b: 2}]", "!!pairs [{a: 1}]",
    "!!python/object/apply:os.getcwd []", "!custom x", "!!str 1", "!!timestamp 2001-12-14", "!!null ''",
    "!!map [a]", "!!seq {a: 1}", "*undefined", '"\\0"', '"\\x07"', '"\\e[31mred\\e[0m"', '"\\ud800"',
    '"\\udfff\\ud800"', '"\\U0010FFFF"', '"\\uFEFF"', '"\\u202Egnp.exe"', '"🔥"', '"👨\\u200d👩\\u200d👧"',
    '"' + "a" * 300 + '"', '"' + "x" * 70000 + '"', "'it''s'", "|-\n  block", "&x [*x]",
]  # fmt: skip
#: Extreme but plausible: what validate may accept and the solver then has to cope with (coefficients
#: twelve orders of magnitude apart, a budget nothing meets, a node that fits nothing).
PLAUSIBLE_NUMBERS = [
    "1", "2", "100", "0.001", "0.000001", "1.0e-9", "1000000", "1.0e9", "1.0e15", "1.0e300", "4294967296",
    "0.999999", "1.0", "0.01",
]  # fmt: skip
PLAUSIBLE_QUANTITIES = [
    '"1m"', '"1"', '"100000"', '"1Ki"', '"1Ti"', '"1Pi"', '"999999999"', '"0.001"', '"1e9"', '"1e15"',
    '"1e18"', '"1.5Gi"', "1Mi", "64Gi", '"1000000m"',
]  # fmt: skip
#: Characters and sequences spliced into strings and keys.
UNICODE = [
    "\u202e", "\u200f", "\u200b", "\ufeff", "\u2028", "\x85", "\x07", "\x1b[31m", "\x00", "\ud800", "\udfff",
    "\uffff", "\U0010ffff", "🔥", "👨\u200d👩\u200d👧", "e\u0301", "\uff11\uff12", "\u0663", "\u0130", "ß", "\t",
    "\r\n", " ", "Ω" * 300, "'", '"', ": ", "#", "\\", "*a", "&a", "!", "%", "@", "`",
]  # fmt: skip
#: Bytes spliced into the file text, including what is not UTF-8 (a lone surrogate, an overlong encoding).
BYTES = [
    b"\x00", b"\x07", b"\x1b", b"\xff", b"\xfe\xff", b"\xef\xbb\xbf", b"\xed\xa0\x80", b"\xc0\xaf", b"\r",
    b"\t", b"\r\n", b"\xe2\x80\xae", b"\xf0\x9f\x94\xa5", b"&a ", b"*a ", b"---\n", b"...\n", b"%YAML 1.2\n",
    b"%TAG ! tag:x,2000:\n", b"!!", b"? ", b": ", b"- ", b"{", b"[", b"'", b'"', b"#", b"|", b">", b"\\",
    b"<<: *a\n", b"\n  ", b"\x85", b"\xe2\x80\xa8",
]  # fmt: skip
EMPTY_FILES = [
    b"", b"\n", b"---\n", b"--- \n...\n", b"# nothing here\n", b"\xef\xbb\xbf", b"null\n", b"[]\n", b"{}\n",
    b"---\n---\n---\n", b" \t \n", b"~", b"0", b"'just a string'\n", b"- a\n- b\n", b"\x00",
]  # fmt: skip
NESTING_DEPTHS = [2, 10, 50, 99, 100, 101, 200, 500, 999, 1000, 1001, 3000, 10000]

_QUANTITY_LIKE = re.compile(r"^[+-]?[0-9.]+([eE][+-]?[0-9]+)?[A-Za-z]{0,2}$")
_DURATION_LIKE = re.compile(r"^([0-9]+(ms|s|m|h|d))+$")


def _short(text: str, limit: int = 60) -> str:
    text = repr(text)[1:-1]
    return text if len(text) <= limit else f"{text[: limit - 20]}…{text[-12:]} ({len(text)} chars)"


def _show(value: Any) -> str:
    if isinstance(value, Raw):
        return f"`{value}`"
    try:
        return _short(json.dumps(value, default=str, ensure_ascii=False), 80)
    except (ValueError, TypeError):  # a cycle, or a Raw key
        return _short(repr(value), 80)


def _show_path(path: Sequence[Any]) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else f".{key}"
    return out.lstrip(".") or "<document>"


# --------------------------------------------------------------------------------------------------------
# Rendering


def render(docs: Sequence[Any]) -> bytes:
    """Documents as YAML, :class:`Raw` values and keys spliced in as written."""
    try:
        # libyaml's emitter when there is one: the pure-Python one would take most of the time of a mutation.
        return _render(docs, getattr(yaml, "CSafeDumper", yaml.SafeDumper))
    except UnicodeEncodeError:  # libyaml takes only UTF-8, so no lone surrogate, even to escape
        return _render(docs, yaml.SafeDumper)


def _render(docs: Sequence[Any], base: type[yaml.SafeDumper]) -> bytes:
    raws: list[str] = []

    class Dumper(base):  # type: ignore[valid-type,misc]
        def ignore_aliases(self, data: Any) -> bool:
            # A Raw shared by two places must stay two copies of its text: "&id001 &b0 [..]" is no YAML.
            return isinstance(data, Raw) or bool(super().ignore_aliases(data))

    def represent_raw(dumper: yaml.SafeDumper, raw: Raw) -> yaml.Node:
        raws.append(raw.text)
        return dumper.represent_str(f"zzraw{len(raws) - 1}zz")

    Dumper.add_representer(Raw, represent_raw)
    text = yaml.dump_all(
        list(docs), Dumper=Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=4096
    )
    text = re.sub(r"zzraw(\d+)zz", lambda m: raws[int(m.group(1))], text)
    return text.encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------------------------------------
# A mutant and the steps that make one


@dataclass
class Mutant:
    base: str
    files: dict[str, bytes]
    steps: list[str]
    #: the file the first step changed: what a single-file run validates
    primary: str | None

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (directory / name).write_bytes(data)

    def describe(self) -> str:
        return f"examples/{self.base} with " + "; ".join(self.steps or ["no change"])


def _ref(doc: Any) -> str | None:
    """``Kind/name`` of a document while it still has both."""
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        return None
    kind, name = doc.get("kind"), doc["metadata"].get("name")
    return f"{kind}/{name}" if isinstance(kind, str) and isinstance(name, str) else None


def _walk(root: Any, limit: int = 5000) -> list[tuple[Any, ...]]:
    """Every path in a document, parents first; shared and recursive nodes are entered once."""
    out: list[tuple[Any, ...]] = []
    seen: set[int] = set()
    stack: list[tuple[tuple[Any, ...], Any]] = [((), root)]
    while stack and len(out) < limit:
        path, node = stack.pop()
        out.append(path)
        if isinstance(node, dict | list) and id(node) not in seen:
            seen.add(id(node))
            items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            stack.extend(((*path, k), v) for k, v in reversed(items))
    return out


def _get(root: Any, path: Sequence[Any]) -> Any:
    for key in path:
        root = root[key]
    return root


class Mutation:
    """Steps on one example set; ``build`` renders the result. Steps may be chained by hand (regressions)."""

    def __init__(self, base: ManifestSet) -> None:
        self.base = base
        self._docs: dict[str, list[Any]] = {}
        self._text: list[tuple[str, Callable[[bytes], bytes]]] = []
        self._removed: set[str] = set()
        self._anchors = 0
        self.steps: list[str] = []
        self.touched: list[str] = []

    # -- state

    def files(self) -> list[str]:
        return [f for f in self.base.files if f not in self._removed]

    def docs(self, file: str) -> list[Any]:
        if file not in self._docs:
            self._docs[file] = copy.deepcopy(list(_parsed(self.base.name, file)))
        return self._docs[file]

    def doc_index(self, file: str, doc: int | str) -> int:
        """``doc`` is an index or ``Kind/name`` as in the examples."""
        if isinstance(doc, int):
            return doc
        for i, d in enumerate(self.docs(file)):
            if _ref(d) == doc:
                return i
        raise KeyError(f"{doc} not in {self.base.name}/{file}")

    def anchor(self) -> str:
        self._anchors += 1
        return f"fz{self._anchors}"

    def _note(self, file: str, text: str) -> None:
        self.touched.append(file)
        self.steps.append(f"{file}: {text}")

    def _where(self, file: str, i: int, path: Sequence[Any]) -> str:
        return f"{_ref(self.docs(file)[i]) or f'document {i}'} {_show_path(path)}"

    # -- tree steps

    def set(self, file: str, doc: int | str, path: Sequence[Any], value: Any, why: str = "") -> Mutation:
        i = self.doc_index(file, doc)
        docs = self.docs(file)
        self._note(file, f"{self._where(file, i, path)} = {_show(value)}{f' ({why})' if why else ''}")
        if path:
            _get(docs[i], path[:-1])[path[-1]] = value
        else:
            docs[i] = value
        return self

    def add(self, file: str, doc: int | str, path: Sequence[Any], key: Any, value: Any) -> Mutation:
        """Adds (or, for a Raw key, duplicates) ``key`` in the mapping at ``path``."""
        i = self.doc_index(file, doc)
        target = _get(self.docs(file)[i], path)
        self._note(file, f"{self._where(file, i, [*path, key])} added = {_show(value)}")
        target[key] = value
        return self

    def append(self, file: str, doc: int | str, path: Sequence[Any], value: Any) -> Mutation:
        i = self.doc_index(file, doc)
        target = _get(self.docs(file)[i], path)
        self._note(file, f"{self._where(file, i, [*path, len(target)])} appended = {_show(value)}")
        target.append(value)
        return self

    def rename(self, file: str, doc: int | str, path: Sequence[Any], new_key: Any) -> Mutation:
        """Renames a mapping key in place (same object, same position) so that aliases to it still hold."""
        i = self.doc_index(file, doc)
        parent = _get(self.docs(file)[i], path[:-1])
        self._note(file, f"{self._where(file, i, path)} key renamed to {_show(new_key)}")
        items = [(new_key if k == path[-1] else k, v) for k, v in parent.items()]
        parent.clear()
        parent.update(items)
        return self

    def delete(self, file: str, doc: int | str, path: Sequence[Any]) -> Mutation:
        i = self.doc_index(file, doc)
        docs = self.docs(file)
        self._note(file, f"{self._where(file, i, path)} deleted")
        if path:
            del _get(docs[i], path[:-1])[path[-1]]
        else:
            del docs[i]
        return self

    def insert_doc(self, file: str, at: int, value: Any, why: str) -> Mutation:
        self._note(file, f"document {at} inserted ({why})")
        self.docs(file).insert(at, value)
        return self

    def remove_file(self, file: str) -> Mutation:
        self._note(file, "file removed")
        self._removed.add(file)
        return self

    # -- text steps, applied after rendering

    def edit_text(self, file: str, what: str, edit: Callable[[bytes], bytes]) -> Mutation:
        self._note(file, what)
        self._text.append((file, edit))
        return self

    def build(self) -> Mutant:
        files: dict[str, bytes] = {}
        for name in self.files():
            files[name] = render(self._docs[name]) if name in self._docs else self.base.files[name].encode()
        for name, edit in self._text:
            if name in files:
                files[name] = edit(files[name])
        primary = next((f for f in self.touched if f in files), None)
        return Mutant(self.base.name, files, list(self.steps), primary)


def _leaf(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _numberish(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) or (isinstance(value, str) and bool(_QUANTITY_LIKE.match(value)))


def _edge_for(rng: Rng, value: Any) -> Raw:
    """An edge value, usually of the kind the field already holds (a quantity for a quantity...)."""
    if isinstance(value, str) and _DURATION_LIKE.match(value):
        pools = [(5, DURATIONS), (2, QUANTITIES), (2, NUMBERS), (1, SCALARS)]
    elif isinstance(value, str) and _QUANTITY_LIKE.match(value):
        pools = [(4, QUANTITIES), (3, PLAUSIBLE_QUANTITIES), (2, NUMBERS), (1, DURATIONS), (1, SCALARS)]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        pools = [(5, NUMBERS), (3, PLAUSIBLE_NUMBERS), (1, QUANTITIES), (1, SCALARS)]
    else:
        pools = [(4, SCALARS), (3, NUMBERS), (2, QUANTITIES), (1, DURATIONS)]
    return Raw(pick(rng, weighted(rng, pools)))


def _edge_for_schema(rng: Rng, schema: dict[str, Any] | None) -> Raw:
    kind = (schema or {}).get("type")
    if kind in ("integer", "number"):
        pools = [(5, NUMBERS), (3, PLAUSIBLE_NUMBERS), (1, QUANTITIES), (1, SCALARS)]
    elif kind == "string":
        pools = [(3, QUANTITIES), (3, DURATIONS), (2, SCALARS), (2, NUMBERS)]
    else:
        pools = [(6, SCALARS), (2, NUMBERS), (2, QUANTITIES)]
    return Raw(pick(rng, weighted(rng, pools)))


def _swaps(value: Any) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [
        ("wrapped in a list", [value]),
        ("wrapped in a mapping", {"value": value}),
        ("as a string", str(value)[:2000]),
        ("as an integer", len(value) if isinstance(value, dict | list | str) else 0),
        ("null", None),
        ("true", True),
        ("false", False),
        ("a float", 1.5),
        ("an empty list", []),
        ("an empty mapping", {}),
        ("integer keys", {0: value, 1: "x"}),
    ]
    if isinstance(value, dict):
        out += [("its keys", list(value)), ("its values", list(value.values()))]
    if isinstance(value, list):
        out += [("its first item", value[0] if value else None), ("indexed", dict(enumerate(value)))]
    return out


@dataclass(frozen=True)
class _Target:
    file: str
    doc: int
    root: Any
    paths: list[tuple[Any, ...]]


def _target(m: Mutation, rng: Rng, file: str) -> _Target | None:
    docs = m.docs(file)
    if not docs:
        return None
    i = rng.randint(0, len(docs) - 1)
    return _Target(file, i, docs[i], _walk(docs[i]))


def _step_edge_value(m: Mutation, rng: Rng, file: str) -> None:
    t = _target(m, rng, file)
    if t is None:
        return _step_text_insert(m, rng, file)
    leaves = [p for p in t.paths if _leaf(_get(t.root, p))]
    numeric = [p for p in leaves if _numberish(_get(t.root, p))]
    path = pick(rng, numeric if numeric and chance(rng, 75) else leaves or t.paths)
    m.set(file, t.doc, path, _edge_for(rng, _get(t.root, path)))


def _step_add_field(m: Mutation, rng: Rng, file: str) -> None:
    t = _target(m, rng, file)
    if t is None:
        return _step_text_insert(m, rng, file)
    kind = t.root.get("kind") if isinstance(t.root, dict) else None
    known: list[tuple[tuple[Any, ...], str, dict[str, Any]]] = []
    for p in t.paths:
        node = _get(t.root, p)
        schema = _schema_at(kind, p)
        if isinstance(node, dict) and schema:
            known += [
                (p, name, sub) for name, sub in schema.get("properties", {}).items() if name != "status"
            ]
    if known:
        path, name, sub = pick(rng, known)
        m.add(file, t.doc, path, name, _edge_for_schema(rng, sub))
        return None
    dicts = [p for p in t.paths if isinstance(_get(t.root, p), dict)]
    if not dicts:
        return _step_type_swap(m, rng, file)
    name = pick(rng, ["priority", "cost", "bandwidthMbps", "latencyMs", "replicas", "x", ""])
    m.add(file, t.doc, pick(rng, dicts), name, _edge_for_schema(rng, None))
    return None


def _step_delete(m: Mutation, rng: Rng, file: str) -> None:
    t = _target(m, rng, file)
    if t is None:
        return _step_remove_file(m, rng, file)
    m.delete(file, t.doc, pick(rng, t.paths))
    return None


def _step_type_swap(m: Mutation, rng: Rng, file: str) -> None:
    t = _target(m, rng, file)
    if t is None:
        return _step_text_insert(m, rng, file)
    path = pick(rng, t.paths)
    label, value = pick(rng, _swaps(_get(t.root, path)))
    m.set(file, t.doc, path, value, label)
    return None


def _step_unicode(m: Mutation, rng: Rng, file: str) -> None:
    t = _target(m, rng, file)
    if t is None:
        return _step_text_insert(m, rng, file)
    snippet = pick(rng, UNICODE)
    keyed = [p for p in t.paths if p and isinstance(p[-1], str)]
    if keyed and chance(rng, 30):
        # Renames a mapping key in place (same object, same position) so that aliases to it still hold.
        path = pick(rng, keyed)
        new_key = path[-1] + snippet if chance(rng, 50) else snippet + path[-1]
        m.rename(file, t.doc, path, new_key)
        return None
    strings = [p for p in t.paths if isinstance(_get(t.root, p), str)] or t.paths
    path = pick(rng, strings)
    old = _get(t.root, path)
    old = old if isinstance(old, str) else ""
    at = weighted(rng, [(1, 0), (1, len(old) // 2), (1, len(old))])
    new = snippet * rng.randint(1, 3) if chance(rng, 20) else old[:at] + snippet + old[at:]
    m.set(file, t.doc, path, new, "unicode")
    return None


def _step_alias(m: Mutation, rng: Rng, file: str) -> None:
    t = _target(m, rng, file)
    if t is None:
        return _step_text_insert(m, rng, file)
    containers = [p for p in t.paths if isinstance(_get(t.root, p), dict | list)]
    source = pick(rng, containers)
    node = _get(t.root, source)
    # The dumper writes an anchor on the shared node and an alias at each other place.
    others = [p for p in t.paths if p and p[: len(source)] != source]
    how = pick(rng, ["share", "recursive", "merge"])
    if how == "share" and others:
        m.set(file, t.doc, pick(rng, others), node, f"alias to {_show_path(source)}")
    elif how == "merge":
        dicts = [p for p in containers if isinstance(_get(t.root, p), dict)]
        m.add(file, t.doc, pick(rng, dicts) if dicts else source, "<<", node)
    elif isinstance(node, dict):
        m.add(file, t.doc, source, "loop", node)
    else:
        m.append(file, t.doc, source, node)
    return None


def _step_alias_bomb(m: Mutation, rng: Rng, file: str) -> None:
    t = _target(m, rng, file)
    if t is None:
        return _step_text_insert(m, rng, file)
    width, depth = rng.randint(2, 10), rng.randint(1, 6)  # at most 10**7 values once expanded
    a = m.anchor()
    levels = [f"&{a}_0 [{', '.join(['lol'] * width)}]"]
    levels += [f"&{a}_{i} [{', '.join([f'*{a}_{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    m.set(file, t.doc, pick(rng, t.paths), Raw(f"[{', '.join(levels)}]"), f"{width}**{depth + 1} aliases")
    return None


def _step_duplicate_key(m: Mutation, rng: Rng, file: str) -> None:
    t = _target(m, rng, file)
    if t is None:
        return _step_text_insert(m, rng, file)
    keyed = [p for p in t.paths if p and isinstance(p[-1], str)]
    if not keyed:
        return _step_add_field(m, rng, file)
    path = pick(rng, keyed)
    key = path[-1]
    text = key if re.fullmatch(r"[A-Za-z][\w.-]*", key) else json.dumps(key)
    value = copy.deepcopy(_get(t.root, path)) if chance(rng, 30) else _edge_for(rng, _get(t.root, path))
    m.add(file, t.doc, path[:-1], Raw(text), value)
    return None


def _step_deep_nesting(m: Mutation, rng: Rng, file: str) -> None:
    t = _target(m, rng, file)
    if t is None:
        return _step_text_insert(m, rng, file)
    path = pick(rng, t.paths)
    style = pick(rng, ["list", "map", "mixed", "block"])
    if style == "block":
        # Real nested mappings, written in block style by the dumper; bounded by its recursion.
        depth = rng.randint(2, 120)
        value: Any = 1
        for _ in range(depth):
            value = {"a": value}
        m.set(file, t.doc, path, value, f"{depth} nested mappings")
        return None
    depth = pick(rng, NESTING_DEPTHS)
    opening, closing = {"list": ("[", "]"), "map": ("{a: ", "}"), "mixed": ("[{a: ", "}]")}[style]
    m.set(file, t.doc, path, Raw(opening * depth + "1" + closing * depth), f"nested {depth} deep ({style})")
    return None


def _step_duplicate_doc(m: Mutation, rng: Rng, file: str) -> None:
    docs = m.docs(file)
    if not docs:
        return _step_text_insert(m, rng, file)
    i = rng.randint(0, len(docs) - 1)
    into = pick(rng, m.files())
    at = rng.randint(0, len(m.docs(into)))
    m.insert_doc(into, at, copy.deepcopy(docs[i]), f"a copy of {file} document {i}")
    return None


def _step_remove_file(m: Mutation, rng: Rng, file: str) -> None:
    m.remove_file(file)


def _step_truncate(m: Mutation, rng: Rng, file: str) -> None:
    per_mille = rng.randint(0, 1000)
    m.edit_text(
        file, f"cut after {per_mille / 10:g} % of its bytes", lambda b: b[: len(b) * per_mille // 1000]
    )


def _step_empty(m: Mutation, rng: Rng, file: str) -> None:
    content = pick(rng, EMPTY_FILES)
    m.edit_text(file, f"replaced by {content!r}", lambda _b: content)


def _step_text_insert(m: Mutation, rng: Rng, file: str) -> None:
    data = pick(rng, BYTES) if chance(rng, 60) else pick(rng, UNICODE).encode("utf-8", "surrogatepass")
    per_mille = rng.randint(0, 1000)

    def edit(b: bytes) -> bytes:
        at = len(b) * per_mille // 1000
        return b[:at] + data + b[at:]

    m.edit_text(file, f"{data!r} inserted at {per_mille / 10:g} % of its bytes", edit)


def _step_lines(m: Mutation, rng: Rng, file: str) -> None:
    how = pick(
        rng, ["duplicated", "deleted", "swapped with the next", "indented", "dedented", "tab-indented"]
    )
    per_mille = rng.randint(0, 1000)

    def edit(b: bytes) -> bytes:
        lines = b.splitlines(keepends=True)
        if not lines:
            return b
        i = min(len(lines) - 1, len(lines) * per_mille // 1000)
        line = lines[i]
        if how == "duplicated":
            lines.insert(i, line)
        elif how == "deleted":
            del lines[i]
        elif how == "swapped with the next" and i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], line
        elif how == "indented":
            lines[i] = b"  " + line
        elif how == "dedented":
            lines[i] = line[1:] if line.startswith(b" ") else line
        elif how == "tab-indented":
            lines[i] = b"\t" + line.lstrip(b" ")
        return b"".join(lines)

    m.edit_text(file, f"line at {per_mille / 10:g} % {how}", edit)


Step = Callable[[Mutation, Rng, str], None]

#: How often each kind of step is drawn: numbers first, as every crash in the issue came from one.
STEPS: list[tuple[int, Step]] = [
    (30, _step_edge_value),
    (10, _step_add_field),
    (10, _step_delete),
    (10, _step_type_swap),
    (8, _step_unicode),
    (6, _step_alias),
    (3, _step_alias_bomb),
    (5, _step_duplicate_key),
    (4, _step_deep_nesting),
    (3, _step_duplicate_doc),
    (2, _step_remove_file),
    (4, _step_truncate),
    (2, _step_empty),
    (4, _step_text_insert),
    (4, _step_lines),
]


def mutate(rng: Rng, base: ManifestSet | None = None) -> Mutant:
    m = Mutation(base or pick(rng, example_sets()))
    for _ in range(weighted(rng, [(5, 1), (3, 2), (2, 3)])):
        files = m.files()
        if not files:
            break
        step = weighted(rng, STEPS)
        step(m, rng, pick(rng, files))
    return m.build()


# --------------------------------------------------------------------------------------------------------
# Running the CLI in-process


class Overtime(BaseException):
    """Raised into a call past its hang limit; a BaseException, so that no ``except Exception`` eats it."""


@contextlib.contextmanager
def _interrupt_after(seconds: float) -> Iterator[None]:
    """SIGALRM after ``seconds``; an outer timer (pytest-timeout's) is put back with what it had left."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise Overtime(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    start = time.monotonic()
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay:
            left = max(outer_delay - (time.monotonic() - start), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


@contextlib.contextmanager
def _descriptor_1() -> Iterator[IO[bytes]]:
    """What reaches file descriptor 1 directly (a solver's banner), bypassing ``sys.stdout``."""
    if sys.__stdout__ is not None:
        sys.__stdout__.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(1)
        try:
            os.dup2(sink.fileno(), 1)
            yield sink
        finally:
            os.dup2(saved, 1)
            os.close(saved)


@dataclass
class Run:
    argv: list[str]
    #: what the process would exit with; None when an exception escaped ``main``
    code: Any
    seconds: float
    stdout: str
    stderr: str
    #: bytes written to descriptor 1 around ``sys.stdout``
    leaked: bytes = b""
    #: type and message of an escaped exception (or of the hang interruption)
    error_type: str = ""
    error: str = ""
    #: "file:line in function" where it was raised, and the deepest frame in flyslice's own code
    last_frame: str = ""
    flyslice_frame: str = ""
    traceback: str = ""
    hung: bool = False
    #: CPU time this process spent in the call (every thread)
    cpu_seconds: float = 0.0


#: site-packages first: the virtualenv may live inside the repository.
_PREFIXES = ("site-packages" + os.sep, sysconfig.get_paths()["stdlib"] + os.sep, str(REPO) + os.sep)


def short_frame(filename: str, lineno: int | None, name: str) -> str:
    """``file:line in function``, the file relative to the repository, site-packages or the stdlib."""
    for prefix in _PREFIXES:
        if prefix in filename:
            filename = filename.split(prefix, 1)[1]
            break
    return f"{filename}:{lineno} in {name}"


def innermost(frames: Sequence[tuple[str, int | None, str]]) -> tuple[str, str]:
    """The innermost frame of a traceback (outermost first), and the innermost in flyslice's own code."""
    if not frames:
        return "?", "?"
    ours = [f for f in frames if f[0].startswith(str(REPO)) and "site-packages" not in f[0]]
    return short_frame(*frames[-1]), (short_frame(*ours[-1]) if ours else "?")


def _exit_code(code: Any) -> Any:
    """The status ``raise SystemExit(code)`` gives the process."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def run_cli(argv: list[str], hang_limit_s: float) -> Run:
    """``flyslice ARGV`` in this process, with stdout and stderr encoded as a real terminal would."""
    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    # As sys.stdout and sys.stderr are: strict UTF-8 (a lone surrogate on stdout is a crash) and
    # backslashreplace.
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(err_bytes, encoding="utf-8", errors="backslashreplace", write_through=True)
    run = Run(list(argv), None, 0.0, "", "")
    try:
        with _descriptor_1() as sink, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                with _interrupt_after(hang_limit_s):
                    start, cpu_start = time.perf_counter(), time.process_time()
                    try:
                        run.code = main(argv)
                    finally:
                        run.seconds = time.perf_counter() - start
                        run.cpu_seconds = time.process_time() - cpu_start
            except SystemExit as exc:
                run.code = _exit_code(exc.code)
            finally:
                sink.seek(0)
                run.leaked = sink.read()
    except Overtime as exc:
        run.hung = True
        _record(run, exc)
    except Exception as exc:
        _record(run, exc)
    out.flush()
    err.flush()
    run.stdout = out_bytes.getvalue().decode("utf-8", "replace")
    run.stderr = err_bytes.getvalue().decode("utf-8", "replace")
    return run


def _record(run: Run, exc: BaseException) -> None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    run.error_type = type(exc).__name__
    run.error = f"{run.error_type}: {_short(str(exc).splitlines()[0] if str(exc) else '', 200)}"
    run.last_frame, run.flyslice_frame = innermost([(f.filename, f.lineno, f.name) for f in frames])
    run.traceback = "".join(traceback.format_exception(exc))


def _locate_internal_error(run: Run, hang_limit_s: float) -> None:
    """Exit 3 prints one line; ``--debug`` (issue 9) adds the traceback, which says where the bug is."""
    debug = run_cli([*run.argv, "--debug"], hang_limit_s)
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', debug.stderr)
    if debug.code != 3 or not frames:
        return  # a CLI without --debug, or a crash that depends on more than the input
    run.last_frame, run.flyslice_frame = innermost([(f, int(line), name) for f, line, name in frames])
    tail = debug.stderr[debug.stderr.rfind("Traceback (most recent call last)") :]
    run.traceback = tail
    error = re.search(r"^(\w+(?:\.\w+)*):", tail.splitlines()[-2] if len(tail.splitlines()) > 1 else "")
    run.error_type = error.group(1) if error else "?"


# --------------------------------------------------------------------------------------------------------
# One set against the contract


@dataclass(frozen=True)
class Options:
    """How one set is run: everything a reproduction needs besides the files."""

    #: validate the whole directory, or only the file the first step changed
    whole_set: bool = True
    validate_output: str = "text"
    #: "baseline", or "ilp" (always with --time-limit, so that a slow model cannot stall the run)
    plan_method: str = "ilp"
    plan_output: str = "json"
    #: also plan a set that validate refused (plan must not crash on it either)
    plan_rejected: bool = False

    def validate_argv(self, target: Path) -> list[str]:
        return ["validate", str(target), "-o", self.validate_output]

    def plan_argv(self, target: Path) -> list[str]:
        argv = ["plan", str(target), "-o", self.plan_output]
        if self.plan_method == "baseline":
            return [*argv, "--method", "baseline"]
        return [*argv, "--method", "ilp", "--time-limit", PLAN_TIME_LIMIT_S]


def choose_options(rng: Rng) -> Options:
    return Options(
        whole_set=chance(rng, 75),
        validate_output=weighted(rng, [(3, "text"), (1, "json")]),
        plan_method=pick(rng, ["baseline", "ilp"]),
        plan_output=weighted(rng, [(3, "json"), (1, "table"), (1, "yaml")]),
        plan_rejected=chance(rng, 25),
    )


#: Findings that mean the CLI crashed or hung rather than answered.
CRASHES = frozenset({"exception", "hang", "internal error"})


@dataclass(frozen=True)
class Finding:
    kind: str
    command: str
    #: what went wrong, for a person
    detail: str
    #: where an exception was raised or a hang was interrupted: its last frame and flyslice's deepest
    where: str = ""

    def key(self) -> tuple[str, str, str]:
        """Same bug whatever the input: type and place of an exception, else the message without numbers."""
        return (self.kind, self.command, self.where or re.sub(r"\d+", "N", self.detail))


@dataclass
class Report:
    mutant: Mutant
    options: Options
    directory: Path
    runs: list[Run] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def validate_seconds(self) -> float:
        return self.runs[0].seconds

    def explain(self) -> str:
        lines = [f"input: {self.mutant.describe()}", f"options: {self.options}"]
        for f in self.findings:
            lines.append(f"- {f.command}: {f.kind}: {f.detail}")
            if f.where:
                lines.append(f"  raised: {f.where}")
        for r in self.runs:
            argv = " ".join(a.replace(str(self.directory), "<set>") for a in r.argv)
            lines.append(f"$ flyslice {argv}  -> exit {r.code} in {r.seconds:.3f} s")
            lines += [f"  stderr: {_short(line, 300)}" for line in r.stderr.splitlines()[-5:]]
            if r.traceback:
                lines += ["  " + line for line in r.traceback.splitlines()[-40:]]
        return "\n".join(lines)


def _strict_json(text: str) -> str:
    """Why ``text`` is not JSON, or "". NaN and Infinity pass json.loads but not jq or RFC 8259."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        json.loads(text, parse_constant=refuse)
    except ValueError as exc:
        return f"{type(exc).__name__}: {_short(str(exc), 120)}"
    return ""


def _findings(
    run: Run, command: str, allowed: set[int], machine_readable: bool, json_when: set[int]
) -> list[Finding]:
    out: list[Finding] = []
    where = f"{run.error_type} at {run.last_frame}"
    if run.flyslice_frame != run.last_frame:
        where += f" (flyslice: {run.flyslice_frame})"
    if run.hung:
        out.append(Finding("hang", command, run.error, where))
    elif run.error:
        out.append(Finding("exception", command, run.error, where))
    elif run.code == 3:
        out.append(
            Finding("internal error", command, _last_line(run.stderr), where if run.last_frame else "")
        )
    elif run.code not in allowed:
        meaning = EXIT_CODES.get(run.code, "undocumented") if isinstance(run.code, int) else "not an int"
        out.append(
            Finding("exit code", command, f"exit {run.code!r} ({meaning}), expected {sorted(allowed)}")
        )
    if "Traceback (most recent call last)" in run.stderr:
        out.append(Finding("traceback on stderr", command, _last_line(run.stderr)))
    if run.leaked and machine_readable:
        leaked = _short(run.leaked.decode("utf-8", "replace"))
        out.append(Finding("output around sys.stdout", command, leaked))
    if run.code in json_when and not run.error:
        why = _strict_json(run.stdout)
        if why:
            out.append(Finding("invalid JSON", command, why))
    return out


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return _short(lines[-1], 200) if lines else "(nothing on stderr)"


def check(
    mutant: Mutant, directory: Path, options: Options, hang_limits: dict[str, float] | None = None
) -> Report:
    """Writes ``mutant`` into ``directory`` (empty or absent), runs validate and maybe plan, judges both."""
    mutant.write(directory)
    target = directory / mutant.primary if mutant.primary and not options.whole_set else directory
    report = Report(mutant, options, directory)
    limits = hang_limits or HANG_LIMIT_S
    v = run_cli(options.validate_argv(target), limits["validate"])
    if v.code == 3:
        _locate_internal_error(v, limits["validate"])
    report.runs.append(v)
    as_json = options.validate_output == "json"
    report.findings += _findings(v, "validate", {0, 1, 2}, as_json, {0, 1} if as_json else set())
    if not v.hung and v.cpu_seconds >= VALIDATE_LIMIT_S:
        slow = f"{v.cpu_seconds:.2f} s of CPU (limit {VALIDATE_LIMIT_S:g} s)"
        report.findings.append(Finding("slow", "validate", slow))
    if v.code == 0 or (v.code == 1 and options.plan_rejected):
        p = run_cli(options.plan_argv(target), limits["plan"])
        if p.code == 3:
            _locate_internal_error(p, limits["plan"])
        report.runs.append(p)
        # A set validate accepted must plan: exit 0 or 1, never a usage error (nor, as always, 3).
        allowed = {0, 1} if v.code == 0 else {0, 1, 2}
        machine_readable = options.plan_output in ("json", "yaml")
        json_when = {0} if options.plan_output == "json" else set()
        report.findings += _findings(p, "plan", allowed, machine_readable, json_when)
    return report


def check_in_temp(mutant: Mutant, options: Options, hang_limits: dict[str, float] | None = None) -> Report:
    with tempfile.TemporaryDirectory(prefix="flyslice-fuzz-") as tmp:
        return check(mutant, Path(tmp) / "set", options, hang_limits)
