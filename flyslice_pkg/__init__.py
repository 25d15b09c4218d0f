"""flyslice: a declarative, intent-based GitOps reconciler for IoT network slices.

The components live in top-level directories of the repository and are mapped
under this package by ``pyproject.toml``:

* ``flyslice.crds``      -- the CustomResourceDefinitions (single source of truth for schemas)
* ``flyslice.solver``    -- pure placement: problem model, PuLP ILP, baseline, diagnosis
* ``flyslice.operator``  -- control plane: manifests, reconcile core, GitOps, kopf, CLI
* ``flyslice.nodeagent`` -- per-host agent running fNFs in-process and VNFs as pods/processes
"""

__version__ = "0.1.0"
