"""The ``flyslice`` command line: validate, plan, diff, up, status, digest, sign-image, agent, operator.

Every failure ends in one line on stderr that says what went wrong and what to do; a traceback
reaches the user only under the global ``--debug`` flag (and the log at DEBUG level). The exit
code says which kind of failure it was; this table is also the epilog of ``flyslice --help``:

exit codes:
  0    success
  1    invalid input (a manifest error, no manifests where a path points, nothing
       to plan), a slice not admitted under `plan --strict` or not Ready within
       `up --exit-when-ready`, or the machine refused (the status API is not
       reachable, an address is already in use, a file cannot be read)
  2    usage error: an unknown command, option or choice, a malformed value, or
       an option this installation cannot honour (`--solver highs` without highspy)
  3    internal error, a bug in flyslice: rerun with --debug for the traceback
       and please report it
       `flyslice diff` answers as `diff(1)` and `flux diff` do: 0 no change,
       1 a change to placement, 2 an error (invalid manifests, an unknown
       revision, an unreachable status API or API server, a usage error),
       3 internal error
  130  interrupted (Ctrl-C)
  141  standard output closed early (`| head`), as for other Unix tools
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import select
import sys
import traceback
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from flyslice.operator.intake.errors import ManifestError

log = logging.getLogger("flyslice.cli")

#: The docstring's table, so ``--help`` and the docstring cannot drift apart.
EXIT_CODES = "exit codes:" + (__doc__ or "").partition("exit codes:")[2]
OK, INVALID, USAGE, INTERNAL, INTERRUPTED, PIPE_CLOSED = 0, 1, 2, 3, 130, 141
COMMANDS = ("validate", "plan", "diff", "up", "status", "digest", "sign-image", "agent", "operator")
#: Longest duration an option accepts: longer is a typo, and thread and socket timeouts overflow.
MAX_SECONDS = 365 * 24 * 3600.0


class CliParser(argparse.ArgumentParser):
    """Usage errors in one line that names the problem and where the options are explained."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message}; see `{self.prog} --help`\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # Accepted anywhere, because users append it to the command the error message came from;
    # `flyslice agent` hands its arguments to other parsers that do not know it.
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    command = next((a for a in args if not a.startswith("-")), "")
    prog = f"flyslice {command}" if command in COMMANDS else "flyslice"
    try:
        code = _dispatch(args)
        if sys.stdout is not None:
            sys.stdout.flush()  # a reader that went away must show up here, not at interpreter exit
        return code
    except SystemExit as exc:  # argparse (usage, --help, --version) and libraries that exit
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or OK
        print(exc.code, file=sys.stderr)
        return INVALID
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError as exc:
        if not _stdout_closed():
            return _internal_error(prog, exc, debug)
        _discard_stdout()
        return PIPE_CLOSED
    except Exception as exc:
        return _internal_error(prog, exc, debug)


