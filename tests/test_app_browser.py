"""End-to-end in a real headless Chromium (Debian's, driven by Playwright), with every request that would leave
this machine blocked, as on a machine without internet: upload, answer, map, legend, markers in sight, toggle,
nearest training photo, a refusal, on a desktop and on a phone; screenshots of each. Needs nothing from
``../shared``: the photo is a shipped example with EXIF GPS, so the truth marker is drawn too."""
from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from .app_testing import ROOT, AppServer, png_header_bomb

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOT_DIR = Path(os.environ.get("GEOSURGE_SCREENSHOTS", ROOT / "runs" / "screenshots"))
DESKTOP, PHONE = {"width": 1400, "height": 1000}, {"width": 390, "height": 844}
ANSWERED = "() => (document.querySelector('#summary') || {innerText: ''}).innerText.includes('The photo told the model')"
#: the evidence sentence, in the words and bands of geosurge.model.evidence.EVIDENCE_BANDS
EVIDENCE = re.compile(r"The photo told the model (little|something|a lot) \(\d[\d.e+-]* bits?\): \w")


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("CI must provide Debian's chromium (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """The demo without local training photos (a fresh machine, a Space): the nearest one must come from Flickr."""
    no_photos = tmp_path_factory.mktemp("no-training-photos")
    server = AppServer(env={"GEOSURGE_REFERENCE_IMAGES": str(no_photos)})
    yield server.url
    server.stop()


@pytest.fixture
def browser():
    """A fresh headless Chromium per test (a second, until the test ends: Playwright's sync API allows one at a time)."""
    exe = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tempfile.mkdtemp(prefix="geosurge-chromium-")
    try:
        with sync_api.sync_playwright() as pw:
            # a fresh --user-data-dir: Playwright passes it for a persistent context
            context = pw.chromium.launch_persistent_context(profile, executable_path=exe, args=CHROMIUM_ARGS,
                                                            headless=True, viewport=DESKTOP)
            yield context
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Offline:
    """A page whose requests to anywhere but this machine are aborted (no internet); records every request
    that failed, so a test can tell the blocked ones (which must degrade gracefully) from real failures."""

    def __init__(self, context, url: str, viewport: dict, flickr: bytes | None = None):
        self.flickr = flickr  # when given, Flickr's image server answers with these bytes (a stand-in, as if online)
        self.page = context.new_page()
        self.page.set_viewport_size(viewport)
        self.blocked: list[str] = []
        self.failed: list[str] = []
        self.page.route("**/*", self._route)
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))
        self.page.on("response", lambda r: self.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        self.page.goto(url, wait_until="domcontentloaded")

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "data:", "blob:", "about:")):
            route.continue_()
        elif self.flickr is not None and url.startswith("https://live.staticflickr.com/"):
            route.fulfill(status=200, content_type="image/jpeg", body=self.flickr)
        else:
            self.blocked.append(url)
            route.abort("internetdisconnected")

    def assert_no_failed_request(self) -> None:
        assert [u for u in self.failed if u.split()[0] not in self.blocked and not _closed_stream(u)] == [], self.failed

    def upload(self, path: Path) -> None:
        self.page.locator("#photo input[type=file]").set_input_files(str(path))

    def broken_images(self) -> list[str]:
        """Images on the page drawn as broken: in the layout, finished loading, and empty."""
        return self.page.evaluate("() => [...document.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth === 0"
                                  " && i.getBoundingClientRect().width > 0).map(i => i.src)")

    def screenshot(self, name: str) -> Path:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOT_DIR / name
        self.page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        return shot


def _closed_stream(failure: str) -> bool:
    """Gradio's event stream, which its client closes itself once the answer is in (Chromium reports that as
    net::ERR_ABORTED): not a request that failed."""
    url, _, why = failure.partition(" ")
    return "/gradio_api/queue/data" in url and why == "net::ERR_ABORTED"


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


def assert_reference_degrades(page) -> None:
    """Flickr is out of reach: the nearest training photo box shows its placeholder (or says that no training
    photo is near the answer), and the caption still links to the photo on Flickr when one is near."""
    box = page.locator("#reference .geosurge-ref")
    box.wait_for(state="attached", timeout=30_000)
    page.wait_for_function("() => !document.querySelector('#reference .geosurge-ref img')", timeout=30_000)
    placeholder = page.locator("#reference .geosurge-ref-placeholder")
    assert placeholder.is_visible() and len(placeholder.inner_text()) > 20
    caption = page.locator("#reference-caption").inner_text()
    if "No training photo near the answer" not in caption:
        assert "flickr.com/photos/" in page.locator("#reference-caption a").first.get_attribute("href")


