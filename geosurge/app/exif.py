"""GPS coordinates from a photo's EXIF: shown as ground truth in the app, never given to the model."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

_GPS_IFD = 0x8825
_LAT_REF, _LAT, _LON_REF, _LON = 1, 2, 3, 4


def _degrees(value) -> float:
    d, m, s = (float(x) for x in value)
    return d + m / 60.0 + s / 3600.0


def exif_gps(path: str | Path) -> tuple[float, float] | None:
    """(lat, lon) in degrees from the EXIF GPS block, or None when absent, partial or out of range."""
    try:
        with Image.open(path) as img:
            gps = img.getexif().get_ifd(_GPS_IFD)
    except Exception:  # any unreadable file or malformed EXIF simply has no GPS for us
        return None
    try:
        lat, lon = _degrees(gps[_LAT]), _degrees(gps[_LON])
        if str(gps.get(_LAT_REF, "N")).upper().startswith("S"):
            lat = -lat
        if str(gps.get(_LON_REF, "E")).upper().startswith("W"):
            lon = -lon
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if not (abs(lat) <= 90 and abs(lon) <= 180) or (lat == 0 and lon == 0):
        return None
    return lat, lon


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