def _dispatch(args: list[str]) -> int:
    if args[:1] == ["agent"]:
        # The agent has its own options (and --kube mode); argparse cannot forward "--..." verbatim.
        from flyslice.nodeagent.__main__ import main as agent_main

        return agent_main(args[1:])
    parser = _parser()
    ns = parser.parse_args(args)
    func: Callable[[argparse.Namespace], int] | None = getattr(ns, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return USAGE
    return func(ns)


def _internal_error(prog: str, exc: BaseException, debug: bool) -> int:
    log.debug("internal error", exc_info=exc)
    if debug:
        traceback.print_exception(exc)
        then = "the traceback is above; please report it"
    else:
        then = "rerun with --debug for the traceback and please report it"
    message = " ".join(str(exc).split()) or "(no message)"
    print(f"{prog}: internal error: {type(exc).__name__}: {message}; {then}", file=sys.stderr)
    return INTERNAL


def _stdout_closed() -> bool:
    """Whether standard output is a pipe or socket whose reader has gone (``| head`` exited)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # replaced (pytest's capture) or already closed
        return False
    if not hasattr(select, "poll"):  # Windows cannot be asked; there it is nearly always stdout
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _discard_stdout() -> None:
    # Python flushes stdout once more at exit; into the closed pipe that prints "Exception ignored".
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _fail(prog: str, message: str, code: int = INVALID) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return code


# -- argument types: a malformed value is a usage error (2) before anything runs --------------


def _seconds(*, zero_ok: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        smallest = "zero or more" if zero_ok else "more than zero"
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise argparse.ArgumentTypeError(f"{text!r}: give {smallest} seconds")
        if value > MAX_SECONDS:
            raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_SECONDS:.0f} seconds (a year)")
        return value

    return parse


def _host_port(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (a port from 0 to 65535)")
    return text


def _host_port_or_off(text: str) -> str:
    return text if text == "off" else _host_port(text)


def _parser() -> CliParser:
    from flyslice import __version__

    parser = CliParser(
        prog="flyslice",
        description="Declarative, intent-based GitOps reconciler for IoT network slices.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flyslice {__version__}")
    # Documentation only: main() takes --debug out of the arguments wherever it stands.
    debug_help = "on an internal error, print the traceback too (any command, also agent)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    common = CliParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    sub = parser.add_subparsers(metavar="COMMAND")

    def command(
        name: str, summary: str, func: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, help=summary, description=summary[:1].upper() + summary[1:] + ".", parents=[common]
        )
        p.set_defaults(func=func)
        return p

    p = command("validate", "check manifests against the CRD schemas and each other", cmd_validate)
    p.add_argument("paths", nargs="+", metavar="PATH", help="YAML files or directories")
    p.add_argument(
        "-o",
        "--output",
        choices=["text", "json"],
        default="text",
        help="text (default: errors on stderr, a summary on stdout) or one JSON document on stdout",
    )

    p = command("plan", "place every slice and print the placement", cmd_plan)
    p.add_argument("paths", nargs="+", metavar="PATH", help="YAML files or directories")
    p.add_argument(
        "-o",
        "--output",
        choices=["table", "json", "yaml"],
        default="table",
        help="table (default) or the plan document as JSON or YAML (docs/plan-format.md)",
    )
    p.add_argument(
        "--method",
        choices=["ilp", "baseline"],
        default="ilp",
        help="ilp (default) or the greedy closest-to-user baseline",
    )
    p.add_argument(
        "--solver",
        choices=["cbc", "highs"],
        default=None,
        help="ILP solver: highs when highspy imports, else cbc (the default), or name one: cbc (bundled with PuLP) or highs",
    )
    p.add_argument(
        "--time-limit",
        type=_seconds(),
        default=None,
        metavar="SECONDS",
        help="wall-clock limit for the ILP solver (default 30); the best placement found by then is used",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a slice is not admitted")
    _add_weights_option(p)

    p = command("up", "reconcile a directory or git repository on this machine, no cluster needed", cmd_up)
    p.add_argument("source", help="a directory of manifests, or a git repository (URL or local clone)")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--branch", help="git branch to follow (default main)")
    ref.add_argument("--tag", help="git tag to check out")
    ref.add_argument("--commit", help="git commit to pin")
    p.add_argument("--path", default=".", help="directory inside the repository (default: its root)")
    p.add_argument("--interval", default=None, help="git poll interval, e.g. 30s (default 1m)")
    p.add_argument(
        "--status-addr",
        type=_host_port,
        default="127.0.0.1:7433",
        metavar="HOST:PORT",
        help="where the read-only status API listens (default %(default)s; port 0 picks a free one)",
    )
    p.add_argument(
        "--webhook-addr",
        type=_host_port,
        default=None,
        metavar="HOST:PORT",
        help="serve a git push webhook here, e.g. 127.0.0.1:7434 (needs FLYSLICE_WEBHOOK_SECRET)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"agents' caches and git mirrors (default: $XDG_STATE_HOME/flyslice, else "
        f"~/.local/state/flyslice; here {_default_state_dir()})",
    )
    p.add_argument(
        "--mqtt",
        type=_host_port,
        default=None,
        metavar="HOST:PORT",
        help="MQTT broker the devices publish to",
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=_seconds(),
        default=30.0,
        metavar="SECONDS",
        help="a node silent this long loses its NFs to other nodes (default %(default)g)",
    )
    _add_trust_options(p)
    _add_package_signing_options(p)
    _add_reoptimize_options(p)
    _add_scale_out_options(p)
    _add_weights_option(p)
    p.add_argument("--no-view", action="store_true", help="no live terminal view")
    p.add_argument(
        "--confirm-prune",
        action="store_true",
        help="apply revisions that remove every slice or most running NFs (held for confirmation otherwise)",
    )
    p.add_argument(
        "--exit-when-ready",
        type=_seconds(),
        default=None,
        metavar="TIMEOUT",
        help="exit 0 once every slice is Ready, 1 if not within TIMEOUT seconds",
    )

    p = command("diff", "show what a manifest change does to placement (exit 1 when it changes)", cmd_diff)
    p.add_argument(
        "base",
        metavar="BASE",
        help="a git revision (of --repo), a directory, a running `up`'s status URL "
        "(http://127.0.0.1:7433), or what the operator placed: cluster: (every namespace) or cluster:NS",
    )
    p.add_argument("head", metavar="HEAD", help="the same kinds as BASE, e.g. HEAD or the working directory")
    p.add_argument(
        "--repo", type=Path, default=Path("."), metavar="DIR", help="git repository of revisions (default: .)"
    )
    p.add_argument(
        "--path",
        default=".",
        help="directory of the manifests inside a revision (default: the repository root)",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=["text", "json", "markdown"],
        default="text",
        help="text (default), the diff document as JSON (docs/diff.md), or Markdown for a pull-request comment",
    )
    p.add_argument(
        "--exit-zero",
        action="store_true",
        help="exit 0 on a change too (errors still exit 2): report, do not gate (the pre-commit hook)",
    )
    p.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig for a cluster: side (default: in-cluster, $KUBECONFIG, then ~/.kube/config)",
    )
    p.add_argument(
        "--context", default=None, help="kubeconfig context for a cluster: side (default: current)"
    )

    p = command("status", "show what a running `flyslice up` reports", cmd_status)
    p.add_argument(
        "--status-addr",
        type=_host_port,
        default="127.0.0.1:7433",
        metavar="HOST:PORT",
        help="the status API of `flyslice up` (default %(default)s, as `up --status-addr`)",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=["table", "json"],
        default="table",
        help="table (default) or the status document as JSON",
    )

    p = command("digest", "print the sha256 digest of an NF module reference", cmd_digest)
    p.add_argument("module", help="builtin:<name> or file:/absolute/path.py")

    p = command(
        "sign-image",
        "print an NFPackage imageSignature: a cosign-compatible signature of an image digest",
        cmd_sign_image,
    )
    p.add_argument("image", metavar="IMAGE@sha256:DIGEST", help="the image, pinned by digest")
    p.add_argument(
        "--key",
        type=Path,
        default=None,
        metavar="PEM",
        help="unencrypted PEM private key, ed25519 or ECDSA P-256; its public key goes to the "
        "agents (--trusted-key for ed25519, --trusted-image-key for either)",
    )
    p.add_argument(
        "--payload-only",
        action="store_true",
        help="print cosign's payload for IMAGE instead (no key needed): sign it with "
        "`cosign sign-blob --key cosign.key`",
    )

    # Listed for `flyslice --help`; main() hands `flyslice agent ...` to the agent's own parser.
    sub.add_parser("agent", help="run a node agent (see `flyslice agent --help`)", add_help=False)

    p = command("operator", "run the Kubernetes operator (kopf) against a cluster", cmd_operator)
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
    # The probe port binds where the pod spec says (POD_IP from the downward API), never every
    # interface by default; outside a pod, loopback.
    p.add_argument(
        "--liveness",
        type=_host_port_or_off,
        default=f"{os.environ.get('POD_IP') or '127.0.0.1'}:8080",
        metavar="HOST:PORT",
        help="serve only /healthz and /readyz here (default $POD_IP:8080, else 127.0.0.1:8080); 'off' to disable",
    )
    p.add_argument(
        "--status-addr",
        type=_host_port_or_off,
        default="off",
        metavar="HOST:PORT",
        help="serve /status, /metrics and the console here (default: off)",
    )
    p.add_argument(
        "--lease-namespace",
        default=None,
        help="namespace of the leader-election Lease (default: $POD_NAMESPACE or flyslice-system)",
    )
    p.add_argument(
        "--lease-name",
        default="flyslice-operator",
        help="name of the leader-election Lease (default %(default)s)",
    )
    p.add_argument(
        "--identity", default=None, help="leader-election identity (default: pod/host name + random)"
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=_seconds(),
        default=30.0,
        metavar="SECONDS",
        help="a node whose heartbeat is this old loses its NFs to other nodes (default %(default)g)",
    )
    _add_trust_options(p)
    _add_reoptimize_options(p)
    _add_scale_out_options(p)
    _add_weights_option(p)
    p.add_argument(
        "--resync",
        type=_seconds(),
        default=10.0,
        metavar="SECONDS",
        help="pass interval without changes (default %(default)g)",
    )
    p.add_argument(
        "--debounce",
        type=_seconds(zero_ok=True),
        default=0.5,
        metavar="SECONDS",
        help="quiet time after a change before a pass, so a burst makes one pass (default %(default)g)",
    )
    p.add_argument(
        "--lease-duration",
        type=_seconds(),
        default=15.0,
        metavar="SECONDS",
        help="how long the Lease holds without renewal before another replica takes over (default %(default)g)",
    )
    p.add_argument(
        "--renew",
        type=_seconds(),
        default=5.0,
        metavar="SECONDS",
        help="how often the leader renews the Lease (default %(default)g)",
    )
    _add_signing_policy_option(p)
    p.add_argument(
        "--git-cache",
        type=Path,
        default=Path("/tmp/flyslice-gitsources"),
        metavar="DIR",
        help="where GitSource repositories are mirrored (default %(default)s)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return parser


def _default_state_dir() -> Path:
    from flyslice.operator.embedded.up import default_state_dir

    return default_state_dir()


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


def _add_signing_policy_option(p: argparse.ArgumentParser) -> None:
    """Which namespaces must sign their NFPackages: ``up`` and the operator validate alike."""
    p.add_argument(
        "--require-signed-packages",
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="refuse NFPackages without a module signature in this namespace (repeatable; * for all)",
    )


def _add_reoptimize_options(p: argparse.ArgumentParser) -> None:
    """The background re-optimisation (docs/operator.md, "Incremental admission and re-optimisation")."""
    p.add_argument(
        "--reoptimize-interval",
        type=_seconds_or_off,
        default=300.0,
        metavar="SECONDS",
        help="run the global model in the background this often, and after passes that admit slices; "
        "its result is applied only if it improves the placement (default %(default)g; 'off' disables it)",
    )
    p.add_argument(
        "--reoptimize-margin",
        type=_fraction,
        default=0.05,
        metavar="FRACTION",
        help="apply a re-optimisation only if it lowers the solver's objective (migration cost included) "
        "by at least this much, e.g. 0.05 or 5%% (default 0.05)",
    )
    p.add_argument(
        "--migration-budget",
        type=_count_or_none,
        default=10,
        metavar="NFS",
        help="running NFs one re-optimisation may move (default %(default)s; 'none' for no limit). "
        "New slices never move running ones: they are admitted with the running slices held fixed",
    )


def _add_scale_out_options(p: argparse.ArgumentParser) -> None:
    """Scale-out of overloaded shared instances (docs/sharing.md, "Scale-out")."""
    p.add_argument(
        "--scale-out-after",
        type=_sustain_or_off,
        default=15.0,
        metavar="SECONDS",
        help="open another instance of a shared NF and move tenants into it once its agent has reported "
        "it overloaded (sustained queue drops) for this long (default %(default)g; 0: at the first "
        "report; 'off' disables scale-out)",
    )
    p.add_argument(
        "--scale-out-cooldown",
        type=_seconds(zero_ok=True),
        default=300.0,
        metavar="SECONDS",
        help="after a scale-out, the same pool on the same node does not scale out again for this long, "
        "however overloaded (default %(default)g)",
    )


def _sustain_or_off(text: str) -> float | None:
    return None if text.strip().lower() == "off" else _seconds(zero_ok=True)(text)


def _scale_out_settings(args: argparse.Namespace) -> Any:
    from flyslice.operator.planning.scale_out import ScaleOutSettings

    return ScaleOutSettings(cooldown_s=args.scale_out_cooldown, sustain_s=args.scale_out_after)


def _add_weights_option(p: argparse.ArgumentParser) -> None:
    """The objective's weights (docs/solver.md, "Objective")."""
    p.add_argument(
        "--weights",
        type=_weights,
        default=None,
        metavar="TERM=W,...",
        help="weights of the placement objective's terms, e.g. resource=1,latency=1,migration=10,rejection=1000 "
        "(those are the defaults; name only the ones you change). rejection (per slice, times priority) "
        "should dominate the others, or the solver may prefer leaving a slice out to paying for it",
    )


_WEIGHT_TERMS = ("resource", "latency", "migration", "rejection")


def _weights(text: str) -> Any:
    values: dict[str, float] = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep or name not in _WEIGHT_TERMS:
            raise argparse.ArgumentTypeError(
                f"{part!r}: give TERM=NUMBER with TERM one of {', '.join(_WEIGHT_TERMS)}"
            )
        if name in values:
            raise argparse.ArgumentTypeError(f"{name!r} is given twice")
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}={raw!r} is not a number") from None
        if not (0 <= value < float("inf")):  # also refuses NaN
            raise argparse.ArgumentTypeError(f"{name}={raw!r}: give a finite number >= 0")
        if name == "rejection" and value == 0:
            raise argparse.ArgumentTypeError("rejection=0 would make admitting a slice worth nothing")
        values[name] = value
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one TERM=NUMBER")
    from flyslice.solver.model import Weights

    return Weights(**values)


