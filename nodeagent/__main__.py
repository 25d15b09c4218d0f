"""Run a node agent: ``flyslice agent --node gw1 --state-dir /var/lib/flyslice ...``

(``python -m flyslice.nodeagent`` runs the same.) A malformed option is a usage error (exit 2), an
agent that cannot start (state directory, trusted key, address in use) exits 1 with one line saying
why; ``flyslice --help`` lists every exit code.

The data plane is mutual TLS: a standalone agent needs ``--tls-dir`` (its certificate files), or the
explicit ``--insecure-plaintext`` to serve plain TCP that anyone who can connect may inject into;
without either it is a usage error (exit 2). ``flyslice up`` issues its agents certificates itself
and does not go through this command; ``--kube`` agents request one from the operator's signer.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from flyslice.nodeagent.dataplane.tls import TlsFiles

from flyslice.nodeagent.runtime.trust_options import add_module_trust_options

EPILOG = (
    "exit codes: 0 stopped (SIGTERM, Ctrl-C), 1 cannot start (state directory, trusted key, address "
    "in use), 2 usage error, 3 internal error (see `flyslice --help`)"
)


class _Parser(argparse.ArgumentParser):
    # One line, as `flyslice`'s own usage errors.
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see `{self.prog} --help`\n")


def _address(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (a port from 0 to 65535)")
    return text


def _mqtt(text: str) -> tuple[str, int]:
    host, _, port = _address(text).rpartition(":")
    return host, int(port)


def _peer(text: str) -> tuple[str, str]:
    node, sep, addr = text.partition("=")
    if not sep or not node:
        raise argparse.ArgumentTypeError(f"{text!r} is not NODE=HOST:PORT")
    return node, _address(addr)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 24 * 3600:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text!r}: give more than 0 and at most 86400 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="flyslice agent", description="flyslice node agent", epilog=EPILOG)
    p.add_argument("--node", required=True, help="EdgeNode name this agent serves")
    p.add_argument("--state-dir", type=Path, required=True, help="desired-state cache, VNF records")
    p.add_argument(
        "--listen", type=_address, default="127.0.0.1:0", metavar="HOST:PORT", help="data-plane TCP host:port"
    )
    p.add_argument(
        "--http", type=_address, default=None, metavar="HOST:PORT", help="telemetry/ingress HTTP host:port"
    )
    p.add_argument("--desired-file", type=Path, help="JSON/YAML desired instances (embedded/offline mode)")
    p.add_argument("--kube", action="store_true", help="cluster mode: NFInstances from the Kubernetes API "
                   "(see `flyslice agent --kube --help`)")  # fmt: skip
    p.add_argument(
        "--namespace",
        default=None,
        help="with --kube: read NFInstances of this namespace only (default: all)",
    )
    p.add_argument(
        "--peer",
        type=_peer,
        action="append",
        default=[],
        metavar="NODE=HOST:PORT",
        help="another node's agent (repeatable)",
    )
    p.add_argument(
        "--mqtt", type=_mqtt, default=None, metavar="HOST:PORT", help="MQTT broker devices publish to"
    )
    add_module_trust_options(p)
    security = p.add_mutually_exclusive_group()
    security.add_argument(
        "--tls-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="mutual TLS on the data plane: ca.pem, cert.pem (flyslice://agent/NODE) and key.pem in DIR "
        "(this or --insecure-plaintext is required)",
    )
    security.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="serve the data plane as plain TCP, UNAUTHENTICATED: any process that can connect can "
        "inject into any slice (tests, isolated labs; /status and /metrics say so)",
    )
    p.add_argument(
        "--interval", type=_interval, default=1.0, metavar="SECONDS", help="seconds between syncs (default 1)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    if "--kube" in (sys.argv[1:] if argv is None else argv):
        # Cluster mode has its own options (kubeconfig, pod namespace, --no-pods): see kube_agent.
        from flyslice.nodeagent.kube.agent import main as cluster_main

        code: int = cluster_main(argv)
        return code
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tls_dir is None and not args.insecure_plaintext:
        # Secure by default: never fall back to an open data plane because a flag was forgotten.
        parser.error(
            "the data plane needs mutual TLS: add --tls-dir DIR (ca.pem, cert.pem, key.pem), or "
            "--insecure-plaintext to serve unauthenticated plain TCP"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from flyslice.nodeagent.agent import Agent, AgentConfig
    from flyslice.nodeagent.gctune import tune_for_data_plane
    from flyslice.nodeagent.runtime.trust_options import TrustOptionError, load_module_keys
    from flyslice.nodeagent.sources import FileSource

    try:
        keys = load_module_keys(args.trusted_key)
    except TrustOptionError as exc:
        return _cannot_start(str(exc))
    try:
        args.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _cannot_start(
            f"--state-dir {args.state_dir}: {exc.strerror or exc}; give a directory it can create"
        )
    tls: TlsFiles | None = None
    if args.tls_dir is not None:
        from flyslice.nodeagent.dataplane.tls import load_tls_dir

        try:
            tls = load_tls_dir(args.tls_dir)
        except (OSError, ValueError) as exc:
            return _cannot_start(f"--tls-dir {args.tls_dir}: {exc}")
    config = AgentConfig(
        node=args.node, state_dir=args.state_dir, listen=args.listen, http_listen=args.http,
        peers=dict(args.peer), mqtt=args.mqtt, trusted_keys=keys, tls=tls,
        module_dirs=tuple(args.module_dir),
    )  # fmt: skip
    # Before the agent exists: starting it resumes the cached desired state, which can take a while, and
    # a SIGTERM meanwhile must stop it cleanly (exit 0), not kill it with the default action.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        agent = Agent(config)
    except OSError as exc:
        where = f"--listen {args.listen}" + (f" or --http {args.http}" if args.http else "")
        return _cannot_start(f"cannot listen on {where}: {exc.strerror or exc}; choose a free local address")
    if tls is None:  # --insecure-plaintext, once the port is bound: say where the open port is
        warn_insecure_plaintext(agent.address)
    else:
        from flyslice.nodeagent.dataplane.tls import TlsDirWatcher

        # Whoever provides the files renews them (cert-manager, a Secret mount, a script): reload
        # them when they change, as a consistent set only (Agent.stop closes the watcher).
        agent.tls_renewer = TlsDirWatcher(tls)
    tune_for_data_plane()
    try:
        if args.desired_file:
            agent.run(FileSource(args.desired_file), args.interval, stop)
        else:
            stop.wait()
    finally:
        agent.stop(stop_vnfs=False)
    return 0


def warn_insecure_plaintext(listen: str) -> None:
    """The start-up warning of an agent whose data plane authenticates nothing (``--insecure-plaintext``)."""
    logging.getLogger("flyslice.nodeagent").warning(
        "--insecure-plaintext: the data plane on %s is plain TCP and UNAUTHENTICATED; any process that can "
        "connect can inject messages into any slice. Use it only on a network nothing untrusted can reach.",
        listen,
    )


def _cannot_start(message: str) -> int:
    print(f"flyslice agent: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
