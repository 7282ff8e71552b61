"""The hostile-input corpus of issue 13 against the running demo: each input gets an answer or a clear
message (or is refused by the size limit, whatever the transport), the server survives, and no stray
temporary file is left. Time and memory are measured by ``benchmarks/hostile_inputs.py``, not here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geosurge.app.settings import EXAMPLES
from .app_testing import hostile_corpus, send_case

CORPUS = {c.name: c for c in hostile_corpus(EXAMPLES / "Apple_iPhone_4.jpg")}


@pytest.mark.parametrize("name", list(CORPUS))
def test_hostile_input(server, client, name, tmp_path):
    case = CORPUS[name]
    outcome, text = send_case(server, client, case, tmp_path)
    assert outcome == case.expect, (name, text[:500])
    if outcome == "message":
        assert "This file cannot be used: " in text and len(text) < 400  # one clear sentence, no traceback
    if outcome == "refused":
        assert "20 MB" in text or "20971520" in text or "maximum" in text, text
    if case.summary_has:
        assert case.summary_has in text, text
    assert server.alive
    assert [p.name for p in server.workdir.iterdir() if p.is_file() and p.name != ".pid"] == []


def test_corpus_covers_the_issue():
    kinds = " ".join(CORPUS)
    for needed in ("1x10000", "1x40000", "10000x1", "1x1", "bomb", "truncated", "notes.txt", "png_named.jpg",
                   "cmyk", "gray16", "palette", "animated.gif", "exif_", "data_url", "oversize"):
        assert needed in kinds, needed


def test_extreme_aspect_ratio_costs_bounded_memory():
    """The preprocessing path never enlarges a strip to millions of pixels: the aspect is capped first."""
    from geosurge.data.transforms import MAX_ASPECT, Preprocess

    p = Preprocess(224, (0.5,) * 3, (0.5,) * 3)
    for size in ((1, 40000), (40000, 1), (3, 10000)):
        img = Image.new("RGB", size, (10, 20, 30))
        labels = np.zeros(size[::-1], np.uint8)
        small, _ = p._resize_short(img, labels, 256)
        assert max(small.size) <= MAX_ASPECT * 256 + 1 and min(small.size) == 256
        x, y = p(img, labels, crops="ten")
        assert x.shape == (10, 3, 224, 224) and y.shape == (10, 224, 224)
    # an ordinary photo is untouched by the cap: same pixels as before it existed
    ordinary = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 1200, 3), dtype=np.uint8))
    from geosurge.data.transforms import _cap_aspect

    assert _cap_aspect(ordinary, None)[0] is ordinary


def test_exif_edge_cases_parse_right_or_are_reported():
    from geosurge.app.exif import _degrees, read_exif_gps
    from .app_testing import exif_gps_block

    assert _degrees((-33, 52, 0)) == pytest.approx(-33.866667, abs=1e-6)
    assert _degrees((33, 52, 0)) == pytest.approx(33.866667, abs=1e-6)

    def gps(*args):
        import io

        b = io.BytesIO()
        Image.new("RGB", (8, 8)).save(b, "JPEG", exif=exif_gps_block(*args))
        return read_exif_gps(b.getvalue())

    assert gps((-33, 52, 0), "S", (151, 12, 30), "E").point == pytest.approx((-33.866667, 151.208333), abs=1e-5)
    assert gps((33, 52, 0), "S", (151, 12, 30), "W").point == pytest.approx((-33.866667, -151.208333), abs=1e-5)
    assert "latitude 200 is out of range" in gps((200, 0, 0), "N", (10, 0, 0), "E").problem
    assert "longitude 190 is out of range" in gps((10, 0, 0), "N", (190, 0, 0), "E").problem
    assert "placeholder" in gps((0, 0, 0), "N", (0, 0, 0), "E").problem
    assert "malformed" in gps(((1, 0), 0, 0), "N", (10, 0, 0), "E").problem
    import io

    from geosurge.app.exif import with_gps

    small = Image.new("RGB", (64, 64))
    b = io.BytesIO()
    small.save(b, "PNG", exif=with_gps(small, 10.5, -20.25))  # a PNG eXIf chunk (before the pixels)
    assert read_exif_gps(b.getvalue()).point == pytest.approx((10.5, -20.25), abs=1e-4)
    assert read_exif_gps(Path(EXAMPLES / "Apple_iPhone_4.jpg")).point == pytest.approx((41.853, 12.488833), abs=1e-4)
