"""The demo through its real server: gradio_client API calls, bad inputs, EXIF truth, privacy, concurrency.

Needs nothing from ``../shared``: the photos are the EXIF-GPS examples shipped in the package (CI runs
this file a second time with ``../shared`` out of sight, the fresh-machine case)."""
from __future__ import annotations

import csv
import io
import json
import re
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geosurge.data.exif import exif_gps

from .app_testing import ROOT, AppServer
from .exif_photos import with_gps

from geosurge.model.embedded import EMBEDDED_CHECKPOINT as CHECKPOINT  # noqa: E402
COORDS = re.compile(r"### (-?\d+\.\d+), (-?\d+\.\d+)")


@pytest.fixture(scope="module")
def photos():
    from geosurge.app.settings import EXAMPLES

    return sorted(EXAMPLES.glob("*.jpg"))[::4]


def locate(client, path, fusion=True):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), fusion, api_name="/locate")


def coords(summary: str) -> tuple[float, float]:
    m = COORDS.search(summary)
    assert m, summary
    return float(m.group(1)), float(m.group(2))


def test_locate_real_photo_fusion_and_rgb(client, photos):
    html, summary, overlay, ref, caption = locate(client, photos[0], True)
    for level in range(1, 8):
        assert f"geosurge-level-{level}" in html
    assert "geosurge-pred-fusion" in html and "geosurge-pred-rgb" in html  # both predictions, two colours
    assert "with semantic fusion" in summary and "km** from the fusion prediction" in summary
    lat, lon = coords(summary)
    assert -90 <= lat <= 90 and -180 <= lon <= 180
    assert overlay is not None and Path(overlay).is_file()  # segmentation overlay
    assert " km** from the answer" in caption or "No training photo near the answer" in caption
    # the calibrated chances are the headline, the credible regions are on the map, and the per-level table
    # gives the chain of the answer's cells, levels 1..7
    assert re.search(r"\*\*\d+ % within 2,500 km\*\* · \d+ % within 750 km · \d+ % within 200 km", summary), summary
    assert "geosurge-region-50" in html and "geosurge-region-90" in html
    rows = re.findall(r"^\| (\d) \| (\S+) \(", summary, flags=re.M)
    assert [int(k) for k, _ in rows] == list(range(1, 8)), summary
    html2, summary2, *_ = locate(client, photos[0], False)
    assert "Model: **RGB only" in summary2
    # the segmentation overlay has a legend of classes under the photo, drawn at a fixed size
    ov = Image.open(overlay)
    with Image.open(photos[0]) as ph:
        assert ov.height > 768 * ph.height / max(ph.size) + 30 and max(ov.size) < 1400
    # the map's legend names both predictions and the truth (the examples carry EXIF GPS)
    assert "geosurge-legend" in html and "fusion prediction" in html and "true location (EXIF GPS)" in html


def test_exif_gps_is_shown_as_truth(client, photos, tmp_path):
    img = Image.open(photos[1]).convert("RGB")
    p = tmp_path / "gps.jpg"
    img.save(p, exif=with_gps(img, 48.8584, 2.2945))
    assert exif_gps(p) == pytest.approx((48.8584, 2.2945), abs=1e-4)
    html, summary, *_ = locate(client, p)
    assert "geosurge-truth" in html and "EXIF GPS of the upload: 48.8584, 2.2945" in summary
    # EXIF is never a model input: the same pixels without GPS give the same prediction
    q = tmp_path / "nogps.jpg"
    img.save(q)
    assert coords(locate(client, q)[1]) == coords(summary)


def test_shipped_examples_show_their_true_point(client):
    """A first visitor clicking an example sees the true point and the error."""
    from geosurge.app.settings import EXAMPLES, default_examples

    examples = default_examples()
    assert len(examples) == 20
    rows = {r["image"]: r for r in csv.DictReader(open(EXAMPLES / "labels.csv"))}
    ex = examples[7]
    html, summary, *_ = locate(client, ex)
    lat, lon = float(rows[ex.name]["lat"]), float(rows[ex.name]["lon"])
    assert f"EXIF GPS of the upload: {lat:.4f}, {lon:.4f}" in summary and "error **" in summary
    assert "geosurge-truth" in html


