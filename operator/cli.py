"""The ``flyslice`` command line.

Exit codes: 0 success, 1 the input is invalid (or a slice could not be placed with
``plan --strict``), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from .errors import ManifestError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flyslice",
        description="Declarative, intent-based GitOps reconciler for IoT network slices.",
    )
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("validate", help="check manifests against the CRD schemas and each other")
    p.add_argument("paths", nargs="+", metavar="PATH", help="YAML files or directories")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="place every slice and print the placement")
    p.add_argument("paths", nargs="+", metavar="PATH", help="YAML files or directories")
    p.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    p.add_argument(
        "--method",
        choices=["ilp", "baseline"],
        default="ilp",
        help="ilp (default) or the greedy closest-to-user baseline",
    )
    p.add_argument("--solver", default=None, help="ILP solver: cbc (default) or highs")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS")
    p.add_argument("--strict", action="store_true", help="exit 1 when a slice is not admitted")
    p.set_defaults(func=cmd_plan)
    return parser


def _print_errors(errors: list[ManifestError]) -> None:
    for e in errors:
        prefix = "note" if e.severity == "note" else "error"
        print(f"{prefix}: {e}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from .validation import validate_paths

    result = validate_paths(args.paths)
    n_errors = sum(e.severity == "error" for e in result.errors)
    if args.output == "json":
        doc: dict[str, Any] = {
            "valid": n_errors == 0,
            "objects": sorted("/".join(p for p in key if p) for key in result.sources),
            "errors": [e.as_dict() for e in result.errors],
        }
        print(json.dumps(doc, indent=2))
    else:
        _print_errors(result.errors)
        print(f"{len(result.sources)} valid object(s), {n_errors} error(s)")
    return 1 if n_errors else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from flyslice import solver

    from .plan_format import plan_document, render_table
    from .planning import plan
    from .validation import validate_paths

    result = validate_paths(args.paths)
    errors = [e for e in result.errors if e.severity == "error"]
    _print_errors(result.errors)
    opts: dict[str, Any] = {}
    if args.solver:
        opts["solver"] = args.solver
    if args.time_limit is not None:
        opts["time_limit_s"] = args.time_limit
    the_plan = plan(result.catalog, method=args.method, options=solver.SolveOptions(**opts))
    doc = plan_document(the_plan, result.errors)
    if args.output == "json":
        print(json.dumps(doc, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(doc, sort_keys=False), end="")
    else:
        print(render_table(doc))
    rejected = [s for s in doc["slices"] if not s["admitted"]]
    return 1 if errors or (args.strict and rejected) else 0


if __name__ == "__main__":
    raise SystemExit(main())
