"""Reading manifests: files, directories and multi-document YAML, with line numbers.

Every object keeps the line of every field so that later checks can point at it.
Syntax problems become :class:`ManifestError` values; nothing here raises on bad input.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ManifestError

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
        return [], [
            ManifestError(name, 0, "", "", f"file is not UTF-8 text (byte {exc.start}): is it binary?")
        ]
    return load_text(text, name)


def load_text(text: str, file: str) -> tuple[list[Manifest], list[ManifestError]]:
    if not text.strip():
        return [], [ManifestError(file, 0, "", "", "file is empty: expected one or more Kubernetes objects")]
    loader = yaml.SafeLoader(text)
    manifests: list[Manifest] = []
    errors: list[ManifestError] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            line = node.start_mark.line + 1
            lines: dict[PathKey, int] = {}
            dup_errors = _index_lines(node, (), lines, file)
            if dup_errors:
                errors.extend(dup_errors)
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
                        ),
                    )
                )
                continue
            manifests.append(Manifest(file, line, data, lines))
    except yaml.MarkedYAMLError as exc:
        errors.append(_syntax_error(file, exc))
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML parse error is marked
        errors.append(ManifestError(file, 0, "", "", f"YAML error: {exc}"))
    finally:
        loader.dispose()
    if not manifests and not errors:
        errors.append(ManifestError(file, 0, "", "", "file holds no objects, only empty YAML documents"))
    return manifests, errors


def _index_lines(node: yaml.Node, path: PathKey, lines: dict[PathKey, int], file: str) -> list[ManifestError]:
    """Record the line of every field; report keys that appear twice in one mapping."""
    errors: list[ManifestError] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                errors.append(
                    ManifestError(
                        file,
                        line,
                        "",
                        format_path((*path, key)),
                        (f"duplicate key {key!r} (first at line {seen[key]}); YAML keeps only the last one"),
                    )
                )
            seen[key] = line
            lines[(*path, key)] = line
            errors.extend(_index_lines(value_node, (*path, key), lines, file))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            errors.extend(_index_lines(item, (*path, i), lines, file))
    return errors


def _syntax_error(file: str, exc: yaml.MarkedYAMLError) -> ManifestError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 0
    problem = exc.problem or "invalid YAML"
    if "'\\t'" in problem or "\\t" in problem:
        message = "tab character: YAML indentation must use spaces, not tabs"
    elif "mapping values are not allowed" in problem:
        message = (
            "YAML syntax error: a 'key: value' is out of place; "
            "check the indentation of this line and the one above"
        )
    elif "expected <block end>" in problem or "did not find expected key" in problem:
        message = f"YAML syntax error: {problem}; check the indentation of this line"
    else:
        message = f"YAML syntax error: {problem}"
    col = f" (column {mark.column + 1})" if mark else ""
    return ManifestError(file, line, "", "", message + col)


def _yaml_type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), "value"
    )


def iter_kind(manifests: Iterable[Manifest], kind: str) -> Iterator[Manifest]:
    return (m for m in manifests if m.kind == kind)
