"""``flyslice.testing``: placement tests for manifest repositories (docs/testing.md).

The implementation lives in ``flyslice.operator.testing``; this is the short, stable import path, and a
pytest plugin: ``pytest_plugins = ["flyslice.testing"]`` in a ``conftest.py`` adds the ``flyslice_plan``
fixture.
"""

from flyslice.operator.testing import InvalidManifests, PlanUnderTest, flyslice_plan, load_plan

__all__ = ["InvalidManifests", "PlanUnderTest", "flyslice_plan", "load_plan"]