def _solve_options(args: argparse.Namespace) -> Any:
    """SolveOptions for up/operator: the defaults, with ``--weights`` when given (None: all defaults)."""
    if args.weights is None:
        return None
    from flyslice.solver.options import SolveOptions

    return SolveOptions(weights=args.weights)


def _seconds_or_off(text: str) -> float | None:
    return None if text.strip().lower() in ("off", "0") else _seconds()(text)


def _fraction(text: str) -> float:
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction (0.05) or a percentage (5%)") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a fraction from 0 up to (not including) 1")
    return value


def _count_or_none(text: str) -> int | None:
    if text.strip().lower() in ("none", "unlimited"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of NFs (or 'none')") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 or more NFs")
    return value


def _reoptimize_settings(args: argparse.Namespace) -> Any:
    from flyslice.operator.planning.reoptimize import ReoptimizeSettings

    return ReoptimizeSettings(
        interval_s=args.reoptimize_interval,
        margin=args.reoptimize_margin,
        migration_budget=args.migration_budget,
    )


def _add_package_signing_options(p: argparse.ArgumentParser) -> None:
    """Module-signature policy for NFPackages (docs/security.md, "Signed packages")."""
    p.add_argument(
        "--trusted-key",
        dest="trusted_module_key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="ed25519 public key the agents verify NF module signatures with (repeatable)",
    )
    _add_signing_policy_option(p)
    p.add_argument(
        "--module-dir",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="directory file: modules may be loaded from (repeatable; default: none, builtin: only)",
    )


