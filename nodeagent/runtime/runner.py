"""The NF runner: hosts ONE NF, the same code an fNF runs, as a VNF in its own process or pod.

    python -m flyslice.nodeagent.runtime.runner --spec-file spec.json --listen 127.0.0.1:0 \\
        --ready-file ready.json [--uplink-file agent.addr | --uplink host:port] [--status-file status.json]
        [--tls-dir DIR]

The spec (an InstanceSpec as JSON; or env FLYSLICE_SPEC in a pod) names the module and digest;
the runner verifies the bytes exactly as the agent does. Messages arrive over TCP (newline JSON);
outputs go to the uplink -- the node's agent, which routes them on -- like GNF's containers that
all hang off the host's switch. ``ready.json`` ({"address", "pid"}) is written once serving;
``status.json`` is rewritten every second with the instance's state and counters.
The data-plane port also answers liveness probes (``transport.probe``), which is how the agent tells a
frozen runner from a live one. ``--data-dir`` is where the NF keeps its files (``ctx.data_dir``);
``--parent-pid`` makes the runner stop when that process dies (``flyslice up`` killed with -9).
``--tls-dir`` puts both its listener and its uplink on mutual TLS with a certificate for its slice only.

A shared instance's runner serves several tenants: ``--tenants-file`` (embedded mode: the agent rewrites
the file) or ``--tenants-control`` (a pod: the agent sends the tenants, and the certificate for their
slices, as control requests on the data-plane port; ``runtime/tenants.py``). With ``--tenants-control``
the credentials of ``--tls-dir`` are copied to ``--tls-work-dir`` (writable), where the agent's later
ones replace them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from flyslice.nodeagent.dataplane.chains import DataPlane
from flyslice.nodeagent.dataplane.transport import TcpIngress, TcpSender
from flyslice.nodeagent.gctune import tune_for_data_plane
from flyslice.nodeagent.runtime.modules import ModuleLoader, load_public_key
from flyslice.nodeagent.runtime.platform import ModularPlatform
from flyslice.nodeagent.runtime.tenants import (
    CONTROL_TOKEN_ENV,
    TenantControl,
    TenantSync,
    shared_statistics,
)
from flyslice.nodeagent.spec import InstanceSpec

log = logging.getLogger("flyslice.nodeagent.runner")


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_address(path: Path) -> str:
    return path.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="flyslice.nodeagent.runtime.runner", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--spec-file", type=Path, help="InstanceSpec JSON (default: env FLYSLICE_SPEC)")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--status-file", type=Path)
    parser.add_argument("--uplink", help="host:port every output is sent to")
    parser.add_argument(
        "--uplink-file", type=Path, help="file holding the uplink host:port (re-read on reconnect)"
    )
    parser.add_argument("--trusted-key", action="append", default=[], help="ed25519 public key file (PEM)")
    parser.add_argument(
        "--trusted-key-data",
        action="append",
        default=[],
        help="ed25519 public key as base64 of its 32 raw bytes (how the agent passes its policy)",
    )
    parser.add_argument(
        "--tls-dir",
        type=Path,
        help="mutual TLS on the data plane: ca.pem, cert.pem (bound to this NF's slice) and key.pem",
    )
    parser.add_argument(
        "--module-dir",
        type=Path,
        action="append",
        default=[],
        help="a directory file: modules may be loaded from (repeatable; implies --confine-modules)",
    )
    parser.add_argument(
        "--confine-modules",
        action="store_true",
        help="allow file: modules only under --module-dir (none without one); builtin: always",
    )
    parser.add_argument("--deadline-s", type=float, default=1.0)
    parser.add_argument(
        "--state-in", type=Path, help="JSON state to import before start (a replaced runner's)"
    )
    parser.add_argument(
        "--state-out", type=Path, help="where to write the NF's exported state on a clean stop"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ["FLYSLICE_DATA_DIR"]) if os.environ.get("FLYSLICE_DATA_DIR") else None,
        help="root of the NFs' persistent files; the NF gets <dir>/<namespace>/<name> "
        "(default: env FLYSLICE_DATA_DIR, else none)",
    )
    parser.add_argument(
        "--tenants-file",
        type=Path,
        help="shared instance: the tenants' specs (rewritten by the agent; the runner follows it "
        "without restarting); --spec-file is then the instance's own spec",
    )
    parser.add_argument(
        "--tenants-control",
        action="store_true",
        help="shared instance in a pod: the agent sets the tenants (and their slice certificate) with "
        f"control requests carrying the token in env {CONTROL_TOKEN_ENV}; starts with no tenant",
    )
    parser.add_argument(
        "--tls-work-dir",
        type=Path,
        help="with --tenants-control: a writable directory the --tls-dir credentials are copied to, "
        "and where the agent's new ones (more slices, renewals) are written",
    )
    parser.add_argument(
        "--parent-pid",
        type=int,
        help="stop (draining, as on SIGTERM) once this process is no longer our parent",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        raw = args.spec_file.read_text() if args.spec_file else os.environ["FLYSLICE_SPEC"]
        spec = InstanceSpec.from_dict(json.loads(raw), where=str(args.spec_file or "FLYSLICE_SPEC"))
        if not spec.module:
            raise ValueError(f"instance {spec.name}: the runner needs 'module' and 'digest'")
        keys = [load_public_key(Path(k).read_bytes()) for k in args.trusted_key]
        keys += [load_public_key(k) for k in args.trusted_key_data]
    except (OSError, KeyError, ValueError) as exc:
        print(f"runner: bad spec: {exc}", file=sys.stderr)
        return 2
    # Pods (whose module is part of their image) are started without these flags and stay unconfined.
    module_dirs = args.module_dir if (args.module_dir or args.confine_modules) else None
    tls = None
    token = os.environ.get(CONTROL_TOKEN_ENV, "")
    if args.tenants_control and not token:
        print(
            f"runner: --tenants-control needs the control token in env {CONTROL_TOKEN_ENV}", file=sys.stderr
        )
        return 2
    if args.tls_dir:
        from flyslice.nodeagent.dataplane.tls import TlsFiles, write_tls_dir

        tls_dir = args.tls_dir
        if args.tenants_control and args.tls_work_dir:
            try:  # the mounted Secret is read-only; the agent's later credentials go to the work dir
                src = TlsFiles.in_dir(args.tls_dir)
                write_tls_dir(
                    args.tls_work_dir, src.ca.read_bytes(), src.cert.read_bytes(), src.key.read_bytes()
                )
            except OSError as exc:
                print(f"runner: cannot copy {args.tls_dir} to {args.tls_work_dir}: {exc}", file=sys.stderr)
                return 2
            tls_dir = args.tls_work_dir
        tls = TlsFiles.in_dir(tls_dir)
        try:  # unreadable credentials: fail now, not on the first connection
            tls.server_context()
            tls.client_context()
        except (OSError, ValueError) as exc:
            print(f"runner: bad TLS credentials in {args.tls_dir}: {exc}", file=sys.stderr)
            return 2

    uplink: str | Any = args.uplink
    if args.uplink_file:
        path = args.uplink_file
        uplink = lambda: _read_address(path)  # noqa: E731

    plane = DataPlane(spec.node or "runner", sender_factory=lambda addr: TcpSender(uplink or addr, tls=tls))
    plane.default_route = "uplink" if uplink else None
    platform = ModularPlatform(
        plane, ModuleLoader(keys, module_dirs), deadline_s=args.deadline_s, data_root=args.data_dir
    )
    sync: TenantSync | None = None
    control: TenantControl | None = None
    try:
        state = json.loads(args.state_in.read_text()) if args.state_in and args.state_in.exists() else None
        if args.tenants_control:
            platform.loader.nf_class(spec.module, spec.digest, spec.entrypoint, spec.signature)
            sync = TenantSync(platform, None, state if isinstance(state, dict) else None)
            control = TenantControl(
                sync,
                token=token,
                agent=f"agent/{spec.node}" if tls is not None else None,
                install_credentials=None if tls is None else _installer(tls, plane),
            )
        elif args.tenants_file:
            # Verify the code once, up front: a tampered module fails the runner, not each tenant.
            platform.loader.nf_class(spec.module, spec.digest, spec.entrypoint, spec.signature)
            sync = TenantSync(platform, args.tenants_file, state if isinstance(state, dict) else None)
            sync.poll()
        else:
            platform.install(spec)
            platform.start(spec.name, state)
            if platform.instances[spec.name].lifecycle.state != "Running":
                raise RuntimeError(platform.instances[spec.name].lifecycle.message)
    except Exception as exc:
        print(f"runner: instance {spec.name} failed to load: {exc}", file=sys.stderr)
        return 3
    ingress = TcpIngress(args.listen, plane.deliver_many, tls=tls, control=control)
    tune_for_data_plane()
    if args.ready_file:
        write_json_atomic(args.ready_file, {"address": ingress.address, "pid": os.getpid()})
    log.info("instance %s serving on %s", spec.name, ingress.address)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    next_tick = 0.0
    # A shared runner polls its tenants file often (a joining tenant waits for it); the rest is per second.
    while not stop.wait(0.05 if args.tenants_file else 1.0):
        if sync is not None and sync.changed():
            got = sync.read()
            if got is not None:
                if tls is not None:
                    # The agent re-issued our certificate for the tenants' slices before it wrote the
                    # file (it may have been loaded by the per-second check already): the uplink
                    # reconnects with it before a new tenant's first output, which it must allow.
                    tls.reload_if_changed()
                    for sender in list(plane.senders.values()):
                        if isinstance(sender, TcpSender):
                            sender.reconnect()
                sync.apply(*got)
                if args.status_file:
                    write_status(args.status_file, platform, plane, ingress, sync)
        if time.monotonic() < next_tick:
            continue
        next_tick = time.monotonic() + 1.0
        if tls is not None and tls.reload_if_changed():
            # The agent renewed our certificate (same slice, new key): new connections present it.
            log.info("loaded the renewed data-plane certificate in %s", args.tls_dir)
        # Polled rather than prctl(PR_SET_PDEATHSIG): that signal follows the *thread* that forked us,
        # and agents start runners from pool and monitor threads that may end while the agent lives.
        # A dead parent re-parents us, so getppid() changes within the second either way.
        if args.parent_pid is not None and os.getppid() != args.parent_pid:
            log.warning("parent process %d is gone; stopping", args.parent_pid)
            break
        if args.spec_file and not args.spec_file.exists():
            # Our record was removed (instance deleted while we were unreachable, or the agent's
            # state wiped): nobody will ever adopt this process, so it must not linger.
            log.warning("spec file %s is gone; stopping", args.spec_file)
            break
        for sh in list(platform.shared.values()):  # the overload signal, sampled once a second
            w = plane.workers.get(sh.worker_key)
            if w is not None:
                sh.overload.sample(w.queue.dropped)
        if args.status_file:
            write_status(args.status_file, platform, plane, ingress, sync)
    ingress.close()
    drain(plane, timeout_s=3.0)  # the local driver waits 5 s before SIGKILL
    if args.state_out:
        if sync is not None:
            write_json_atomic(args.state_out, sync.export_states())
        else:
            save_state(platform, spec.name, args.state_out)
    for name in list(platform.instances):
        platform.uninstall(name)
    plane.stop()
    return 0


def write_status(
    path: Path, platform: ModularPlatform, plane: DataPlane, ingress: TcpIngress, sync: TenantSync | None
) -> None:
    """``status.json``: the instance's state and counters (per tenant for a shared runner)."""
    # Refused data-plane connections and messages, by reason (not in the agent's metric).
    rejected = {k: v for k, v in ingress.rejected.items() if v}
    if sync is not None:
        shared = shared_statistics(platform)
        write_json_atomic(
            path,
            {
                "state": "Running",
                "message": "",
                "generation": sync.generation,
                "tenants": sync.status(),
                "shared": shared,
                "builds": dict(platform.shared_builds),
                "rejected": rejected,
            },
        )
        return
    inst = next(iter(platform.instances.values()))
    c = inst.counters
    write_json_atomic(
        path,
        {
            "state": str(inst.lifecycle.state),
            "message": inst.lifecycle.message,
            "counters": {**c.as_dict(), "dropped": c.dropped + plane.dropped_total()},
            "latencyMs": c.latency_ms,
            "e2eLatencyMs": c.e2e_latency_ms,
            "rejected": rejected,
        },
    )


