"""The embedded runtime: ``flyslice up`` on one machine, no cluster.

Runs the shared reconcile core against a directory or git source, one in-process agent per EdgeNode,
and serves the read-only status API and the terminal live view.
"""

from typing import TYPE_CHECKING

from flyslice._lazy import lazy_exports

if TYPE_CHECKING:
    from flyslice.operator.embedded.status_view import render_status
    from flyslice.operator.embedded.up import UpOptions, run_up

__getattr__ = lazy_exports(
    __name__,
    {
        "status_view": ["render_status"],
        "up": ["UpOptions", "run_up"],
    },
)

__all__ = ["UpOptions", "render_status", "run_up"]