def _print_errors(errors: list[ManifestError]) -> None:
    for e in errors:
        prefix = "note" if e.severity == "note" else "error"
        print(f"{prefix}: {e}", file=sys.stderr)


def _nothing_found(
    paths: Sequence[str], sources: Collection[object], errors: list[ManifestError]
) -> list[ManifestError]:
    """One error per path when no path held a flyslice object and nothing else went wrong.

    Without it an empty directory, or a typo that names the wrong one, would "validate" fine.
    """
    if sources or any(e.severity == "error" for e in errors):
        return []
    from flyslice.operator.intake.manifests import YAML_SUFFIXES, discover

    want = "give the files or directories that hold your flyslice.io manifests"
    found = []
    for path in paths:
        files, _ = discover([path])
        if not files:
            suffixes = " or ".join(f"*{s}" for s in YAML_SUFFIXES)
            what = f"no manifests: this directory has no {suffixes} file (hidden directories are skipped)"
        elif Path(path).is_dir():
            what = f"no flyslice.io objects in its {len(files)} YAML file(s)"
        else:
            what = "no flyslice.io objects in this file"
        found.append(ManifestError(path, 0, "", "", f"{what}; {want}"))
    return found


def cmd_validate(args: argparse.Namespace) -> int:
    from flyslice.operator.intake.validation import validate_paths

    result = validate_paths(args.paths)
    result.errors += _nothing_found(args.paths, result.sources, result.errors)
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
    return INVALID if n_errors else OK


