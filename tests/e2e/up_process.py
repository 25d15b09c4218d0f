"""A real `flyslice up` process for the tests, with its status API read over HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import free_port

from .harness import WILDFIRE


def copy_wildfire(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in WILDFIRE.glob("*.yaml"):
        shutil.copy(f, dest / f.name)
    return dest


class UpProcess:
    """``flyslice up SOURCE --no-view`` on a free port; a context manager that stops it with SIGINT."""

    def __init__(self, source: str, state_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.log = state_dir.parent / f"up-{self.port}.log"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.argv = [
            "flyslice", "up", source, "--no-view", "--status-addr", f"127.0.0.1:{self.port}",
            "--state-dir", str(state_dir), *args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> UpProcess:
        self.proc = subprocess.Popen(self.argv, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def status(self) -> dict[str, Any] | None:
        try:
            code, body = self.get("/status")
        except OSError:
            return None
        return json.loads(body) if code == 200 else None

    def slice(self, name: str) -> dict[str, Any] | None:
        doc = self.status()
        return next((s for s in doc["slices"] if s["name"] == name), None) if doc else None

    def wait(self, cond: Callable[[dict[str, Any]], Any], timeout: float = 60.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        doc: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"flyslice up exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}"
                )
            doc = self.status()
            if doc is not None and (value := cond(doc)):
                return value
            time.sleep(0.2)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}: {json.dumps(doc, indent=1)[:4000]}"
        )

    def wait_ready(self, name: str = "wildfire", timeout: float = 60.0) -> dict[str, Any]:
        def ready(doc: dict[str, Any]) -> dict[str, Any] | None:
            s = next((s for s in doc["slices"] if s["name"] == name), None)
            return s if s and s["phase"] == "Ready" else None

        result: dict[str, Any] = self.wait(ready, timeout, f"slice {name} Ready")
        return result


def running(slice_doc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """instance -> (node, flavor) of the instances that run."""
    return {
        i["instance"]: (i["node"], i["flavor"]) for i in slice_doc["instances"] if i["state"] == "Running"
    }
