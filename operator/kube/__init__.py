"""The Kubernetes runtime: the kopf operator that runs the shared reconcile core in a cluster.

Reads and writes flyslice custom resources through the API server, applies GitSources in-cluster,
and elects one active replica with a Lease.
"""

from typing import TYPE_CHECKING

from flyslice._lazy import lazy_exports

if TYPE_CHECKING:
    from flyslice.operator.kube.kopf_operator import OperatorOptions, main_operator

__getattr__ = lazy_exports(
    __name__,
    {
        "kopf_operator": ["OperatorOptions", "main_operator"],
    },
)

__all__ = ["OperatorOptions", "main_operator"]