def test_desktop_upload_map_toggle(app_url, browser):
    from geosurge.app.settings import EXAMPLES

    tab = Offline(browser, app_url, DESKTOP)
    page = tab.page
    # a first visitor clicks an example: the answer with its true point and the error
    page.locator("button:has(img)").nth(3).click()
    page.wait_for_function("() => (document.querySelector('#summary') || {}).innerText"
                           " && document.querySelector('#summary').innerText.includes('EXIF GPS of the upload')",
                           timeout=120_000)
    assert "error" in page.locator("#summary").inner_text()
    page.frame_locator("iframe.geosurge-map").locator("path.geosurge-truth").first.wait_for(state="attached", timeout=60_000)
    tab.upload(EXAMPLES / "Apple_iPhone_6.jpg")
    page.wait_for_function("() => document.querySelector('#summary').innerText.includes('51.7624, -0.3179')",
                           timeout=120_000)  # the upload's own EXIF GPS: its answer, not the example's
    summary = page.locator("#summary").inner_text()
    # the answer: calibrated chances and, in words, how much the photo told the model
    assert "within 2,500 km" in summary and EVIDENCE.search(summary), summary
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
    # hovering a finest cell shows its tooltip with the product score
    frame.locator("path.geosurge-level-7").first.dispatch_event("mouseover")
    tip = frame.locator(".leaflet-tooltip").first
    tip.wait_for(state="visible", timeout=10_000)
    assert "level 7" in tip.inner_text() and "product score" in tip.inner_text()
    assert_reference_degrades(page)
    assert "with semantic fusion" in summary
    # flip the fusion toggle: the answer switches to the RGB-only model; the photo's segmentation is reused
    page.locator("#fusion input[type=checkbox]").click()
    page.wait_for_function(
        "() => { const t = document.querySelector('#summary').innerText;"
        " return t.includes('Model: RGB only') && !t.includes('processing'); }", timeout=120_000)
    after = page.locator("#summary").inner_text()
    assert after != summary and "segmentation cached" in after and "segmentation 0 ms" not in after
    frame.locator("path.geosurge-level-7").first.wait_for(state="attached", timeout=60_000)
    assert tab.broken_images() == []
    tab.screenshot("app.png")
    tab.assert_no_failed_request()
    page.close()


def test_phone_answer_comes_first(app_url, browser):
    """On a 390 x 844 phone the answer (place, chances, evidence sentence) follows the Locate button and ends
    within the first 1.5 screens; the level table fits the screen without breaking words; markers in sight."""
    from geosurge.app.settings import EXAMPLES

    tab = Offline(browser, app_url, PHONE)
    phone = tab.page
    tab.upload(EXAMPLES / "Apple_iPhone_6.jpg")
    phone.wait_for_function(ANSWERED, timeout=120_000)
    top = phone.evaluate("() => window.scrollY")
    locate = phone.locator("#locate").bounding_box()
    answer = phone.locator("#summary").bounding_box()
    evidence = phone.locator("#summary p", has_text=EVIDENCE).first.bounding_box()
    assert 0 <= answer["y"] - (locate["y"] + locate["height"]) < 60, (locate, answer)  # nothing in between
    assert evidence["y"] + evidence["height"] + top <= 1.5 * PHONE["height"], evidence
    assert answer["x"] >= 0 and answer["x"] + answer["width"] <= PHONE["width"]
    # the level table: within the screen, words and numbers whole
    table = phone.locator("#summary table").first
    fits = table.evaluate("t => [t.getBoundingClientRect().right, t.scrollWidth, t.clientWidth]")
    assert fits[0] <= PHONE["width"] and fits[1] <= fits[2] + 1, fits
    styles = table.evaluate("t => [...t.querySelectorAll('th, td')].map(c => getComputedStyle(c).wordBreak + '/' + getComputedStyle(c).overflowWrap)")
    assert set(styles) == {"normal/normal"}, set(styles)
    small = phone.frame_locator("iframe.geosurge-map")
    small.locator("path.geosurge-truth").first.wait_for(state="attached", timeout=120_000)
    assert_markers_in_sight(small)
    font = small.locator(".geosurge-legend div div").first.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    assert font >= 10
    phone.locator("#overlay").scroll_into_view_if_needed()  # the picture loads lazily
    overlay = phone.locator("#overlay img").first
    overlay.wait_for(state="visible", timeout=60_000)
    ow = overlay.evaluate("e => [e.naturalWidth, e.clientWidth]")
    assert ow[1] > 0 and ow[0] / ow[1] < 4  # the overlay (its legend inside) is not shrunk to a sliver
    assert_reference_degrades(phone)
    assert tab.broken_images() == []
    tab.screenshot("app-phone.png")
    tab.assert_no_failed_request()
    phone.close()


