"""From loaded manifests to a :class:`Catalog` of valid objects plus every error found.

Order of checks: envelope (apiVersion, kind, metadata) -> CRD schema -> per-object semantics
(quantities, durations, rules the server enforces with CEL) -> cross-object references.
An object with errors is left out of the catalog; objects that depend on it then report
that dependency, so one bad object never hides or blocks the good ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import networkx as nx

from flyslice.crds import API_VERSION, GROUP, KINDS, VERSION, is_namespaced

from .catalog import (
    Catalog,
    EdgeNodeSpec,
    EdgeSpec,
    FlavorSpec,
    LatencyPathSpec,
    LinkSpec,
    NetworkServiceSpec,
    NFPackageSpec,
    ObjectKey,
    RoleSpec,
    SliceSpec,
)
from .errors import ManifestError
from .manifests import Manifest, load_paths
from .quantities import QuantityError, cpu_millis, memory_bytes, parse_duration
from .schema_check import schema_errors

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DEFAULT_NAMESPACE = "default"


@dataclass
class ValidationResult:
    catalog: Catalog
    errors: list[ManifestError]
    #: Every flyslice object that passed, with where it came from (for status and pruning).
    sources: dict[tuple[str, str, str], Manifest]

    @property
    def ok(self) -> bool:
        return not any(e.severity == "error" for e in self.errors)


def validate_paths(paths: Iterable[str]) -> ValidationResult:
    manifests, errors = load_paths(paths)
    result = validate(manifests)
    result.errors[:0] = errors
    return result


def validate(manifests: Iterable[Manifest]) -> ValidationResult:
    v = _Validator()
    for m in manifests:
        v.admit(m)
    return v.finish()


class _Validator:
    def __init__(self) -> None:
        self.errors: list[ManifestError] = []
        self.by_kind: dict[str, dict[ObjectKey, Manifest]] = {k: {} for k in KINDS}

    # -- envelope and schema -------------------------------------------------------------

    def admit(self, m: Manifest) -> None:
        if not self._check_envelope(m):
            return
        if not self._check_metadata(m):
            return
        found = schema_errors(m)
        if found:
            self.errors.extend(found)
            return
        key = self._key(m)
        previous = self.by_kind[m.kind].get(key)
        if previous is not None:
            self.errors.append(
                m.error(
                    ("metadata", "name"),
                    (
                        f"duplicate: {previous.ref} is already defined at {previous.file}:{previous.line}; "
                        f"names must be unique per kind{' and namespace' if key[0] else ''}: rename one"
                    ),
                )
            )
            return
        self.by_kind[m.kind][key] = m

    def _check_envelope(self, m: Manifest) -> bool:
        """apiVersion and kind: is this a flyslice object, one to skip, or a broken one?"""
        api_version = m.data.get("apiVersion")
        kind = m.data.get("kind")
        ok = True
        for field, value in (("apiVersion", api_version), ("kind", kind)):
            if value is not None and not isinstance(value, str):
                self.errors.append(m.error((field,), f"must be a string, got {_yaml_value(value)}"))
                ok = False
        if not ok:
            return False
        if not api_version:
            hint = (
                f"; for {kind} use apiVersion: {API_VERSION}"
                if kind in KINDS
                else "; every object needs apiVersion, kind and metadata.name"
            )
            self.errors.append(m.error(("apiVersion",), f"required field 'apiVersion' is missing{hint}"))
            ok = False
        if not kind:
            self.errors.append(
                m.error(
                    ("kind",), "required field 'kind' is missing; flyslice.io kinds are " + ", ".join(KINDS)
                )
            )
            ok = False
        if not ok:
            return False
        assert isinstance(api_version, str) and isinstance(kind, str)
        group, _, version = api_version.rpartition("/")
        if group != GROUP:
            if kind in KINDS and (not group or "flyslice" in group.lower() or version == VERSION):
                # Looks meant for flyslice: skipping it would silently drop the user's object.
                self.errors.append(
                    m.error(
                        ("apiVersion",),
                        f"{api_version!r} is not a flyslice API version; {kind} is apiVersion: {API_VERSION}",
                    )
                )
                return False
            self.errors.append(
                m.error((), f"skipped: {api_version} {kind} is not a flyslice.io object", severity="note")
            )
            return False
        if version != VERSION:
            self.errors.append(
                m.error(
                    ("apiVersion",),
                    f"unknown version {api_version!r}; flyslice.io serves only {VERSION}: use {API_VERSION}",
                )
            )
            return False
        if kind not in KINDS:
            self.errors.append(
                m.error(
                    ("kind",),
                    f"unknown kind {kind!r}: flyslice.io kinds are {', '.join(KINDS)}{self._hint(kind, KINDS)}",
                )
            )
            return False
        return True

    def _check_metadata(self, m: Manifest) -> bool:
        meta = m.data.get("metadata")
        if meta is None:
            self.errors.append(
                m.error(
                    ("metadata",),
                    "required field 'metadata' is missing; add metadata: {name: ...}"
                    + (
                        " (is 'name' at the top level instead of under metadata?)" if "name" in m.data else ""
                    ),
                )
            )
            return False
        if not isinstance(meta, dict):
            self.errors.append(
                m.error(("metadata",), f"must be a mapping with a name, got {_yaml_value(meta)}")
            )
            return False
        name = meta.get("name")
        if name is None or name == "":
            self.errors.append(
                m.error(("metadata", "name"), "required field 'name' is missing; every object needs a name")
            )
            return False
        if not isinstance(name, str):
            self.errors.append(
                m.error(
                    ("metadata", "name"),
                    f'must be a string, got {_yaml_value(name)}: quote it, e.g. name: "{name}"',
                )
            )
            return False
        ok = True
        if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            self.errors.append(
                m.error(
                    ("metadata", "name"),
                    (
                        f"{name!r} is not a valid name: use at most 253 lowercase letters, digits, '-' and '.', "
                        "starting and ending with a letter or digit" + self._name_suggestion(name)
                    ),
                )
            )
            ok = False
        namespace = meta.get("namespace")
        if not is_namespaced(m.kind) and namespace is not None:
            self.errors.append(
                m.error(("metadata", "namespace"), f"{m.kind} is cluster-scoped: remove metadata.namespace")
            )
            ok = False
        elif namespace is not None and (
            not isinstance(namespace, str) or len(namespace) > 63 or not _DNS1123_LABEL.match(namespace)
        ):
            self.errors.append(
                m.error(
                    ("metadata", "namespace"),
                    (
                        f"{namespace!r} is not a valid namespace: use at most 63 lowercase letters, digits "
                        "and '-', starting and ending with a letter or digit"
                        + self._name_suggestion(str(namespace), allow_dots=False)
                    ),
                )
            )
            ok = False
        return ok

    @staticmethod
    def _name_suggestion(name: str, allow_dots: bool = True) -> str:
        allowed = "a-z0-9.-" if allow_dots else "a-z0-9-"
        fixed = re.sub(f"[^{allowed}]+", "-", name.lower()).strip("-.")
        return f", e.g. {fixed!r}" if fixed and fixed != name else ""

    @staticmethod
    def _key(m: Manifest) -> ObjectKey:
        return ((m.namespace or DEFAULT_NAMESPACE) if is_namespaced(m.kind) else "", m.name)

    # -- semantics and references -------------------------------------------------------

    def finish(self) -> ValidationResult:
        nodes = self._nodes()
        packages = self._packages()
        services = self._services(packages, nodes)
        slices = self._slices(services, nodes)
        others = {
            (kind, ns, name): m.data
            for kind in ("GitSource", "NFInstance")
            for (ns, name), m in self.by_kind[kind].items()
        }
        catalog = Catalog(nodes=nodes, packages=packages, services=services, slices=slices, others=others)
        valid_keys = (
            {("EdgeNode", "", n) for n in nodes}
            | {("NFPackage", *k) for k in packages}
            | {("NetworkService", *k) for k in services}
            | {("Slice", *k) for k in slices}
            | set(others)
        )
        sources = {
            (kind, ns, name): m
            for kind, objs in self.by_kind.items()
            for (ns, name), m in objs.items()
            if (kind, ns, name) in valid_keys
        }
        self.errors.sort(key=lambda e: (e.file, e.line, e.path))
        return ValidationResult(catalog, self.errors, sources)

    def _nodes(self) -> dict[str, EdgeNodeSpec]:
        manifests = {name: m for (_, name), m in self.by_kind["EdgeNode"].items()}
        declared: dict[frozenset[str], tuple[Manifest, int, float, float | None]] = {}
        bad: set[str] = set()
        for name, m in manifests.items():
            spec = m.data["spec"]
            for field in ("cpu", "memory"):
                if self._quantity(m, ("spec", "capacity", field), spec["capacity"][field], field):
                    bad.add(name)
            for i, link in enumerate(spec.get("links", [])):
                other = link["node"]
                path = ("spec", "links", i, "node")
                if other == name:
                    self.errors.append(m.error(path, "a link cannot point at the node itself"))
                    bad.add(name)
                    continue
                if other not in manifests:
                    self.errors.append(
                        m.error(path, f"EdgeNode {other!r} does not exist{self._hint(other, manifests)}")
                    )
                    bad.add(name)
                    continue
                pair = frozenset((name, other))
                bw = link.get("bandwidthMbps")
                if pair in declared:
                    first, j, lat, fbw = declared[pair]
                    if lat != link["latencyMs"] or (fbw is not None and bw is not None and fbw != bw):
                        self.errors.append(
                            m.error(
                                ("spec", "links", i),
                                (
                                    f"link {name}<->{other} conflicts with its declaration on EdgeNode "
                                    f"{first.name} ({first.file}:{first.line_of(('spec', 'links', j))}): "
                                    f"latencyMs {lat} vs {link['latencyMs']}, bandwidthMbps {fbw} vs {bw}; "
                                    "declare it once or make both agree"
                                ),
                            )
                        )
                        bad.add(name)
                else:
                    declared[pair] = (m, i, link["latencyMs"], bw)
        out: dict[str, EdgeNodeSpec] = {}
        for name, m in manifests.items():
            if name in bad:
                continue
            spec = m.data["spec"]
            out[name] = EdgeNodeSpec(
                name=name,
                tier=spec["tier"],
                runtimes=frozenset(spec["runtimes"]),
                cpu_millis=cpu_millis(spec["capacity"]["cpu"]),
                memory_bytes=memory_bytes(spec["capacity"]["memory"]),
                availability=float(spec.get("availability", 1.0)),
                cost=float(spec.get("cost", 1.0)),
                links=tuple(
                    LinkSpec(lk["node"], float(lk["latencyMs"]), lk.get("bandwidthMbps"))
                    for lk in spec.get("links", [])
                ),
                kubernetes_node=spec.get("kubernetesNode"),
            )
        return out

    def _packages(self) -> dict[ObjectKey, NFPackageSpec]:
        out: dict[ObjectKey, NFPackageSpec] = {}
        for key, m in self.by_kind["NFPackage"].items():
            spec = m.data["spec"]
            n_before = len(self.errors)
            flavors = spec["flavors"]
            if not flavors.get("vnf") and not flavors.get("fnf"):
                self.errors.append(
                    m.error(("spec", "flavors"), "a package needs at least one flavour: vnf or fnf")
                )
            parsed: dict[str, FlavorSpec] = {}
            for flavor, fs in flavors.items():
                base = ("spec", "flavors", flavor)
                if ("module" in fs) != ("digest" in fs):
                    self.errors.append(m.error(base, "module and digest go together: set both or neither"))
                bad = self._quantity(m, (*base, "resources", "cpu"), fs["resources"]["cpu"], "cpu")
                bad |= self._quantity(m, (*base, "resources", "memory"), fs["resources"]["memory"], "memory")
                if not bad:
                    parsed[flavor] = FlavorSpec(
                        flavor=flavor,
                        cpu_millis=cpu_millis(fs["resources"]["cpu"]),
                        memory_bytes=memory_bytes(fs["resources"]["memory"]),
                        processing_latency_ms=float(fs.get("processingLatencyMs", 0.0)),
                        image=fs.get("image"),
                        module=fs.get("module"),
                        digest=fs.get("digest"),
                        entrypoint=fs.get("entrypoint", "NF"),
                    )
            config_schema = spec.get("configSchema", {})
            try:
                jsonschema.validators.validator_for(config_schema).check_schema(config_schema)
            except jsonschema.SchemaError as exc:
                where = ("spec", "configSchema", *exc.absolute_path)
                self.errors.append(m.error(where, f"not a valid JSON schema: {exc.message}"))
            if len(self.errors) == n_before:
                descriptor = spec.get("descriptor", {})
                out[key] = NFPackageSpec(
                    namespace=key[0],
                    name=key[1],
                    function=spec["function"],
                    flavors=parsed,
                    stateful=bool(descriptor.get("stateful", False)),
                    config_schema=config_schema,
                )
        return out

    def _services(
        self, packages: Mapping[ObjectKey, NFPackageSpec], nodes: Mapping[str, EdgeNodeSpec]
    ) -> dict[ObjectKey, NetworkServiceSpec]:
        out: dict[ObjectKey, NetworkServiceSpec] = {}
        for key, m in self.by_kind["NetworkService"].items():
            ns = key[0]
            graph = m.data["spec"]["graph"]
            n_before = len(self.errors)
            roles: list[RoleSpec] = []
            names: set[str] = set()
            for i, r in enumerate(graph["roles"]):
                path = ("spec", "graph", "roles", i)
                if r["name"] in names:
                    self.errors.append(m.error((*path, "name"), f"duplicate role name {r['name']!r}"))
                    continue
                names.add(r["name"])
                role = RoleSpec(
                    name=r["name"],
                    package=r["package"],
                    scope=r.get("scope", "perSlice"),
                    tiers=frozenset(r["tiers"]) if "tiers" in r else None,
                    flavors=frozenset(r["flavors"]) if "flavors" in r else None,
                    config=r.get("config", {}),
                )
                self._check_role(m, path, role, packages.get((ns, role.package)), nodes)
                roles.append(role)
            edges = [
                EdgeSpec(e["from"], e["to"], float(e.get("bandwidthMbps", 0.0)))
                for e in graph.get("edges", [])
            ]
            g = nx.DiGraph()
            g.add_nodes_from(names)
            for i, e in enumerate(edges):
                for end, role_name in (("from", e.src), ("to", e.dst)):
                    if role_name not in names:
                        self.errors.append(
                            m.error(
                                ("spec", "graph", "edges", i, end),
                                (f"role {role_name!r} is not in this graph{self._hint(role_name, names)}"),
                            )
                        )
                if e.src == e.dst:
                    self.errors.append(
                        m.error(("spec", "graph", "edges", i), "an edge cannot join a role to itself")
                    )
                g.add_edge(e.src, e.dst)
            if not nx.is_directed_acyclic_graph(g):
                cycle = [u for u, _ in nx.find_cycle(g)]
                self.errors.append(
                    m.error(
                        ("spec", "graph", "edges"),
                        (
                            "the service graph has a cycle: "
                            + " -> ".join([*cycle, cycle[0]])
                            + "; traffic must flow one way from the attachments to the sinks"
                        ),
                    )
                )
            paths = []
            for i, p in enumerate(m.data["spec"].get("latencyPaths", [])):
                where = ("spec", "latencyPaths", i, "roles")
                unknown = [r for r in p["roles"] if r not in names]
                if unknown:
                    self.errors.append(m.error(where, f"unknown role(s) {', '.join(unknown)}"))
                    continue
                if g.in_degree(p["roles"][0]) != 0:
                    self.errors.append(
                        m.error(
                            where,
                            f"a latency path must start at a source role (one without "
                            f"incoming edges); {p['roles'][0]!r} has incoming edges",
                        )
                    )
                for a, b in zip(p["roles"], p["roles"][1:], strict=False):
                    if not g.has_edge(a, b):
                        self.errors.append(m.error(where, f"no edge from {a!r} to {b!r} in the graph"))
                paths.append(LatencyPathSpec(p["name"], tuple(p["roles"])))
            if len(self.errors) == n_before:
                spec = m.data["spec"]
                out[key] = NetworkServiceSpec(
                    namespace=ns,
                    name=key[1],
                    provides=frozenset(spec["provides"]),
                    priority=int(spec.get("priority", 0)),
                    roles=tuple(roles),
                    edges=tuple(edges),
                    latency_paths=tuple(paths),
                )
        return out

    def _check_role(
        self,
        m: Manifest,
        path: tuple[str | int, ...],
        role: RoleSpec,
        package: NFPackageSpec | None,
        nodes: Mapping[str, EdgeNodeSpec],
    ) -> None:
        if package is None:
            raw = self.by_kind["NFPackage"].get((self._key(m)[0], role.package))
            why = (
                f"NFPackage {role.package!r} is invalid (see its errors at {raw.file}:{raw.line})"
                if raw
                else f"NFPackage {role.package!r} does not exist in namespace {self._key(m)[0]!r}"
                + self._hint(role.package, {k[1] for k in self.by_kind["NFPackage"]})
            )
            self.errors.append(m.error((*path, "package"), why))
            return
        offered = set(package.flavors)
        usable = offered & set(role.flavors) if role.flavors is not None else offered
        if role.flavors is not None and not usable:
            self.errors.append(
                m.error(
                    (*path, "flavors"),
                    (
                        f"package {package.name!r} offers {', '.join(sorted(offered))}, "
                        f"none of {', '.join(sorted(role.flavors))}"
                    ),
                )
            )
            return
        hosts = [
            n for n in nodes.values() if (role.tiers is None or n.tier in role.tiers) and n.runtimes & usable
        ]
        if nodes and not hosts:
            tiers = f" on tier {', '.join(sorted(role.tiers))}" if role.tiers else ""
            self.errors.append(
                m.error(
                    (*path, "package"),
                    (
                        f"no EdgeNode{tiers} can run role {role.name!r}: "
                        f"it needs runtime {' or '.join(sorted(usable))}"
                    ),
                )
            )
        if package.config_schema and role.config:
            self._check_config(m, (*path, "config"), role.config, package)

    def _check_config(
        self, m: Manifest, path: tuple[str | int, ...], config: Mapping[str, Any], package: NFPackageSpec
    ) -> None:
        validator_cls = jsonschema.validators.validator_for(package.config_schema)
        for err in validator_cls(package.config_schema).iter_errors(config):
            self.errors.append(
                m.error(
                    (*path, *err.absolute_path),
                    (f"config does not satisfy NFPackage {package.name!r} configSchema: {err.message}"),
                )
            )

    def _slices(
        self, services: Mapping[ObjectKey, NetworkServiceSpec], nodes: Mapping[str, EdgeNodeSpec]
    ) -> dict[ObjectKey, SliceSpec]:
        out: dict[ObjectKey, SliceSpec] = {}
        for key, m in self.by_kind["Slice"].items():
            ns = key[0]
            spec = m.data["spec"]
            n_before = len(self.errors)
            if ("services" in spec) == ("networkServiceRef" in spec):
                self.errors.append(m.error(("spec",), "set exactly one of services and networkServiceRef"))
            in_ns = [s for (sns, _), s in services.items() if sns == ns]
            for i, wanted in enumerate(spec.get("services", [])):
                if not any(wanted in s.provides for s in in_ns):
                    raw = [
                        mm
                        for (sns, _), mm in self.by_kind["NetworkService"].items()
                        if sns == ns and wanted in mm.data["spec"]["provides"]
                    ]
                    why = f" (NetworkService {raw[0].name!r} provides it but is invalid)" if raw else ""
                    known = sorted({p for s in in_ns for p in s.provides})
                    self.errors.append(
                        m.error(
                            ("spec", "services", i),
                            (
                                f"no valid NetworkService in namespace {ns!r} provides {wanted!r}{why}; "
                                f"provided: {', '.join(known) or 'nothing'}"
                            ),
                        )
                    )
            ref = spec.get("networkServiceRef", {}).get("name")
            if ref and (ns, ref) not in services:
                state = "is invalid" if (ns, ref) in self.by_kind["NetworkService"] else "does not exist"
                self.errors.append(
                    m.error(("spec", "networkServiceRef", "name"), f"NetworkService {ref!r} {state}")
                )
            for i, att in enumerate(spec["attachments"]):
                if att["node"] not in nodes:
                    state = (
                        "is invalid" if ("", att["node"]) in self.by_kind["EdgeNode"] else "does not exist"
                    )
                    self.errors.append(
                        m.error(
                            ("spec", "attachments", i, "node"),
                            (f"EdgeNode {att['node']!r} {state}{self._hint(att['node'], nodes)}"),
                        )
                    )
            lifetime = None
            if "lifetime" in spec:
                try:
                    lifetime = parse_duration(spec["lifetime"])
                except QuantityError as exc:
                    self.errors.append(m.error(("spec", "lifetime"), str(exc)))
            if len(self.errors) == n_before:
                meta = m.data.get("metadata", {})
                out[key] = SliceSpec(
                    namespace=ns,
                    name=key[1],
                    max_latency_ms=float(spec["qos"]["maxLatencyMs"]),
                    availability=float(spec["qos"].get("availability", 0.0)),
                    attachments=tuple(a["node"] for a in spec["attachments"]),
                    services=frozenset(spec.get("services", [])),
                    network_service_ref=ref,
                    lifetime_s=lifetime,
                    isolation_required=spec.get("isolation") == "required",
                    priority=int(spec.get("priority", 0)),
                    config=spec.get("config", {}),
                    generation=int(meta.get("generation", 0) or 0),
                )
        return out

    # -- helpers -------------------------------------------------------------------------

    def _quantity(self, m: Manifest, path: tuple[str | int, ...], value: Any, field: str) -> bool:
        """Record an error and return True when ``value`` is not a usable quantity."""
        try:
            parsed = cpu_millis(value) if field == "cpu" else memory_bytes(value)
        except QuantityError as exc:
            self.errors.append(m.error(path, str(exc)))
            return True
        if parsed <= 0:
            self.errors.append(m.error(path, f"must be greater than zero, got {value!r}"))
            return True
        return False

    @staticmethod
    def _hint(name: str, known: Iterable[str]) -> str:
        import difflib

        guess = difflib.get_close_matches(name, list(known), n=1)
        return f"; did you mean {guess[0]!r}?" if guess else ""


def _yaml_value(value: Any) -> str:
    """A value as the user wrote it in YAML, with its type, for 'got ...' in messages."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return f"string {value!r}"
    return f"{type(value).__name__} {value!s}"
