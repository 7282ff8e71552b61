"""The hostile-input corpus of issue 13 against the running demo: each input gets an answer or a clear
message (or is refused by the size limit, whatever the transport), the server survives, and no stray
temporary file is left. Time and memory are measured by ``benchmarks/hostile_inputs.py``, not here."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geosurge.data.exif import read_exif_gps
from geosurge.app.settings import EXAMPLES
from .app_testing import hostile_corpus, send_case, upload_raw

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
    if outcome == "blocked":
        assert str(server.workdir.parent) not in text, text  # the refusal does not name the private folder
    assert server.alive
    assert [p.name for p in server.workdir.iterdir() if p.is_file() and p.name != ".pid"] == []


def test_corpus_covers_the_issue():
    kinds = " ".join(CORPUS)
    for needed in ("1x10000", "1x40000", "10000x1", "1x1", "bomb", "truncated", "notes.txt", "png_named.jpg",
                   "cmyk", "gray16", "palette", "animated.gif", "exif_", "data_url", "oversize",
                   "bomb_gif", "bomb_bmp", "bomb_tiff", "bomb_webp", "bomb_ppm", "bomb_ztxt", ".svg", ".avif",
                   "multi_frame.tif", "nan_float.tif", "orientation_", "exif_gps_loop", "name_trick", "chunked_",
                   "url_key_"):
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
    from geosurge.data.exif import _degrees, read_exif_gps
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

    from .exif_photos import with_gps

    small = Image.new("RGB", (64, 64))
    b = io.BytesIO()
    small.save(b, "PNG", exif=with_gps(small, 10.5, -20.25))  # a PNG eXIf chunk (before the pixels)
    assert read_exif_gps(b.getvalue()).point == pytest.approx((10.5, -20.25), abs=1e-4)
    assert read_exif_gps(Path(EXAMPLES / "Apple_iPhone_4.jpg")).point == pytest.approx((41.853, 12.488833), abs=1e-4)


def _gps(*args, **kw):
    import io

    from geosurge.data.exif import read_exif_gps
    from .app_testing import exif_gps_block

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


# ---------------------------------------------------------------------------------------- issue 22: the server
SAFE_PATH = re.compile(r"^/geosurge-private/[0-9a-f]{32}/[A-Za-z0-9_][A-Za-z0-9_.-]*\.(jpg|png)$")


def test_upload_paths_are_unguessable_safe_and_servable(server):
    """The same bytes uploaded twice land in two folders of 128 random bits (not a content hash anyone holding
    the photo could compute), under a name of safe characters, and only the scrubbed copy is served back."""
    import httpx

    photo = (EXAMPLES / "Apple_iPhone_4.jpg").read_bytes()  # carries EXIF GPS
    paths = []
    for name in ("photo.jpg", "photo.jpg", "../../../etc/passwd.jpg", "x" * 300 + ".jpg", "photo\u202egpj.exe", ".h.png"):
        status, path = upload_raw(server.url, photo, name)
        assert status == 200 and SAFE_PATH.match(path), (name, path)
        paths.append(path)
    assert len({p.split("/")[2] for p in paths}) == len(paths)
    r = httpx.get(server.url + "gradio_api/file=" + paths[0], timeout=30)
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8" and b"Exif" not in r.content and b"GPS" not in r.content
    stored = [f.relative_to(server.workdir) for f in server.workdir.rglob("*") if f.is_file()]
    assert all(len(f.parts) == 2 and not f.name.startswith(".") for f in stored), stored


def test_private_folder_path_never_leaves_the_server(server):
    """Neither /config, the page, an upload's answer nor the answer to /locate names the private folder (the
    alias stands for it); the file route serves nothing from it but <folder>/<file>: not .pid, not its top."""
    import httpx

    from .app_testing import upload_and_locate

    real, root = str(server.workdir), str(server.workdir.parent)
    status, mine = upload_raw(server.url, (EXAMPLES / "Apple_iPhone_5.jpg").read_bytes(), "mine.jpg")
    assert status == 200
    messages = []  # another visitor's answer
    status, out = upload_and_locate(server.url, (EXAMPLES / "Apple_iPhone_4.jpg").read_bytes(), "p.jpg", messages=messages)
    assert status == 200 and out[1].startswith("### ")
    texts = [httpx.get(server.url + u, timeout=30).text for u in ("config", "", "gradio_api/info")] + [str(messages)]
    assert not any(mine.split("/")[2] in t for t in texts)  # the first upload's folder is told to nobody else
    for text in texts:
        assert root not in text and "geosurge-app-" not in text
    assert "/geosurge-private/" in str(messages) and "/geosurge-private/" in texts[0]  # outputs and examples, aliased
    overlay = next(o for o in out if isinstance(o, dict) and "path" in o)["path"]
    assert httpx.get(server.url + "gradio_api/file=" + overlay, timeout=30).status_code == 200
    stray = server.workdir / "stray.jpg"  # a file at the top of the folder, as Gradio's parser used to leave
    stray.write_bytes(b"\xff\xd8\xff")
    dot = next(server.workdir.glob("*/")) / ".staging.jpg"
    dot.write_bytes(b"\xff\xd8\xff")
    try:
        for target in (f"{root}/.pid", "/geosurge-private/../.pid", "/geosurge-private/stray.jpg", f"{real}/stray.jpg",
                       f"/geosurge-private/{dot.parent.name}/.staging.jpg", "/geosurge-private", root, "/etc/passwd",
                       "../../../../etc/passwd", f"{real}/../.pid", "/geosurge-private/%2e%2e/.pid"):
            r = httpx.get(server.url + "gradio_api/file=" + target, timeout=30)
            assert r.status_code in (403, 404), (target, r.status_code)
            assert root not in r.text, (target, r.text)
    finally:
        stray.unlink()
        dot.unlink()


def test_original_bytes_never_reach_disk_while_arriving(server):
    """Gradio's parser wrote an upload, GPS and all, to a tmpXXXXXXXX file while it arrived; the guard parses
    it in memory: halfway through a slow upload, and after it, no file anywhere in the server's folder (or at
    the top of the temporary directory) holds the original's bytes."""
    import tempfile
    import threading
    import time

    from .app_testing import chunked_upload

    photo = (EXAMPLES / "Apple_iPhone_4.jpg").read_bytes()
    marker = photo[-4096:]  # pixels the scrubbed copy, re-encoded, cannot contain
    result = {}
    t = threading.Thread(target=lambda: result.update(r=chunked_upload(server.url, photo, "slow.jpg",
                                                                          pause_at=len(photo) // 2, pause_s=3)))
    start = time.time()
    t.start()
    time.sleep(1.5)

    def holding() -> list[Path]:
        places = [*server.workdir.parent.rglob("*"), *Path(tempfile.gettempdir()).glob("tmp*")]
        found = []
        for f in places:
            try:
                if f.is_file() and f.stat().st_mtime >= start - 1 and f.stat().st_size < 64 * 2**20 and marker in f.read_bytes():
                    found.append(f)
            except OSError:
                pass
        return found

    assert holding() == []  # halfway
    t.join(60)
    assert result["r"][0] == 200
    assert holding() == []  # after: only the scrubbed copy


def test_eight_hostile_uploads_at_once(server):
    """Concurrency: 8 heavy or hostile uploads at once (40 MP PNGs of the costly modes, bombs, a photo) all get
    their outcome; the server stays up."""
    from concurrent.futures import ThreadPoolExecutor

    from .app_testing import png_header_bomb, upload_and_locate

    big = [CORPUS["large_6300x6300.png"].data, CORPUS["noise_near_limit.png"].data, CORPUS["gray16.png"].data]
    cases = [(big[0], "answer"), (big[1], "answer"), (big[0], "answer"), (png_header_bomb(30000, 30000), "message"),
             (CORPUS["bomb_gif_65535x65535.gif"].data, "message"), (CORPUS["photo.avif"].data, "answer"),
             (big[2], "answer"), ((EXAMPLES / "Apple_iPhone_4.jpg").read_bytes(), "answer")]

    def one(case):
        status, out = upload_and_locate(server.url, case[0], "burst.png", timeout=300)
        assert status == 200 and isinstance(out, list), (status, str(out)[:300])
        return "answer" if out[1].startswith("### ") else "message" if "cannot be used" in out[1] else out[1]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, cases))
    assert got == [expect for _, expect in cases]
    assert server.alive


def test_waiting_visitors_see_their_place_and_a_full_queue_says_busy(tmp_path):
    """With a queue of 2, 8 visitors at once: those waiting are told their place (Gradio's estimation
    messages with rank and queue size, which the page shows), those beyond the queue get a 503 saying the
    demo is busy, at once, and the rest their answers. Then the server is killed with SIGKILL: its folder
    is readable by this user only, and what the next server runs first (`remove_orphans`) removes it."""
    import os
    import signal
    import stat
    from concurrent.futures import ThreadPoolExecutor

    from .app_testing import AppServer, locate_fn, upload_and_locate

    env = {"TMPDIR": str(tmp_path)}
    s = AppServer("--queue-size", "2", env=env)
    try:
        fn, photo = locate_fn(s.url), (EXAMPLES / "Apple_iPhone_5.jpg").read_bytes()
        logs = [[] for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda i: upload_and_locate(s.url, photo, f"q{i}.jpg", fn=fn, messages=logs[i]), range(8)))
        busy = [out for status, out in got if status == 503]
        answered = [out for status, out in got if status == 200 and out[1].startswith("### ")]
        assert busy and answered and len(busy) + len(answered) == 8, got
        assert all("busy" in out and "Please try again" in out for out in busy), busy
        ranks = [m for log in logs for m in log if m.get("msg") == "estimation" and m.get("rank", 0) >= 1]
        assert ranks and all(m.get("queue_size") for m in ranks), logs
        root = s.workdir.parent
        assert upload_raw(s.url, photo, "kept.jpg")[0] == 200
        os.kill(s.proc.pid, signal.SIGKILL)
        s.proc.wait(30)
    finally:
        s.stop()
    assert root.is_dir()  # left behind by the kill, but readable by nobody else: the folder is 0700 (no one
    assert stat.S_IMODE(root.stat().st_mode) == 0o700  # else can enter it), so is files/, and what the server
    assert stat.S_IMODE((root / "files").stat().st_mode) == 0o700  # wrote is 0600 (Gradio's copies of the
    copies = [f for f in root.rglob("kept.jpg")]  # examples keep their 0644, inside)
    assert copies and all(stat.S_IMODE(f.stat().st_mode) == 0o600 and stat.S_IMODE(f.parent.stat().st_mode) == 0o700
                          for f in copies)
    from geosurge.app.server import remove_orphans

    assert remove_orphans(tmp_path) == [root] and not root.exists()  # ... and removed by the next start


