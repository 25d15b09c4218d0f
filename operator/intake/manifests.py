"""Reading manifests: files, directories and multi-document YAML, with line numbers.

Every object keeps the line of every field so that later checks can point at it.
Syntax problems become :class:`ManifestError` values; nothing here raises on bad input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.limits import MAX_NUMBER_DIGITS, LongNumber

#: Larger files are refused before parsing; the API server stores objects up to ~1.5 MiB.
MAX_FILE_BYTES = 4 * 2**20
YAML_SUFFIXES = (".yaml", ".yml")

PathKey = tuple[str | int, ...]


@dataclass
class Manifest:
    file: str
    line: int
    data: dict[str, Any]
    lines: dict[PathKey, int] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    @property
    def api_version(self) -> str:
        return str(self.data.get("apiVersion", ""))

    @property
    def name(self) -> str:
        meta = self.data.get("metadata")
        return str(meta.get("name", "")) if isinstance(meta, dict) else ""

    @property
    def namespace(self) -> str:
        meta = self.data.get("metadata")
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        return str(ns) if ns else ""

    @property
    def ref(self) -> str:
        """``Kind/name`` or ``Kind/namespace/name`` as shown in errors."""
        parts = [self.kind or "<no kind>"]
        if self.namespace:
            parts.append(self.namespace)
        parts.append(self.name or "<no name>")
        return "/".join(parts)

    def line_of(self, path: Iterable[str | int]) -> int:
        """Line of the deepest field of ``path`` that exists in the file."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.line

    def error(self, path: Iterable[str | int], message: str, severity: str = "error") -> ManifestError:
        key = tuple(path)
        return ManifestError(self.file, self.line_of(key), self.ref, format_path(key), message, severity)


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def discover(paths: Iterable[str | Path]) -> tuple[list[Path], list[ManifestError]]:
    """YAML files named by ``paths``: files as given, directories recursively (sorted)."""
    files: list[Path] = []
    errors: list[ManifestError] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.suffix in YAML_SUFFIXES
                    and f.is_file()
                    and not any(part.startswith(".") for part in f.relative_to(p).parts)
                )
            )
        elif p.is_file():
            files.append(p)
        else:
            errors.append(ManifestError(str(p), 0, "", "", "no such file or directory"))
    return files, errors


def load_paths(paths: Iterable[str | Path]) -> tuple[list[Manifest], list[ManifestError]]:
    files, errors = discover(paths)
    manifests: list[Manifest] = []
    for f in files:
        found, errs = load_file(f)
        manifests.extend(found)
        errors.extend(errs)
    return manifests, errors


