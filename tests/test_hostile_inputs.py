"""The hostile-input corpus of issue 13 against the running demo: each input gets an answer or a clear
message (or is refused by the size limit, whatever the transport), the server survives, and no stray
temporary file is left. Time and memory are measured by ``benchmarks/hostile_inputs.py``, not here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geosurge.app.settings import EXAMPLES
from geosurge.app.testing import hostile_corpus, send_case

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
    from geosurge.app.testing import exif_gps_block

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


def _gps(*args, **kw):
    import io

    from geosurge.app.exif import read_exif_gps
    from geosurge.app.testing import exif_gps_block

    b = io.BytesIO()
    Image.new("RGB", (8, 8)).save(b, "JPEG", exif=exif_gps_block(*args, **kw))
    return read_exif_gps(b.getvalue())


@pytest.mark.parametrize("args, kw, why", [
    (((10, 999, 99999), "N", (10, 0, 0), "E"), {}, "minutes 999 or seconds 99999 not below 60"),
    (((10, 30, 60), "N", (10, 0, 0), "E"), {}, "seconds 60 not below 60"),
    (((10, 60, 0), "N", (10, 0, 0), "E"), {}, "minutes 60 or"),
    (((10, 0, 0), "N", (10, -75, 0), "E"), {}, "minutes -75"),
    ((((1, 0), 0, 0), "N", (10, 0, 0), "E"), {}, "denominator 0"),
    (((10, 0, 0), "N", (10, (5, 2**31 - 1), 0), "E"), {}, "denominator 2147483647"),
    (((10, 0, 0), "N", (10, 0, (3, -1)), "E"), {}, "denominator -1"),
    (((float("nan"), 0, 0), "N", (10, 0, 0), "E"), {"kind": "double"}, "not a finite number: nan"),
    (((10, 0, 0), "N", (float("inf"), 0, 0), "E"), {"kind": "double"}, "not a finite number: inf"),
    (((1, 2, 3), "N", (4, 5, 6), "E"), {"gps_at": 8, "ifd0_gps": True}, "loops back to IFD0"),
    (((1, 2, 3), "N", (4, 5, 6), "E"), {"gps_at": 100000}, "is outside the data"),
    (((1, 2, 3), "N", (4, 5, 6), "E"), {"gps_at": 3}, "is outside the data"),
    (((1, 2, 3), "X", (4, 5, 6), "E"), {}, "reference 'X' is not N or S"),
])
def test_malformed_exif_gps_gives_no_truth_point(args, kw, why):
    """Issue 22: out-of-range minutes/seconds, zero/huge/negative denominators, NaN, a GPS IFD that loops back to
    IFD0 or points outside the data: 'GPS is malformed' and no point."""
    gps = _gps(*args, **kw)
    assert gps is not None and gps.point is None and gps.lat is None
    assert gps.problem.startswith("the EXIF GPS is malformed") and why in gps.problem, gps.problem


def test_strict_exif_still_reads_what_writers_write():
    """The checks refuse nothing real: minutes/seconds just under 60, large everyday denominators (1e6, 1e7),
    doubles, negative degrees, and the same tags read right when the GPS IFD is where it should be."""
    assert _gps((10, 59, (599999, 10000)), "N", (10, 0, 0), "W").point == pytest.approx((10.99999, -10.0), abs=1e-4)
    assert _gps((10, 0, (30_000_000, 10**7)), "N", (10, (30 * 10**6, 10**6), 0), "E").point == pytest.approx(
        (10 + 3 / 3600, 10.5), abs=1e-6)
    assert _gps((12.5, 30, 0), "S", (10, 0, 0), "E", kind="double").point == pytest.approx((-13.0, 10.0))
    assert _gps((1, 2, 3), "N", (4, 5, 6), "E", ifd0_gps=True).point == pytest.approx((1.034167, 4.085), abs=1e-5)
