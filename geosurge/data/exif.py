"""GPS coordinates from a photo's EXIF: shown as ground truth in the app, never given to the model."""
from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

_GPS_IFD = 0x8825
_LAT_REF, _LAT, _LON_REF, _LON = 1, 2, 3, 4


@dataclass(frozen=True)
class ExifGps:
    """The EXIF GPS block of a photo: a usable point, or the reason it is not usable (shown, not dropped)."""

    lat: float | None = None
    lon: float | None = None
    problem: str | None = None

    @property
    def point(self) -> tuple[float, float] | None:
        return None if self.problem or self.lat is None else (self.lat, self.lon)


#: No writer needs a denominator above this (a nanodegree); larger ones come from corrupt or crafted files.
MAX_DENOMINATOR = 10**9
MALFORMED = "the EXIF GPS is malformed"


class MalformedGps(ValueError):
    """The GPS block is there but cannot be trusted; the message says why (shown to the visitor)."""


def _number(x) -> float:
    """One EXIF number: an integer, a finite float, or a rational with a denominator in 1..MAX_DENOMINATOR."""
    den = getattr(x, "denominator", 1)
    if isinstance(den, int) and not 0 < den <= MAX_DENOMINATOR:
        raise MalformedGps(f"a rational with denominator {den}")
    try:
        v = float(x)
    except (TypeError, ValueError, ZeroDivisionError):
        raise MalformedGps(f"not a number: {x!r}") from None
    if not math.isfinite(v):
        raise MalformedGps(f"not a finite number: {v}")
    return v


def _degrees(value, limit: float = 180.0) -> float:
    """Degrees, minutes, seconds as one signed number, checked: three numbers (or fewer, the rest 0),
    minutes and seconds in [0, 60), degrees within ``limit``. Some writers store a negative degree count
    (-33, 52, 0); the minutes and seconds then belong to the same side: -33 52' is -33.8667, not -32.13."""
    parts = [_number(x) for x in (value if isinstance(value, (tuple, list)) else (value,))]
    if not parts or len(parts) > 3:
        raise MalformedGps(f"{len(parts)} values instead of degrees, minutes, seconds")
    parts += [0.0] * (3 - len(parts))
    d, m, s = parts
    if not (0 <= abs(m) < 60 and 0 <= abs(s) < 60):
        raise MalformedGps(f"minutes {m:g} or seconds {s:g} not below 60")
    if abs(d) > limit:  # reported as out of range by the caller, with the value
        return math.copysign(abs(d) + abs(m) / 60.0 + abs(s) / 3600.0, d)
    sign = -1.0 if min(d, m, s) < 0 else 1.0
    return sign * (abs(d) + abs(m) / 60.0 + abs(s) / 3600.0)


def _signed(value: float, ref, allowed: str) -> float:
    """Apply a GPS reference letter (``allowed`` = "NS" or "EW"); anything else there is malformed."""
    if ref is None:
        return value
    letter = (ref.decode("latin-1") if isinstance(ref, bytes) else str(ref)).strip("\x00 ").upper()
    if letter not in (allowed[0], allowed[1]):
        raise MalformedGps(f"reference {letter[:8]!r} is not {allowed[0]} or {allowed[1]}")
    return -abs(value) if letter == allowed[1] else value


def _check_gps_pointer(img: Image.Image, exif: Image.Exif, raw: bytes | None) -> None:
    """The GPS IFD must be its own block inside the EXIF data: not IFD0 again (a loop that makes IFD0's
    tags 1-4 read as a position) and not past the end."""
    ptr = exif.get(_GPS_IFD)
    if not isinstance(ptr, int):
        return  # Pillow gave the IFD itself (a block it already read): nothing to check
    if raw is None:
        raw = img.info.get("exif")
    if not raw:
        return
    raw = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    if len(raw) < 8 or raw[:2] not in (b"II", b"MM"):
        raise MalformedGps("the EXIF header is unreadable")
    order = "<" if raw[:2] == b"II" else ">"
    ifd0 = struct.unpack(order + "I", raw[4:8])[0]
    if ptr == ifd0 or ptr < 8 or ptr + 2 > len(raw):
        raise MalformedGps(f"the GPS block's offset {ptr} {'loops back to IFD0' if ptr == ifd0 else 'is outside the data'}")
    count = struct.unpack(order + "H", raw[ptr:ptr + 2])[0]
    if ptr + 2 + 12 * count > len(raw):
        raise MalformedGps(f"the GPS block claims {count} entries past the end of the data")


def _open(src: str | Path | bytes):
    return Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src)


def read_exif_gps(src: str | Path | bytes) -> ExifGps | None:
    """The EXIF GPS of an image file or its bytes: None when there is none; an :class:`ExifGps` with
    ``problem`` set when it is there but unusable (malformed, out of range, the 0, 0 placeholder)."""
    try:
        with _open(src) as img:
            if img.format == "PNG" and "exif" not in img.info:
                # Pillow would decode the whole image to look for an eXIf chunk after the pixels (1.4 s for
                # a 100 MP PNG); writers put it before them.
                return None
            exif = img.getexif()
            if _GPS_IFD not in exif:
                return None
            try:
                raw = src if img.format == "TIFF" and isinstance(src, (bytes, bytearray)) else None
                _check_gps_pointer(img, exif, raw)
                gps = exif.get_ifd(_GPS_IFD)
            except MalformedGps as e:
                return ExifGps(problem=f"{MALFORMED} ({e})")
    except Exception:  # any unreadable file or malformed EXIF container simply has no GPS for us
        return None
    if _LAT not in gps and _LON not in gps:
        return None
    if _LAT not in gps or _LON not in gps:
        return ExifGps(problem="the EXIF GPS block has only one of latitude and longitude")
    try:
        lat = _signed(_degrees(gps[_LAT], 90.0), gps.get(_LAT_REF), "NS")
        lon = _signed(_degrees(gps[_LON], 180.0), gps.get(_LON_REF), "EW")
    except MalformedGps as e:
        return ExifGps(problem=f"{MALFORMED} ({e})")
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return ExifGps(problem=MALFORMED)
    if not abs(lat) <= 90:
        return ExifGps(lat, lon, f"the EXIF GPS latitude {lat:g} is out of range (-90 to 90)")
    if not abs(lon) <= 180:
        return ExifGps(lat, lon, f"the EXIF GPS longitude {lon:g} is out of range (-180 to 180)")
    if lat == 0 and lon == 0:
        return ExifGps(lat, lon, "the EXIF GPS is 0, 0, a placeholder rather than a position")
    return ExifGps(lat, lon)


def exif_gps(path: str | Path | bytes) -> tuple[float, float] | None:
    """(lat, lon) in degrees from the EXIF GPS block, or None when absent or unusable."""
    gps = read_exif_gps(path)
    return gps.point if gps else None
