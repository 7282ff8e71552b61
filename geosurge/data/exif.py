"""GPS coordinates from a photo's EXIF: shown as ground truth in the app, never given to the model."""
from __future__ import annotations

import io
import math
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


def _degrees(value) -> float:
    """Degrees, minutes, seconds as one signed number. Some writers store a negative degree count
    (-33, 52, 0); the minutes and seconds then belong to the same side: -33 52' is -33.8667, not -32.13."""
    parts = [float(x) for x in (value if isinstance(value, (tuple, list)) else (value,))]
    if not parts or len(parts) > 3 or not all(math.isfinite(x) for x in parts):
        raise ValueError(f"malformed degrees {value!r}")
    parts += [0.0] * (3 - len(parts))
    d, m, s = parts
    sign = -1.0 if min(d, m, s) < 0 else 1.0
    return sign * (abs(d) + abs(m) / 60.0 + abs(s) / 3600.0)


def _signed(value: float, ref, negative: str) -> float:
    return -abs(value) if str(ref or "").strip().upper().startswith(negative) else value


def read_exif_gps(src: str | Path | bytes) -> ExifGps | None:
    """The EXIF GPS of an image file or its bytes: None when there is none; an :class:`ExifGps` with
    ``problem`` set when it is there but unusable (malformed, out of range, the 0, 0 placeholder)."""
    try:
        with Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src) as img:
            if img.format == "PNG" and "exif" not in img.info:
                # Pillow would decode the whole image to look for an eXIf chunk after the pixels (1.4 s for
                # a 100 MP PNG); writers put it before them.
                return None
            gps = img.getexif().get_ifd(_GPS_IFD)
    except Exception:  # any unreadable file or malformed EXIF simply has no GPS for us
        return None
    if _LAT not in gps and _LON not in gps:
        return None
    try:
        lat = _signed(_degrees(gps[_LAT]), gps.get(_LAT_REF), "S")
        lon = _signed(_degrees(gps[_LON]), gps.get(_LON_REF), "W")
    except KeyError:
        return ExifGps(problem="the EXIF GPS block has only one of latitude and longitude")
    except (TypeError, ValueError, ZeroDivisionError):
        return ExifGps(problem="the EXIF GPS coordinates are malformed")
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


def with_gps(image: Image.Image, lat: float, lon: float) -> Image.Exif:
    """An EXIF block carrying (lat, lon), for tests and examples (``image.save(path, exif=...)``)."""
    from PIL.TiffImagePlugin import IFDRational

    def dms(x: float):
        x = abs(x)
        d = int(x)
        m = int((x - d) * 60)
        s = (x - d - m / 60) * 3600
        return (IFDRational(d, 1), IFDRational(m, 1), IFDRational(round(s * 1000), 1000))

    exif = image.getexif()
    exif[_GPS_IFD] = {_LAT_REF: "N" if lat >= 0 else "S", _LAT: dms(lat), _LON_REF: "E" if lon >= 0 else "W", _LON: dms(lon)}
    return exif