def cmd_plan(args: argparse.Namespace) -> int:
    from flyslice import solver
    from flyslice.operator.intake.validation import validate_paths
    from flyslice.operator.planning.pipeline import plan
    from flyslice.operator.planning.plan_format import plan_document, render_table

    if args.method == "ilp" and args.solver == "highs":
        from flyslice.solver.backends import highs_available

        if not highs_available():
            return _fail(
                "flyslice plan",
                "--solver highs needs the highspy package, which this Python cannot import; "
                "install it (pip install 'flyslice[highs]') or use --solver cbc",
                USAGE,
            )
    result = validate_paths(args.paths)
    nothing = _nothing_found(args.paths, result.sources, result.errors)
    result.errors += nothing
    errors = [e for e in result.errors if e.severity == "error"]
    _print_errors(result.errors)
    if not result.catalog.slices:
        # No solver status and no empty table: they would read as a successful plan of nothing.
        if nothing:
            return INVALID  # the lines above say where nothing was found
        if errors:
            n = len(errors)
            return _fail(
                "flyslice plan",
                f"nothing planned: the input is invalid ({n} error{'s' if n > 1 else ''} above) and no "
                "valid Slice is left to place; fix the errors and rerun",
            )
        return _fail(
            "flyslice plan",
            "nothing planned: the input has no Slice; add one that asks for a service "
            "(examples/wildfire/slice.yaml is one)",
        )
    opts: dict[str, Any] = {}
    if args.solver:
        opts["solver"] = args.solver
    if args.time_limit is not None:
        opts["time_limit_s"] = args.time_limit
    if args.weights is not None:
        opts["weights"] = args.weights
    the_plan = plan(result.catalog, method=args.method, options=solver.SolveOptions(**opts))
    doc = plan_document(the_plan, result.errors)
    if args.output == "json":
        print(json.dumps(doc, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(doc, sort_keys=False), end="")
    else:
        print(render_table(doc))
    rejected = [s for s in doc["slices"] if not s["admitted"]]
    return INVALID if errors or (args.strict and rejected) else OK


def cmd_up(args: argparse.Namespace) -> int:
    import asyncio

    from flyslice.operator.embedded.up import UpError, UpOptions, default_state_dir, run_up
    from flyslice.operator.gitops.spec import GitSpecError, parse_interval
    from flyslice.operator.status_api import parse_addr

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        interval = parse_interval(args.interval, "--interval") if args.interval else None
    except GitSpecError as exc:
        return _fail("flyslice up", str(exc), USAGE)
    if interval is not None and interval > MAX_SECONDS:
        return _fail("flyslice up", f"--interval {args.interval}: at most {MAX_SECONDS:.0f}s (a year)", USAGE)
    secret = os.environ.get("FLYSLICE_WEBHOOK_SECRET", "")
    if args.webhook_addr and not secret:
        return _fail(
            "flyslice up", "--webhook-addr needs the shared secret in FLYSLICE_WEBHOOK_SECRET", USAGE
        )
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
        state_dir=args.state_dir or default_state_dir(),
        mqtt=parse_addr(args.mqtt) if args.mqtt else None,
        view=not args.no_view,
        exit_when_ready_s=args.exit_when_ready,
        heartbeat_timeout_s=args.heartbeat_timeout,
        trusted_gpg_keys=tuple(args.trust_gpg_key),
        trusted_ssh_signers=args.trust_ssh_signers,
        confirm_prune=args.confirm_prune,
        trusted_module_keys=tuple(args.trusted_module_key),
        signed_namespaces=frozenset(args.require_signed_packages),
        module_dirs=tuple(p.resolve() for p in args.module_dir),
        reoptimize=_reoptimize_settings(args),
        scale_out=_scale_out_settings(args),
        solve_options=_solve_options(args),
    )
    try:
        return asyncio.run(run_up(opts))
    except GitSpecError as exc:
        return _fail("flyslice up", str(exc), USAGE)
    except UpError as exc:
        return _fail("flyslice up", str(exc))


