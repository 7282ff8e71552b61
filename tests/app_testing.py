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
    def __init__(self, *args: str, env: dict | None = None, timeout: float = 240):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"geosurge-app-{self.port}.log"
        self._f = self.log.open("w")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(self.port), *args],
                                     cwd=ROOT, stdout=self._f, stderr=subprocess.STDOUT,
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
def upload_raw(url: str, data: bytes, name: str) -> tuple[int, str | None]:
    """POST a file to Gradio's /upload; (HTTP status, server path or None)."""
    import httpx

    r = httpx.post(url + "gradio_api/upload", files={"files": (name, data)}, timeout=120)
    return r.status_code, (r.json()[0] if r.status_code == 200 else None)


def data_url_payload(url: str) -> dict:
    """An image input as a ``data:`` URL. Without the FileData ``meta`` marker Gradio leaves the payload
    alone (no cache check on ``path``) and its Image component decodes the URL, whatever its size: the
    transport the 20 MB limit did not cover."""
    return {"path": "photo.jpg", "url": url}


def locate_raw(url: str, file_data: dict, fusion: bool = True, timeout: float = 180) -> tuple[int, list | str]:
    """Call the demo's /locate event through the queue with a hand-made FileData payload (e.g. a ``data:``
    URL, which gradio_client never sends); (HTTP status of the join, output list or error text)."""
    import json
    import secrets

    import httpx

    config = httpx.get(url + "config", timeout=30).json()
    fn = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "locate")
    fn = config["dependencies"][fn].get("id", fn)
    session = secrets.token_hex(6)
    body = {"data": [file_data, fusion], "fn_index": fn, "session_hash": session, "event_data": None, "trigger_id": None}
    r = httpx.post(url + "gradio_api/queue/join", json=body, timeout=timeout)
    if r.status_code != 200:
        return r.status_code, r.text
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}, timeout=timeout) as s:
        for line in s.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "process_completed":
                out = msg.get("output", {})
                return 200, out.get("data") if msg.get("success") else str(out.get("error"))
    return 200, "no answer"


# ---------------------------------------------------------------------------- the hostile-input corpus
@dataclass
class HostileCase:
    """One odd or hostile upload. ``expect``: "answer" (a prediction), "message" (our explanation instead
    of an answer) or "refused" (turned away by the transport's size limit). ``transport``: "file" (an upload
    through gradio_client) or "data-url" (a ``data:`` URL inside the queue request)."""

    name: str
    data: bytes
    expect: str
    transport: str = "file"
    summary_has: str | None = None  # text the answer must contain (EXIF cases)


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


def exif_gps_block(lat_dms, lat_ref: str, lon_dms, lon_ref: str) -> bytes:
    """Raw EXIF bytes with only a GPS block, degrees/minutes/seconds as (numerator, denominator) pairs
    written as SRATIONAL, so negative degrees and zero denominators (as some writers produce) can be
    stored, which Pillow's writer refuses."""
    def entry(tag, typ, count, value: bytes) -> bytes:
        return struct.pack(">HHI", tag, typ, count) + value.ljust(4, b"\x00")

    # layout: header(8) | IFD0: 1 entry (2+12+4=18) | GPS IFD: 4 entries (2+48+4=54) | lat (24) | lon (24)
    gps_at, lat_at = 8 + 18, 8 + 18 + 54
    lon_at = lat_at + 24
    pairs = lambda dms: b"".join(struct.pack(">ii", *(v if isinstance(v, tuple) else (v, 1))) for v in dms)  # noqa: E731
    ifd0 = struct.pack(">H", 1) + entry(0x8825, 4, 1, struct.pack(">I", gps_at)) + struct.pack(">I", 0)
    gps = (struct.pack(">H", 4) + entry(1, 2, 2, lat_ref.encode() + b"\x00") + entry(2, 10, 3, struct.pack(">I", lat_at))
           + entry(3, 2, 2, lon_ref.encode() + b"\x00") + entry(4, 10, 3, struct.pack(">I", lon_at)) + struct.pack(">I", 0))
    return b"Exif\x00\x00" + b"MM\x00*" + struct.pack(">I", 8) + ifd0 + gps + pairs(lat_dms) + pairs(lon_dms)


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
    ]


def send_case(server: AppServer, client, case: HostileCase, tmp: Path, fusion: bool = True) -> tuple[str, str]:
    """Send one corpus case the way its transport says; ("answer" | "message" | "refused", summary text)."""
    import base64

    if case.transport == "data-url":
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