def test_budget_admits_what_fits_and_says_busy_instead_of_hanging():
    import threading
    import time

    from geosurge.app.admission import Budget, Busy

    b = Budget(100)
    with b.hold(60):
        with pytest.raises(Busy):
            with b.hold(60, timeout=0.2):  # does not fit beside 60 and nothing frees it: busy, after the timeout
                pass
        with b.hold(40, timeout=0.2):  # fits beside it
            assert b.used == 100
    with b.hold(500, timeout=0.2):  # larger than the whole budget: admitted alone
        pass
    order = []

    def later():
        with b.hold(80, timeout=5):
            order.append("second")

    with b.hold(80):
        t = threading.Thread(target=later)
        t.start()
        time.sleep(0.3)
        order.append("first")
    t.join(5)
    assert order == ["first", "second"] and b.used == 0 and b.peak == 500


def test_decode_cost_is_read_from_the_header_by_mode():
    import io

    from geosurge.app.admission import decode_cost
    from .app_testing import png_header_bomb

    def png(mode, size):
        b = io.BytesIO()
        Image.new(mode, size).save(b, "PNG")
        return b.getvalue()

    assert decode_cost(png("RGB", (1000, 1000))) == 4_000_000
    assert decode_cost(png("P", (1000, 1000))) == 9_000_000  # palette images are expanded to RGBA first
    assert decode_cost(png_header_bomb(5000, 5000)) == 25_000_000  # 1-bit, as the header says
    b = io.BytesIO()
    Image.new("RGB", (8000, 6000)).save(b, "JPEG")
    assert decode_cost(b.getvalue()) == 2000 * 1500 * 4  # JPEG: at the scale draft mode decodes it (1/4)
    assert decode_cost(b"not an image") == 0


