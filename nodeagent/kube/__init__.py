"""The agent in cluster mode: a Kubernetes API server is its control plane.

Reads its node's NFInstances, writes their status and EdgeNode heartbeats, and runs VNFs as pods
pinned to its node.
"""

from typing import TYPE_CHECKING

from flyslice._lazy import lazy_exports

if TYPE_CHECKING:
    from flyslice.nodeagent.kube.agent import api_client_for, main

__getattr__ = lazy_exports(
    __name__,
    {
        "agent": ["api_client_for", "main"],
    },
)

__all__ = ["api_client_for", "main"]