def cmd_diff(args: argparse.Namespace) -> int:
    from flyslice.operator.review.compare import render_markdown, render_text
    from flyslice.operator.review.inputs import ClusterAccess, DiffInputError, diff, is_live

    prog = "flyslice diff"
    access = ClusterAccess(args.kubeconfig, args.context)
    try:
        doc, base_errors, head_errors = diff(
            args.base, args.head, repo=args.repo, path=args.path, access=access
        )
    except DiffInputError as exc:
        return _fail(prog, str(exc), USAGE)
    # Errors already in BASE are not this change's fault: notes. Errors in HEAD fail the check, unless
    # HEAD is what runs (cluster:): the operator already reports those, and the change is BASE's files.
    for side, errors in ((args.base, base_errors), (args.head, head_errors if is_live(args.head) else [])):
        for e in errors:
            print(f"note: {side}: {e}", file=sys.stderr)
    if is_live(args.head):
        head_errors = []
    _print_errors(head_errors)
    broken = [e for e in head_errors if e.severity == "error"]
    if broken:
        doc["errors"] = [e.as_dict() for e in broken]
    if args.output == "json":
        print(json.dumps(doc, indent=2))
    elif args.output == "markdown":
        print(render_markdown(doc), end="")
    else:
        print(render_text(doc))
    if broken:
        n = len(broken)
        return _fail(prog, f"{args.head} has {n} invalid object error{'s' if n > 1 else ''} (above)", USAGE)
    return INVALID if doc["changed"] and not args.exit_zero else OK


