"""What the agent converges to (InstanceSpec) and what it reports back (InstanceStatus).

``InstanceSpec`` is the agent-side view of one NFInstance: built from the NFInstance object of the
Kubernetes API or from the embedded controller's action, and stored in the agent's on-disk cache.
Its ``fingerprint`` covers every field the agent acts on, so "changed" vs "same" never depends on
a generation counter the agent might not have seen.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from flyslice.nodeagent.quantity import parse_memory


class SpecError(ValueError):
    """An instance spec with a missing or malformed field; the message names it."""


@dataclass(frozen=True)
class NextHop:
    instance: str
    node: str
    #: host:port of the next hop's receiver; empty = resolve through the agent's peer table.
    address: str = ""

    def to_dict(self) -> dict[str, str]:
        d = {"instance": self.instance, "node": self.node}
        if self.address:
            d["address"] = self.address
        return d


_ADDR_RE = re.compile(r"^[^\s:]+:\d{1,5}$")


@dataclass(frozen=True)
class SharedInstance:
    """``spec.sharedInstance`` of an NFInstance: this instance is one tenant of an instance that several
    slices share. NFInstances of one node with the same ``name`` are ONE running NF (one object and
    worker thread for an fNF, one runner process for a local-process VNF)."""

    name: str
    #: True: each tenant keeps its own config; False: every tenant must carry the same config.
    per_tenant_config: bool = False
    #: What one tenant adds to the instance's resources (``spec.resources`` is the instance's own).
    per_tenant_cpu: str = ""
    per_tenant_memory: str = ""

    @property
    def per_tenant_memory_bytes(self) -> int:
        return parse_memory(self.per_tenant_memory) if self.per_tenant_memory else 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "perTenantConfig": self.per_tenant_config}
        per = {k: v for k, v in (("cpu", self.per_tenant_cpu), ("memory", self.per_tenant_memory)) if v}
        if per:
            d["perTenant"] = per
        return d

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> SharedInstance | None:
        """Parsed tolerantly: absent or null means "not shared"; a present block must name the instance."""
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise SpecError(f"{where}: field 'sharedInstance' must be an object")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise SpecError(f"{where}: field 'sharedInstance.name' must be a non-empty string")
        per_tenant_config = raw.get("perTenantConfig", False)
        if per_tenant_config is None:
            per_tenant_config = False
        if not isinstance(per_tenant_config, bool):
            raise SpecError(f"{where}: field 'sharedInstance.perTenantConfig' must be a boolean")
        per = raw.get("perTenant") or {}
        if not isinstance(per, Mapping):
            raise SpecError(f"{where}: field 'sharedInstance.perTenant' must be an object")
        cpu, memory = str(per.get("cpu", "") or ""), str(per.get("memory", "") or "")
        if memory:
            try:
                parse_memory(memory)
            except ValueError as exc:
                raise SpecError(f"{where}: sharedInstance.perTenant.memory: {exc}") from exc
        return cls(name, per_tenant_config, cpu, memory)


@dataclass(frozen=True, eq=True)
class InstanceSpec:
    name: str
    slice: str
    role: str
    package: str
    flavor: str  # "fnf" | "vnf"
    module: str = ""
    digest: str = ""
    entrypoint: str = "NF"
    image: str = ""
    signature: str = ""
    #: Cosign-compatible signature of ``image``'s digest (base64); the pod driver verifies it.
    image_signature: str = ""
    #: The namespace's policy requires a verified signature (see ``Agent._check_signing_policy``).
    signature_required: bool = False
    config: Mapping[str, Any] = field(default_factory=dict, hash=False)
    next_hops: tuple[NextHop, ...] = ()
    namespace: str = "default"
    node: str = ""
    attachment: str = ""
    cpu: str = ""
    memory: str = ""
    generation: int = 0
    #: Set when this instance is one tenant of an instance shared by several slices (see SharedInstance).
    shared: SharedInstance | None = None

    @property
    def memory_bytes(self) -> int | None:
        return parse_memory(self.memory) if self.memory else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "slice": self.slice,
            "role": self.role,
            "package": self.package,
            "flavor": self.flavor,
            "config": dict(self.config),
            "nextHops": [h.to_dict() for h in self.next_hops],
            "generation": self.generation,
        }
        for key in ("module", "digest", "image", "signature", "node", "attachment"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        d["entrypoint"] = self.entrypoint
        if self.image_signature:
            d["imageSignature"] = self.image_signature
        if self.signature_required:
            d["signatureRequired"] = True
        if self.cpu or self.memory:
            d["resources"] = {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v}
        if self.shared is not None:
            d["sharedInstance"] = self.shared.to_dict()
        return d

    @cached_property
    def fingerprint(self) -> str:
        d = self.to_dict()
        d.pop("generation")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def code_fingerprint(self) -> tuple[str, str, str, str, str]:
        """What decides which code runs; a change needs a hot swap (fNF) or a relaunch (VNF)."""
        return (self.flavor, self.module, self.digest, self.entrypoint, self.image)

    def sharing_mismatch(self, other: InstanceSpec) -> str:
        """Why this tenant cannot join the shared instance ``other`` (a tenant of it) runs; "" if it can.

        Tenants of one instance run one NF object (or process): the same package, code, signature and
        footprint, and -- unless each tenant keeps its own config -- the same config.
        """
        mine, theirs = self.shared, other.shared
        if mine is None or theirs is None:
            return "not a tenant of a shared instance"
        fields = [
            ("flavor", self.flavor, other.flavor),
            ("package", self.package, other.package),
            ("module", self.module, other.module),
            ("digest", self.digest, other.digest),
            ("entrypoint", self.entrypoint, other.entrypoint),
            ("image", self.image, other.image),
            ("signature", self.signature, other.signature),
            ("imageSignature", self.image_signature, other.image_signature),
            ("resources.cpu", self.cpu, other.cpu),
            ("resources.memory", self.memory, other.memory),
            ("sharedInstance.perTenantConfig", mine.per_tenant_config, theirs.per_tenant_config),
            ("sharedInstance.perTenant", mine.to_dict().get("perTenant"), theirs.to_dict().get("perTenant")),
        ]
        if not mine.per_tenant_config:
            fields.append(("config", dict(self.config), dict(other.config)))
        for key, a, b in fields:
            if a != b:
                shown_a, shown_b = (_short(a), _short(b))
                return f"{key} {shown_a} differs from the running tenants' {shown_b}"
        return ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "instance") -> InstanceSpec:
        """From the cache format (``to_dict``) or an NFInstance ``spec`` plus ``name``."""
        if not isinstance(d, Mapping):
            raise SpecError(f"{where}: must be an object")
        name = d.get("name")
        if isinstance(name, str):
            where = f"instance {name}" if where == "instance" else f"{where}: instance {name}"

        def text(key: str, required: bool = False, default: str = "") -> str:
            value = d.get(key, default)
            if not isinstance(value, str) or (required and not value):
                raise SpecError(f"{where}: field {key!r} must be a {'non-empty ' if required else ''}string")
            return value

        flavor = text("flavor", True)
        if flavor not in ("fnf", "vnf"):
            raise SpecError(f"{where}: field 'flavor' must be 'fnf' or 'vnf', got {flavor!r}")
        module, digest = text("module"), text("digest")
        if flavor == "fnf" and not (module and digest):
            raise SpecError(f"{where}: an fnf instance needs 'module' and 'digest'")
        if flavor == "vnf" and not (text("image") or module):
            raise SpecError(
                f"{where}: a vnf instance needs 'image' (or 'module' for the local-process driver)"
            )
        if bool(module) != bool(digest):
            raise SpecError(f"{where}: 'module' and 'digest' go together")
        config = d.get("config", {})
        if not isinstance(config, Mapping):
            raise SpecError(f"{where}: field 'config' must be an object")
        hops_raw = d.get("nextHops", d.get("next_hops", []))
        if not isinstance(hops_raw, list):
            raise SpecError(f"{where}: field 'nextHops' must be a list")
        hops = []
        for i, h in enumerate(hops_raw):
            if not isinstance(h, Mapping) or not isinstance(h.get("instance"), str) or not h.get("instance"):
                raise SpecError(f"{where}: nextHops[{i}] needs a string 'instance'")
            address = h.get("address", "")
            if address and (not isinstance(address, str) or not _ADDR_RE.match(address)):
                raise SpecError(f"{where}: nextHops[{i}].address must be host:port, got {address!r}")
            hops.append(NextHop(str(h["instance"]), str(h.get("node", "")), str(address or "")))
        resources = d.get("resources", {}) or {}
        if not isinstance(resources, Mapping):
            raise SpecError(f"{where}: field 'resources' must be an object")
        memory = str(resources.get("memory", "") or "")
        if memory:
            try:
                parse_memory(memory)
            except ValueError as exc:
                raise SpecError(f"{where}: resources.memory: {exc}") from exc
        signature_required = d.get("signatureRequired", False)
        if not isinstance(signature_required, bool):
            raise SpecError(f"{where}: field 'signatureRequired' must be a boolean")
        generation = d.get("generation", 0)
        if not isinstance(generation, int):
            raise SpecError(f"{where}: field 'generation' must be an integer")
        shared = SharedInstance.from_dict(d.get("sharedInstance"), where)
        return cls(
            name=text("name", True),
            slice=text("slice", True),
            role=text("role", True),
            package=text("package", True),
            flavor=flavor,
            module=module,
            digest=digest,
            entrypoint=text("entrypoint", default="NF") or "NF",
            image=text("image"),
            signature=text("signature"),
            image_signature=text("imageSignature"),
            signature_required=signature_required,
            config=json.loads(json.dumps(dict(config))),
            next_hops=tuple(hops),
            namespace=text("namespace", default="default") or "default",
            node=text("node"),
            attachment=text("attachment"),
            cpu=str(resources.get("cpu", "") or ""),
            memory=memory,
            generation=generation,
            shared=shared,
        )

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> InstanceSpec:
        """From a whole NFInstance object (``metadata`` + ``spec``), e.g. read from the API server."""
        meta = obj.get("metadata") or {}
        spec = obj.get("spec")
        if not isinstance(spec, Mapping):
            raise SpecError(f"NFInstance {meta.get('name', '?')}: missing spec")
        d = {
            **spec,
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", "default"),
            "generation": meta.get("generation", 0),
        }
        return cls.from_dict(d, where="NFInstance")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class InstanceStatus:
    """The agent's report for one instance (the NFInstance ``status``)."""

    name: str
    state: str
    message: str = ""
    flavor: str = ""
    fingerprint: str = ""
    generation: int = 0
    address: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    #: Mean processing time per message in this instance.
    latency_ms: float | None = None
    #: Mean end-to-end latency of messages that ended their path here (sinks only).
    e2e_latency_ms: float | None = None
    started_at: float | None = None
    #: How often the agent restarted the instance after a failure (crash, hang, frozen runner).
    restarts: int = 0
    #: A tenant of a shared instance: that instance's name (``spec.sharedInstance.name``).
    shared_instance: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}