def test_uploads_are_scrubbed_and_never_served_with_exif(server, client, photos, tmp_path):
    """What stays on disk of an upload is a copy without metadata; the GPS still reaches the answer."""
    from .app_testing import upload_raw

    img = Image.open(photos[2]).convert("RGB")
    p = tmp_path / "private.jpg"
    img.save(p, exif=with_gps(img, -33.8568, 151.2153))
    html, summary, *_ = locate(client, p)
    assert "EXIF GPS of the upload: -33.8568, 151.2153" in summary
    kept = [f for f in server.workdir.rglob("private.jpg")]
    assert kept, "the upload copy should be in the server's private folder"
    for f in kept:
        assert exif_gps(f) is None and not Image.open(f).getexif(), f
    # fetched back over HTTP as any visitor could: no EXIF either
    import httpx

    status, path = upload_raw(server.url, p.read_bytes(), "again.jpg")
    assert status == 200
    locate(client, p)  # the handler scrubs what it reads; an upload never answered is swept by age
    r = httpx.get(server.url + "gradio_api/file=" + str(kept[0]), timeout=30)
    assert r.status_code == 200 and b"Exif" not in r.content[:4096]


def test_data_url_inside_the_queue_request_obeys_the_size_limit(server):
    """A photo sent as a data: URL is answered like an upload; above the limit it is refused (413), and
    nothing of it is written to disk."""
    import base64

    from geosurge.app.settings import EXAMPLES
    from .app_testing import data_url_payload, locate_raw

    photo = (EXAMPLES / "Apple_iPhone_5.jpg").read_bytes()
    ok = "data:image/jpeg;base64," + base64.b64encode(photo).decode()
    status, out = locate_raw(server.url, data_url_payload(ok))
    assert status == 200 and isinstance(out, list) and out[1].startswith("### "), out
    # the photo itself was answered (its EXIF GPS is the truth), not whatever ``path`` names
    assert "EXIF GPS of the upload: 47.6272, -122.3373" in out[1]
    before = sum(f.stat().st_size for f in server.workdir.rglob("*") if f.is_file())
    big = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff" + bytes(25 * 2**20)).decode()
    status, out = locate_raw(server.url, data_url_payload(big))
    assert status == 413 and "20 MB" in out
    # just above the limit but under the request cap: refused by the component, with our message
    edge = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff" + bytes(20 * 2**20 + 1000)).decode()
    status, out = locate_raw(server.url, data_url_payload(edge))
    assert (status == 413) or ("upload limit" in out[1]), (status, str(out)[:300])
    after = sum(f.stat().st_size for f in server.workdir.rglob("*") if f.is_file())
    assert after - before < 2**20
    # a file by URL: Gradio would download it whatever its size; refused
    remote = {"path": "https://example.com/huge.jpg", "url": "https://example.com/huge.jpg", "meta": {"_type": "gradio.FileData"}}
    status, out = locate_raw(server.url, remote)
    assert status == 400 and "uploads only" in out
    assert server.alive


def test_rejected_upload_leaves_no_temp_file(server, photos):
    from .app_testing import upload_raw

    data = photos[0].read_bytes()
    for name in ("..", "x" * 10):
        upload_raw(server.url, data, name)
    status, _ = upload_raw(server.url, data, "..")
    assert status == 400
    status, _ = upload_raw(server.url, b"\xff\xd8\xff" + bytes(21 * 2**20), "big.jpg")
    assert status == 413
    assert [p.name for p in server.workdir.iterdir() if p.is_file() and p.name != ".pid"] == []


def test_upload_progress_ends_at_once_instead_of_a_404(server, photos):
    """The browser asks for an upload's progress stream; Gradio tracks none for the uploads the guard parses and
    would answer 404 after 3 s (a failed request whenever an upload is slow): the guard ends the stream at once."""
    import httpx

    from .app_testing import upload_raw

    status, _ = upload_raw(server.url, photos[0].read_bytes(), "photo.jpg")
    assert status == 200
    r = httpx.get(server.url + "gradio_api/upload_progress", params={"upload_id": "abc123"}, timeout=2)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert json.loads(r.text.removeprefix("data:").strip()) == {"msg": "done"}


