"""VNF drivers: one interface, two ways to run an NF outside the agent.

``LocalProcessDriver`` (embedded mode; no container runtime): the NF runner as a child process
running the same NF code an fNF runs. ``KubernetesPodDriver`` (in ``k8s_driver``): a pod pinned
to this node. Both are level-triggered: ``ensure`` is idempotent, and a driver re-adopts what a
previous life of the agent started instead of starting it twice.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from flyslice.nodeagent.dataplane.transport import probe
from flyslice.nodeagent.runtime.tenants import write_tenants
from flyslice.nodeagent.spec import InstanceSpec

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from flyslice.nodeagent.dataplane.tls import CertificateAuthority, TlsFiles

log = logging.getLogger("flyslice.nodeagent.drivers")


def shared_key(name: str) -> str:
    """A shared instance's name as a file or object name (``s-`` and 20 hex digits of its sha256):
    names such as ``broker/vnf/any@n1#0`` hold characters neither paths nor Kubernetes names allow."""
    return "s-" + hashlib.sha256(name.encode()).hexdigest()[:20]


def shared_base(name: str, first: InstanceSpec) -> InstanceSpec:
    """A shared runner's own spec: the code, footprint and (unless per tenant) config its tenants
    share, and nothing of any one tenant, so a joining or leaving tenant never changes it."""
    assert first.shared is not None
    per_tenant = first.shared.per_tenant_config
    return replace(
        first,
        name=name,
        slice="shared",
        role="shared",
        namespace="default",
        attachment="",
        next_hops=(),
        config={} if per_tenant else first.config,
        generation=0,
    )


@dataclass
class VnfObservation:
    state: str  # Installing | Running | Failed | Stopped
    message: str = ""
    address: str = ""
    pid: int | None = None
    counters: dict[str, int] = field(default_factory=dict)
    latency_ms: float | None = None
    e2e_latency_ms: float | None = None
    started_at: float | None = None
    #: Restarts the runtime did on its own (a pod's containers restarted by the kubelet), added to
    #: the agent's own count in the instance status.
    restarts: int = 0


class VnfDriver(Protocol):
    def ensure(self, spec: InstanceSpec) -> None:
        """Make the instance run exactly this spec; no-op if it already does."""

    def remove(self, name: str) -> None: ...

    def observe(self, name: str) -> VnfObservation | None: ...

    def names(self) -> list[str]:
        """Instances this driver runs (including ones adopted from a previous agent life)."""
        ...

    def close(self) -> None:
        """Forget the handles; VNFs keep running (the agent may be restarting)."""


@dataclass
class _Proc:
    spec_fingerprint: str
    dir: Path
    started_at: float
    popen: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    #: time.monotonic() of the last answered liveness probe (None until the runner is serving).
    last_answer: float | None = None
    #: The latest probe went unanswered. Silence alone is not enough: a prober starved of CPU on a
    #: loaded host sends nothing, and that must not count against the runner.
    probe_failing: bool = False
    #: Set once the runner stopped answering: it is killed, not asked to drain (it cannot).
    unresponsive: bool = False


