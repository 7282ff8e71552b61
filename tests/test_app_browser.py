"""End-to-end in a real headless Chromium (Debian's, driven by Playwright): upload, map, legend, markers in
sight, toggle, screenshots (desktop and phone). Needs nothing from ``../shared``: the photo is a shipped
example with EXIF GPS, so the truth marker is drawn too."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from .app_testing import ROOT, AppServer

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


MARKERS = ("path.geosurge-pred-fusion", "path.geosurge-pred-rgb", "path.geosurge-truth")
#: what may cover the map: the zoom buttons, the (collapsed) layer button, the legend
CONTROLS = (".leaflet-control-zoom", ".leaflet-control-layers", ".geosurge-legend")


def _overlap(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"] and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]


def assert_markers_in_sight(frame) -> None:
    """Every marker lies inside the map and under none of the map's controls."""
    view = frame.locator("div.folium-map").bounding_box()
    controls = {sel: frame.locator(sel).first.bounding_box() for sel in CONTROLS}
    assert all(controls.values()), controls
    assert frame.locator(".leaflet-control-layers-expanded").count() == 0  # the layer panel starts collapsed
    for sel in MARKERS:
        box = frame.locator(sel).first.bounding_box()
        assert box and box["width"] > 4, sel
        assert view["x"] <= box["x"] and box["x"] + box["width"] <= view["x"] + view["width"], (sel, box, view)
        assert view["y"] <= box["y"] and box["y"] + box["height"] <= view["y"] + view["height"], (sel, box, view)
        for name, c in controls.items():
            assert not _overlap(box, c), f"{sel} is under {name}: {box} vs {c}"


def test_upload_map_toggle_screenshot():
    exe = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    from geosurge.app.settings import EXAMPLES

    photo = EXAMPLES / "Apple_iPhone_6.jpg"
    server = AppServer()
    profile = tempfile.mkdtemp(prefix="geosurge-chromium-")
    try:
        with sync_api.sync_playwright() as pw:
            # a fresh --user-data-dir: Playwright passes it for a persistent context
            browser = pw.chromium.launch_persistent_context(
                profile, executable_path=exe, args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1400, "height": 1100})
            page = browser.new_page()
            page.goto(server.url, wait_until="networkidle")
            # a first visitor clicks an example: the answer with its true point and the error
            page.locator("button:has(img)").nth(3).click()
            page.wait_for_function("() => (document.querySelector('#summary') || {}).innerText"
                                   " && document.querySelector('#summary').innerText.includes('EXIF GPS of the upload')",
                                   timeout=120_000)
            assert "error **" in page.locator("#summary").inner_html() or "error" in page.locator("#summary").inner_text()
            page.frame_locator("iframe.geosurge-map").locator("path.geosurge-truth").first.wait_for(state="attached", timeout=60_000)
            page.locator("#photo input[type=file]").set_input_files(str(photo))
            page.wait_for_function("() => document.querySelector('#summary').innerText.includes('51.7624, -0.3179')",
                                   timeout=120_000)  # the upload's own EXIF GPS: its answer, not the example's
            frame = page.frame_locator("iframe.geosurge-map")
            # the map draws the top cells of all 7 levels and the predicted marker
            frame.locator("path.geosurge-level-7").first.wait_for(state="attached", timeout=120_000)
            for level in range(1, 8):
                assert frame.locator(f"path.geosurge-level-{level}").count() >= 1, level
            assert frame.locator("path.geosurge-pred-fusion").count() == 1
            # the colour legend: both predictions, the truth (the example carries EXIF GPS) and the levels
            legend = frame.locator(".geosurge-legend")
            legend.wait_for(state="visible", timeout=10_000)
            text = legend.inner_text()
            for entry in ("fusion prediction", "RGB-only prediction", "true location (EXIF GPS)", "level 1 cells", "level 7 cells"):
                assert entry in text, (entry, text)
            assert_markers_in_sight(frame)
            assert "EXIF GPS of the upload" in page.locator("#summary").inner_text()
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
            # a phone: the same photo, the markers still clear of the controls, the legend readable
            phone = browser.new_page()
            phone.set_viewport_size({"width": 390, "height": 844})
            phone.goto(server.url, wait_until="domcontentloaded")
            phone.locator("#photo input[type=file]").set_input_files(str(photo))
            small = phone.frame_locator("iframe.geosurge-map")
            small.locator("path.geosurge-truth").first.wait_for(state="attached", timeout=120_000)
            assert_markers_in_sight(small)
            font = small.locator(".geosurge-legend div div").first.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
            assert font >= 10
            overlay = phone.locator("#overlay img").first
            overlay.wait_for(state="visible", timeout=60_000)
            ow = overlay.evaluate("e => [e.naturalWidth, e.clientWidth]")
            assert ow[1] > 0 and ow[0] / ow[1] < 4  # the overlay (its legend inside) is not shrunk to a sliver
            phone.screenshot(path=str(SCREENSHOT_DIR / "app-phone.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)