@pytest.mark.slow
def test_uploads_go_with_age_and_at_shutdown(tmp_path):
    """The sweep deletes files older than the limit and empty folders; the whole private folder goes when
    the server stops (SIGTERM)."""
    import os
    import time

    from geosurge.app.server import sweep

    old, new, example = tmp_path / "a" / "old.jpg", tmp_path / "b" / "new.jpg", tmp_path / "c" / "example.jpg"
    for f in (old, new, example):
        f.parent.mkdir()
        f.write_bytes(b"x")
    os.utime(old, (time.time() - 4000, time.time() - 4000))
    os.utime(example, (time.time() - 4000, time.time() - 4000))
    assert sweep(tmp_path, 3600, keep=frozenset({str(example)})) == 1
    assert not old.exists() and not old.parent.exists() and new.exists() and example.exists()
    from geosurge.app.server import Sweeper

    sweeper = Sweeper(tmp_path, max_age_s=0.3, every_s=0.1)  # the thread the server runs, on a short clock
    sweeper.keep = lambda: frozenset({str(example)})
    sweeper.start()
    try:
        deadline = time.time() + 10
        while new.exists() and time.time() < deadline:
            time.sleep(0.1)
    finally:
        sweeper.stopped.set()
        sweeper.join()
    assert not new.exists() and example.exists()
    s = AppServer("--delete-after", "120")
    folder = s.workdir
    assert folder.is_dir() and "deleted after 120 s" in s.log.read_text()
    s.stop()
    assert not folder.exists()
    # a server killed without cleaning up: its folder goes when the next one starts
    from geosurge.app.server import PREFIX, remove_orphans

    orphan = tmp_path / f"{PREFIX}dead"
    (orphan / "abc").mkdir(parents=True)
    (orphan / "abc" / "photo.jpg").write_bytes(b"x")
    dead = __import__("subprocess").Popen(["true"])
    dead.wait()
    (orphan / ".pid").write_text(str(dead.pid))
    alive = tmp_path / f"{PREFIX}alive"
    alive.mkdir()
    (alive / ".pid").write_text(str(os.getpid()))
    assert remove_orphans(tmp_path) == [orphan] and alive.is_dir()


def _png_header_bomb(path: Path, w: int, h: int) -> None:
    # a tiny file claiming w x h pixels (IDAT of a few zero rows): a decompression bomb by its header
    raw = zlib.compress(b"\x00" * (w // 8 + 1) * 4)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def bad_inputs(tmp: Path, photo: Path) -> dict[str, tuple[Path, bool]]:
    """name -> (file, expect a prediction); False means a clear message instead."""
    base = Image.open(photo).convert("RGB")
    out = {}

    def save(name, img, ok=True, **kw):
        p = tmp / name
        img.save(p, **kw)
        out[name] = (p, ok)

    (tmp / "notes.txt").write_text("definitely not a photo")
    out["notes.txt"] = (tmp / "notes.txt", False)
    jpg = io.BytesIO()
    base.save(jpg, "JPEG")
    (tmp / "truncated.jpg").write_bytes(jpg.getvalue()[:300])
    out["truncated.jpg"] = (tmp / "truncated.jpg", False)
    (tmp / "empty.jpg").write_bytes(b"")
    out["empty.jpg"] = (tmp / "empty.jpg", False)
    _png_header_bomb(tmp / "bomb.png", 30000, 30000)
    out["bomb.png"] = (tmp / "bomb.png", False)
    save("gray.png", base.convert("L"))
    save("rgba.png", base.convert("RGBA"))
    save("cmyk.jpg", base.convert("CMYK"), format="JPEG")
    arr16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    save("16bit.png", Image.fromarray(arr16))
    save("one_pixel.png", Image.new("RGB", (1, 1), (120, 140, 200)))
    save("wide.png", base.resize((4000, 40)))
    rotated = base.transpose(Image.Transpose.ROTATE_90)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the upright photo is `base` again
    save("exif_rotated.jpg", rotated, format="JPEG", exif=exif)
    return out


def test_bad_inputs_give_a_message_or_a_prediction_and_server_survives(server, client, photos, tmp_path):
    for name, (path, ok) in bad_inputs(tmp_path, photos[2]).items():
        try:
            html, summary, *_ = locate(client, path)
        except Exception as e:  # Gradio itself may refuse a file before our handler: the server must stay up
            assert not ok, f"{name}: {e}"
            assert server.alive
            continue
        if ok:
            lat, lon = coords(summary)
            assert "geosurge-level-7" in html, name
        else:
            assert "cannot be used" in summary, (name, summary)
            assert "geosurge-level" not in html
        assert server.alive
    # The EXIF-rotated photo is read upright: same answer as its own pixels turned upright by hand and
    # stored losslessly (a JPEG re-encode would change pixels, and this small model's answer with them).
    from PIL import ImageOps

    upright = tmp_path / "upright.png"
    with Image.open(tmp_path / "exif_rotated.jpg") as im:
        stored = im.size
        turned = ImageOps.exif_transpose(im).convert("RGB")
    turned.save(upright)
    assert turned.size == stored[::-1] != stored  # stored sideways, a quarter turn from upright
    assert coords(locate(client, upright)[1]) == pytest.approx(coords(locate(client, tmp_path / "exif_rotated.jpg")[1]), abs=1e-3)
    assert coords(locate(client, photos[0])[1])  # still answering


def test_upload_size_limit(server, client, photos, tmp_path):
    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff\xd8\xff" + bytes(21 * 1024 * 1024))  # above the 20 MB default limit
    with pytest.raises(Exception):
        locate(client, big)
    assert server.alive
    assert coords(locate(client, photos[3])[1])


def test_concurrent_requests_each_get_their_own_answer(client, photos):
    expected = [coords(locate(client, p)[1]) for p in photos[:4]]
    from gradio_client import Client

    url = client.src

    def one(i):
        c = Client(url, verbose=False)
        return coords(locate(c, photos[i % 4])[1])

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(8)))
    assert got == [expected[i % 4] for i in range(8)]


