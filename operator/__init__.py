"""flyslice's control plane, imported as ``flyslice.operator``.

Sub-packages by concern, imports pointing one way (``tests/test_layout.py`` keeps them so):
``intake`` (manifests in, validated catalog out) -> ``planning`` (service choice, solver, actions)
and ``gitops`` (where manifests come from) -> ``reconcile`` (the core both runtimes share) and
``status_api`` -> the runtimes ``embedded`` (``flyslice up``) and ``kube`` (the kopf operator) ->
``cli``.

The directory is called ``operator/`` and the repository root ends up on ``sys.path`` whenever
Python runs from a checkout (``python -m pip``, ``python -m pytest``). When that makes Python
import this package as the top-level ``operator`` module, the block below hands over the standard
library's ``operator`` instead, so nothing that needs the real one (``collections``, ``pip`` ...)
ever sees the control plane. It uses only what is loaded before any import can run (``os``,
``sys``, builtins): ``importlib.util`` itself needs ``operator``.
"""

if __name__ == "operator":
    import os as _os
    import sys as _sys

    _path = _os.path.join(_os.path.dirname(_os.__file__), "operator.py")
    _stdlib = type(_sys)("operator")
    _stdlib.__file__ = _path
    # The import system returns whatever sys.modules holds once this file has run.
    _sys.modules["operator"] = _stdlib
    with open(_path, encoding="utf-8") as _source:
        exec(compile(_source.read(), _path, "exec"), _stdlib.__dict__)
