"""What the demo does with an uploaded photo before and after the model sees it (kept free of Gradio).

The original bytes are read once into memory and the file on disk is replaced by an upright, downscaled
copy without any metadata: that copy is all the server can ever serve back (EXIF, GPS included, never is).
The EXIF GPS, read before the scrub, travels with the :class:`Upload` to the handler, which shows it as
the truth. A few recent uploads are remembered in memory (bounded count and age) so that flipping the
fusion toggle answers on the same original pixels and truth.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..data.images import ImageLoadError, load_image
from ..files import atomic_write
from .exif import ExifGps, read_exif_gps

#: Longest side of the metadata-free copy left in place of an upload (what the photo box shows).
PREVIEW_SIDE = 1600
#: Decoded images up to this size are remembered with their upload (larger ones are decoded again).
REMEMBER_PIXELS = 8_000_000
_DATA_URL = re.compile(r"^data:([\w/+.-]*)(;[\w=.+-]*)*?(;base64)?,", re.I)


class UploadRefused(ValueError):
    """An upload the demo will not look at (too large, unreadable transport); the message says why."""


@dataclass
class Upload:
    """An upload as the handler gets it: the original bytes (never written back) and its EXIF GPS."""

    data: bytes
    gps: ExifGps | None
    name: str
    error: str | None = None  # refused before reading: the handler shows this instead of an answer
    image: Image.Image | None = None  # ``load_image(data)``, decoded once for the scrub and the model

    def __str__(self) -> str:  # what Gradio logs or shows as the input value
        return self.name


def size_limit_message(max_bytes: int) -> str:
    return f"the file is larger than the {max_bytes / 2**20:.0f} MB upload limit"


def decode_data_url(url: str, max_bytes: int) -> bytes:
    """The bytes of a ``data:`` URL, refused before decoding when they would exceed ``max_bytes``."""
    m = _DATA_URL.match(url[:512])
    if not m:
        raise UploadRefused("not a valid data: URL")
    payload = url[m.end():]
    if len(payload) * 3 // 4 > max_bytes + 2:  # base64 size, known before decoding anything
        raise UploadRefused(size_limit_message(max_bytes))
    if not m.group(3):
        raise UploadRefused("data: URLs must be base64-encoded")
    try:
        data = base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        raise UploadRefused("the data: URL is not valid base64") from None
    if len(data) > max_bytes:
        raise UploadRefused(size_limit_message(max_bytes))
    return data


def write_private(data: bytes, folder: str | Path, name: str) -> Path:
    """Write ``data`` to ``folder/<sha1>/name`` atomically (a file only this server reads)."""
    target = Path(folder) / hashlib.sha1(data).hexdigest() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(target, data, mode=0o600)


def write_stand_in(path: Path) -> None:
    """Put a plain grey picture where a refused upload was: nothing of it is kept, but the photo box is already
    fetching this path, and a missing file would be a failed request drawn as a broken image (the page then
    clears the photo box and says why the file was refused)."""
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"  # what the name says: browsers trust the suffix
    atomic_write(path, lambda p: Image.new("L", (64, 48), 230).save(p, fmt), mode=0o600)


def scrub(path: Path, data: bytes) -> Image.Image | None:
    """Replace the file at ``path`` by an upright, downscaled copy without metadata and return the decoded
    image; when it is not a readable image, replace it by a grey stand-in (nothing unusable is kept) and return None."""
    try:
        full = load_image(data)
    except ImageLoadError:
        write_stand_in(path)
        return None
    img = full.copy()
    img.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    # PNG for a ".png" name (browsers trust the suffix), JPEG otherwise; neither carries EXIF here.
    if path.suffix.lower() == ".png":
        atomic_write(path, lambda p: img.save(p, "PNG", compress_level=1), mode=0o600)  # fastest level: 5x quicker
    else:
        atomic_write(path, lambda p: img.save(p, "JPEG", quality=88), mode=0o600)
    return full


class UploadStore:
    """Reads uploads (files or ``data:`` URLs) into :class:`Upload` objects, scrubbing the files on disk.

    ``public`` files (the shipped examples, whose EXIF is published with them) are read but not rewritten.
    """

    def __init__(self, max_bytes: int, keep_s: float, public: list[Path] = (), remember: int = 8):
        self.max_bytes, self.keep_s, self.remember = max_bytes, keep_s, remember
        self._public = {hashlib.sha1(p.read_bytes()).hexdigest() for p in public if p.is_file()}
        self._recent: OrderedDict[str, tuple[float, Upload]] = OrderedDict()
        self._lock = threading.Lock()

    def from_data_url(self, url: str, cache_dir: str | Path) -> Upload | str:
        """A ``data:`` URL: refused (as an :class:`Upload` with ``error``) or written as a file and read."""
        try:
            data = decode_data_url(url, self.max_bytes)
        except UploadRefused as e:
            return Upload(b"", None, "data: URL", error=str(e))
        return self.from_file(write_private(data, cache_dir, "upload"))

    def from_file(self, path: str | Path) -> Upload:
        """Read an uploaded file (the same file again: the remembered reading, unless it was replaced)."""
        path = Path(path)
        key = str(path)
        with self._lock:
            self._expire()
            if key in self._recent and self._recent[key][2] == _stamp(path):
                self._recent.move_to_end(key)
                return self._recent[key][1]
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                path.unlink(missing_ok=True)
                return Upload(b"", None, path.name, error=size_limit_message(self.max_bytes))
            data = path.read_bytes()
        except OSError as e:
            return Upload(b"", None, path.name, error=f"the upload could not be read ({e.strerror or e})")
        upload = Upload(data, read_exif_gps(data), path.name)
        if hashlib.sha1(data).hexdigest() not in self._public:
            upload.image = scrub(path, data)
        if upload.image is not None and upload.image.width * upload.image.height > REMEMBER_PIXELS:
            upload.image = None  # decoded again if asked again: a few such images would weigh a GB
        with self._lock:
            self._recent[key] = (time.monotonic(), upload, _stamp(path))
            while len(self._recent) > self.remember:
                self._recent.popitem(last=False)
        return upload

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (t, *_) in self._recent.items() if now - t > self.keep_s]:
            del self._recent[key]


def _stamp(path: Path) -> tuple[int, int] | None:
    """What tells a replaced file from the one read before (Gradio renames a new upload of the same bytes
    onto the same path)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino
