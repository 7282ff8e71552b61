"""What the demo does with an uploaded photo before and after the model sees it (kept free of Gradio).

An upload arrives in memory (the server's guard parses it there, never into a file) and is handed to
:meth:`UploadStore.add`: its EXIF GPS is read, it is decoded once (within the decode budget of
:mod:`.admission`), and the only thing written to disk is an upright, downscaled copy without any metadata,
in a folder named by 128 random bits (``<folder>/<32 hex>/<name>``): the path is unguessable, and only the
uploader is ever told it. That copy is all the server can serve back (EXIF, GPS included, never is). The
original's reading (bytes, decoded image, GPS) waits in memory for the handler, bounded in bytes and age;
once it is let go, the handler answers on the scrubbed copy and still shows the GPS read from the original.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..data.images import ImageLoadError, load_image
from ..files import atomic_write
from .admission import DECODES, Budget, Busy, decode_cost
from ..data.exif import ExifGps, read_exif_gps

#: Longest side of the metadata-free copy left in place of an upload (what the photo box shows).
PREVIEW_SIDE = 1600
#: Bytes of decoded uploads kept in memory for the handler (big images are reduced while decoded: a 40 MP PNG
#: to ~5 MB); beyond it the oldest fall back to their scrubbed copy, decoded again when asked (a few ms). At
#: 160 MB, 64 visitors left ~100 MB of readings behind, and the bursts that followed peaked over 1.5 GB.
REMEMBER_BYTES = 32 * 2**20
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_DATA_URL = re.compile(r"^data:([\w/+.-]*)(;[\w=.+-]*)*?(;base64)?,", re.I)


class UploadRefused(ValueError):
    """An upload the demo will not look at (too large, unreadable transport); the message says why."""


@dataclass
class Upload:
    """An upload as the handler gets it: its decoded image and EXIF GPS, and the digest of the original bytes
    (the bytes themselves are let go once read: a queue of waiting 40 MP PNGs held them by the hundred MB)."""

    digest: str  # sha1 of the original bytes ("" when refused): what the segmentation cache is keyed by
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


def safe_name(filename: str) -> str:
    """The base name an upload is stored under: ASCII letters, digits, ``_.-`` only, no leading dot, at most
    80 characters; the suffix is set by what is written (see :func:`scrub`). ``UploadRefused`` for a name
    that is no name at all ("", ".", "..": what Gradio refuses too)."""
    base = str(filename).replace("\\", "/").rsplit("/", 1)[-1].strip()
    if base in ("", ".", ".."):
        raise UploadRefused(f"invalid file name {filename[:80]!r}")
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    return _UNSAFE_NAME.sub("_", stem).lstrip("._-")[:80] or "photo"


def private_folder(folder: str | Path) -> Path:
    """A new folder under ``folder`` named by 128 random bits, readable by this user only."""
    target = Path(folder) / secrets.token_hex(16)
    target.mkdir(mode=0o700, parents=True)
    return target


def decode(data: bytes, budget: Budget = DECODES) -> Image.Image:
    """``load_image(data)`` within the decode budget (waits for room; ``admission.Busy`` after a while)."""
    with budget.hold(decode_cost(data)):
        return load_image(data)


def write_preview(target: Path, full: Image.Image) -> None:
    """Write an upright copy of ``full``, at most PREVIEW_SIDE a side and without metadata, at ``target``:
    PNG for a ``.png`` name, JPEG otherwise (neither carries EXIF here)."""
    img = full.copy()
    img.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    if target.suffix.lower() == ".png":
        atomic_write(target, lambda p: img.save(p, "PNG", compress_level=1), mode=0o600)  # fastest level: 5x quicker
    else:
        atomic_write(target, lambda p: img.save(p, "JPEG", quality=88), mode=0o600)


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
        full = decode(data)
    except ImageLoadError:
        write_stand_in(path)
        return None
    write_preview(path, full)
    return full


class UploadStore:
    """Reads uploads (in memory, files or ``data:`` URLs) into :class:`Upload` objects; only scrubbed copies
    reach the disk.

    ``public`` files (the shipped examples, whose EXIF is published with them) are read but not rewritten.
    """

    def __init__(self, max_bytes: int, keep_s: float, public: list[Path] = (), remember_bytes: int = REMEMBER_BYTES):
        self.max_bytes, self.keep_s, self.remember_bytes = max_bytes, keep_s, remember_bytes
        self._public = {_digest(p.read_bytes()) for p in public if p.is_file()}
        # path -> (time, upload, stamp): the full readings, bounded by bytes and age
        self._recent: OrderedDict[str, tuple[float, Upload, tuple | None]] = OrderedDict()
        # path -> (time, gps, error): what must outlive a full reading let go (a few hundred bytes each)
        self._scrubbed: OrderedDict[str, tuple[float, ExifGps | None, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, data: bytes, name: str, folder: str | Path) -> Path:
        """An upload received in memory: its GPS read, decoded once, and only its scrubbed copy written, at
        ``folder/<32 random hex>/<name>.jpg|.png`` (returned; nothing is written when it is not an image)."""
        target = private_folder(folder) / (safe_name(name) + (".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"))
        upload = Upload(_digest(data), read_exif_gps(data), target.name)
        try:
            if len(data) > self.max_bytes:
                raise ImageLoadError(size_limit_message(self.max_bytes))
            upload.image = decode(data)
            write_preview(target, upload.image)
        except ImageLoadError as e:  # the handler explains it
            upload.digest, upload.error = "", str(e)
            write_stand_in(target)  # the photo box fetches this path at once: a missing file is a broken image
        self._remember(target, upload)
        return target

    def from_data_url(self, url: str, cache_dir: str | Path) -> Upload | str:
        """A ``data:`` URL: refused (as an :class:`Upload` with ``error``) or read like an upload."""
        try:
            data = decode_data_url(url, self.max_bytes)
        except UploadRefused as e:
            return Upload("", None, "data: URL", error=str(e))
        return self.from_file(self.add(data, "upload", cache_dir))

    def from_file(self, path: str | Path, within: str | Path | None = None) -> Upload:
        """The upload at ``path``: its reading in memory while it lasts; else its scrubbed copy with the GPS
        read from the original; else (a file this store was not handed: an example, or an upload when no
        guard is in front) the file read and scrubbed in place. A path outside ``within`` (the upload
        folder) is refused unread: the scrub would rewrite or delete it."""
        path = Path(path)
        key = str(path)
        if within is not None and Path(os.path.realpath(within)) not in Path(os.path.realpath(path)).parents:
            return Upload("", None, path.name, error="the file was not uploaded to this server")
        with self._lock:
            self._expire()
            if key in self._recent and self._recent[key][2] == _stamp(path):
                self._recent.move_to_end(key)
                return self._recent[key][1]
            scrubbed = self._scrubbed.get(key)
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                path.unlink(missing_ok=True)
                return Upload("", None, path.name, error=size_limit_message(self.max_bytes))
            data = path.read_bytes()
        except OSError as e:
            if scrubbed is not None and scrubbed[2]:  # refused at upload: nothing of it was kept
                return Upload("", None, path.name, error=scrubbed[2])
            return Upload("", None, path.name, error=f"the upload could not be read ({e.strerror or e})")
        try:
            if scrubbed is not None:  # the copy is already clean; the truth comes from the original
                upload = Upload(_digest(data), scrubbed[1], path.name)
                upload.image = decode(data)
            else:
                upload = Upload(_digest(data), read_exif_gps(data), path.name)
                # a shipped example is read, not rewritten (its EXIF is published with it)
                upload.image = decode(data) if upload.digest in self._public else scrub(path, data)
        except ImageLoadError as e:
            return Upload("", None, path.name, error=str(e))
        except Busy as e:
            return Upload("", None, path.name, error=str(e))
        self._remember(path, upload)
        return upload

    def _remember(self, path: Path, upload: Upload) -> None:
        key = str(path)
        with self._lock:
            self._recent[key] = (time.monotonic(), upload, _stamp(path))
            self._recent.move_to_end(key)
            self._scrubbed[key] = (time.monotonic(), upload.gps, upload.error)
            while len(self._recent) > 1 and sum(_weight(u) for _, u, _ in self._recent.values()) > self.remember_bytes:
                self._recent.popitem(last=False)
            while len(self._scrubbed) > 4096:
                self._scrubbed.popitem(last=False)

    def _expire(self) -> None:
        now = time.monotonic()
        for table in (self._recent, self._scrubbed):
            for key in [k for k, (t, *_) in table.items() if now - t > self.keep_s]:
                del table[key]


def _weight(upload: Upload) -> int:
    """Bytes an upload's reading holds in memory (its decoded image)."""
    img = upload.image
    return img.width * img.height * len(img.getbands()) if img is not None else 0


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _stamp(path: Path) -> tuple[int, int] | None:
    """What tells a replaced file from the one read before (Gradio renames a new upload of the same bytes
    onto the same path)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino
