"""Test support: ``python app.py`` in a subprocess on a free port, raw transport calls and the hostile-input
corpus (for the app tests, benchmarks/app.py and benchmarks/hostile_inputs.py)."""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    def __init__(self, *args: str, env: dict | None = None, timeout: float = 240, root: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"geosurge-app-{self.port}.log"
        self._f = self.log.open("w")
        self.proc = subprocess.Popen([sys.executable, str(Path(root) / "app.py"), "--port", str(self.port), *args],
                                     cwd=root, stdout=self._f, stderr=subprocess.STDOUT,
                                     env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})})
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"app.py did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    @property
    def workdir(self) -> Path:
        """The server's private folder for uploads and generated files (from its log)."""
        import re

        m = re.search(r"uploads and generated files in (\S+), deleted", self.log.read_text())
        if not m:
            raise RuntimeError("the server did not log its upload folder")
        return Path(m.group(1))

    def rss_bytes(self) -> int:
        """The server process's resident memory now, in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found (Linux /proc needed)")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._f.close()

    def peak_rss_bytes(self) -> int:
        """The server process's peak resident memory so far (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmHWM not found (Linux /proc needed)")


# ---------------------------------------------------------------------------- raw transport (tests, benchmarks)
def upload_raw(url: str, data: bytes, name: str, timeout: float = 120, http=None) -> tuple[int, str | None]:
    """POST a file to Gradio's /upload; (HTTP status, server path, or the refusal's text). ``http``: an
    ``httpx.Client`` to keep one connection alive across calls, as a browser does (default: a new one)."""
    import httpx

    r = (http or httpx).post(url + "gradio_api/upload", files={"files": (name, data)}, timeout=timeout)
    return r.status_code, (r.json()[0] if r.status_code == 200 else r.text)


def data_url_payload(url: str) -> dict:
    """An image input as a ``data:`` URL. Without the FileData ``meta`` marker Gradio leaves the payload
    alone (no cache check on ``path``) and its Image component decodes the URL, whatever its size: the
    transport the 20 MB limit did not cover."""
    return {"path": "photo.jpg", "url": url}


def locate_fn(url: str) -> int:
    """The queue's id of the demo's /locate event (from /config)."""
    import httpx

    config = httpx.get(url + "config", timeout=30).json()
    fn = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "locate")
    return config["dependencies"][fn].get("id", fn)


def locate_raw(url: str, file_data: dict, fusion: bool = True, timeout: float = 180, fn: int | None = None,
               messages: list | None = None, http=None) -> tuple[int, list | str]:
    """Call the demo's /locate event through the queue with a hand-made FileData payload (e.g. a ``data:``
    URL, which gradio_client never sends); (HTTP status of the join, output list or error text). The
    stream's messages (queue estimations with rank, ...) are appended to ``messages`` when given; ``http`` as
    in :func:`upload_raw`."""
    import json
    import secrets

    import httpx

    fn = locate_fn(url) if fn is None else fn
    session = secrets.token_hex(6)
    body = {"data": [file_data, fusion], "fn_index": fn, "session_hash": session, "event_data": None, "trigger_id": None}
    http = http or httpx
    r = http.post(url + "gradio_api/queue/join", json=body, timeout=timeout)
    if r.status_code != 200:
        return r.status_code, r.text
    with http.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}, timeout=timeout) as s:
        for line in s.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if messages is not None:
                messages.append(msg)
            if msg.get("msg") == "process_completed":
                out = msg.get("output", {})
                return 200, out.get("data") if msg.get("success") else str(out.get("error"))
    return 200, "no answer"


def upload_and_locate(url: str, data: bytes, name: str, fusion: bool = True, fn: int | None = None,
                      timeout: float = 180, messages: list | None = None, http=None) -> tuple[int, list | str]:
    """What a browser does with a photo, over raw HTTP: upload it, then ask /locate about the path it got
    back; (HTTP status of the upload or the join, output list or error text). ``http`` as in :func:`upload_raw`."""
    status, path = upload_raw(url, data, name, timeout=timeout, http=http)
    if status != 200:
        return status, str(path)
    return locate_raw(url, {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}, fusion,
                      timeout, fn, messages, http)


