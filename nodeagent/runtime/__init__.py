"""Where NF code runs: fNFs as modules loaded into the agent, VNFs in processes of their own.

The Modular Platform (install, start, stop, update, uninstall, configure), module references and
their digest and signature checks, cosign-compatible image signatures (``image_signatures``), and the
VNF drivers and the runner a VNF process executes.
"""

from typing import TYPE_CHECKING

from flyslice._lazy import lazy_exports

if TYPE_CHECKING:
    from flyslice.nodeagent.runtime.drivers import LocalProcessDriver, VnfDriver, VnfObservation
    from flyslice.nodeagent.runtime.modules import (
        ModuleLoader,
        ModuleRefError,
        load_public_key,
        module_digest,
    )
    from flyslice.nodeagent.runtime.platform import ModularPlatform

__getattr__ = lazy_exports(
    __name__,
    {
        "drivers": ["LocalProcessDriver", "VnfDriver", "VnfObservation"],
        "modules": ["ModuleLoader", "ModuleRefError", "load_public_key", "module_digest"],
        "platform": ["ModularPlatform"],
    },
)

__all__ = [
    "LocalProcessDriver",
    "ModularPlatform",
    "ModuleLoader",
    "ModuleRefError",
    "VnfDriver",
    "VnfObservation",
    "load_public_key",
    "module_digest",
]
