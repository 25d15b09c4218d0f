"""The dependency lock: which inputs it covers and whether it still matches ``pyproject.toml``.

``requirements.lock`` pins every package ``tools/test.sh`` installs (runtime, the ``highs``,
``test`` and ``bench`` extras, and the build backend) with hashes. Its first lines record a
fingerprint of the dependency declarations it was compiled from, so CI can tell, with nothing
but the standard library, that someone changed ``pyproject.toml`` without refreshing the lock.

    python3 tools/lockfile.py inputs        # print the build requirements to compile (used by lock.sh)
    python3 tools/lockfile.py fingerprint   # print the fingerprint of pyproject.toml
    python3 tools/lockfile.py check         # exit 1 unless the lock matches pyproject.toml

``check`` also verifies, when ``packaging`` is importable, that every declared requirement has a
pin in the lock that satisfies its specifier (the fingerprint alone cannot see a hand edit).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The extras that tools/test.sh installs; the lock is compiled with exactly these.
LOCKED_EXTRAS = ("highs", "test", "bench")
LOCK_NAME = "requirements.lock"
FINGERPRINT_PREFIX = "# pyproject-fingerprint: "
REFRESH = "bash tools/lock.sh"


def _pyproject(root: Path) -> dict[str, Any]:
    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))


def declared_requirements(root: Path = ROOT) -> list[str]:
    """Every requirement string the lock must satisfy, in a stable order."""
    data = _pyproject(root)
    project = data["project"]
    reqs: list[str] = list(project.get("dependencies", []))
    for extra in LOCKED_EXTRAS:
        reqs.extend(project.get("optional-dependencies", {}).get(extra, []))
    reqs.extend(data.get("build-system", {}).get("requires", []))
    return reqs


def build_requirements(root: Path = ROOT) -> list[str]:
    return list(_pyproject(root).get("build-system", {}).get("requires", []))


def fingerprint(root: Path = ROOT) -> str:
    data = _pyproject(root)
    project = data["project"]
    declared = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "extras": {e: project.get("optional-dependencies", {}).get(e, []) for e in LOCKED_EXTRAS},
        "build-system": data.get("build-system", {}).get("requires", []),
    }
    blob = json.dumps(declared, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def recorded_fingerprint(lock_text: str) -> str | None:
    for line in lock_text.splitlines():
        if line.startswith(FINGERPRINT_PREFIX):
            return line[len(FINGERPRINT_PREFIX) :].strip()
    return None


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked_pins(lock_text: str) -> dict[str, list[str]]:
    """Normalised name -> pinned versions (a universal lock may pin one name per marker)."""
    pins: dict[str, list[str]] = {}
    for line in lock_text.splitlines():
        m = _PIN.match(line)
        if m:
            pins.setdefault(_normalise(m.group(1)), []).append(m.group(2))
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def problems(root: Path = ROOT) -> list[str]:
    lock = root / LOCK_NAME
    if not lock.is_file():
        return [f"{LOCK_NAME} is missing; create it with `{REFRESH}`"]
    text = lock.read_text(encoding="utf-8")
    found: list[str] = []
    recorded = recorded_fingerprint(text)
    if recorded != fingerprint(root):
        found.append(
            f"{LOCK_NAME} was compiled from other dependency declarations than pyproject.toml has now "
            f"(fingerprint {recorded or 'missing'} != {fingerprint(root)}); refresh it with `{REFRESH}`"
        )
    found.extend(_unsatisfied(text, root))
    return found


def _unsatisfied(text: str, root: Path) -> list[str]:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # the bare interpreter before install: the fingerprint check stands alone
        return []
    pins = locked_pins(text)
    found = []
    for raw in declared_requirements(root):
        req = Requirement(raw)
        versions = pins.get(_normalise(req.name))
        if not versions:
            found.append(f"pyproject.toml requires {raw!r} but {LOCK_NAME} pins no {req.name}")
            continue
        bad = [v for v in versions if not req.specifier.contains(v, prereleases=True)]
        if bad:
            found.append(f"pyproject.toml requires {raw!r} but {LOCK_NAME} pins {req.name}=={', '.join(bad)}")
    return found


def main(argv: list[str]) -> int:
    root = ROOT
    if len(argv) > 3 and argv[-2] == "--root":
        root, argv = Path(argv[-1]), argv[:-2]
    command = argv[1] if len(argv) > 1 else "check"
    if command == "inputs":
        print("\n".join(build_requirements()))
        return 0
    if command == "fingerprint":
        print(fingerprint(root))
        return 0
    if command == "check":
        found = problems(root)
        for p in found:
            print(f"lock: {p}", file=sys.stderr)
        return 1 if found else 0
    print(f"usage: {argv[0]} [inputs|fingerprint|check] [--root DIR]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