def cmd_status(args: argparse.Namespace) -> int:
    import http.client
    import urllib.error
    import urllib.request

    from flyslice.operator.embedded.status_view import render_status

    url = f"http://{args.status_addr}/status"
    hint = "is `flyslice up` running? Start it, or pass the --status-addr it serves on"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        return _fail("flyslice status", f"{url} answered HTTP {exc.code} {exc.reason}; {hint}")
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror
        return _fail("flyslice status", f"cannot reach {url}: {reason or type(exc).__name__}; {hint}")
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("slices"), list):
            raise ValueError("not a status document")
    except ValueError:  # also UnicodeDecodeError
        return _fail("flyslice status", f"{url} did not answer with a flyslice status document; {hint}")
    if args.output == "json":
        print(json.dumps(doc, indent=2))
        return OK
    try:
        print(render_status(doc))
    except (KeyError, TypeError, AttributeError) as exc:
        return _fail(
            "flyslice status",
            f"{url} answered a status document this version cannot show as a table (no {exc}); "
            "`-o json` prints it as it is",
        )
    return OK


def cmd_digest(args: argparse.Namespace) -> int:
    from flyslice.nodeagent.runtime.modules import ModuleRefError, module_digest

    try:
        print(module_digest(args.module))
    except (ModuleRefError, OSError) as exc:
        return _fail("flyslice digest", str(exc))
    return OK


