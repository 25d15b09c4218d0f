"""``flyslice up SOURCE``: the embedded default — reconcile a directory or git repository on one
machine, with one in-process agent per EdgeNode, a live terminal view and a read-only status API.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flyslice.operator.gitops.sources import DesiredSource
    from flyslice.operator.planning.reoptimize import ReoptimizeSettings
    from flyslice.operator.planning.scale_out import ScaleOutSettings
    from flyslice.solver import SolveOptions

# The runtime (agents, controller, aiohttp, the solver) is imported by run_up, not here: the CLI
# imports this module to show default_state_dir() in `flyslice up --help`, and that must stay fast.

log = logging.getLogger("flyslice.up")


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/flyslice``, else ``~/.local/state/flyslice`` (the XDG base directory rules)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    # The spec says to ignore an empty or relative value; a relative one would follow the cwd.
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "flyslice"


DEFAULT_STATE_DIR = default_state_dir()


class UpError(Exception):
    """``flyslice up`` cannot start; the message says why and what to do, in one line."""


@dataclass
class UpOptions:
    source: str
    branch: str | None = None
    tag: str | None = None
    commit: str | None = None
    path: str = "."
    interval_s: float | None = None
    status_addr: str = "127.0.0.1:7433"
    webhook_addr: str | None = None
    webhook_secret: str = ""
    state_dir: Path = DEFAULT_STATE_DIR
    mqtt: tuple[str, int] | None = None
    view: bool = True
    #: Exit 0 once every slice is Ready (1 on timeout); None = run until interrupted.
    exit_when_ready_s: float | None = None
    heartbeat_timeout_s: float = 30.0
    #: Apply only commits signed by one of these keys (GPG public key files / an SSH allowed-signers file).
    trusted_gpg_keys: tuple[Path, ...] = ()
    trusted_ssh_signers: Path | None = None
    #: Apply revisions that remove every slice or most running NFs without holding them.
    confirm_prune: bool = False
    #: ed25519 public keys (files) every agent verifies NF modules with (fNFs and VNF runners).
    trusted_module_keys: tuple[Path, ...] = ()
    #: Namespaces whose NFPackages must carry a module signature (``*``: every namespace).
    signed_namespaces: frozenset[str] = frozenset()
    #: Directories file: modules may be loaded from; empty: builtin: modules only.
    module_dirs: tuple[Path, ...] = ()
    #: The background re-optimisation (``--reoptimize-*``, ``--migration-budget``); None: the defaults.
    reoptimize: ReoptimizeSettings | None = None
    #: Scale-out of overloaded shared instances (``--scale-out-*``); None: the defaults.
    scale_out: ScaleOutSettings | None = None
    #: How every pass solves (``--weights``); None: the defaults.
    solve_options: SolveOptions | None = None


def is_git_source(source: str) -> bool:
    return "://" in source or source.endswith(".git") or (Path(source) / ".git").exists()


def build_source(opts: UpOptions) -> tuple[DesiredSource, Any]:
    """A plain directory source, or a git source with its fetch loop (second item, else None)."""
    if not is_git_source(opts.source):
        from flyslice.operator.gitops.sources import DirectorySource

        return DirectorySource(Path(opts.source)), None
    from flyslice.operator.gitops.fetcher import GitSource
    from flyslice.operator.gitops.spec import GitRef, GitSourceSpec, SignaturePolicy
    from flyslice.operator.gitops.watch import SourceWatcher

    if opts.tag:
        ref = GitRef("tag", opts.tag)
    elif opts.commit:
        ref = GitRef("commit", opts.commit)
    else:
        ref = GitRef("branch", opts.branch or "main")
    verify = SignaturePolicy()
    if opts.trusted_gpg_keys or opts.trusted_ssh_signers:
        verify = SignaturePolicy.from_files("required", opts.trusted_gpg_keys, opts.trusted_ssh_signers)
    spec = GitSourceSpec(
        url=opts.source, ref=ref, path=opts.path, interval_s=opts.interval_s or 60.0, verify=verify
    )
    # One cache per url, ref and path: a cache never answers for another ref.
    cache = opts.state_dir / "git" / _slug(f"{opts.source}\0{ref}\0{opts.path}")
    watcher = SourceWatcher(GitSource(spec, cache))
    return watcher, watcher


def _slug(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _recorder(watcher: Any) -> Any:
    """Record each applied revision, its objects and its errors in the git source's status."""
    if watcher is None:
        return None
    from flyslice.operator.gitops.inventory import object_key

    def record(revision: str, keys: list[tuple[str, str, str]], errors: list[Any]) -> None:
        watcher.source.mark_applied(
            revision,
            inventory=[object_key(kind, ns or None, name) for kind, ns, name in keys],
            errors=[e.as_dict() for e in errors],
        )

    return record


