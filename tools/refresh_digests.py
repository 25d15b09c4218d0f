"""Rewrite the `digest:` of every `module: builtin:<name>` flavour in examples/ to the shipped bytes.

    python tools/refresh_digests.py          # rewrite in place
    python tools/refresh_digests.py --check  # exit 1 when a digest is stale (the tests do this)

A text edit, not a YAML round-trip, so comments and layout stay as written.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from flyslice.nodeagent.runtime.modules import module_digest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
_PAIR = re.compile(r"(module:\s*(builtin:[a-z0-9_]+)\s*\n(\s*)digest:\s*)(sha256:[0-9a-f]{64})")


def refresh(text: str) -> str:
    return _PAIR.sub(lambda m: m.group(1) + module_digest(m.group(2)), text)


def main(argv: list[str]) -> int:
    stale = []
    for f in sorted(EXAMPLES.rglob("*.yaml")):
        text = f.read_text()
        new = refresh(text)
        if new != text:
            stale.append(f)
            if "--check" not in argv:
                f.write_text(new)
    if stale and "--check" in argv:
        print("stale digests in: " + ", ".join(str(f) for f in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
