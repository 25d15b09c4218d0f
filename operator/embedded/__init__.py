"""The embedded runtime: ``flyslice up`` on one machine, no cluster.

Runs the shared reconcile core against a directory or git source, one in-process agent per EdgeNode,
and serves the read-only status API and the terminal live view.
"""

from flyslice.operator.embedded.status_view import render_status
from flyslice.operator.embedded.up import UpOptions, run_up

__all__ = ["UpOptions", "render_status", "run_up"]
