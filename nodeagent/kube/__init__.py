"""The agent in cluster mode: a Kubernetes API server is its control plane.

Reads its node's NFInstances, writes their status and EdgeNode heartbeats, and runs VNFs as pods
pinned to its node.
"""

from flyslice.nodeagent.kube.agent import api_client_for, main

__all__ = ["api_client_for", "main"]
