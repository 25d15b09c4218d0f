"""VNF drivers: one interface, two ways to run an NF outside the agent.

``LocalProcessDriver`` (embedded mode; no container runtime): the NF runner as a child process
running the same NF code an fNF runs. ``KubernetesPodDriver`` (in ``k8s_driver``): a pod pinned
to this node. Both are level-triggered: ``ensure`` is idempotent, and a driver re-adopts what a
previous life of the agent started instead of starting it twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from flyslice.nodeagent.spec import InstanceSpec


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


class LocalProcessDriver:
    """Runs ``python -m flyslice.nodeagent.runtime.runner`` per VNF; remembers them under ``state_dir``."""

    def __init__(self, state_dir: Path, uplink_file: Path, *, python: str = sys.executable) -> None:
        self.root = Path(state_dir) / "vnf"
        self.root.mkdir(parents=True, exist_ok=True)
        self.uplink_file = uplink_file
        self.python = python
        self.procs: dict[str, _Proc] = {}
        self._replacing: set[str] = set()
        self._adopt()

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

    def ensure(self, spec: InstanceSpec) -> None:
        proc = self.procs.get(spec.name)
        if proc is not None and proc.spec_fingerprint == spec.fingerprint and self._alive(proc):
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

    def _start(self, spec: InstanceSpec, carried: bytes | None) -> None:
        if not spec.module:
            raise ValueError(f"instance {spec.name}: the local-process driver runs vnf.module; none given")
        d = self.root / spec.name
        d.mkdir(parents=True, exist_ok=True)
        for stale in ("ready.json", "status.json", "state.json", "state-in.json"):
            (d / stale).unlink(missing_ok=True)
        state_args = ["--state-out", str(d / "state.json")]
        if carried is not None:
            (d / "state-in.json").write_bytes(carried)
            state_args += ["--state-in", str(d / "state-in.json")]
        (d / "spec.json").write_text(json.dumps(spec.to_dict()))
        cmd = [
            self.python, "-m", "flyslice.nodeagent.runtime.runner",
            "--spec-file", str(d / "spec.json"),
            "--listen", "127.0.0.1:0",
            "--ready-file", str(d / "ready.json"),
            "--status-file", str(d / "status.json"),
            "--uplink-file", str(self.uplink_file),
            *state_args,
        ]  # fmt: skip
        log = open(d / "runner.log", "ab")  # noqa: SIM115 -- handed to the child
        # A new session: the runner survives the agent (kill -9 included) and is re-adopted.
        popen = subprocess.Popen(
            cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        now = time.time()
        (d / "pid").write_text(str(popen.pid))
        (d / "started_at").write_text(repr(now))
        (d / "fingerprint").write_text(spec.fingerprint)
        self.procs[spec.name] = _Proc(spec.fingerprint, d, now, popen=popen, pid=popen.pid)

    def remove(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        d = proc.dir if proc else self.root / name
        if proc is not None:
            self._terminate(proc)
        shutil.rmtree(d, ignore_errors=True)

    def _terminate(self, proc: _Proc) -> None:
        """SIGTERM (the runner drains and saves its state), SIGKILL after 5 s."""
        if proc.pid is not None and self._alive(proc):
            try:
                os.kill(proc.pid, signal.SIGTERM)
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
            return None
        if not self._alive(proc):
            code = proc.popen.returncode if proc.popen is not None else None
            tail = _tail(proc.dir / "runner.log")
            return VnfObservation("Failed", f"runner exited (code {code}): {tail}", pid=proc.pid)
        ready = _read_json(proc.dir / "ready.json")
        if not ready:
            return VnfObservation("Installing", "runner starting", pid=proc.pid)
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
        self.procs.clear()

    def remove_all(self) -> None:
        for name in list(self.procs):
            self.remove(name)

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
