"""The NF-code trust options every agent command shares: ``--trusted-key`` and ``--module-dir``.

``flyslice agent`` and ``flyslice agent --kube`` define them here once (same names, help and checks);
``flyslice up`` has its own, because there they set the policy of every embedded agent.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class TrustOptionError(ValueError):
    """A ``--trusted-key`` file that cannot be read or is not an ed25519 public key (one line)."""


def add_module_trust_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="FILE",
        help="ed25519 public key (PEM, raw or base64) NF modules and image signatures must verify with "
        "(repeatable)",
    )
    p.add_argument(
        "--module-dir",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="directory file: modules may be loaded from (repeatable; default: none, builtin: only)",
    )


def load_module_keys(files: Iterable[str]) -> list[Ed25519PublicKey]:
    """The keys of every ``--trusted-key FILE``; the first unusable one raises :class:`TrustOptionError`."""
    from flyslice.nodeagent.runtime.modules import load_public_key

    keys = []
    for name in files:
        try:
            keys.append(load_public_key(Path(name).read_bytes()))
        except OSError as exc:
            raise TrustOptionError(f"--trusted-key {name}: {exc.strerror or exc}") from None
        except ValueError as exc:  # also binascii.Error: not PEM, not 32 bytes, not base64
            raise TrustOptionError(
                f"--trusted-key {name}: not an ed25519 public key ({exc}); give PEM, raw or base64"
            ) from None
    return keys