def test_refusal_is_said_once_without_a_broken_image(app_url, browser, tmp_path):
    """A decompression bomb: one sentence in the project's words, no answer, an empty photo box."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_bomb(30000, 30000))
    tab = Offline(browser, app_url, PHONE)
    page = tab.page
    tab.upload(bomb)
    page.wait_for_function("() => document.querySelector('#summary').innerText.includes('cannot be used')", timeout=120_000)
    page.wait_for_timeout(1500)  # the photo box is cleared by a second event: let it settle
    said = page.locator("#summary").inner_text()
    body = page.locator("body").inner_text()
    assert body.count("cannot be used") == 1, body
    assert "too many pixels" in said or "too large" in said, said
    assert "DOS attack" not in body and "decompression bomb DOS" not in body
    assert page.locator("#photo img").count() == 0  # no photo drawn, broken or not
    assert tab.broken_images() == []
    assert "cannot be used" in page.locator("#summary").inner_text()  # the clearing did not wipe it
    tab.screenshot("app-refusal.png")
    tab.assert_no_failed_request()
    page.close()


def test_nearest_training_photo_from_flickr(app_url, browser):
    """Where Flickr answers (here a stand-in serves its thumbnail), the nearest training photo is shown, linked to
    its page on Flickr, and the placeholder is gone."""
    from geosurge.app.settings import EXAMPLES
    from geosurge.data.images import load_image

    thumb = io.BytesIO()
    load_image(EXAMPLES / "Apple_iPhone_5.jpg").resize((240, 180)).save(thumb, "JPEG")
    tab = Offline(browser, app_url, DESKTOP, flickr=thumb.getvalue())
    tab.upload(EXAMPLES / "Apple_iPhone_6.jpg")
    tab.page.wait_for_function(ANSWERED, timeout=120_000)
    img = tab.page.locator("#reference .geosurge-ref img")
    img.wait_for(state="visible", timeout=30_000)
    assert img.evaluate("i => i.naturalWidth") == 240
    assert img.evaluate("i => i.closest('a').href").startswith("https://www.flickr.com/photos/")
    assert not tab.page.locator("#reference .geosurge-ref-placeholder").is_visible()
    tab.page.locator("#reference").screenshot(path=str(SCREENSHOT_DIR / "reference-flickr.png"))
    tab.assert_no_failed_request()


#: (lat, lon) well inside land and well out at sea, for the basemap's pixels at world zoom
LAND_POINTS = [(15.0, 19.0), (-8.0, -55.0), (62.0, 100.0), (-25.0, 134.0), (40.0, -100.0)]
SEA_POINTS = [(0.0, -140.0), (-30.0, -20.0), (-30.0, 80.0), (35.0, -40.0), (10.0, 160.0)]


def _is_local(url: str) -> bool:
    from urllib.parse import urlparse

    u = urlparse(url)
    return u.scheme in ("data", "blob", "about") or u.hostname in ("127.0.0.1", "localhost")


def assert_legend_names_every_layer_and_folds(frame) -> None:
    legend = frame.locator(".geosurge-legend")
    text = legend.inner_text()
    for entry in ("50 % credible region", "90 % credible region", "level 1 cells", "level 7 cells",
                  "fusion prediction", "RGB-only prediction", "true location (EXIF GPS)", "Natural Earth", "sea"):
        assert entry in text, (entry, text)
    assert "OpenStreetMap" not in text  # no tiles drawn offline (the layer button still offers them)
    rows = frame.locator(".geosurge-legend details > div")
    assert rows.is_visible()
    frame.locator(".geosurge-legend summary").click()
    assert not rows.is_visible()
    frame.locator(".geosurge-legend summary").click()
    assert rows.is_visible()


def basemap_screenshot(page, frame, path: Path) -> list[tuple[float, float]]:
    """The map at world zoom with the answer's overlays and the controls hidden (the basemap's pixels alone),
    saved to ``path``; returns where LAND_POINTS + SEA_POINTS lie in it."""
    points = frame.locator("div.folium-map").evaluate(
        """(e, pts) => { const m = window.geosurgeMap;
            m.setView([15, 0], 1, {animate: false});
            for (const p of ["overlayPane", "markerPane", "tooltipPane"]) m.getPane(p).style.display = "none";
            m.getContainer().querySelector(".leaflet-control-container").style.display = "none";
            return pts.map(p => { const c = m.latLngToContainerPoint(p); return [c.x, c.y]; }); }""",
        LAND_POINTS + SEA_POINTS)
    frame.locator("div.folium-map").evaluate(  # the canvas redraws on the next animation frames
        "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    page.wait_for_timeout(300)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.locator("iframe.geosurge-map").screenshot(path=str(path))
    return points


def test_offline_map_basemap_icons_and_no_failed_request(app_url):
    """With every non-local request blocked: no request of the page fails (the layer button's icon
    included), the Natural Earth basemap draws land and sea in distinct colours at world zoom, and the
    collapsible legend names every layer drawn."""
    exe = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    from PIL import Image

    from geosurge.app.geomap import LAND, SEA

    profile = tempfile.mkdtemp(prefix="geosurge-chromium-")
    blocked, failed, served = [], [], {}
    shot = SCREENSHOT_DIR / "map-offline-world.png"
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                profile, executable_path=exe, args=CHROMIUM_ARGS, headless=True, viewport={"width": 1400, "height": 1000})
            browser.route("**/*", lambda route: route.continue_() if _is_local(route.request.url)
                          else (blocked.append(route.request.url), route.abort()))
            page = browser.new_page()
            page.on("requestfailed", lambda r: failed.append((r.url, r.failure)))
            page.on("response", lambda r: (failed.append((r.url, r.status)) if r.status >= 400 else served.setdefault(r.url, r.status)))
            page.goto(app_url, wait_until="networkidle")
            page.locator("button:has(img)").nth(3).click()  # an example photo, with its EXIF truth
            page.wait_for_function("() => ((document.querySelector('#summary') || {}).innerText || '').includes('EXIF GPS of the upload')",
                                   timeout=120_000)
            frame = page.frame_locator("iframe.geosurge-map")
            frame.locator(".geosurge-basemap-ready").wait_for(state="attached", timeout=60_000)
            frame.locator("path.geosurge-region-90").first.wait_for(state="attached", timeout=60_000)
            assert_legend_names_every_layer_and_folds(frame)
            # the layer button has its icon: Leaflet's images are served with its CSS
            icon = frame.locator(".leaflet-control-layers-toggle").evaluate("e => getComputedStyle(e).backgroundImage")
            assert "images/layers" in icon, icon
            page.wait_for_timeout(500)  # let the icon's request settle
            assert any(u.endswith(("images/layers.png", "images/layers-2x.png")) for u in served), sorted(served)
            points = basemap_screenshot(page, frame, shot)
            browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    # the nearest training photo's thumbnail is Flickr's to serve (a placeholder shows when it cannot be reached,
    # see test_desktop_upload_map_toggle); nothing else may leave this machine
    flickr = {u for u in blocked if u.startswith("https://live.staticflickr.com/")}
    blocked = [u for u in blocked if u not in flickr]
    assert not blocked, f"the page asked for non-local resources: {blocked}"
    failed = [(u, why) for u, why in failed if u not in flickr]  # aborted above, on purpose: the placeholder shows
    # Gradio's client closes its own event stream (queue/data) once an answer is in: an abort it asked for
    failed = [(u, why) for u, why in failed if not ("/gradio_api/queue/data" in u and why == "net::ERR_ABORTED")]
    assert not failed, f"requests failed: {failed}"
    img = Image.open(shot).convert("RGB")
    rgb = [img.getpixel((round(x), round(y))) for x, y in points]
    want = {name: tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for name, c in (("land", LAND), ("sea", SEA))}

    def near(px, colour):
        return sum(abs(a - b) for a, b in zip(px, colour)) <= 24

    land, sea = rgb[:len(LAND_POINTS)], rgb[len(LAND_POINTS):]
    assert all(near(px, want["land"]) for px in land), (land, want)
    assert all(near(px, want["sea"]) for px in sea), (sea, want)