def load_file(path: Path, display_name: str | None = None) -> tuple[list[Manifest], list[ManifestError]]:
    name = display_name or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return [], [
                ManifestError(
                    name,
                    0,
                    "",
                    "",
                    (
                        f"file is {size / 2**20:.1f} MiB; flyslice reads manifest files up to "
                        f"{MAX_FILE_BYTES // 2**20} MiB (the API server stores objects up to 1.5 MiB): "
                        "split it"
                    ),
                )
            ]
        raw = path.read_bytes()
    except OSError as exc:
        return [], [ManifestError(name, 0, "", "", f"cannot read file: {exc.strerror or exc}")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return [], [
            ManifestError(
                name,
                line,
                "",
                "",
                (
                    f"file is not UTF-8 text: byte 0x{raw[exc.start]:02x} at column {column} is not valid "
                    "UTF-8; save the file as UTF-8 (is it Latin-1, UTF-16 or binary?)"
                ),
            )
        ]
    return load_text(text, name)


def load_text(text: str, file: str) -> tuple[list[Manifest], list[ManifestError]]:
    if not text.strip():
        return [], [ManifestError(file, 0, "", "", "file is empty: expected one or more Kubernetes objects")]
    deep_line = _line_beyond_flow_depth(text, MAX_FLOW_DEPTH)
    if deep_line:
        return [], [
            ManifestError(
                file,
                deep_line,
                _ref_from_text(text, deep_line),
                "",
                f"values are nested more than {MAX_FLOW_DEPTH} levels deep in [ ] or {{ }}: flatten the document",
            )
        ]
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        return [], [_reader_error(file, text, exc)]
    manifests: list[Manifest] = []
    errors: list[ManifestError] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            line = node.start_mark.line + 1
            lines: dict[PathKey, int] = {}
            index_errors = _LineIndex(file, lines, _ref_of_node(node), loader.alias_lines).walk(node)
            loader.alias_lines.clear()
            if index_errors:
                errors.extend(index_errors)
                continue
            data = loader.construct_document(node)
            if data is None:
                continue
            if not isinstance(data, dict):
                errors.append(
                    ManifestError(
                        file,
                        line,
                        "",
                        "",
                        (
                            f"a document must be a mapping with apiVersion, kind and metadata, "
                            f"not a {_yaml_type(data)}"
                            + (
                                "; separate objects with a line '---' instead of listing them"
                                if isinstance(data, list)
                                else ""
                            )
                        ),
                    )
                )
                continue
            manifests.append(Manifest(file, line, data, lines))
    except yaml.MarkedYAMLError as exc:
        errors.append(_syntax_error(file, exc, text))
    except yaml.reader.ReaderError as exc:  # pragma: no cover - the reader checks the whole text up front
        errors.append(_reader_error(file, text, exc))
    except yaml.YAMLError as exc:  # pragma: no cover - every other PyYAML error is marked
        errors.append(ManifestError(file, 0, "", "", f"YAML error: {exc}"))
    except RecursionError:
        # PyYAML composes nested collections recursively; a pathologically deep document
        # (thousands of '[' or nested mappings) exhausts the stack. Report, never crash.
        mark = loader.get_mark()
        errors.append(
            ManifestError(
                file,
                mark.line + 1,
                _ref_from_text(text, mark.line + 1),
                "",
                "values are nested too deeply to read (hundreds of levels): flatten the document",
            )
        )
    finally:
        loader.dispose()
    if not manifests and not errors:
        errors.append(ManifestError(file, 0, "", "", "file holds no objects, only empty YAML documents"))
    return manifests, errors


#: How deep ``[ ]`` and ``{ }`` may nest. PyYAML's scanner is quadratic in flow depth (each token
#: revisits every open level), so a few thousand '[' cost seconds before any check could run.
MAX_FLOW_DEPTH = 64


def _line_beyond_flow_depth(text: str, limit: int) -> int:
    """The line where flow collections first nest deeper than ``limit``, or 0.

    A linear pre-scan that skips quoted scalars and comments; brackets inside a plain scalar
    (``a[0]``) may count too, which only matters past the limit, far beyond real manifests.
    """
    depth = 0
    line = 1
    quote = ""
    prev = "\n"
    for ch in text:
        if ch == "\n":
            line += 1
            if quote == "#":
                quote = ""
        elif quote:
            if ch == quote and quote != "#":
                quote = ""
        elif ch in "\"'" and prev in " \t\n[{,:":
            quote = ch
        elif ch == "#" and prev in " \t\n":
            quote = "#"
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return line
        elif ch in "]}":
            depth = max(0, depth - 1)
        prev = ch
    return 0


#: How many extra values YAML aliases may add to one document. Merge keys (``<<: *defaults``)
#: stay far below; an alias bomb ("billion laughs") of a few lines goes far above.
MAX_ALIAS_EXPANSION = 100_000


class _Loader(yaml.SafeLoader):
    """SafeLoader that remembers where each alias (``*name``) is used.

    PyYAML resolves an alias to the very node of its anchor, so the node's own position is
    where the anchor was defined; a list item written as ``*name`` must point at its own line.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        #: (id of the parent sequence node, item index) -> line of the alias
        self.alias_lines: dict[tuple[int, int], int] = {}

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        text = str(node.value)
        digits = sum(ch.isdigit() for ch in text)
        if digits > MAX_NUMBER_DIGITS and text.lstrip("+-")[:2].lower() not in ("0x", "0o", "0b"):
            # int() refuses more than 4300 digits (and is quadratic without that limit): keep the
            # text, for the checks to refuse with the field's own message.
            return LongNumber(text)
        return super().construct_yaml_int(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            # An explicit tag on a value that is not of that type (`!!int x`, `!!bool maybe`,
            # `!!timestamp later`): PyYAML's constructors raise plain Python errors for these.
            tag = str(node.tag).rsplit(":", 1)[-1]
            value = str(getattr(node, "value", ""))[:40]
            raise yaml.constructor.ConstructorError(
                None, None, f"the value {value!r} is tagged !!{tag} but is not a valid {tag}", node.start_mark
            ) from exc

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if parent is not None and isinstance(index, int) and self.check_event(yaml.AliasEvent):
            event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
            if event.start_mark is not None:
                self.alias_lines[(id(parent), index)] = event.start_mark.line + 1
        node: yaml.Node | None = super().compose_node(parent, index)
        return node


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


class _LineIndex:
    """Record the line of every field; report duplicate keys and abusive aliases."""

    def __init__(
        self, file: str, lines: dict[PathKey, int], ref: str, alias_lines: dict[tuple[int, int], int]
    ) -> None:
        self.alias_lines = alias_lines
        self.file = file
        self.lines = lines
        self.ref = ref
        self.errors: list[ManifestError] = []
        self.seen: set[int] = set()
        self.revisits = 0

    def walk(self, root: yaml.Node) -> list[ManifestError]:
        # Iterative so that line indexing never adds to the recursion depth PyYAML already used.
        # ``via`` is the path of the outermost alias the walk went through: where to point the user.
        # An int on the stack is the id of a collection whose children are all walked: it leaves
        # ``open_nodes`` (the collections being walked, for recursive aliases) in O(1).
        open_nodes: set[int] = set()
        stack: list[tuple[yaml.Node | int, PathKey, PathKey | None]] = [(root, (), None)]
        while stack:
            node, path, via = stack.pop()
            if isinstance(node, int):
                open_nodes.discard(node)
                continue
            if id(node) in open_nodes:
                return [
                    self._error(
                        node, path, "a YAML alias refers to a value that contains it (recursive alias)"
                    )
                ]
            first_visit = id(node) not in self.seen
            if not first_visit:
                via = via or path
                self.revisits += 1
                if self.revisits > MAX_ALIAS_EXPANSION:
                    return [
                        ManifestError(
                            self.file,
                            self.lines.get(via, node.start_mark.line + 1),
                            self.ref,
                            format_path(via),
                            (
                                f"YAML aliases expand this document to more than {MAX_ALIAS_EXPANSION} extra "
                                "values (an alias bomb?); write the values out or use fewer aliases"
                            ),
                        )
                    ]
            self.seen.add(id(node))
            children: list[tuple[yaml.Node, PathKey]] = []
            if isinstance(node, yaml.MappingNode):
                first_line: dict[str, int] = {}
                for key_node, value_node in node.value:
                    key = str(key_node.value)
                    line = key_node.start_mark.line + 1
                    if key in first_line and key != "<<" and first_visit:
                        self.errors.append(
                            ManifestError(
                                self.file,
                                line,
                                self.ref,
                                format_path((*path, key)),
                                (
                                    f"duplicate key {key!r} (first at line {first_line[key]}); "
                                    "YAML would silently keep only the last one: remove one of them"
                                ),
                            )
                        )
                    first_line.setdefault(key, line)
                    self.lines.setdefault((*path, key), line)
                    children.append((value_node, (*path, key)))
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    line = self.alias_lines.get((id(node), i), item.start_mark.line + 1)
                    self.lines.setdefault((*path, i), line)
                    children.append((item, (*path, i)))
            if isinstance(node, yaml.CollectionNode):
                open_nodes.add(id(node))
                stack.append((id(node), path, None))
            stack.extend((child, child_path, via) for child, child_path in reversed(children))
        return self.errors

    def _error(self, node: yaml.Node, path: PathKey, message: str) -> ManifestError:
        return ManifestError(self.file, node.start_mark.line + 1, self.ref, format_path(path), message)


def _ref_of_node(node: yaml.Node) -> str:
    """``Kind/[namespace/]name`` read straight from the node tree, for errors found before construction."""
    if not isinstance(node, yaml.MappingNode):
        return ""
    top = {str(k.value): v for k, v in node.value}
    kind = top.get("kind")
    meta = top.get("metadata")
    fields = {str(k.value): v for k, v in meta.value} if isinstance(meta, yaml.MappingNode) else {}

    def scalar(n: yaml.Node | None) -> str:
        return str(n.value) if isinstance(n, yaml.ScalarNode) and n.value else ""

    if not scalar(kind):
        return ""
    parts = [scalar(kind), scalar(fields.get("namespace")), scalar(fields.get("name")) or "<no name>"]
    return "/".join(p for p in parts if p)


def _reader_error(file: str, text: str, exc: yaml.reader.ReaderError) -> ManifestError:
    code = exc.character if isinstance(exc.character, int) else ord(exc.character)
    line = text.count("\n", 0, exc.position) + 1
    return ManifestError(
        file,
        line,
        _ref_from_text(text, line),
        "",
        f"control character #x{code:04x} is not allowed in YAML: is the file binary? "
        '(write it as an escape such as "\\x00" inside double quotes)',
    )


def _syntax_error(file: str, exc: yaml.MarkedYAMLError, text: str) -> ManifestError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 0
    problem = exc.problem or "invalid YAML"
    context = exc.context or ""
    opened_quote = _unclosed_quote_line(text, line)
    if "'\\t'" in problem or "\\t" in problem:
        message = "tab character: YAML indentation must use spaces, not tabs"
    elif opened_quote:
        line = opened_quote
        message = "YAML syntax error: the quoted string that starts on this line is never closed"
    elif ("flow sequence" in context or "flow mapping" in context) and exc.context_mark is not None:
        opener = "list opened with '['" if "sequence" in context else "mapping opened with '{'"
        closer = "]" if "sequence" in context else "}"
        message = (
            f"YAML syntax error: the {opener} on this line is not closed: at line {line} "
            f"{problem.replace('but got', 'but found')}; add the missing '{closer}'"
        )
        mark = exc.context_mark
        line = mark.line + 1
    elif "<stream end>" in problem:
        line = len(text.rstrip().splitlines())
        message = (
            f"YAML syntax error: the file ends in the middle of a value ({problem}); "
            "is a closing ']', '}' or quote missing?"
        )
    elif "mapping values are not allowed" in problem:
        message = (
            "YAML syntax error: a 'key: value' is out of place; "
            "check the indentation of this line and the one above"
        )
    elif "expected <block end>" in problem or "did not find expected key" in problem:
        message = f"YAML syntax error: {problem}; check the indentation of this line"
    elif "found undefined alias" in problem:
        message = f"YAML syntax error: {problem}: define the anchor (&name) before using it (*name)"
    else:
        message = f"YAML syntax error: {problem}"
    col = f" (column {mark.column + 1})" if mark and line == mark.line + 1 else ""
    return ManifestError(file, line, _ref_from_text(text, line), "", message + col)


_DOC_START = re.compile(r"^---(\s|$)")
_KIND_LINE = re.compile(r"^kind:\s*[\"']?([A-Za-z][A-Za-z0-9]*)[\"']?\s*(#.*)?$")
_NAME_LINE = re.compile(r"^\s+name:\s*[\"']?([a-z0-9][-a-z0-9.]*)[\"']?\s*(#.*)?$")
_NAMESPACE_LINE = re.compile(r"^\s+namespace:\s*[\"']?([a-z0-9][-a-z0-9]*)[\"']?\s*(#.*)?$")


def _ref_from_text(text: str, line: int) -> str:
    """Best-effort ``Kind/[namespace/]name`` of the document around ``line`` of unparsable YAML.

    A syntax error leaves no parsed object, but the user still wants to know which object to
    open; top-level ``kind:`` and the ``name:`` under ``metadata:`` are found line by line.
    """
    lines = text.splitlines()
    start = next((i + 1 for i in range(min(line, len(lines)) - 1, -1, -1) if _DOC_START.match(lines[i])), 0)
    end = next((i for i in range(max(line, 1), len(lines)) if _DOC_START.match(lines[i])), len(lines))
    kind = name = namespace = ""
    in_metadata = False
    for raw in lines[start:end]:
        if raw and not raw[0].isspace():
            in_metadata = raw.startswith("metadata:")
        if found := _KIND_LINE.match(raw):
            kind = kind or found[1]
        elif in_metadata and (found := _NAME_LINE.match(raw)):
            name = name or found[1]
        elif in_metadata and (found := _NAMESPACE_LINE.match(raw)):
            namespace = namespace or found[1]
    if not kind:
        return ""
    return "/".join(p for p in (kind, namespace, name or "<no name>") if p)


def _unclosed_quote_line(text: str, upto_line: int) -> int:
    """Line (1-based) of a double-quoted string left open before ``upto_line``, or 0.

    PyYAML happily reads a missing closing quote as a string spanning several lines and fails
    much later; the line where the quote opened is where the user must look.
    """
    lines = text.splitlines()[: max(upto_line - 1, 0)]
    for number, line in enumerate(lines, start=1):
        body = line.split(" #", 1)[0]
        if body.lstrip().startswith("#") or "'" in body:
            continue
        if (body.count('"') - body.count('\\"')) % 2 == 1:
            return number
    return 0


def _yaml_type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), "value"
    )


def manifests_from_objects(objects: Iterable[Mapping[str, Any]]) -> list[Manifest]:
    """One :class:`Manifest` per object (file ``cluster``, line 0), as validation expects.

    Server-managed metadata (uid, managedFields, ...) is dropped; ``generation`` is kept because the
    Slice status reports ``observedGeneration``. Objects being deleted are left out: they are no
    longer desired, and their finalizer tears them down.
    """
    out = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        slim: dict[str, Any] = {"name": meta.get("name", "")}
        for key in ("namespace", "generation", "labels", "annotations"):
            if meta.get(key) is not None:
                slim[key] = meta[key]
        data = {
            "apiVersion": obj.get("apiVersion", "flyslice.io/v1alpha1"),
            "kind": obj.get("kind", ""),
            "metadata": slim,
        }
        if "spec" in obj:
            data["spec"] = obj["spec"]
        out.append(Manifest("cluster", 0, data))
    return out


def iter_kind(manifests: Iterable[Manifest], kind: str) -> Iterator[Manifest]:
    return (m for m in manifests if m.kind == kind)
