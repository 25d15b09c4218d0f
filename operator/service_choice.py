"""Seed 000, step 1: choose a NetworkService from the catalog for a slice's intent."""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import Catalog, NetworkServiceSpec, SliceSpec


@dataclass(frozen=True)
class ServiceChoice:
    slice_key: str
    service: NetworkServiceSpec | None
    #: Why no service could be chosen, when ``service`` is None.
    reason: str = ""


def candidates(catalog: Catalog, slice_: SliceSpec) -> list[NetworkServiceSpec]:
    """Services that satisfy the intent, best first.

    A service qualifies when it provides every requested service; the highest ``priority``
    wins, then the smallest graph (fewest NFs to run), then the name for determinism.
    """
    if slice_.network_service_ref:
        ref = catalog.services.get((slice_.namespace, slice_.network_service_ref))
        return [ref] if ref else []
    fitting = [
        s
        for (ns, _), s in catalog.services.items()
        if ns == slice_.namespace and slice_.services <= s.provides
    ]
    return sorted(fitting, key=lambda s: (-s.priority, len(s.roles), s.name))


def choose(catalog: Catalog, slice_: SliceSpec) -> ServiceChoice:
    found = candidates(catalog, slice_)
    if found:
        return ServiceChoice(slice_.key, found[0])
    if slice_.network_service_ref:
        reason = f"NetworkService {slice_.network_service_ref!r} does not exist"
    else:
        reason = f"no NetworkService in namespace {slice_.namespace!r} provides all of " + ", ".join(
            sorted(slice_.services)
        )
    return ServiceChoice(slice_.key, None, reason)
