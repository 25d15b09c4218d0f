"""Seed 000, step 1: choose a NetworkService from the catalog for a slice's intent."""

from __future__ import annotations

from dataclasses import dataclass

from flyslice.operator.intake.catalog import Catalog, NetworkServiceSpec, SliceSpec, candidates

__all__ = ["ServiceChoice", "candidates", "choose"]


@dataclass(frozen=True)
class ServiceChoice:
    slice_key: str
    service: NetworkServiceSpec | None
    #: Why no service could be chosen, when ``service`` is None.
    reason: str = ""


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
