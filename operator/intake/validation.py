"""From loaded manifests to a :class:`Catalog` of valid objects plus every error found.

Order of checks: envelope (apiVersion, kind, metadata) -> CRD schema -> per-object semantics
(quantities, durations, rules the server enforces with CEL) -> cross-object references.
An object with errors is left out of the catalog; objects that depend on it then report
that dependency, so one bad object never hides or blocks the good ones.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema
import networkx as nx

from flyslice.crds import API_VERSION, GROUP, KINDS, VERSION, is_namespaced, openapi_schema
from flyslice.operator.intake.catalog import (
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
    SharingSpec,
    SliceSpec,
    candidates,
)
from flyslice.operator.intake.cel_rules import cel_errors
from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.manifests import Manifest, format_path, load_paths
from flyslice.operator.intake.quantities import (
    QUANTITY_EXAMPLES,
    QuantityError,
    cpu_millis,
    memory_bytes,
    parse_duration,
)
from flyslice.operator.intake.schema_check import describe_value, explain_error, schema_errors

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DEFAULT_NAMESPACE = "default"
#: Slice annotation opting in to tearing a running slice down when its new intent cannot be admitted.
ALLOW_TEARDOWN = "flyslice.io/allow-teardown"
PathKey = tuple[str | int, ...]
#: Kinds whose CEL rules (``x-kubernetes-validations``) this module re-checks in Python, with
#: messages that point at the exact element and suggest a fix; tests prove every such rule is
#: covered. The other kinds are checked by evaluating their CRD's CEL rules as they are.
_RULES_CHECKED_HERE = frozenset({"EdgeNode", "NFPackage", "NetworkService", "Slice"})


#: An image reference pinned by digest: ``name[:tag]@sha256:<64 lowercase hex>`` (a tag, if any, is
#: ignored by the runtime when a digest is given).
_IMAGE_BY_DIGEST = re.compile(r"[^\s@]+@sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class PackagePolicy:
    """Which namespaces must sign their packages (``--require-signed-packages``; ``*``: all).

    The keys stay with the agents (``--trusted-key``): the policy only says that a namespace's
    packages must carry a module signature, or for an image-only VNF an image signature (and pin any
    image by digest), and marks their instances
    so that an agent that has no key to check it with refuses them rather than running them unverified.
    """

    signed_namespaces: frozenset[str] = frozenset()

    def requires_signature(self, namespace: str) -> bool:
        return "*" in self.signed_namespaces or namespace in self.signed_namespaces


@dataclass
class ValidationResult:
    catalog: Catalog
    errors: list[ManifestError]
    #: Every flyslice object that passed, with where it came from (for status and pruning).
    sources: dict[tuple[str, str, str], Manifest]

    @property
    def ok(self) -> bool:
        return not any(e.severity == "error" for e in self.errors)


def validate_paths(paths: Iterable[str], *, policy: PackagePolicy | None = None) -> ValidationResult:
    manifests, errors = load_paths(paths)
    result = validate(manifests, policy=policy)
    # One list in file order: a reader fixes a file top to bottom, whatever check found what.
    result.errors = sorted([*errors, *result.errors], key=lambda e: (e.file, e.line, e.path))
    return result


def validate(manifests: Iterable[Manifest], *, policy: PackagePolicy | None = None) -> ValidationResult:
    v = _Validator(policy or PackagePolicy())
    for m in manifests:
        v.admit(m)
    return v.finish()


class _Validator:
    def __init__(self, policy: PackagePolicy) -> None:
        self.policy = policy
        self.errors: list[ManifestError] = []
        self.by_kind: dict[str, dict[ObjectKey, Manifest]] = {k: {} for k in KINDS}
        #: Objects refused by their schema, so references to them say "is invalid", not "does not exist".
        self.rejected: dict[str, dict[ObjectKey, Manifest]] = {k: {} for k in KINDS}

    # -- envelope and schema -------------------------------------------------------------

    def admit(self, m: Manifest) -> None:
        if not self._check_envelope(m):
            return
        if not self._check_metadata(m):
            return
        found = schema_errors(m)
        if m.kind not in _RULES_CHECKED_HERE and not found:
            found = cel_errors(m)
        if any(e.severity == "error" for e in found):
            self.errors.extend(found)
            self.rejected[m.kind].setdefault(self._key(m), m)
            return
        self.errors.extend(found)
        key = self._key(m)
        previous = self.by_kind[m.kind].get(key)
        if previous is not None:
            self.errors.append(
                m.error(
                    ("metadata", "name"),
                    (
                        f"duplicate: {previous.ref} is already defined at "
                        f"{previous.file}:{previous.line_of(('metadata', 'name'))}; "
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
                self.errors.append(m.error((field,), f"must be a string, got {describe_value(value)}"))
                ok = False
        if not ok:
            return False
        if not api_version and not kind and "metadata" not in m.data and "spec" not in m.data:
            # docker-compose.yml, mkdocs.yml, Helm values: a git repo holds YAML that is no object.
            top = ", ".join(str(k) for k in list(m.data)[:3])
            self.errors.append(
                ManifestError(
                    m.file,
                    m.line,
                    "",
                    "",
                    f"skipped: not a Kubernetes object (no apiVersion, kind, metadata or spec; top-level keys: {top})",
                    severity="note",
                )
            )
            return False
        if not api_version:
            looks_flyslice = kind in KINDS or (not kind and _kind_from_spec(m.data.get("spec")))
            hint = (
                f"; for {kind or 'flyslice objects'} use apiVersion: {API_VERSION}"
                if looks_flyslice
                else "; every object needs apiVersion, kind and metadata.name"
            )
            self.errors.append(m.error(("apiVersion",), f"required field 'apiVersion' is missing{hint}"))
            ok = False
        if not kind:
            guess = _kind_from_spec(m.data.get("spec"))
            hint = f"; from its spec this looks like kind: {guess}" if guess else ""
            self.errors.append(
                m.error(
                    ("kind",),
                    "required field 'kind' is missing; flyslice.io kinds are " + ", ".join(KINDS) + hint,
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
                m.error(("metadata",), f"must be a mapping with a name, got {describe_value(meta)}")
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
                    f'must be a string, got {describe_value(name)}: quote it, e.g. name: "{name}"',
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
        slices = self._slices(services, nodes, packages)
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

    def _missing(self, kind: str, key: ObjectKey, valid: Iterable[ObjectKey]) -> str:
        """Why a reference to ``kind`` ``key`` does not resolve, phrased for the referring object."""
        where = f" in namespace {key[0]!r}" if key[0] else ""
        broken = self.by_kind[kind].get(key) or self.rejected[kind].get(key)
        if broken is not None:
            return f"{kind} {key[1]!r}{where} is invalid (see its errors at {broken.file}:{broken.line})"
        names = sorted(
            {k[1] for k in self.by_kind[kind] if k[0] == key[0]} | {k[1] for k in valid if k[0] == key[0]}
        )
        message = f"{kind} {key[1]!r} does not exist{where}"
        guess = difflib.get_close_matches(key[1], names, n=1)
        if guess:
            return f"{message}; did you mean {guess[0]!r}?"
        if names:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            return f"{message}; known: {shown}"
        return f"{message}: no {kind} is defined{where} at all (validating only part of the repository?)"

    def _nodes(self) -> dict[str, EdgeNodeSpec]:
        manifests = {name: m for (_, name), m in self.by_kind["EdgeNode"].items()}
        declared: dict[frozenset[str], tuple[Manifest, int, dict[str, Any]]] = {}
        bad: set[str] = set()
        for name, m in manifests.items():
            spec = m.data["spec"]
            for field in ("cpu", "memory"):
                if self._quantity(m, ("spec", "capacity", field), spec["capacity"][field], field):
                    bad.add(name)
            for i, link in enumerate(spec.get("links", [])):
                other = link["node"]
                path: PathKey = ("spec", "links", i, "node")
                if other == name:
                    self.errors.append(m.error(path, "a link cannot point at the node itself: remove it"))
                    bad.add(name)
                    continue
                if other not in manifests:
                    self.errors.append(m.error(path, self._missing("EdgeNode", ("", other), ())))
                    bad.add(name)
                    continue
                pair = frozenset((name, other))
                if pair not in declared:
                    declared[pair] = (m, i, link)
                    continue
                first, j, first_link = declared[pair]
                differ = [
                    f
                    for f in ("latencyMs", "bandwidthMbps")
                    if f in link and f in first_link and link[f] != first_link[f]
                ]
                if differ:
                    here = ", ".join(f"{f} {link[f]}" for f in differ)
                    there = ", ".join(f"{f} {first_link[f]}" for f in differ)
                    self.errors.append(
                        m.error(
                            ("spec", "links", i, differ[0]),
                            (
                                f"link {name}<->{other} says {here}, but EdgeNode {first.name} declares the "
                                f"same link with {there} ({first.file}:{first.line_of(('spec', 'links', j))}); "
                                "links are undirected: declare it once, or make both declarations agree"
                            ),
                        )
                    )
                    bad.add(name)
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
                    m.error(
                        ("spec", "flavors"),
                        "a package needs at least one flavour: add vnf {image, resources} "
                        "and/or fnf {module, digest, resources}",
                    )
                )
            parsed: dict[str, FlavorSpec] = {}
            for flavor, fs in flavors.items():
                base: PathKey = ("spec", "flavors", flavor)
                if ("module" in fs) != ("digest" in fs):
                    present, absent = ("module", "digest") if "module" in fs else ("digest", "module")
                    self.errors.append(
                        m.error(
                            (*base, present),
                            f"{present} is set but {absent} is not: module and digest go together, set both or neither",
                        )
                    )
                if "signature" in fs and "module" not in fs:
                    self.errors.append(
                        m.error(
                            (*base, "signature"),
                            "signature signs the module: it needs module and digest "
                            "(an image is not covered; see imageSignature)",
                        )
                    )
                self._image_signature(m, base, fs)
                self._signature_policy(m, key[0], flavor, fs)
                bad = self._quantity(m, (*base, "resources", "cpu"), fs["resources"]["cpu"], "cpu")
                bad |= self._quantity(m, (*base, "resources", "memory"), fs["resources"]["memory"], "memory")
                sharing = self._sharing(m, base, fs.get("sharing"))
                if not bad and sharing is not False:
                    parsed[flavor] = FlavorSpec(
                        flavor=flavor,
                        cpu_millis=cpu_millis(fs["resources"]["cpu"]),
                        memory_bytes=memory_bytes(fs["resources"]["memory"]),
                        processing_latency_ms=float(fs.get("processingLatencyMs", 0.0)),
                        image=fs.get("image"),
                        module=fs.get("module"),
                        digest=fs.get("digest"),
                        entrypoint=fs.get("entrypoint", "NF"),
                        signature=fs.get("signature"),
                        image_signature=fs.get("imageSignature"),
                        sharing=sharing,
                    )
            config_schema = spec.get("configSchema", {})
            try:
                jsonschema.validators.validator_for(config_schema).check_schema(config_schema)
            except jsonschema.SchemaError as exc:
                where = ("spec", "configSchema", *exc.absolute_path)
                self.errors.append(m.error(where, f"not a valid JSON schema: {_schema_problem(exc)}"))
            if len(self.errors) == n_before:
                descriptor = spec.get("descriptor", {})
                out[key] = NFPackageSpec(
                    namespace=key[0],
                    name=key[1],
                    function=spec["function"],
                    flavors=parsed,
                    stateful=bool(descriptor.get("stateful", False)),
                    config_schema=config_schema,
                    signature_required=self.policy.requires_signature(key[0]),
                )
        return out

    def _sharing(self, m: Manifest, base: PathKey, raw: Any) -> SharingSpec | Literal[False] | None:
        """The flavour's ``sharing`` block (``None`` when absent), or ``False`` after recording its errors.

        The schema has bounded capacityMbps and maxTenants; the per-tenant quantities (CEL rules on the
        server) are parsed here, and unlike an instance's resources they may be zero.
        """
        if not isinstance(raw, dict):
            return None
        per = raw.get("perTenant") or {}
        amounts: dict[str, int] = {}
        for field in ("cpu", "memory"):
            if field not in per:
                continue
            try:
                amounts[field] = cpu_millis(per[field]) if field == "cpu" else memory_bytes(per[field])
            except QuantityError as exc:
                self.errors.append(m.error((*base, "sharing", "perTenant", field), str(exc)))
        if len(amounts) != len([f for f in ("cpu", "memory") if f in per]):
            return False
        max_tenants = raw.get("maxTenants")
        return SharingSpec(
            capacity_mbps=float(raw["capacityMbps"]),
            max_tenants=None if max_tenants is None else int(max_tenants),
            per_tenant_cpu_millis=amounts.get("cpu", 0),
            per_tenant_memory_bytes=amounts.get("memory", 0),
            per_tenant_config=bool(raw.get("perTenantConfig", False)),
        )

    def _image_signature(self, m: Manifest, base: PathKey, fs: Mapping[str, Any]) -> None:
        """An ``imageSignature`` signs one digest (cosign's payload names it), so the image must be
        pinned by one, and be a reference cosign could have signed; the key check is the agent's."""
        if "imageSignature" not in fs or not isinstance(fs.get("image"), str):
            return
        from flyslice.nodeagent.runtime.image_signatures import ImageSignatureError, pinned_digest

        image = fs["image"]
        if not _IMAGE_BY_DIGEST.fullmatch(image):
            self.errors.append(
                m.error(
                    (*base, "imageSignature"),
                    f"imageSignature signs an image digest: image {image!r} must be pinned by digest "
                    "(name@sha256:<64 hex digits>), not by tag",
                )
            )
            return
        try:
            pinned_digest(image)
        except ImageSignatureError as exc:
            self.errors.append(m.error((*base, "image"), f"cannot carry an imageSignature: {exc}"))

    def _signature_policy(self, m: Manifest, namespace: str, flavor: str, fs: Mapping[str, Any]) -> None:
        """Refuse a package whose flavour is unsigned in a namespace that requires signatures: the
        whole package is then invalid, so no slice places it and nothing of it runs."""
        if not self.policy.requires_signature(namespace):
            return
        base: PathKey = ("spec", "flavors", flavor)
        image = fs.get("image")
        if isinstance(image, str) and not _IMAGE_BY_DIGEST.fullmatch(image):
            # A tag can be moved to other bytes after review; a digest names exactly one image.
            self.errors.append(
                m.error(
                    (*base, "image"),
                    f"namespace {namespace!r} requires signed packages (--require-signed-packages): "
                    f"image {image!r} must be pinned by digest (name@sha256:<64 hex digits>), not by tag",
                )
            )
        if fs.get("signature"):
            return
        why = f"namespace {namespace!r} requires signed packages (--require-signed-packages)"
        if "module" not in fs:
            if fs.get("imageSignature"):
                return  # the image's signature: the agent verifies it before it creates the pod
            self.errors.append(
                m.error(
                    base,
                    f"{why}: an image-only vnf needs imageSignature, a cosign-compatible signature of its "
                    "digest (flyslice sign-image, or cosign generate + cosign sign-blob); "
                    "or add module, digest and signature",
                )
            )
            return
        self.errors.append(
            m.error(
                (*base, "module"),
                f"{why}: add signature, the ed25519 signature of the module's bytes in base64",
            )
        )

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
                path: PathKey = ("spec", "graph", "roles", i)
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
                    sharing=r.get("sharing", "allowed"),
                )
                self._check_role(m, path, role, packages.get((ns, role.package)), packages)
                roles.append(role)
            edges = [
                EdgeSpec(e["from"], e["to"], float(e.get("bandwidthMbps", 0.0)))
                for e in graph.get("edges", [])
            ]
            g = self._service_graph(m, names, edges)
            paths = self._latency_paths(m, names, g)
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

    def _service_graph(self, m: Manifest, names: set[str], edges: list[EdgeSpec]) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(names)
        edge_index: dict[tuple[str, str], int] = {}
        known = ", ".join(sorted(names))
        for i, e in enumerate(edges):
            ok = True
            for end, role_name in (("from", e.src), ("to", e.dst)):
                if role_name not in names:
                    self.errors.append(
                        m.error(
                            ("spec", "graph", "edges", i, end),
                            f"role {role_name!r} is not in this graph (roles: {known}){self._hint(role_name, names)}",
                        )
                    )
                    ok = False
            if ok and e.src == e.dst:
                self.errors.append(
                    m.error(
                        ("spec", "graph", "edges", i),
                        f"an edge cannot join role {e.src!r} to itself: remove it",
                    )
                )
                ok = False
            if ok:
                g.add_edge(e.src, e.dst)
                edge_index.setdefault((e.src, e.dst), i)
        if not nx.is_directed_acyclic_graph(g):
            cycle = nx.find_cycle(g)
            # Blame the edge written last: usually the one that was added by mistake.
            closing = max(cycle, key=lambda uv: edge_index[(uv[0], uv[1])])
            start = cycle.index(closing) + 1
            ordered = [*cycle[start:], *cycle[:start]]
            loop = " -> ".join([ordered[0][0], *(v for _, v in ordered)])
            self.errors.append(
                m.error(
                    ("spec", "graph", "edges", edge_index[(closing[0], closing[1])]),
                    (
                        f"this edge {closing[0]} -> {closing[1]} closes a cycle in the service graph: {loop}; "
                        "traffic must flow one way, from the attachments to the sinks: remove or reverse an edge"
                    ),
                )
            )
        return g

    def _latency_paths(self, m: Manifest, names: set[str], g: nx.DiGraph) -> list[LatencyPathSpec]:
        paths = []
        for i, p in enumerate(m.data["spec"].get("latencyPaths", [])):
            where: PathKey = ("spec", "latencyPaths", i, "roles")
            unknown = [(j, r) for j, r in enumerate(p["roles"]) if r not in names]
            for j, r in unknown:
                self.errors.append(
                    m.error(
                        (*where, j),
                        f"role {r!r} is not in this graph (roles: {', '.join(sorted(names))}){self._hint(r, names)}",
                    )
                )
            if unknown:
                continue
            first = p["roles"][0]
            if g.in_degree(first) != 0:
                sources = sorted(n for n in g if g.in_degree(n) == 0)
                self.errors.append(
                    m.error(
                        (*where, 0),
                        (
                            f"a latency path must start at a source role (one without incoming edges, "
                            f"where traffic from the attachments enters): {first!r} has incoming edges from "
                            f"{', '.join(sorted(g.predecessors(first)))}; source roles: {', '.join(sources) or 'none'}"
                        ),
                    )
                )
            for j, (a, b) in enumerate(zip(p["roles"], p["roles"][1:], strict=False), start=1):
                if not g.has_edge(a, b):
                    after = sorted(g.successors(a)) if a in g else []
                    onward = (
                        f"edges from {a!r} go to {', '.join(after)}"
                        if after
                        else f"{a!r} has no outgoing edges"
                    )
                    self.errors.append(
                        m.error(
                            (*where, j),
                            (
                                f"no edge from {a!r} to {b!r} in spec.graph.edges: consecutive roles of a latency "
                                f"path must be joined by an edge; {onward}"
                            ),
                        )
                    )
            paths.append(LatencyPathSpec(p["name"], tuple(p["roles"])))
        return paths

    def _check_role(
        self,
        m: Manifest,
        path: PathKey,
        role: RoleSpec,
        package: NFPackageSpec | None,
        packages: Mapping[ObjectKey, NFPackageSpec],
    ) -> None:
        if package is None:
            self.errors.append(
                m.error(
                    (*path, "package"), self._missing("NFPackage", (self._key(m)[0], role.package), packages)
                )
            )
            return
        offered = set(package.flavors)
        usable = offered & set(role.flavors) if role.flavors is not None else offered
        if role.flavors is not None and not usable:
            self.errors.append(
                m.error(
                    (*path, "flavors"),
                    (
                        f"role {role.name!r} allows only {', '.join(sorted(role.flavors))}, but NFPackage "
                        f"{package.name!r} offers only {', '.join(sorted(offered))}: allow "
                        f"{' or '.join(sorted(offered))}, or add that flavour to the package"
                    ),
                )
            )
            return
        # Judge hosting against every node whose tier and runtimes are readable: a node with, say,
        # a broken link or a NaN availability is still a gateway, and blaming the role for it would
        # send the user the wrong way.
        hosts = {name: mm.data["spec"] for (_, name), mm in self.by_kind["EdgeNode"].items()}
        for (_, name), mm in self.rejected["EdgeNode"].items():
            spec = mm.data.get("spec")
            if name not in hosts and isinstance(spec, dict) and _readable_host(spec):
                hosts[name] = spec
        if not hosts:
            return
        on_tier = {n: s for n, s in hosts.items() if role.tiers is None or s["tier"] in role.tiers}
        if not on_tier:
            present = sorted({s["tier"] for s in hosts.values()})
            self.errors.append(
                m.error(
                    (*path, "tiers"),
                    (
                        f"no EdgeNode is on tier {' or '.join(sorted(role.tiers or ()))}, so role {role.name!r} "
                        f"cannot be placed; EdgeNodes are on tier {', '.join(present)}: change the role's tiers "
                        "or add such an EdgeNode"
                    ),
                )
            )
        elif not any(set(s["runtimes"]) & usable for s in on_tier.values()):
            tiers = f" on tier {' or '.join(sorted(role.tiers))}" if role.tiers else ""
            offered_there = ", ".join(f"{n} ({'+'.join(s['runtimes'])})" for n, s in sorted(on_tier.items()))
            self.errors.append(
                m.error(
                    (*path, "package"),
                    (
                        f"no EdgeNode{tiers} can run role {role.name!r}: it needs runtime "
                        f"{' or '.join(sorted(usable))} (the flavours of NFPackage {package.name!r}"
                        f"{' the role allows' if role.flavors is not None else ''}), and those nodes offer "
                        f"{offered_there}"
                    ),
                )
            )
        if package.config_schema and role.config:
            self._check_config(m, (*path, "config"), role.config, package)

    def _check_config(
        self, m: Manifest, path: PathKey, config: Mapping[str, Any], package: NFPackageSpec
    ) -> None:
        validator_cls = jsonschema.validators.validator_for(package.config_schema)
        for err in validator_cls(package.config_schema).iter_errors(config):
            if err.validator == "required" and not err.absolute_path:
                continue  # a slice's spec.config may still supply top-level fields; checked per slice
            for where, message in explain_error(err):
                self.errors.append(
                    m.error(
                        (*path, *where),
                        f"does not satisfy the configSchema of NFPackage {package.name!r}: {message}",
                    )
                )

    def _slices(
        self,
        services: Mapping[ObjectKey, NetworkServiceSpec],
        nodes: Mapping[str, EdgeNodeSpec],
        packages: Mapping[ObjectKey, NFPackageSpec],
    ) -> dict[ObjectKey, SliceSpec]:
        out: dict[ObjectKey, SliceSpec] = {}
        for key, m in self.by_kind["Slice"].items():
            ns = key[0]
            spec = m.data["spec"]
            n_before = len(self.errors)
            in_ns = [s for (sns, _), s in services.items() if sns == ns]
            known = sorted({p for s in in_ns for p in s.provides})
            if "services" in spec and "networkServiceRef" in spec:
                self.errors.append(
                    m.error(
                        ("spec", "networkServiceRef"),
                        "set either services or networkServiceRef, not both: services lets flyslice choose "
                        "a NetworkService, networkServiceRef names one; remove the other",
                    )
                )
            elif "services" not in spec and "networkServiceRef" not in spec:
                self.errors.append(
                    m.error(
                        ("spec",),
                        (
                            "set what the slice needs: services (e.g. services: "
                            f"[{', '.join(known) or 'data-collection'}]) or networkServiceRef: {{name: ...}}"
                        ),
                    )
                )
            for i, wanted in enumerate(spec.get("services", [])):
                if not any(wanted in s.provides for s in in_ns):
                    raw = [
                        mm
                        for (sns, _), mm in self.by_kind["NetworkService"].items()
                        if sns == ns and wanted in mm.data["spec"]["provides"]
                    ]
                    why = (
                        f" (NetworkService {raw[0].name!r} provides it but is invalid, see {raw[0].file}:{raw[0].line})"
                        if raw
                        else ""
                    )
                    guess = self._hint(wanted, known)
                    self.errors.append(
                        m.error(
                            ("spec", "services", i),
                            (
                                f"no valid NetworkService in namespace {ns!r} provides {wanted!r}{why}; "
                                f"provided: {', '.join(known) or 'nothing'}{guess}"
                            ),
                        )
                    )
            ref = spec.get("networkServiceRef", {}).get("name")
            if ref and (ns, ref) not in services:
                self.errors.append(
                    m.error(
                        ("spec", "networkServiceRef", "name"),
                        self._missing("NetworkService", (ns, ref), services),
                    )
                )
            for i, att in enumerate(spec["attachments"]):
                if att["node"] not in nodes:
                    self.errors.append(
                        m.error(
                            ("spec", "attachments", i, "node"),
                            self._missing("EdgeNode", ("", att["node"]), (("", n) for n in nodes)),
                        )
                    )
            if spec.get("sharing") == "allowed" and spec.get("isolation") == "required":
                self.errors.append(
                    m.error(
                        ("spec", "sharing"),
                        "sharing is allowed but isolation is required, and isolation forbids sharing NF "
                        "instances with other slices: remove sharing (or set it to forbidden), or set "
                        "isolation to none",
                    )
                )
            lifetime = None
            if "lifetime" in spec:
                try:
                    lifetime = parse_duration(spec["lifetime"], "lifetime")
                except QuantityError as exc:
                    self.errors.append(m.error(("spec", "lifetime"), str(exc)))
                else:
                    if lifetime <= 0:
                        self.errors.append(
                            m.error(
                                ("spec", "lifetime"),
                                f"{spec['lifetime']!r} is zero: the slice would expire at once; "
                                "omit lifetime for a slice that lives until deleted",
                            )
                        )
            if len(self.errors) != n_before:
                continue
            meta = m.data.get("metadata", {})
            slice_spec = SliceSpec(
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
                allow_teardown=_annotation(meta, ALLOW_TEARDOWN) == "true",
                sharing=spec.get("sharing", "allowed"),
            )
            found = candidates(Catalog(services=services), slice_spec)
            if not found:
                self.errors.append(m.error(("spec", "services"), self._no_single_service(slice_spec, in_ns)))
                continue
            self._check_slice_config(m, slice_spec, found[0], packages)
            if len(self.errors) == n_before:
                out[key] = slice_spec
        return out

    @staticmethod
    def _no_single_service(slice_: SliceSpec, in_ns: list[NetworkServiceSpec]) -> str:
        wanted = sorted(slice_.services)
        partial = [
            f"{s.name} provides {', '.join(sorted(s.provides & slice_.services))}"
            for s in sorted(in_ns, key=lambda s: s.name)
            if s.provides & slice_.services
        ]
        return (
            f"no single NetworkService provides all of {', '.join(wanted)}, and a slice runs one "
            f"NetworkService ({'; '.join(partial)}): ask for fewer services or add a NetworkService "
            "that provides them all"
        )

    def _check_slice_config(
        self,
        m: Manifest,
        slice_: SliceSpec,
        service: NetworkServiceSpec,
        packages: Mapping[ObjectKey, NFPackageSpec],
    ) -> None:
        """Per-role overrides must name a role of the service the slice gets and keep its config valid."""
        roles = {r.name: r for r in service.roles}
        for role_name, override in slice_.config.items():
            path: PathKey = ("spec", "config", role_name)
            if role_name not in roles:
                self.errors.append(
                    m.error(
                        path,
                        (
                            f"NetworkService {service.name!r}, which this slice uses, has no role {role_name!r} "
                            f"(roles: {', '.join(sorted(roles))}); config is keyed by role name"
                            f"{self._hint(role_name, roles)}"
                        ),
                    )
                )
                continue
            if not isinstance(override, dict):
                self.errors.append(
                    m.error(
                        path,
                        f"must be a mapping of config fields for role {role_name!r}, got {describe_value(override)}",
                    )
                )
                continue
        for role in service.roles:
            package = packages.get((slice_.namespace, role.package))
            override = slice_.config.get(role.name, {})
            if package is None or not package.config_schema or not isinstance(override, dict):
                continue
            merged = {**role.config, **override}
            validator_cls = jsonschema.validators.validator_for(package.config_schema)
            for err in validator_cls(package.config_schema).iter_errors(merged):
                self._slice_config_error(m, err, role, service, package, override)

    def _slice_config_error(
        self,
        m: Manifest,
        err: jsonschema.ValidationError,
        role: RoleSpec,
        service: NetworkServiceSpec,
        package: NFPackageSpec,
        override: Mapping[str, Any],
    ) -> None:
        where_role = f"role {role.name!r} of NetworkService {service.name!r}"
        if err.validator == "required" and not err.absolute_path:
            for field in err.validator_value:
                if field not in role.config and field not in override:
                    self.errors.append(
                        m.error(
                            ("spec", "config", role.name) if override else ("spec",),
                            (
                                f"{where_role} has no config field {field!r}, which NFPackage {package.name!r} "
                                f"requires: set it in the role's config or in this slice's "
                                f"spec.config.{role.name}.{field}"
                            ),
                        )
                    )
            return
        for where, message in explain_error(err):
            # Point into the override when the field is there; else at the role's entry.
            inside = bool(where) and where[0] in override
            at = "" if inside else f" (at {format_path(where) or 'the top level'})"
            self.errors.append(
                m.error(
                    ("spec", "config", role.name, *where) if inside else ("spec", "config", role.name),
                    (
                        f"merged over {where_role}, the config does not satisfy the configSchema of "
                        f"NFPackage {package.name!r}: {message}{at}"
                    ),
                )
            )

    # -- helpers -------------------------------------------------------------------------

    def _quantity(self, m: Manifest, path: PathKey, value: Any, field: str) -> bool:
        """Record an error and return True when ``value`` is not a usable quantity."""
        try:
            parsed = cpu_millis(value) if field == "cpu" else memory_bytes(value)
        except QuantityError as exc:
            self.errors.append(m.error(path, str(exc)))
            return True
        if parsed <= 0:
            example = "100m" if field == "cpu" else "64Mi"
            self.errors.append(
                m.error(
                    path, f"must be greater than zero, got {value!r}: use {QUANTITY_EXAMPLES}, e.g. {example}"
                )
            )
            return True
        return False

    @staticmethod
    def _hint(name: str, known: Iterable[str]) -> str:
        guess = difflib.get_close_matches(name, list(known), n=1)
        return f"; did you mean {guess[0]!r}?" if guess else ""


