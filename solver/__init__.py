"""flyslice placement: which host and flavour (VNF or fNF) every NF of every slice gets.

Pure library: ``place`` (ILP), ``baseline`` (GNF's closest-to-user rule) and ``diagnose``.
"""

from .model import (
    Assignment,
    BudgetedPath,
    Edge,
    Flavor,
    FlavorDemand,
    Guarantee,
    Host,
    Link,
    NFDemand,
    Placement,
    Problem,
    Resources,
    SharedInstance,
    Sharing,
    SliceDemand,
    SlicePlacement,
    SolverStatus,
    Tier,
    Topology,
    Weights,
)
from .options import SolveOptions
from .placement import baseline, diagnose, place

__all__ = [
    "Assignment",
    "BudgetedPath",
    "Edge",
    "Flavor",
    "FlavorDemand",
    "Guarantee",
    "Host",
    "Link",
    "NFDemand",
    "Placement",
    "Problem",
    "Resources",
    "SharedInstance",
    "Sharing",
    "SliceDemand",
    "SlicePlacement",
    "SolveOptions",
    "SolverStatus",
    "Tier",
    "Topology",
    "Weights",
    "baseline",
    "diagnose",
    "place",
]