# ---------------------------------------------------------------------------- the hostile-input corpus
@dataclass
class HostileCase:
    """One odd or hostile upload. ``expect``: "answer" (a prediction), "message" (our explanation instead
    of an answer), "refused" (turned away by the transport's size limit) or "blocked" (a request naming a
    file it may not: refused, never answered). ``transport``: "file" (an upload through gradio_client),
    "data-url" (a ``data:`` URL inside the queue request), "raw" (an upload over raw HTTP under the name
    ``wire_name``, which gradio_client could not send), "chunked" (the same with a chunked body, no length)
    or "payload" (``payload`` sent as the photo in the queue request, no upload)."""

    name: str
    data: bytes
    expect: str
    transport: str = "file"
    summary_has: str | None = None  # text the answer must contain (EXIF cases)
    wire_name: str | None = None
    payload: dict | None = None


def _png(img: Image.Image, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, "PNG", **kw)
    return b.getvalue()


def _jpeg(img: Image.Image, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, "JPEG", quality=90, **kw)
    return b.getvalue()


def png_header_bomb(w: int, h: int) -> bytes:
    """A tiny PNG claiming w x h pixels (an IDAT of a few zero rows): a decompression bomb by its header."""
    raw = zlib.compress(b"\x00" * (w // 8 + 1) * 4)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def exif_gps_block(lat_dms, lat_ref: str, lon_dms, lon_ref: str, kind: str = "srational",
                   gps_at: int | None = None, ifd0_gps: bool = False) -> bytes:
    """Raw EXIF bytes with a GPS block, as some writers (or attackers) produce them and Pillow's writer
    refuses: degrees/minutes/seconds as SRATIONAL (numerator, denominator) pairs, so negative degrees and
    zero or huge denominators can be stored, or as DOUBLE (``kind="double"``: NaN, infinities).
    ``gps_at`` overrides the GPS IFD offset (8: loops back to IFD0; past the end: out of bounds);
    ``ifd0_gps`` also puts the four GPS tags into IFD0, so a loop back to it reads them as a position."""
    def entry(tag, typ, count, value: bytes) -> bytes:
        return struct.pack(">HHI", tag, typ, count) + value.ljust(4, b"\x00")

    if kind == "double":
        typ, values = 12, lambda dms: b"".join(struct.pack(">d", float(v)) for v in dms)  # noqa: E731
    else:
        typ, values = 10, lambda dms: b"".join(struct.pack(">ii", *(v if isinstance(v, tuple) else (v, 1))) for v in dms)  # noqa: E731
    n0 = 5 if ifd0_gps else 1
    # layout: header(8) | IFD0: n0 entries | GPS IFD: 4 entries (2+48+4=54) | lat (24) | lon (24)
    gps_real = 8 + 2 + 12 * n0 + 4
    lat_at = gps_real + 54
    lon_at = lat_at + 24

    def gps_entries() -> bytes:
        return (entry(1, 2, 2, lat_ref.encode() + b"\x00") + entry(2, typ, 3, struct.pack(">I", lat_at))
                + entry(3, 2, 2, lon_ref.encode() + b"\x00") + entry(4, typ, 3, struct.pack(">I", lon_at)))

    pointer = entry(0x8825, 4, 1, struct.pack(">I", gps_real if gps_at is None else gps_at))
    ifd0 = struct.pack(">H", n0) + (gps_entries() if ifd0_gps else b"") + pointer + struct.pack(">I", 0)
    gps = struct.pack(">H", 4) + gps_entries() + struct.pack(">I", 0)
    return b"Exif\x00\x00" + b"MM\x00*" + struct.pack(">I", 8) + ifd0 + gps + values(lat_dms) + values(lon_dms)


def _gps_jpeg(photo: Image.Image, lat_dms, lat_ref: str, lon_dms, lon_ref: str) -> bytes:
    return _jpeg(photo, exif=exif_gps_block(lat_dms, lat_ref, lon_dms, lon_ref))


def hostile_corpus(photo: Path, max_upload_mb: int = 20) -> list[HostileCase]:
    """The corpus of issue 13: extreme aspect ratios, tiny and huge images, bombs, truncated files,
    non-images, wrong extensions, odd modes, EXIF edge cases, ``data:`` URLs and oversize files."""
    import numpy as np

    with Image.open(photo) as im:
        base = im.convert("RGB")
    base.thumbnail((640, 640))
    rng = np.random.default_rng(0)
    noise = lambda w, h: Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))  # noqa: E731
    frames = [base.resize((160, 120)), base.resize((160, 120)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rotated = base.transpose(Image.Transpose.ROTATE_90)
    exif = rotated.getexif()
    exif[0x0112] = 6
    arr16 = np.asarray(base.convert("L"), dtype=np.uint16) * 257
    limit = max_upload_mb * 2**20
    b = io.BytesIO()
    noise(5400, 3600).save(b, "JPEG", quality=92)
    near_limit_jpeg = b.getvalue()
    return [
        HostileCase("strip_1x10000.png", _png(noise(1, 10000)), "answer"),
        HostileCase("strip_1x40000.png", _png(noise(1, 40000)), "answer"),
        HostileCase("strip_10000x1.png", _png(noise(10000, 1)), "answer"),
        HostileCase("strip_40000x1.png", _png(noise(40000, 1)), "answer"),
        HostileCase("tiny_1x1.png", _png(Image.new("RGB", (1, 1), (120, 140, 200))), "answer"),
        HostileCase("tiny_2x3.jpg", _jpeg(Image.new("RGB", (2, 3), (120, 140, 200))), "answer"),
        HostileCase("huge_10000x10000.png", _png(Image.new("RGB", (10000, 10000), (90, 140, 200))), "message"),
        HostileCase("large_6300x6300.png", _png(Image.new("RGB", (6300, 6300), (90, 140, 200))), "answer"),
        HostileCase("huge_12000x8000.jpg", _jpeg(base.resize((12000, 8000))), "answer"),
        HostileCase("noise_near_limit.jpg", near_limit_jpeg, "answer"),  # incompressible: ~18 MB of JPEG
        HostileCase("noise_near_limit.png", _png(noise(2500, 2500)), "answer"),  # ~18 MB of PNG
        HostileCase("data_url_near_limit.jpg", near_limit_jpeg, "answer", transport="data-url"),
        HostileCase("bomb_30000x30000.png", png_header_bomb(30000, 30000), "message"),
        HostileCase("bomb_100000x1.png", png_header_bomb(100000, 20000), "message"),
        HostileCase("truncated.jpg", _jpeg(base)[:300], "message"),
        HostileCase("truncated_half.png", _png(base)[: len(_png(base)) // 2], "message"),
        HostileCase("empty.jpg", b"", "message"),
        HostileCase("notes.txt", b"definitely not a photo", "message"),
        HostileCase("html_as.jpg", b"<html><script>alert(1)</script></html>", "message"),
        HostileCase("png_named.jpg", _png(base), "answer"),
        HostileCase("jpeg_named.png", _jpeg(base), "answer"),
        HostileCase("cmyk.jpg", _jpeg(base.convert("CMYK")), "answer"),
        HostileCase("gray16.png", _png(Image.fromarray(arr16)), "answer"),
        HostileCase("palette.png", _png(base.convert("P")), "answer"),
        HostileCase("rgba.png", _png(base.convert("RGBA")), "answer"),
        HostileCase("animated.gif", gif.getvalue(), "answer"),
        HostileCase("exif_rotated.jpg", _jpeg(rotated, exif=exif), "answer"),
        HostileCase("exif_south_minutes.jpg", _gps_jpeg(base, (-33, 52, 0), "S", (151, 12, 30), "E"), "answer",
                    summary_has="EXIF GPS of the upload: -33.8667, 151.2083"),
        HostileCase("exif_lat_200.jpg", _gps_jpeg(base, (200, 0, 0), "N", (10, 0, 0), "E"), "answer",
                    summary_has="latitude 200 is out of range"),
        HostileCase("exif_zero_denominator.jpg", _gps_jpeg(base, ((1, 0), 0, 0), "N", (10, 0, 0), "E"), "answer",
                    summary_has="EXIF GPS cannot be shown"),
        HostileCase("data_url_photo.jpg", _jpeg(base), "answer", transport="data-url"),
        HostileCase("data_url_oversize.jpg", b"\xff\xd8\xff" + bytes(limit + 2**20), "refused", transport="data-url"),
        HostileCase("oversize.jpg", b"\xff\xd8\xff" + bytes(limit + 2**20), "refused"),
        *more_hostile_cases(base, limit),
    ]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _patched(data: bytes, at: int, fmt: str, *values) -> bytes:
    b = bytearray(data)
    b[at:at + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    return bytes(b)


def _saved(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def tiff_header_bomb(w: int, h: int) -> bytes:
    """A tiny TIFF whose width and length tags claim w x h pixels."""
    d = bytearray(_saved(Image.new("L", (8, 8)), "TIFF"))
    order = "<" if d[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", d[4:8])[0]
    for i in range(struct.unpack(order + "H", d[ifd:ifd + 2])[0]):
        e = ifd + 2 + 12 * i
        tag = struct.unpack(order + "H", d[e:e + 2])[0]
        if tag in (256, 257):  # ImageWidth, ImageLength as LONG
            d[e + 2:e + 12] = struct.pack(order + "HII", 4, 1, w if tag == 256 else h)
    return bytes(d)


def more_hostile_cases(base: Image.Image, limit: int) -> list[HostileCase]:
    """Issue 22's categories: header bombs of every format Pillow reads, a zTXt bomb, SVG, AVIF, multi-frame
    and NaN TIFFs, odd orientations, malformed GPS, filename tricks, chunked bodies, ``url``-key URLs."""
    import numpy as np

    small = base.resize((320, 240))
    png = _png(small)
    nan = np.full((240, 320), np.nan, np.float32)
    nan[:120] = np.linspace(0, 1, 320, dtype=np.float32)
    frames = [small, small.transpose(Image.Transpose.FLIP_TOP_BOTTOM), small.convert("L").convert("RGB")]
    oriented = []
    for value in (0, 9, 65535):
        exif = small.getexif()
        exif[0x0112] = value
        oriented.append(HostileCase(f"orientation_{value}.jpg", _jpeg(small, exif=exif), "answer"))
    ztxt = _chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * (64 * 2**20), 9))  # 64 MB inflated (Pillow stops at 1 MB)
    tricks = ["../../../etc/passwd.jpg", "..\\..\\windows\\evil.jpg", ".hidden.jpg", "photo\u202egpj.exe",
              "x" * 300 + ".jpg", "<img src=x onerror=alert(1)>.jpg", "file=..%2f.pid.jpg", "geosurge-private.jpg"]
    photo = _jpeg(small)
    return [
        HostileCase("bomb_gif_65535x65535.gif", _patched(_saved(Image.new("P", (8, 8)), "GIF"), 6, "<HH", 65535, 65535), "message"),
        HostileCase("bomb_bmp_50000x50000.bmp", _patched(_saved(Image.new("RGB", (4, 4)), "BMP"), 18, "<ii", 50000, 50000), "message"),
        HostileCase("bomb_tiff_100000x100000.tif", tiff_header_bomb(100000, 100000), "message"),
        HostileCase("bomb_webp_16383x2600.webp", _saved(Image.new("RGB", (16383, 2600), (9, 9, 9)), "WEBP", lossless=True), "message"),
        HostileCase("bomb_ppm_60000x60000.ppm", b"P6\n60000 60000\n255\n" + bytes(300), "message"),
        HostileCase("bomb_ztxt_64MB.png", png[:33] + ztxt + png[33:], "message"),
        HostileCase("vector.svg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100000" '
                    b'height="100000"><image href="file:///etc/passwd"/></svg>', "message"),
        HostileCase("photo.avif", _saved(small, "AVIF"), "answer"),
        HostileCase("multi_frame.tif", _saved(frames[0], "TIFF", save_all=True, append_images=frames[1:]), "answer"),
        HostileCase("nan_float.tif", _saved(Image.fromarray(nan), "TIFF"), "answer"),
        *oriented,
        HostileCase("exif_gps_loop.jpg", _jpeg(small, exif=exif_gps_block((1, 2, 3), "N", (4, 5, 6), "E", gps_at=8, ifd0_gps=True)),
                    "answer", summary_has="GPS is malformed (the GPS block's offset 8 loops back to IFD0)"),
        HostileCase("exif_minutes_999.jpg", _gps_jpeg(small, (10, 999, 99999), "N", (10, 0, 0), "E"), "answer",
                    summary_has="GPS is malformed (minutes 999"),
        HostileCase("exif_nan.jpg", _jpeg(small, exif=exif_gps_block((float("nan"), 0, 0), "N", (10, 0, 0), "E", kind="double")),
                    "answer", summary_has="GPS is malformed (not a finite number: nan)"),
        *[HostileCase(f"name_trick_{i}", photo, "answer", transport="raw", wire_name=n) for i, n in enumerate(tricks)],
        HostileCase("chunked_photo.jpg", photo, "answer", transport="chunked"),
        HostileCase("chunked_oversize.jpg", b"\xff\xd8\xff" + bytes(limit + 2**20), "refused", transport="chunked"),
        HostileCase("url_key_metadata_service", b"", "blocked", transport="payload", payload={
            "path": "photo.jpg", "url": "http://169.254.169.254/latest/meta-data/", "meta": {"_type": "gradio.FileData"}}),
        HostileCase("url_key_outside_file", b"", "blocked", transport="payload",
                    payload={"path": "/etc/passwd", "url": None, "meta": {"_type": "gradio.FileData"}}),
        HostileCase("url_key_private_pid", b"", "blocked", transport="payload",
                    payload={"path": "/geosurge-private/../.pid", "meta": {"_type": "gradio.FileData"}}),
    ]


def send_case(server: AppServer, client, case: HostileCase, tmp: Path, fusion: bool = True) -> tuple[str, str]:
    """Send one corpus case the way its transport says; ("answer" | "message" | "refused", summary text)."""
    import base64

    if case.transport in ("raw", "chunked", "payload"):
        status, out = _send_raw(server.url, case, fusion)
        if status == 413:
            return "refused", str(out)
        if status in (400, 403, 404) or (case.transport == "payload" and isinstance(out, str)):
            return "blocked", f"{status}: {out}"
        if status != 200 or not isinstance(out, list):
            return "error", f"{status}: {out}"
        summary = out[1]
    elif case.transport == "data-url":
        url = "data:image/jpeg;base64," + base64.b64encode(case.data).decode()
        status, out = locate_raw(server.url, data_url_payload(url), fusion)
        if status == 413:
            return "refused", str(out)
        if status != 200 or not isinstance(out, list):
            return "error", f"{status}: {out}"
        summary = out[1]
    else:
        from gradio_client import handle_file

        path = tmp / case.name
        path.write_bytes(case.data)
        try:
            summary = client.predict(handle_file(str(path)), fusion, api_name="/locate")[1]
        except Exception as e:  # gradio_client raises on a refused upload (413)
            text = f"{type(e).__name__}: {e}"
            if "maximum file size" not in text and "413" not in text:
                return "error", text
            # gradio_client refuses it before sending; the server must refuse it too when sent anyway
            status, _ = upload_raw(server.url, case.data, case.name)
            return ("refused" if status == 413 else "error"), f"{text}; server: HTTP {status}"
    if "cannot be used" in summary:
        return ("refused" if "upload limit" in summary else "message"), summary
    return ("answer" if summary.startswith("### ") else "error"), summary


def chunked_upload(url: str, data: bytes, name: str, pause_at: int | None = None, pause_s: float = 0.0,
                   timeout: float = 120) -> tuple[int, str]:
    """POST a file to /upload with a chunked body (no Content-Length), optionally pausing ``pause_s`` seconds
    after ``pause_at`` bytes (a slow visitor); (HTTP status, server path or the refusal's text)."""
    import secrets

    import httpx

    boundary = secrets.token_hex(8)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()

    def chunks():
        cut = len(body) if pause_at is None else min(pause_at, len(body))
        for i in range(0, cut, 65536):
            yield body[i:min(i + 65536, cut)]
        if pause_at is not None:
            time.sleep(pause_s)
        for i in range(cut, len(body), 65536):
            yield body[i:i + 65536]

    r = httpx.post(url + "gradio_api/upload", content=chunks(), timeout=timeout,
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    return r.status_code, (r.json()[0] if r.status_code == 200 else r.text)


def _send_raw(url: str, case: HostileCase, fusion: bool) -> tuple[int, list | str]:
    if case.transport == "payload":
        return locate_raw(url, case.payload, fusion)
    if case.transport == "raw":
        return upload_and_locate(url, case.data, case.wire_name or case.name, fusion)
    status, path = chunked_upload(url, case.data, case.name)
    if status != 200:
        return status, path
    return locate_raw(url, {"path": path, "orig_name": case.name, "meta": {"_type": "gradio.FileData"}}, fusion)