def _schema_problem(exc: jsonschema.SchemaError) -> str:
    """jsonschema's meta-schema findings, with the likely fix for the common ones."""
    if exc.absolute_path and exc.absolute_path[-1] == "type" and isinstance(exc.instance, str):
        types = "array, boolean, integer, null, number, object, string"
        guess = difflib.get_close_matches(exc.instance, types.split(", "), n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        return f"{exc.instance!r} is not a JSON schema type: use one of {types}{hint}"
    return str(exc.message)


def _annotation(meta: Any, name: str) -> str:
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    value = annotations.get(name) if isinstance(annotations, dict) else None
    return str(value).strip().lower() if value is not None else ""


def _readable_host(spec: dict[str, Any]) -> bool:
    """Whether a schema-rejected EdgeNode's spec still says, validly, where it is and what it runs."""
    fields = openapi_schema("EdgeNode")["properties"]["spec"]["properties"]
    tier, runtimes = spec.get("tier"), spec.get("runtimes")
    return (
        tier in fields["tier"]["enum"]
        and isinstance(runtimes, list)
        and bool(runtimes)
        and all(r in fields["runtimes"]["items"]["enum"] for r in runtimes)
    )


def _kind_from_spec(spec: Any) -> str:
    """The one flyslice kind whose spec has every field of ``spec``, for 'kind is missing' hints."""
    if not isinstance(spec, dict) or not spec:
        return ""
    fitting = [
        kind
        for kind in KINDS
        if set(spec) <= set(openapi_schema(kind)["properties"]["spec"].get("properties", {}))
    ]
    return fitting[0] if len(fitting) == 1 else ""
