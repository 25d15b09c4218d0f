"""Run the real embedded mode (git source + controller + one agent per node) in a background loop."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import git
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from flyslice.nodeagent.dataplane.tls import CertificateAuthority
from flyslice.operator.embedded.agent_runtime import LocalAgentFleet
from flyslice.operator.embedded.controller import EmbeddedController
from flyslice.operator.gitops.fetcher import GitSource
from flyslice.operator.gitops.spec import GitRef, GitSourceSpec
from flyslice.operator.gitops.watch import SourceWatcher

REPO = Path(__file__).resolve().parents[2]
WILDFIRE = REPO / "examples" / "wildfire"


class ManifestRepo:
    """A real git repository holding the manifests, edited and committed by the test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.repo = git.Repo.init(root, initial_branch="main")
        with self.repo.config_writer() as cw:
            cw.set_value("user", "name", "test")
            cw.set_value("user", "email", "test@example.invalid")
            cw.set_value("commit", "gpgsign", "false")

    def copy_example(self, src: Path = WILDFIRE) -> None:
        for f in src.glob("*.yaml"):
            shutil.copy(f, self.root / f.name)

    def write(self, name: str, docs: list[dict[str, Any]] | str) -> None:
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs, sort_keys=False)
        (self.root / name).write_text(text)

    def remove(self, name: str) -> None:
        (self.root / name).unlink()

    def commit(self, message: str) -> str:
        self.repo.git.add(A=True)
        self.repo.index.commit(message)
        return self.repo.head.commit.hexsha

    @property
    def url(self) -> str:
        return f"file://{self.root}"


class Embedded:
    def __init__(
        self,
        url: str,
        state: Path,
        mqtt_port: int | None,
        *,
        interval_s: float = 0.2,
        heartbeat_timeout_s: float = 30.0,
    ) -> None:
        spec = GitSourceSpec(url=url, ref=GitRef("branch", "main"), interval_s=interval_s)
        self.watcher = SourceWatcher(GitSource(spec, state / "git"))
        mqtt_addr = ("127.0.0.1", mqtt_port) if mqtt_port else None
        # As `flyslice up`: a data-plane CA of the installation, so agents and runners speak mutual TLS.
        ca = CertificateAuthority.load_or_create(state / "pki")
        self.fleet = LocalAgentFleet(state / "agents", mqtt_addr, ca)
        self.controller = EmbeddedController(
            self.watcher, self.fleet, heartbeat_timeout_s=heartbeat_timeout_s
        )
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def run() -> None:
            self._stop = asyncio.Event()
            self.watcher.on_revision = lambda _s: self.controller.trigger()
            await asyncio.gather(
                self.watcher.run(self._stop), self.controller.run(self._stop, interval_s=0.2)
            )

        self.loop.run_until_complete(run())

    def __enter__(self) -> Embedded:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def status(self) -> dict[str, Any]:
        return self.controller.snapshot()

    def slice(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.status()["slices"] if s["name"] == name), None)

    def wait(self, cond: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}: {json.dumps(self.status(), indent=1)[:4000]}"
        )

    def wait_ready(self, name: str, revision: str, timeout: float = 40.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            s = self.slice(name)
            return (
                s
                if s and s["phase"] == "Ready" and self.status()["source"]["lastAppliedRevision"] == revision
                else None
            )

        result: dict[str, Any] = self.wait(ready, timeout, f"slice {name} Ready at {revision[:8]}")
        return result

    def placement(self, name: str) -> dict[str, tuple[str, str]]:
        s = self.slice(name)
        return {i["instance"]: (i["node"], i["flavor"]) for i in (s["instances"] if s else [])}


class Sensors:
    """Real MQTT clients publishing readings at the gateways."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sensors")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, node: str, slice_name: str, temperature: float) -> None:
        info = self.client.publish(
            f"flyslice/{node}/{slice_name}/readings/temperature",
            json.dumps({"temperature": temperature}),
            qos=1,
        )
        info.wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def rows(db: Path, topic_like: str = "%") -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT count(*) FROM series WHERE topic LIKE ?", (topic_like,)).fetchone()
    return int(n)
