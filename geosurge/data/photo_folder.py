"""A folder of one's own geotagged photos as training data: the position from each photo's EXIF GPS.

The GPS is read by the same reader the demo uses (:mod:`geosurge.data.exif`). Photos without GPS, or
with GPS that is unusable (out of range, malformed, the 0, 0 placeholder), are counted and skipped. The
photographer of a photo (what grouped cross-validation keeps together) is its EXIF Artist, else its camera's
serial number, else the first sub-folder it sits in (the folder's own name for photos at its top).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .exif import read_exif_gps
from .records import GeoRecords, SkipReport

#: file endings taken as photos (case-insensitive)
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"})
_ARTIST, _EXIF_IFD, _BODY_SERIAL, _MAKE, _MODEL = 0x013B, 0x8769, 0xA431, 0x010F, 0x0110


def read_photo_folder(folder: str | Path) -> tuple[GeoRecords, SkipReport]:
    """Every photo under ``folder`` (recursively, in sorted order) that carries usable EXIF GPS, with its
    photographer in ``groups``; the others are counted in the report. An empty folder is an error."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no such photo folder: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{root}: no photos in this folder (looked for {', '.join(sorted(PHOTO_SUFFIXES))}, in sub-folders too)")
    report, ids, lats, lons, groups = SkipReport(), [], [], [], []
    for path in files:
        rel = path.relative_to(root).as_posix()
        gps = read_exif_gps(path)
        if gps is None:
            report.add("no EXIF GPS", rel)
            continue
        if gps.point is None:
            report.add("unusable EXIF GPS", f"{rel} ({gps.problem})")
            continue
        ids.append(rel)
        lats.append(gps.point[0])
        lons.append(gps.point[1])
        groups.append(photographer(path, root))
    if not ids:
        raise ValueError(f"{root}: none of its {len(files)} photos carries usable EXIF GPS ({report.summary('photos')})")
    return GeoRecords(ids, np.asarray(lats, np.float64), np.asarray(lons, np.float64), root, np.asarray(groups, dtype=str)), report


def photographer(path: Path, root: Path) -> str:
    """Who took the photo, as well as the file tells: EXIF Artist, camera serial number, else its sub-folder."""
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            artist = str(exif.get(_ARTIST) or "").strip()
            serial = str(exif.get_ifd(_EXIF_IFD).get(_BODY_SERIAL) or "").strip()
            camera = " ".join(str(exif.get(t) or "").strip() for t in (_MAKE, _MODEL)).strip()
    except Exception:  # unreadable metadata: the folder decides
        artist = serial = camera = ""
    if artist:
        return f"artist:{artist}"
    if serial:
        return f"camera:{camera} #{serial}"
    parts = path.relative_to(root).parts
    return f"folder:{parts[0] if len(parts) > 1 else root.name}"
