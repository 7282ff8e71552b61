"""End-to-end in a real headless Chromium (Debian's, driven by Playwright): upload, map, toggle, screenshot."""
from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from geosurge.app.testing import ROOT, AppServer

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOT_DIR = Path(os.environ.get("GEOSURGE_SCREENSHOTS", ROOT / "runs" / "screenshots"))


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("CI must provide Debian's chromium (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def test_upload_map_toggle_screenshot(shared_dir):
    exe = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    rows = list(csv.DictReader(open(shared_dir / "data/im2gps3k-dev/test.csv")))
    photo = shared_dir / "data/im2gps3k-dev/images" / rows[5]["image"]
    server = AppServer()
    profile = tempfile.mkdtemp(prefix="geosurge-chromium-")
    try:
        with sync_api.sync_playwright() as pw:
            # a fresh --user-data-dir: Playwright passes it for a persistent context
            browser = pw.chromium.launch_persistent_context(
                profile, executable_path=exe, args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1400, "height": 1100})
            page = browser.new_page()
            page.goto(server.url, wait_until="domcontentloaded")
            page.locator("#photo input[type=file]").set_input_files(str(photo))
            frame = page.frame_locator("iframe.geosurge-map")
            # the map draws the top cells of all 7 levels and the predicted marker
            frame.locator("path.geosurge-level-7").first.wait_for(state="attached", timeout=120_000)
            for level in range(1, 8):
                assert frame.locator(f"path.geosurge-level-{level}").count() >= 1, level
            assert frame.locator("path.geosurge-pred-fusion").count() == 1
            # hovering a finest cell shows its tooltip with the product score
            frame.locator("path.geosurge-level-7").first.dispatch_event("mouseover")
            tip = frame.locator(".leaflet-tooltip").first
            tip.wait_for(state="visible", timeout=10_000)
            assert "level 7" in tip.inner_text() and "product score" in tip.inner_text()
            summary = page.locator("#summary")
            assert "with semantic fusion" in summary.inner_text()
            before = summary.inner_text()
            # flip the fusion toggle: the answer switches to the RGB-only model
            page.locator("#fusion input[type=checkbox]").click()
            page.wait_for_function(
                "() => { const t = document.querySelector('#summary').innerText;"
                " return t.includes('Model: RGB only') && !t.includes('processing'); }", timeout=120_000)
            after = summary.inner_text()
            assert after != before and "Model: RGB only" in after
            frame.locator("path.geosurge-level-7").first.wait_for(state="attached", timeout=60_000)
            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            shot = SCREENSHOT_DIR / "app.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)
