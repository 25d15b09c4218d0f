"""Planning: from a validated catalog to a placement and the per-node actions that realise it.

Chooses a network service for each slice intent, expands it into a solver ``Problem``, calls
``flyslice.solver`` and turns the placement into NFInstance actions and the documented plan format.
Pure: no I/O, no Kubernetes, no git.
"""

from typing import TYPE_CHECKING

from flyslice._lazy import lazy_exports

if TYPE_CHECKING:
    from flyslice.operator.planning.actions import InstanceAction, slice_actions
    from flyslice.operator.planning.pipeline import plan
    from flyslice.operator.planning.plan_format import plan_document, render_table

__getattr__ = lazy_exports(
    __name__,
    {
        "actions": ["InstanceAction", "slice_actions"],
        "pipeline": ["plan"],
        "plan_format": ["plan_document", "render_table"],
    },
)

__all__ = ["InstanceAction", "plan", "plan_document", "render_table", "slice_actions"]
