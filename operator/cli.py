"""The ``flyslice`` command line.

Exit codes: 0 success, 1 the input is invalid (or a slice could not be placed with
``plan --strict``), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from flyslice.operator.intake.errors import ManifestError


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["agent"]:
        # The agent has its own options (and --kube mode); argparse cannot forward "--..." verbatim.
        from flyslice.nodeagent.__main__ import main as agent_main

        return agent_main(argv[1:])
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

    p = sub.add_parser(
        "up", help="reconcile a directory or git repository on this machine, no cluster needed"
    )
    p.add_argument("source", help="a directory of manifests, or a git repository (URL or local clone)")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--branch", help="git branch to follow (default main)")
    ref.add_argument("--tag", help="git tag to check out")
    ref.add_argument("--commit", help="git commit to pin")
    p.add_argument("--path", default=".", help="directory inside the repository (default: its root)")
    p.add_argument("--interval", default=None, help="git poll interval, e.g. 30s (default 1m)")
    p.add_argument("--status-addr", default="127.0.0.1:7433", help="where the read-only status API listens")
    p.add_argument("--webhook-addr", default=None, help="serve a git push webhook here, e.g. 127.0.0.1:7434")
    p.add_argument("--state-dir", type=Path, default=None, help="agents' caches and git mirrors")
    p.add_argument("--mqtt", default=None, metavar="HOST:PORT", help="MQTT broker the devices publish to")
    p.add_argument("--heartbeat-timeout", type=float, default=30.0, metavar="SECONDS")
    _add_trust_options(p)
    p.add_argument("--no-view", action="store_true", help="no live terminal view")
    p.add_argument(
        "--exit-when-ready",
        type=float,
        default=None,
        metavar="TIMEOUT",
        help="exit 0 once every slice is Ready, 1 if not within TIMEOUT seconds",
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("status", help="show what a running `flyslice up` reports")
    p.add_argument("--status-addr", default="127.0.0.1:7433")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("digest", help="print the sha256 digest of an NF module reference")
    p.add_argument("module", help="builtin:<name> or file:/absolute/path.py")
    p.set_defaults(func=cmd_digest)

    # Listed for `flyslice --help`; main() hands `flyslice agent ...` to the agent's own parser.
    sub.add_parser("agent", help="run a node agent (see `flyslice agent --help`)", add_help=False)

    p = sub.add_parser("operator", help="run the Kubernetes operator (kopf) against a cluster")
    p.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable; default: the whole cluster)",
    )
    p.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, then ~/.kube/config)"
    )
    p.add_argument(
        "--liveness",
        default="0.0.0.0:8080",
        metavar="HOST:PORT",
        help="serve /healthz (and /status) here; 'off' to disable",
    )
    p.add_argument(
        "--lease-namespace",
        default=None,
        help="namespace of the leader-election Lease (default: $POD_NAMESPACE or flyslice-system)",
    )
    p.add_argument("--lease-name", default="flyslice-operator")
    p.add_argument(
        "--identity", default=None, help="leader-election identity (default: pod/host name + random)"
    )
    p.add_argument("--heartbeat-timeout", type=float, default=30.0, metavar="SECONDS")
    _add_trust_options(p)
    p.add_argument(
        "--resync", type=float, default=10.0, metavar="SECONDS", help="pass interval without changes"
    )
    p.add_argument("--debounce", type=float, default=0.5, metavar="SECONDS")
    p.add_argument("--lease-duration", type=float, default=15.0, metavar="SECONDS")
    p.add_argument("--renew", type=float, default=5.0, metavar="SECONDS")
    p.add_argument("--git-cache", type=Path, default=Path("/tmp/flyslice-gitsources"))
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_operator)  # fmt: skip
    return parser


def _add_trust_options(p: argparse.ArgumentParser) -> None:
    """Commit-signature policy for git sources (``up`` and the operator's GitSources)."""
    p.add_argument(
        "--trust-gpg-key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="apply only commits signed by this GPG public key (repeatable)",
    )
    p.add_argument(
        "--trust-ssh-signers",
        type=Path,
        default=None,
        metavar="FILE",
        help="apply only commits signed by a key of this SSH allowed-signers file",
    )


def _print_errors(errors: list[ManifestError]) -> None:
    for e in errors:
        prefix = "note" if e.severity == "note" else "error"
        print(f"{prefix}: {e}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from flyslice.operator.intake.validation import validate_paths

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
    from flyslice.operator.intake.validation import validate_paths
    from flyslice.operator.planning.pipeline import plan
    from flyslice.operator.planning.plan_format import plan_document, render_table

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


def cmd_up(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import os

    from flyslice.operator.embedded.up import DEFAULT_STATE_DIR, UpOptions, run_up
    from flyslice.operator.gitops.spec import GitSpecError, parse_interval
    from flyslice.operator.status_api import parse_addr

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        mqtt = parse_addr(args.mqtt) if args.mqtt else None
        parse_addr(args.status_addr)
        interval = parse_interval(args.interval, "--interval") if args.interval else None
    except (ValueError, GitSpecError) as exc:
        print(f"flyslice up: {exc}", file=sys.stderr)
        return 2
    secret = os.environ.get("FLYSLICE_WEBHOOK_SECRET", "")
    if args.webhook_addr and not secret:
        print(
            "flyslice up: --webhook-addr needs the shared secret in FLYSLICE_WEBHOOK_SECRET", file=sys.stderr
        )
        return 2
    opts = UpOptions(
        source=args.source,
        branch=args.branch,
        tag=args.tag,
        commit=args.commit,
        path=args.path,
        interval_s=interval,
        status_addr=args.status_addr,
        webhook_addr=args.webhook_addr,
        webhook_secret=secret,
        state_dir=args.state_dir or DEFAULT_STATE_DIR,
        mqtt=mqtt,
        view=not args.no_view,
        exit_when_ready_s=args.exit_when_ready,
        heartbeat_timeout_s=args.heartbeat_timeout,
        trusted_gpg_keys=tuple(args.trust_gpg_key),
        trusted_ssh_signers=args.trust_ssh_signers,
    )
    try:
        return asyncio.run(run_up(opts))
    except GitSpecError as exc:
        print(f"flyslice up: {exc}", file=sys.stderr)
        return 2


def cmd_status(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from flyslice.operator.embedded.status_view import render_status

    url = f"http://{args.status_addr}/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            doc = json.load(resp)
    except (urllib.error.URLError, OSError) as exc:
        print(f"flyslice status: cannot reach {url}: {exc}; is `flyslice up` running?", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.output == "json" else render_status(doc))
    return 0


def cmd_digest(args: argparse.Namespace) -> int:
    from flyslice.nodeagent.runtime.modules import ModuleRefError, module_digest

    try:
        print(module_digest(args.module))
    except (ModuleRefError, OSError) as exc:
        print(f"flyslice digest: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    import logging
    import os

    from flyslice.operator.kube.kopf_operator import OperatorOptions, main_operator

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    opts = OperatorOptions(
        kubeconfig=args.kubeconfig,
        namespaces=tuple(args.namespace),
        lease_namespace=args.lease_namespace or os.environ.get("POD_NAMESPACE") or "flyslice-system",
        lease_name=args.lease_name,
        identity=args.identity,
        liveness=None if args.liveness == "off" else args.liveness,
        debounce_s=args.debounce,
        resync_s=args.resync,
        heartbeat_timeout_s=args.heartbeat_timeout,
        lease_duration_s=args.lease_duration,
        renew_s=args.renew,
        retry_s=min(2.0, args.renew),
        git_cache=args.git_cache,
    )
    try:
        return main_operator(opts)
    except ValueError as exc:
        print(f"flyslice operator: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