class LocalProcessDriver:
    """Runs ``python -m flyslice.nodeagent.runtime.runner`` per VNF; remembers them under ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        uplink_file: Path,
        *,
        python: str = sys.executable,
        die_with_parent: bool = False,
        probe_interval_s: float = 1.0,
        unresponsive_after_s: float = 4.0,
        trusted_keys: Sequence[Ed25519PublicKey] = (),
        tls: TlsFiles | None = None,
        tls_issuer: CertificateAuthority | None = None,
        module_dirs: Sequence[Path] | None = None,
    ) -> None:
        #: The agent's ``file:`` confinement, handed to every runner (None: not confined).
        self.module_dirs = None if module_dirs is None else [Path(d).resolve() for d in module_dirs]
        #: The agent's data-plane credentials (probes go over TLS like messages), and the CA that gives
        #: each runner its own certificate, bound to the runner's slice.
        self.tls = tls
        self.tls_issuer = tls_issuer
        # Absolute: runners start in their own directory, not the launch directory (see _start).
        self.root = Path(state_dir).resolve() / "vnf"
        self.root.mkdir(parents=True, exist_ok=True)
        #: NFs' persistent files, shared with the agent's fNFs (``ModularPlatform.data_root``).
        self.data_root = Path(state_dir).resolve() / "data"
        self.uplink_file = Path(uplink_file).resolve()
        #: The agent's signing policy, handed to every runner: one trust policy for fNFs and VNFs.
        self.trusted_keys_b64: list[str] = []
        if trusted_keys:
            from flyslice.nodeagent.runtime.modules import public_key_b64

            self.trusted_keys_b64 = sorted(public_key_b64(k) for k in trusted_keys)
        # Part of each runner's recorded fingerprint, so a runner started under another key set
        # (e.g. before signing was required) is replaced, not adopted as if it had been verified.
        self._policy_tag = (
            "+keys:" + hashlib.sha256("\n".join(self.trusted_keys_b64).encode()).hexdigest()[:12]
            if self.trusted_keys_b64
            else ""
        ) + ("+tls" if tls is not None else "")  # a runner started on plain TCP is replaced, not adopted
        self.python = python
        #: True: runners stop when the process that started them dies (``flyslice up``: nothing would
        #: adopt them before the next ``up``). False: they outlive an agent restart and are re-adopted.
        self.die_with_parent = die_with_parent
        self.probe_interval_s = probe_interval_s
        self.unresponsive_after_s = unresponsive_after_s
        self.procs: dict[str, _Proc] = {}
        self._replacing: set[str] = set()
        #: Shared instances: one runner per ``sharedInstance.name`` serving several tenants, under
        #: ``<state>/vnf-shared/<key>/`` (its ``name`` file holds the instance's name).
        self.shared_root = Path(state_dir).resolve() / "vnf-shared"
        self.shared_root.mkdir(parents=True, exist_ok=True)
        self.shared_procs: dict[str, _Proc] = {}
        self._shared_tenants: dict[str, tuple[int, list[InstanceSpec]]] = {}  # name -> generation, specs
        self._adopt()
        self._adopt_shared()
        self._closed = threading.Event()
        self._prober = threading.Thread(target=self._probe_loop, name="vnf-liveness", daemon=True)
        self._prober.start()

    # -- adoption after an agent restart -----------------------------------------------------------

    def _adopt(self) -> None:
        for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
            pid = _read_pid(d)
            fingerprint = _read_text(d / "fingerprint")
            if pid is not None and fingerprint and _is_our_runner(pid, d):
                self.procs[d.name] = _Proc(
                    fingerprint, d, _read_float(d / "started_at") or time.time(), pid=pid
                )
            else:
                _kill_runner_of(d)
                shutil.rmtree(d, ignore_errors=True)

    # -- the driver interface ----------------------------------------------------------------------

    def _fingerprint(self, spec: InstanceSpec) -> str:
        return spec.fingerprint + self._policy_tag

    def ensure(self, spec: InstanceSpec) -> None:
        proc = self.procs.get(spec.name)
        if proc is not None and proc.spec_fingerprint == self._fingerprint(spec) and self._alive(proc):
            return
        if proc is None:
            self._start(spec, None)
            return
        # A replaced runner writes its NF's exported state on a clean stop; the new one imports it.
        # Meanwhile observe() says Updating, not the old runner's exit as a failure.
        self._replacing.add(spec.name)
        try:
            was_alive = self._alive(proc)
            self._terminate(proc)
            saved = proc.dir / "state.json"
            carried = saved.read_bytes() if was_alive and saved.exists() else None
            self.remove(spec.name)
            self._start(spec, carried)
        finally:
            self._replacing.discard(spec.name)

    def _start(
        self,
        spec: InstanceSpec,
        carried: bytes | None,
        *,
        d: Path | None = None,
        slices: Sequence[str] = (),
        extra: Sequence[str] = (),
    ) -> None:
        """Start a runner for ``spec`` in ``d`` (default: the instance's own directory); a shared
        instance's runner gets its tenants file (``extra``) and a certificate for all their ``slices``."""
        if not spec.module:
            raise ValueError(f"instance {spec.name}: the local-process driver runs vnf.module; none given")
        shared = d is not None
        d = d if d is not None else self.root / spec.name
        d.mkdir(parents=True, exist_ok=True)
        for stale in ("ready.json", "status.json", "state.json", "state-in.json"):
            (d / stale).unlink(missing_ok=True)
        state_args = ["--state-out", str(d / "state.json")]
        if carried is not None:
            (d / "state-in.json").write_bytes(carried)
            state_args += ["--state-in", str(d / "state-in.json")]
        (d / "spec.json").write_text(json.dumps(spec.to_dict()))
        # -I (isolated): neither the launch directory (which -m would put first on sys.path: an
        # argparse.py in a manifest repo would run inside every runner), nor PYTHON* variables, nor
        # the user site-packages decide what code the runner imports; only the interpreter's own
        # sys.path (stdlib and site-packages, where flyslice is installed) does.
        cmd = [
            self.python, "-I", "-m", "flyslice.nodeagent.runtime.runner",
            "--spec-file", str(d / "spec.json"),
            "--listen", "127.0.0.1:0",
            "--ready-file", str(d / "ready.json"),
            "--status-file", str(d / "status.json"),
            "--uplink-file", str(self.uplink_file),
            "--data-dir", str(self.data_root),
            *state_args,
            *extra,
        ]  # fmt: skip
        for key in self.trusted_keys_b64:
            cmd += ["--trusted-key-data", key]
        if self.module_dirs is not None:
            # The runner reads the module itself: it applies the same confinement as the agent.
            cmd += ["--confine-modules", *(a for d in self.module_dirs for a in ("--module-dir", str(d)))]
        if self.tls is not None:
            if self.tls_issuer is None:
                raise ValueError(
                    f"instance {spec.name}: the data plane uses TLS but this agent has no CA to issue "
                    "the runner's certificate; refusing to start a runner on an unauthenticated port"
                )
            # A fresh key per runner start (rotation by restart); it may send only for its slice(s).
            self.tls_issuer.issue_to(d / "tls", f"runner {spec.name}", slices=list(slices) or [spec.slice])
            cmd += ["--tls-dir", str(d / "tls")]
        if self.die_with_parent:
            cmd += ["--parent-pid", str(os.getpid())]
        log = open(d / "runner.log", "ab")  # noqa: SIM115 -- handed to the child
        # A new session: the runner survives the agent (kill -9 included) and is re-adopted.
        # cwd: the runner's own directory, so nothing relative resolves against the launch directory.
        popen = subprocess.Popen(
            cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, cwd=d
        )
        log.close()
        now = time.time()
        fingerprint = self._fingerprint(spec)
        (d / "pid").write_text(str(popen.pid))
        (d / "started_at").write_text(repr(now))
        (d / "fingerprint").write_text(fingerprint)
        proc = _Proc(fingerprint, d, now, popen=popen, pid=popen.pid)
        if shared:
            self.shared_procs[_read_text(d / "name")] = proc
        else:
            self.procs[spec.name] = proc

    def remove(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        d = proc.dir if proc else self.root / name
        if proc is not None:
            self._terminate(proc)
        shutil.rmtree(d, ignore_errors=True)

    def _terminate(self, proc: _Proc) -> None:
        """SIGTERM (the runner drains and saves its state), SIGKILL after 5 s; at once when frozen."""
        if proc.pid is not None and proc.unresponsive:
            # It answered no probe for seconds: a drain would only time out, and its state is suspect.
            _force_kill(proc.pid)
            if proc.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(5)
            return
        if proc.pid is not None and self._alive(proc):
            try:
                os.kill(proc.pid, signal.SIGTERM)
                # A runner stopped by SIGSTOP (job control, a debugger) holds SIGTERM pending until
                # it runs again; SIGCONT lets it drain now instead of being killed after 5 s.
                os.kill(proc.pid, signal.SIGCONT)
                if proc.popen is not None:
                    proc.popen.wait(5)
                else:
                    psutil.Process(proc.pid).wait(5)
            except (
                ProcessLookupError,
                psutil.NoSuchProcess,
                psutil.TimeoutExpired,
                subprocess.TimeoutExpired,
            ):
                _force_kill(proc.pid)

    def observe(self, name: str) -> VnfObservation | None:
        if name in self._replacing:
            return VnfObservation("Updating", "replacing the runner")
        proc = self.procs.get(name)
        if proc is None:
            return self._observe_tenant(name)
        ready, unwell = self._runner_health(proc, "runner", proc.started_at)
        if unwell is not None:
            return unwell
        status = _read_json(proc.dir / "status.json") or {}
        return VnfObservation(
            state=str(status.get("state", "Running")),
            message=str(status.get("message", "")),
            address=str(ready.get("address", "")),
            pid=proc.pid,
            counters=dict(status.get("counters", {})),
            latency_ms=status.get("latencyMs"),
            e2e_latency_ms=status.get("e2eLatencyMs"),
            started_at=proc.started_at,
        )

    # -- shared instances: one runner, several tenants ---------------------------------------------

    def _shared_dir(self, name: str) -> Path:
        return self.shared_root / shared_key(name)

    @staticmethod
    def shared_base(name: str, first: InstanceSpec) -> InstanceSpec:
        return shared_base(name, first)

    def ensure_shared(self, name: str, specs: Sequence[InstanceSpec], timeout_s: float = 5.0) -> None:
        """Make one runner serve exactly these tenants (which agree on code and config, the agent
        checked). A new tenant joins the running process and a leaving one leaves it -- through the
        runner's tenants file, applied between two batches -- so the others are not disturbed; only
        a change of the shared code or config replaces the process (handing each tenant's state on).
        Returns once the runner applied the tenants (or ``timeout_s`` passed)."""
        d = self._shared_dir(name)
        base = self.shared_base(d.name, specs[0])
        slices = sorted({s.slice for s in specs})
        proc = self.shared_procs.get(name)
        carried: bytes | None = None
        if proc is not None and proc.spec_fingerprint == self._fingerprint(base) and not self._alive(proc):
            # It died after the agent looked (observe_shared): the agent's next converge sees it Failed
            # and restarts it -- counting the restart for every tenant, which a silent start here hid.
            return
        if proc is not None and proc.spec_fingerprint != self._fingerprint(base):
            self._replacing.add(name)
            try:
                was_alive = self._alive(proc)
                self._terminate(proc)
                saved = proc.dir / "state.json"
                carried = saved.read_bytes() if was_alive and saved.exists() else None
                self.remove_shared(name)
            finally:
                self._replacing.discard(name)
            proc = None
        generation, current = self._shared_tenants.get(name, (0, []))
        if proc is not None and [s.to_dict() for s in current] == [s.to_dict() for s in specs]:
            return
        generation += 1
        if proc is None:
            d.mkdir(parents=True, exist_ok=True)
            (d / "name").write_text(name)
            write_tenants(d / "tenants.json", generation, list(specs))
            self._shared_tenants[name] = (generation, list(specs))
            self._start(base, carried, d=d, slices=slices, extra=["--tenants-file", str(d / "tenants.json")])
        else:
            if self.tls_issuer is not None and sorted({s.slice for s in current}) != slices:
                # The runner may send only for its tenants' slices: a certificate for the new set first,
                # so that a joining tenant's first output already goes out under it.
                self.tls_issuer.issue_to(d / "tls", f"runner {d.name}", slices=slices)
            write_tenants(d / "tenants.json", generation, list(specs))
            self._shared_tenants[name] = (generation, list(specs))
        self._wait_generation(name, generation, timeout_s)

    def _wait_generation(self, name: str, generation: int, timeout_s: float) -> None:
        proc = self.shared_procs.get(name)
        deadline = time.monotonic() + timeout_s
        while proc is not None and time.monotonic() < deadline and self._alive(proc):
            status = _read_json(proc.dir / "status.json") or {}
            if int(status.get("generation", -1)) >= generation:
                return
            time.sleep(0.01)

    def remove_shared(self, name: str) -> None:
        proc = self.shared_procs.pop(name, None)
        self._shared_tenants.pop(name, None)
        d = proc.dir if proc else self._shared_dir(name)
        if proc is not None:
            self._terminate(proc)
        shutil.rmtree(d, ignore_errors=True)

    def shared_names(self) -> list[str]:
        return sorted(self.shared_procs)

    def shared_pid(self, name: str) -> int | None:
        proc = self.shared_procs.get(name)
        return proc.pid if proc is not None else None

    def tenant_of(self, tenant: str) -> str | None:
        """The shared instance whose runner serves ``tenant`` (None: none)."""
        for name, (_, specs) in list(self._shared_tenants.items()):
            if any(s.name == tenant for s in specs):
                return name
        return None

    def observe_shared(self, name: str) -> VnfObservation | None:
        """The shared runner itself (not one tenant): Failed when it exited or stopped answering."""
        proc = self.shared_procs.get(name)
        if proc is None:
            return None
        if name in self._replacing:
            return VnfObservation("Updating", "replacing the runner")
        ready, unwell = self._runner_health(proc, "shared runner", None)
        if unwell is not None:
            return unwell
        return VnfObservation(
            "Running", "", address=str(ready.get("address", "")), pid=proc.pid, started_at=proc.started_at
        )

    def _observe_tenant(self, tenant: str) -> VnfObservation | None:
        name = self.tenant_of(tenant)
        if name is None:
            return None
        runner = self.observe_shared(name)
        if runner is None or runner.state != "Running":
            return runner
        proc = self.shared_procs[name]
        status = _read_json(proc.dir / "status.json") or {}
        mine = (status.get("tenants") or {}).get(tenant)
        if not isinstance(mine, dict):
            return VnfObservation("Installing", f"joining shared instance {name}", pid=proc.pid)
        return VnfObservation(
            state=str(mine.get("state", "Running")),
            message=str(mine.get("message", "")),
            address=runner.address,
            pid=proc.pid,
            counters=dict(mine.get("counters", {})),
            latency_ms=mine.get("latencyMs"),
            e2e_latency_ms=mine.get("e2eLatencyMs"),
            started_at=proc.started_at,
        )

    def shared_status(self, name: str) -> dict[str, Any]:
        """What the runner reports of its shared instance (tenants, queue drops, builds)."""
        proc = self.shared_procs.get(name)
        status = (_read_json(proc.dir / "status.json") or {}) if proc is not None else {}
        shared = status.get("shared") or {}
        doc = dict(next(iter(shared.values()))) if isinstance(shared, dict) and shared else {}
        doc["pid"] = proc.pid if proc is not None else None
        doc["flavor"] = "vnf"
        return doc

    def _adopt_shared(self) -> None:
        for d in sorted(p for p in self.shared_root.iterdir() if p.is_dir()):
            pid = _read_pid(d)
            fingerprint = _read_text(d / "fingerprint")
            name = _read_text(d / "name")
            tenants = _read_json(d / "tenants.json")
            if pid is not None and fingerprint and name and tenants and _is_our_runner(pid, d):
                try:
                    specs = [InstanceSpec.from_dict(t) for t in tenants.get("tenants", [])]
                    generation = int(tenants.get("generation", 0))
                except (ValueError, TypeError):
                    specs, generation = [], 0
                self.shared_procs[name] = _Proc(
                    fingerprint, d, _read_float(d / "started_at") or time.time(), pid=pid
                )
                self._shared_tenants[name] = (generation, specs)
            else:
                _kill_runner_of(d)
                shutil.rmtree(d, ignore_errors=True)

    def wait_ready(self, name: str, timeout: float = 10.0) -> VnfObservation:
        deadline = time.monotonic() + timeout
        while True:
            obs = self.observe(name)
            if obs is None or obs.state != "Installing" or time.monotonic() > deadline:
                return obs or VnfObservation("Failed", "not started")
            time.sleep(0.005)

    def names(self) -> list[str]:
        return sorted(self.procs)

    def close(self) -> None:
        self._closed.set()
        self.procs.clear()
        self.shared_procs.clear()

    # -- liveness --------------------------------------------------------------------------------------

    def _runner_health(
        self, proc: _Proc, what: str, started_at: float | None
    ) -> tuple[dict[str, Any], VnfObservation | None]:
        """A runner process's ``ready.json`` and, unless it is up and answering, what it is instead:
        Failed (exited, or silent past the liveness limit) or Installing (not ready yet)."""
        if not self._alive(proc):
            code = proc.popen.returncode if proc.popen is not None else None
            tail = _tail(proc.dir / "runner.log")
            return {}, VnfObservation("Failed", f"{what} exited (code {code}): {tail}", pid=proc.pid)
        ready = _read_json(proc.dir / "ready.json")
        if not ready:
            return {}, VnfObservation("Installing", "runner starting", pid=proc.pid)
        silent_s = self._silent_for(proc)
        if silent_s is not None:
            return ready, VnfObservation(
                "Failed",
                f"{what} pid {proc.pid} answered no liveness probe for {silent_s:.1f}s (frozen or hung)",
                address=str(ready.get("address", "")),
                pid=proc.pid,
                started_at=started_at,
            )
        return ready, None

    def _silent_for(self, proc: _Proc) -> float | None:
        """Seconds since the runner last answered, when that is over the limit; else None."""
        if proc.last_answer is None or not proc.probe_failing:
            return None
        silent = time.monotonic() - proc.last_answer
        if silent <= self.unresponsive_after_s:
            return None
        proc.unresponsive = True
        return silent

    def _probe_loop(self) -> None:
        """Probe every serving runner through its data-plane listener, once per ``probe_interval_s``.

        Existence of the pid says nothing about a runner that is stopped or wedged; an answer on its
        data port shows that its listener thread runs. Its NF's own hangs are the runner's watchdog's.
        """
        while not self._closed.wait(self.probe_interval_s):
            for name, proc in [*self.procs.items(), *self.shared_procs.items()]:
                if proc.unresponsive or name in self._replacing:
                    continue
                address = str((_read_json(proc.dir / "ready.json") or {}).get("address", ""))
                if not address:
                    continue
                if proc.last_answer is None:
                    proc.last_answer = time.monotonic()  # serving since about now: the grace starts
                answered = probe(address, timeout=min(1.0, self.unresponsive_after_s / 2), tls=self.tls)
                if answered:
                    proc.last_answer = time.monotonic()
                proc.probe_failing = not answered
            self._renew_runner_certificates()

    def _renew_runner_certificates(self) -> None:
        """Give each runner a new key and certificate (same slice) at 2/3 of its certificate's
        lifetime; the runner notices the new cert.pem within a second and loads it for new connections."""
        if self.tls_issuer is None:
            return
        from flyslice.nodeagent.dataplane.tls import TlsFiles

        now = datetime.datetime.now(datetime.UTC)
        for name, proc in [*self.procs.items(), *self.shared_procs.items()]:
            files = TlsFiles.in_dir(proc.dir / "tls")
            try:
                if files.renewal_due() > now:
                    continue
                self.tls_issuer.renew(files.cert.parent)
            except (OSError, ValueError) as exc:  # no TLS dir (yet, or a plain runner): nothing to renew
                log.debug("runner %s: no certificate renewed: %s", name, exc)
                continue
            log.info("runner %s: renewed its data-plane certificate", name)

    def remove_all(self) -> None:
        for name in list(self.procs):
            self.remove(name)
        for name in list(self.shared_procs):
            self.remove_shared(name)

    def _alive(self, proc: _Proc) -> bool:
        if proc.popen is not None:
            return proc.popen.poll() is None
        return proc.pid is not None and _is_our_runner(proc.pid, proc.dir)


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _read_pid(d: Path) -> int | None:
    text = _read_text(d / "pid")
    return int(text) if text.isdigit() else None


def _read_float(path: Path) -> float | None:
    try:
        return float(_read_text(path))
    except ValueError:
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_our_runner(pid: int, d: Path) -> bool:
    """The pid is alive and is the runner started for this directory (pids get reused)."""
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and str(d / "spec.json") in p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _kill_runner_of(d: Path) -> None:
    pid = _read_pid(d)
    if pid is not None and _is_our_runner(pid, d):
        _force_kill(pid)


def _force_kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _tail(path: Path, n: int = 300) -> str:
    try:
        data = path.read_bytes()[-n:]
    except OSError:
        return ""
    return data.decode(errors="replace").strip().replace("\n", " | ")