def test_upload_store_bounds_memory_and_keeps_the_truth(tmp_path):
    """Readings beyond the byte bound are let go oldest first; the handler then gets the scrubbed copy, with
    the GPS read from the original; nothing is read or touched outside the upload folder."""
    import io

    from .exif_photos import with_gps
    from geosurge.app.uploads import UploadStore

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 600, 3), dtype=np.uint8))
    b = io.BytesIO()
    img.save(b, "JPEG", exif=with_gps(img, 45.5, 9.25))
    store = UploadStore(20 * 2**20, 60, remember_bytes=1_000_000)  # room for one reading (a 0.7 MB image)
    paths = [store.add(b.getvalue(), f"p{i}.jpg", tmp_path) for i in range(3)]
    assert [p.parent.parent for p in paths] == [tmp_path] * 3 and len({p.parent for p in paths}) == 3
    assert all(read_exif_gps(p.read_bytes()) is None for p in paths)  # only scrubbed copies on disk
    newest = store.from_file(paths[2], within=tmp_path)  # still in memory: the original's digest, not its bytes
    assert newest.digest == hashlib.sha1(b.getvalue()).hexdigest() and not hasattr(newest, "data")
    first = store.from_file(paths[0], within=tmp_path)
    assert first.gps.point == pytest.approx((45.5, 9.25), abs=1e-4) and first.image is not None
    # answered on the scrubbed copy: the original's reading went
    assert first.digest == hashlib.sha1(paths[0].read_bytes()).hexdigest() != newest.digest
    outside = tmp_path.parent / "outside.txt"
    outside.write_text("keep me")
    refused = store.from_file(outside, within=tmp_path)
    assert refused.error == "the file was not uploaded to this server" and outside.read_text() == "keep me"
