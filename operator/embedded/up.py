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
from typing import Any

from flyslice.operator.embedded.agent_runtime import LocalAgentFleet
from flyslice.operator.embedded.controller import EmbeddedController
from flyslice.operator.embedded.status_view import render_status
from flyslice.operator.gitops.sources import DesiredSource, DirectorySource
from flyslice.operator.status_api import StatusServer

log = logging.getLogger("flyslice.up")
DEFAULT_STATE_DIR = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "flyslice"


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


def is_git_source(source: str) -> bool:
    return "://" in source or source.endswith(".git") or (Path(source) / ".git").exists()


def build_source(opts: UpOptions) -> tuple[DesiredSource, Any]:
    """A plain directory source, or a git source with its fetch loop (second item, else None)."""
    if not is_git_source(opts.source):
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
    cache = opts.state_dir / "git" / _slug(opts.source)
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


def all_ready(doc: dict[str, Any]) -> bool:
    return bool(doc["slices"]) and all(s["phase"] == "Ready" for s in doc["slices"])


async def run_up(opts: UpOptions) -> int:
    source, watcher = build_source(opts)
    fleet = LocalAgentFleet(opts.state_dir / "agents", opts.mqtt)
    controller = EmbeddedController(
        source, fleet, heartbeat_timeout_s=opts.heartbeat_timeout_s, on_applied=_recorder(watcher)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    server = StatusServer(controller.snapshot, lambda: controller.last_pass_at is not None)
    await server.start(opts.status_addr)
    print(
        f"flyslice: status API on http://{opts.status_addr.rpartition(':')[0]}:{server.port}/status",
        file=sys.stderr,
    )
    tasks = []
    receiver = None
    if watcher is not None:
        watcher.on_revision = lambda _snap: controller.trigger()
        tasks.append(asyncio.create_task(watcher.run(stop)))
        await watcher.fetch_now()
        if opts.webhook_addr:
            from flyslice.operator.gitops.webhook import WebhookReceiver
            from flyslice.operator.status_api import parse_addr

            host, port = parse_addr(opts.webhook_addr)
            receiver = WebhookReceiver(host, port)
            receiver.register("up", opts.webhook_secret, watcher.handle_push)
            receiver.port = await receiver.start()
            print(f"flyslice: webhook on {receiver.url('up')}", file=sys.stderr)
    interval = 1.0 if watcher is None else 0.5
    tasks.append(asyncio.create_task(controller.run(stop, interval_s=interval)))
    started = time.monotonic()
    code = 0
    try:
        while not stop.is_set():
            await asyncio.sleep(0.5)
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
    return code
