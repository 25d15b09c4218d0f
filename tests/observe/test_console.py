"""The web console in a real headless Chromium against a real `flyslice up`."""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from flyslice.operator.observe.web import ASSETS, asset

from .browser import ARTIFACTS, PHONE, Browser
from .conftest import UpProcess

WILDFIRE = Path(__file__).resolve().parents[2] / "examples" / "wildfire"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"

PLACED_IN_DOM = """
return [...document.querySelectorAll('[data-node] .nf')].map(e =>
  [e.dataset.instance, e.closest('[data-node]').dataset.node, e.dataset.flavor, e.dataset.state]);
"""


def wait_js(browser: Browser, script: str, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = browser.js(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def test_assets_are_shipped_and_reference_no_other_origin() -> None:
    for name in ASSETS:
        text = asset(name).decode()
        assert not re.search(r"https?://", text), f"{name} loads something from another origin"
    assert '<meta name="viewport"' in asset("index.html").decode()


@pytest.mark.slow
def test_console_shows_wildfire_placement_and_updates_live(start_up: Any, tmp_path: Path) -> None:
    src = tmp_path / "manifests"
    shutil.copytree(WILDFIRE, src)
    up: UpProcess = start_up(src)
    status = up.wait_ready()
    want = sorted(
        [i["instance"], i["node"], i["flavor"], "Running"] for s in status["slices"] for i in s["instances"]
    )
    assert len(want) == 9
    # Plain HTTP: the page, a redirect from /, and a 404 that names the asset.
    assert b"<title>flyslice console</title>" in up.get("/")
    with pytest.raises(urllib.error.HTTPError) as missing:
        up.get("/console/nope.js")
    assert missing.value.code == 404

    out = ARTIFACTS / "console"
    browser = Browser(tmp_path)
    try:
        browser.go(up.base + "/console/")
        wait_js(browser, "return document.querySelectorAll('[data-node] .nf').length === 9", 10, "9 NFs")
        wait_js(browser, "return document.getElementById('live').dataset.state === 'live'", 10, "the stream")
        placed = sorted(browser.js(PLACED_IN_DOM))
        assert placed == want
        # The seed paper's deployment: gateways run only fNFs, the cloud only VNFs, drawn differently.
        assert {f for _, node, f, _ in placed if node.startswith("gw-")} == {"fnf"}
        assert {f for _, node, f, _ in placed if node == "cloud"} == {"vnf"}
        styles = browser.js(
            "return ['fnf','vnf'].map(f => getComputedStyle(document.querySelector('.nf.' + f))"
            ".getPropertyValue('border-style') + ' ' + getComputedStyle(document.querySelector('.nf.' + f))"
            ".getPropertyValue('background-color'))"
        )
        assert styles[0] != styles[1]
        tiers = browser.js("return [...document.querySelectorAll('[data-tier]')].map(t => t.dataset.tier)")
        assert tiers == ["cloud", "fog", "gateway"]
        assert browser.js("return document.querySelector('[data-link=\"cloud-fog-1\"]').textContent") == (
            "cloud ↔ fog-1: 4 ms · 1000 Mbit/s"
        )
        # Phone-sized: nothing wider than the screen, so no sideways scrolling.
        assert browser.js("return window.innerWidth") == PHONE[0]
        assert browser.js("return document.documentElement.scrollWidth <= window.innerWidth")
        # Everything came from this server: no CDN.
        origins = browser.js(
            "return performance.getEntriesByType('resource').map(r => new URL(r.name).origin)"
        )
        assert set(origins) == {up.base}
        browser.screenshot(out / "phone.png")

        # A slice change reaches the open page by itself within 2 s of `up` applying it.
        slice_file = src / "slice.yaml"
        slice_file.write_text(slice_file.read_text().replace("maxLatencyMs: 10", "maxLatencyMs: 12"))
        up.wait(lambda d: d["slices"][0]["budgetMs"] == 12, timeout=10, what="the new budget in /status")
        applied = time.monotonic()
        wait_js(
            browser,
            "return document.querySelector('[data-slice=\"default/wildfire\"] .budget').textContent === '12 ms'",
            2.0,
            "the console to show the 12 ms budget",
        )
        lag = time.monotonic() - applied
        assert lag < 2.0, lag
        browser.screenshot(out / "phone-after-change.png")

    finally:
        browser.close()
    desktop = Browser(tmp_path, (1280, 900), phone=False)
    try:
        desktop.go(up.base + "/console/")
        wait_js(desktop, "return document.querySelectorAll('[data-node] .nf').length === 9", 10, "9 NFs")
        height = desktop.js("return document.documentElement.scrollHeight")
        desktop.viewport(1280, min(int(height) + 20, 2400))
        shot = desktop.screenshot(out / "desktop.png")
        if os.environ.get("FLYSLICE_UPDATE_DOCS_SCREENSHOT") == "1":
            shutil.copy(shot, DOCS_SCREENSHOT)
    finally:
        desktop.close()
    assert (out / "phone.png").stat().st_size > 10_000