def _installer(tls: Any, plane: DataPlane) -> Any:
    """How a ``--tenants-control`` runner takes the credentials its agent sends (a certificate for
    its tenants' slices): checked, written to the work directory, loaded, and the uplink reconnected
    with them before any tenant of the new set sends."""
    from flyslice.nodeagent.dataplane.tls import check_credentials, write_tls_dir

    def install(ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        check_credentials(ca_pem, cert_pem, key_pem)
        if tls.cert.read_bytes() == cert_pem and tls.key.read_bytes() == key_pem:
            return  # already in use (the agent sends them again after it restarted)
        write_tls_dir(tls.cert.parent, ca_pem, cert_pem, key_pem)
        tls.reload()
        for sender in list(plane.senders.values()):
            if isinstance(sender, TcpSender):
                sender.reconnect()
        log.info("loaded the data-plane certificate the agent sent (%s)", tls.cert.parent)

    return install


def save_state(platform: ModularPlatform, name: str, path: Path) -> None:
    inst = platform.instances[name]
    if not inst.running:
        return  # a failed NF's state is not worth carrying into its replacement
    try:
        state = platform.plane.worker(inst.slice).call(inst.nf.export_state)
        write_json_atomic(path, state)
    except Exception as exc:  # the replacement then starts fresh; say why
        log.error("instance %s: could not save its state: %s", name, exc)


def drain(plane: DataPlane, timeout_s: float) -> bool:
    """Finish what was received before stopping: process the queues, then flush the senders."""
    deadline = time.monotonic() + timeout_s

    def idle() -> bool:
        workers_idle = all(len(w.queue) == 0 and w.current is None for w in plane.workers.values())
        senders_idle = all(s.idle() for s in plane.senders.values() if isinstance(s, TcpSender))
        return workers_idle and senders_idle

    while time.monotonic() < deadline:
        if idle():
            return True
        time.sleep(0.01)
    return idle()


if __name__ == "__main__":
    raise SystemExit(main())
