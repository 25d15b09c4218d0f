"""A real headless Chromium driven through chromedriver's W3C WebDriver HTTP API (stdlib only).

Debian's ``chromium`` and ``chromium-driver`` (tools/test.sh installs them). Tests skip when they are
missing, unless ``FLYSLICE_REQUIRE_BROWSER=1`` makes that a failure (CI).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
#: Screenshots and logs the browser tests leave behind; build/ is ignored by git.
ARTIFACTS = Path(os.environ.get("FLYSLICE_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))
PHONE = (390, 844)  # an iPhone 12-15 class viewport, CSS pixels


def binaries() -> tuple[str, str]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    if not chrome or not driver:
        why = "chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("FLYSLICE_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return chrome, driver


class Browser:
    def __init__(self, workdir: Path, size: tuple[int, int] = PHONE, *, phone: bool = True) -> None:
        chrome, driver = binaries()
        self.port = free_port()
        self.log = workdir / "chromedriver.log"
        self.driver = subprocess.Popen(
            [driver, f"--port={self.port}", f"--log-path={self.log}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        args = [
            "--headless=new",
            "--no-sandbox",  # the tests may run as root in a container
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--window-size={size[0]},{size[1]}",
            f"--user-data-dir={workdir / ('profile-phone' if phone else 'profile')}",
        ]
        options: dict[str, Any] = {"binary": chrome, "args": args}
        if phone:
            # Headless windows are at least 500 px wide; device emulation gives a true phone viewport.
            metrics = {"width": size[0], "height": size[1], "pixelRatio": 2.0, "touch": True}
            options["mobileEmulation"] = {"deviceMetrics": metrics}
        caps = {"browserName": "chrome", "goog:chromeOptions": options}
        value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = f"/session/{value['sessionId']}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(
                f"WebDriver {method} {path}: {exc.read().decode(errors='replace')}"
            ) from None

    def go(self, url: str) -> None:
        self._call("POST", f"{self.session}/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self._call("POST", f"{self.session}/execute/sync", {"script": script, "args": list(args)})

    def viewport(self, width: int, height: int) -> None:
        # Window rect includes no browser chrome in headless mode, so this is the CSS viewport.
        self._call("POST", f"{self.session}/window/rect", {"width": width, "height": height})

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", f"{self.session}/screenshot")))
        return path

    def close(self) -> None:
        try:
            self._call("DELETE", self.session)
        finally:
            self.driver.terminate()
            self.driver.wait(10)