def _short_reads_while_rewriting(component, image, cache_dir, rounds=300) -> tuple[int, int]:
    """Read the served file in a loop while the component produces the same picture again and again."""
    import threading

    component.GRADIO_CACHE = str(cache_dir)
    path = Path(component.postprocess(image).path)
    size, done, seen = path.stat().st_size, threading.Event(), [0, 0]

    def reader():
        while not done.is_set():
            seen[0] += 1
            seen[1] += len(path.read_bytes()) != size

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(rounds):
            assert Path(component.postprocess(image).path) == path  # content-addressed: same picture, same file
    finally:
        done.set()
        t.join()
    return seen[0], seen[1]


def test_result_images_are_never_served_half_written(tmp_path):
    """Two visitors sending the same photo get the same overlay file; the second answer must not truncate it
    while the first is downloading (a CI run failed this way: 'received 0 bytes, expected 33987')."""
    from geosurge.app.components import ResultImage

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    reads, short = _short_reads_while_rewriting(ResultImage(format="jpeg", interactive=False), img, tmp_path)
    assert reads > 50 and short == 0
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no staging files left behind


def test_app_entry_points():
    """``python app.py``, ``python -m geosurge.app`` and ``geosurge app`` take the same flags."""
    import subprocess
    import sys

    for cmd in ([sys.executable, str(ROOT / "app.py"), "--help"], [sys.executable, "-m", "geosurge.app", "--help"],
                [sys.executable, "-m", "geosurge", "app", "--help"]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 0 and "--delete-after" in r.stdout and "--max-upload-mb" in r.stdout, (cmd, r.stderr)
    r = subprocess.run([sys.executable, "-m", "geosurge.app", "--delete-after", "5"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "between 60 and 86400" in r.stderr


def test_settings_bind_loopback_unless_told(monkeypatch):
    from geosurge.app.settings import parse_settings

    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("GEOSURGE_HOST", raising=False)
    s = parse_settings([])
    assert s.host == "127.0.0.1" and s.port == 7860 and s.checkpoint == CHECKPOINT
    monkeypatch.setenv("SPACE_ID", "user/geosurge")
    assert parse_settings([]).host == "0.0.0.0"
    assert parse_settings(["--host", "127.0.0.1", "--port", "8000"]).port == 8000


@pytest.mark.slow
def test_app_without_segmenter_says_so_once_and_plainly(photos, tmp_path):
    """With the DeepLab file missing the app still answers, RGB-only: one plain sentence for the visitor,
    the reason (and what to set) for the operator, in the log."""
    from gradio_client import Client

    from geosurge.app.ui import FUSION_OFF

    s = AppServer("--segmenter-path", str(tmp_path / "missing.tflite"))
    try:
        c = Client(s.url, verbose=False)
        html, summary, overlay, *_ = locate(c, photos[0], True)
        assert summary.count(FUSION_OFF) == 1 and "not available" not in summary.replace(FUSION_OFF, "")
        assert "GEOSURGE" not in summary and "model file" not in summary
        assert overlay is None and "geosurge-pred-rgb" in html
        page = __import__("httpx").get(s.url + "config", timeout=30).text
        assert "GEOSURGE_DEEPLAB" not in page and "model file was not found" not in page
        assert "DeepLab ADE20K model file was not found" in s.log.read_text()
    finally:
        s.stop()


def test_map_rings_close_over_the_pole_and_across_the_antimeridian():
    """A cell holding a pole must be drawn as a cap, not as a band along its boundary; a cell across
    the antimeridian must not be drawn across the whole world."""
    from shapely.geometry import Point, Polygon

    from geosurge.app.geomap import _ring
    from geosurge.geo.s2 import cell_vertices, tokens_to_ids

    def drawn(token):
        ring = _ring(cell_vertices(tokens_to_ids([token]), 4)[0])
        return Polygon([(lon, lat) for lat, lon in ring]), ring

    def covers(poly, lat, lon):  # drawn longitudes may be unwrapped past +-180
        return any(poly.contains(Point(lon + 360 * k, lat)) for k in range(-2, 3))

    for token, lat in (("5", 80.0), ("b", -80.0)):  # S2 faces 2 and 5: the polar caps
        cap, _ = drawn(token)
        assert cap.is_valid
        assert all(covers(cap, lat, lon + 7.5) for lon in range(-180, 180, 15)), token
        assert not any(covers(cap, lat / 8, lon + 7.5) for lon in range(-180, 180, 15)), token
    _, ring = drawn("89c25")  # an ordinary cell (New York): only its own 16 points
    lons = [b for _, b in ring]
    assert len(ring) == 16 and max(lons) - min(lons) < 5 and -80 < lons[0] < -70
    shifted = _ring(cell_vertices(tokens_to_ids(["89c25"]), 4)[0], centre_lon=170.0)  # the world copy east of 180
    assert all(b == pytest.approx(a + 360.0) for a, b in zip(lons, (b for _, b in shifted)))
    pacific, ring = drawn("7")  # face 3, centred on the antimeridian
    lons = [b for _, b in ring]
    assert len(ring) == 16 and max(lons) - min(lons) < 180
    assert covers(pacific, 0.0, 180.0) and not covers(pacific, 0.0, 90.0)


def test_map_lines_take_the_short_way_across_the_antimeridian():
    """Fiji (178 E) and Samoa (172 W) are 1,100 km apart: the line between two such predictions, and the
    error line to an EXIF truth, must cross the antimeridian, not the whole map."""
    import html as html_lib
    import json
    from dataclasses import replace

    from geosurge.app.geomap import prediction_map
    from geosurge.model.checkpoint import load_checkpoint
    from geosurge.predictor import Predictor

    ckpt = CHECKPOINT
    p = Predictor.from_pretrained(ckpt, segmenter=None)
    [pred] = p.predict(Image.new("RGB", (64, 48), (90, 140, 200)), level_top=2, fusion=False)
    _, hierarchy, _, _ = load_checkpoint(ckpt / "rgb")
    fiji, samoa = replace(pred, lat=-17.7, lon=178.1), replace(pred, lat=-13.8, lon=-172.1)
    page = html_lib.unescape(prediction_map(fiji, hierarchy, "fusion", samoa, "rgb", truth=(-14.3, -170.7)))
    spec = json.loads(re.search(r"GeoSurgeMap\.draw\(\w+, (\{.*\})\);", page, flags=re.S).group(1))
    lines = [line["path"] for line in spec["lines"]]
    assert len(lines) == 2, lines
    for (lat0, lon0), (lat1, lon1) in lines:
        assert lon0 == pytest.approx(178.1) and 180 < lon1 < 200  # Samoa drawn east of 180, next to Fiji
    assert "-172.1000" in page  # tooltips keep the true longitude
    assert spec["basemap"]["copies"] == [0, 360]  # the basemap is drawn on that side of 180 too


def test_sweep_keeps_the_examples(tmp_path, monkeypatch):
    """The example photos Gradio copies into its cache at start are what the sweep must leave alone."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    from geosurge.app.server import kept_by_gradio
    from geosurge.app.settings import parse_settings
    from geosurge.app.ui import Locator, build_demo
    from geosurge.predictor import Predictor

    settings = parse_settings([])
    demo = build_demo(Locator(Predictor.from_pretrained(segmenter=None), settings))
    kept = kept_by_gradio(demo)
    names = {p.name for p in settings.examples}
    assert len(kept) >= 20 and names <= {Path(p).name for p in kept}


def test_a_single_variant_checkpoint_answers_whichever_the_toggle_asks():
    """A fusion-only checkpoint with the toggle off, or without its segmenter: an answer or a clear message,
    never a KeyError from looking up the missing variant."""
    from geosurge.app.settings import parse_settings
    from geosurge.app.ui import Locator
    from geosurge.model.embedded import EMBEDDED_CHECKPOINT
    from geosurge.predictor import Predictor

    settings = parse_settings([])
    photo = settings.examples[0]
    answer = Locator(Predictor.from_pretrained(EMBEDDED_CHECKPOINT / "fusion"), settings)(photo, fusion=False)
    assert "with semantic fusion" in answer.summary and set(answer.predictions) == {"fusion"}
    blind = Locator(Predictor.from_pretrained(EMBEDDED_CHECKPOINT / "fusion", segmenter=None), settings)(photo, fusion=True)
    assert "no model that can run here" in blind.summary and not blind.predictions
