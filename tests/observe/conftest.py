"""A real `flyslice up` process on a free loopback port, for the metrics, console and diff tests."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port


class UpProcess:
    def __init__(self, source: Path, state: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = state / "up.log"
        state.mkdir(parents=True, exist_ok=True)
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            [
                *("flyslice", "up", str(source), "--no-view"),
                *("--status-addr", f"127.0.0.1:{self.port}", "--state-dir", str(state)),
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=timeout) as resp:
            body: bytes = resp.read()
            return body

    def status(self) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self.get("/status"))
            return doc
        except OSError:
            return None

    def wait(
        self, cond: Callable[[dict[str, Any]], bool], timeout: float = 60.0, what: str = ""
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        doc = None
        while time.monotonic() < deadline:
            doc = self.status()
            if doc is not None and cond(doc):
                return doc
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: {json.dumps(doc)[:3000]}")

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait(
            lambda d: bool(d["slices"]) and all(s["phase"] == "Ready" for s in d["slices"]),
            timeout,
            "every slice Ready",
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(30)
        self._out.close()
        return code


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[Callable[[Path], UpProcess]]:
    started: list[UpProcess] = []

    def start(source: Path) -> UpProcess:
        up = UpProcess(source, tmp_path / f"up-{len(started)}")
        started.append(up)
        return up

    yield start
    for up in started:
        assert up.stop() == 0, up.log.read_text()[-3000:]
