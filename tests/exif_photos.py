"""Photos with EXIF GPS for the tests (the app reads such blocks with ``geosurge.data.exif.read_exif_gps``)."""
from __future__ import annotations

from PIL import Image
from PIL.TiffImagePlugin import IFDRational

GPS_IFD = 0x8825
LAT_REF, LAT, LON_REF, LON = 1, 2, 3, 4


def with_gps(image: Image.Image, lat: float, lon: float) -> Image.Exif:
    """An EXIF block carrying (lat, lon) (``image.save(path, exif=with_gps(image, lat, lon))``)."""

    def dms(x: float):
        x = abs(x)
        d = int(x)
        m = int((x - d) * 60)
        s = (x - d - m / 60) * 3600
        return (IFDRational(d, 1), IFDRational(m, 1), IFDRational(round(s * 1000), 1000))

    exif = image.getexif()
    exif[GPS_IFD] = {LAT_REF: "N" if lat >= 0 else "S", LAT: dms(lat), LON_REF: "E" if lon >= 0 else "W", LON: dms(lon)}
    return exif