def _module_keys(opts: UpOptions) -> list[Any]:
    """The ``--trusted-key`` files as ed25519 keys; a bad one stops ``up`` before anything runs."""
    if not opts.trusted_module_keys:
        return []
    from flyslice.nodeagent.runtime.modules import load_public_key

    keys = []
    for path in opts.trusted_module_keys:
        try:
            keys.append(load_public_key(path.read_bytes()))
        except OSError as exc:
            raise UpError(f"--trusted-key {path}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise UpError(f"--trusted-key {path}: not an ed25519 public key ({exc})") from exc
    return keys


def all_ready(doc: dict[str, Any]) -> bool:
    return bool(doc["slices"]) and all(s["phase"] == "Ready" for s in doc["slices"])


async def run_up(opts: UpOptions) -> int:
    """Run until interrupted (or, with ``exit_when_ready_s``, until Ready or the time-out).

    Raises :class:`UpError` when it cannot start: another ``up`` holds the state directory, or the
    status API's or the webhook's address is taken.
    """
    from flyslice.operator.embedded.agent_runtime import LocalAgentFleet
    from flyslice.operator.embedded.controller import EmbeddedController
    from flyslice.operator.embedded.state_lock import StateDirError, lock_state_dir
    from flyslice.operator.embedded.status_view import render_status
    from flyslice.operator.intake.validation import PackagePolicy
    from flyslice.operator.planning.reoptimize import ReoptimizeSettings
    from flyslice.operator.status_api import ListenError, StatusServer

    try:
        # First, before anything touches the state dir: a second `up` on it would adopt this one's
        # VNF runners and kill them. Released at the end, or by the kernel if this process dies.
        state_lock = lock_state_dir(opts.state_dir)
    except StateDirError as exc:
        raise UpError(str(exc)) from exc
    source, watcher = build_source(opts)
    from flyslice.nodeagent.dataplane.tls import CertificateAuthority

    # The installation's data-plane CA, kept across runs (rotation: docs/security.md); every agent and
    # runner gets a certificate from it and the data plane is mutual TLS.
    try:
        ca = CertificateAuthority.load_or_create(opts.state_dir / "pki")
    except (OSError, ValueError) as exc:
        raise UpError(
            f"data-plane CA in {opts.state_dir / 'pki'}: {exc}; remove that directory to create a new one"
        ) from exc
    fleet = LocalAgentFleet(opts.state_dir / "agents", opts.mqtt, ca, _module_keys(opts), opts.module_dirs)
    controller = EmbeddedController(
        source,
        fleet,
        heartbeat_timeout_s=opts.heartbeat_timeout_s,
        package_policy=PackagePolicy(opts.signed_namespaces),
        on_applied=_recorder(watcher),
        confirm_prune=opts.confirm_prune,
        reoptimize=opts.reoptimize or ReoptimizeSettings(),
        scale_out=opts.scale_out,
        solve_options=opts.solve_options,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    # /metrics and the web console ride on the status address (flyslice.operator.observe).
    from flyslice.operator.observe.adapters import for_embedded

    observe = for_embedded(controller, watcher)
    if observe.metrics is not None:
        from flyslice.nodeagent.telemetry import DataplaneRejectCollector

        observe.metrics.registry.register(DataplaneRejectCollector())
    # Unhealthy after consecutive failed passes, not merely while the loop is alive.
    server = StatusServer(controller.snapshot, controller.healthy, observe)
    try:
        await server.start(opts.status_addr)
    except ListenError as exc:
        hint = "is another `flyslice up` running? Stop it, or " if exc.in_use else ""
        raise UpError(
            f"status API: {exc}; {hint}choose another --status-addr (port 0 picks a free one)"
        ) from exc
    print(
        f"flyslice: status API on http://{opts.status_addr.rpartition(':')[0]}:{server.port}/status",
        file=sys.stderr,
    )
    print(
        f"flyslice: web console on http://{opts.status_addr.rpartition(':')[0]}:{server.port}/console/",
        file=sys.stderr,
    )
    tasks: list[asyncio.Task[None]] = []
    receiver = None
    started = time.monotonic()
    code = 0
    try:
        if watcher is not None:
            watcher.on_revision = lambda _snap: controller.trigger()
            tasks.append(asyncio.create_task(watcher.run(stop)))
            await watcher.fetch_now()
            if opts.webhook_addr:
                receiver = await _start_webhook(opts, watcher)
        interval = 1.0 if watcher is None else 0.5
        tasks.append(asyncio.create_task(controller.run(stop, interval_s=interval)))
        while not stop.is_set():
            await asyncio.sleep(0.5)
            for task in tasks:
                # Both loops catch what they expect; anything else is a bug that must not go unseen
                # behind a live view that keeps showing the last good state.
                failure = task.exception() if task.done() and not task.cancelled() else None
                if failure is not None:
                    raise failure
            doc = controller.snapshot()
            if opts.view and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J" + render_status(doc) + "\n")
                sys.stdout.flush()
            if opts.exit_when_ready_s is not None:
                if all_ready(doc):
                    print(render_status(doc))
                    break
                if time.monotonic() - started > opts.exit_when_ready_s:
                    print(render_status(doc))
                    print(
                        f"flyslice: not every slice was Ready after {opts.exit_when_ready_s:g}s",
                        file=sys.stderr,
                    )
                    code = 1
                    break
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if receiver is not None:
            await receiver.stop()
        await server.stop()
        state_lock.release()  # after the agents stopped their runners (controller.run's exit)
    return code


async def _start_webhook(opts: UpOptions, watcher: Any) -> Any:
    from flyslice.operator.gitops.webhook import WebhookReceiver
    from flyslice.operator.status_api import describe_listen_error, parse_addr

    assert opts.webhook_addr is not None
    host, port = parse_addr(opts.webhook_addr)
    receiver = WebhookReceiver(host, port)
    receiver.register("up", opts.webhook_secret, watcher.handle_push)
    try:
        receiver.port = await receiver.start()
    except OSError as exc:
        await receiver.stop()
        raise UpError(
            f"webhook: cannot listen on {opts.webhook_addr}: {describe_listen_error(exc)}; "
            "choose another --webhook-addr"
        ) from exc
    print(f"flyslice: webhook on {receiver.url('up')}", file=sys.stderr)
    return receiver