def cmd_sign_image(args: argparse.Namespace) -> int:
    from flyslice.nodeagent.runtime.image_signatures import (
        ImageSignatureError,
        load_signing_key,
        sign_image,
        simple_signing_payload,
    )

    prog = "flyslice sign-image"
    try:
        payload = simple_signing_payload(args.image)  # a tag-only image is refused first
        if args.payload_only:
            # Exactly the bytes that are signed: no trailing newline (cosign generate writes none).
            sys.stdout.buffer.write(payload)
            sys.stdout.flush()
            return OK
        if args.key is None:
            return _fail(prog, "--key PEM is required (or --payload-only to print the payload)", USAGE)
        key = load_signing_key(args.key.read_bytes())
        print(sign_image(args.image, key))
    except ImageSignatureError as exc:
        return _fail(prog, str(exc))
    except (OSError, ValueError) as exc:
        return _fail(prog, f"--key {args.key}: {exc}")
    return OK


def cmd_operator(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError as TransportError

    from flyslice.operator.kube.kopf_operator import OperatorOptions, main_operator
    from flyslice.operator.status_api import ListenError

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
        status_addr=None if args.status_addr == "off" else args.status_addr,
        debounce_s=args.debounce,
        resync_s=args.resync,
        heartbeat_timeout_s=args.heartbeat_timeout,
        lease_duration_s=args.lease_duration,
        renew_s=args.renew,
        retry_s=min(2.0, args.renew),
        git_cache=args.git_cache,
        signed_namespaces=frozenset(args.require_signed_packages),
        reoptimize=_reoptimize_settings(args),
        scale_out=_scale_out_settings(args),
        solve_options=_solve_options(args),
    )
    prog = "flyslice operator"
    try:
        return main_operator(opts)
    except ConfigException as exc:
        where = args.kubeconfig or "in-cluster or ~/.kube/config"
        return _fail(
            prog,
            f"no cluster credentials ({where}): {str(exc).rstrip('.')}; pass --kubeconfig FILE or run it in a pod",
        )
    except TransportError as exc:
        reason = getattr(exc, "reason", None) or exc
        return _fail(prog, f"cannot reach the Kubernetes API server: {reason}; is the cluster up?")
    except ApiException as exc:
        return _fail(
            prog,
            f"the Kubernetes API server answered {exc.status} {exc.reason}; check the kubeconfig's "
            "credentials and the operator's RBAC (deploy/k3s)",
        )
    except ListenError as exc:
        flag = "--status-addr" if args.status_addr != "off" and exc.addr == args.status_addr else "--liveness"
        return _fail(prog, f"{flag}: {exc}; choose another HOST:PORT, or 'off'")
    except ValueError as exc:
        return _fail(prog, str(exc), USAGE)


if __name__ == "__main__":
    raise SystemExit(main())
