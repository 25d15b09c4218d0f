"""Single entry point for every benchmark suite.

    python benchmarks/run.py SUITE [--quick] [--json FILE]

A suite is a module ``benchmarks/suite_<SUITE>.py`` with a function
``run(quick: bool) -> dict`` (``cluster`` needs root and the binaries of tools/kubeenv/build.sh and
build-node.sh: it runs a real kubelet node). Every suite measures its own baseline in the same
run, so figures are ratios on this machine, never absolute claims. The machine's
description is attached to the JSON so figures are always reported with it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def machine() -> dict[str, Any]:
    import psutil

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def suites() -> list[str]:
    return sorted(p.stem.removeprefix("suite_") for p in HERE.glob("suite_*.py"))


def print_table(result: dict[str, Any]) -> None:
    for key, value in result.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            columns = list(value[0].keys())
            print(f"\n{key}:")
            print("  ".join(f"{c:>12}" for c in columns))
            for row in value:
                print("  ".join(f"{_fmt(row.get(c)):>12}" for c in columns))
        elif not isinstance(value, dict | list):
            print(f"{key:<32} {_fmt(value)}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("suite", choices=suites())
    parser.add_argument(
        "--quick", action="store_true", help="small sizes; about a minute (cluster: 2-3, it starts a node)"
    )
    parser.add_argument("--json", type=Path, help="write the result as JSON to this file")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    module = importlib.import_module(f"suite_{args.suite}")
    result: dict[str, Any] = module.run(quick=args.quick)
    result = {"suite": args.suite, "quick": args.quick, "machine": machine(), **result}
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    # A suite that checks a contract as it measures (fuzz) counts what broke it; CI must see a failure.
    return 1 if result.get("failures") else 0


if __name__ == "__main__":
    raise SystemExit(main())
