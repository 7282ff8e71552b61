"""Geotagged image lists: ``image,lat,lon`` CSV rows (extra columns allowed) plus an image root.

Bad rows never crash a run: they are dropped with a :class:`SkipReport` that counts them by reason and
keeps a few examples, so a user sees at once that, say, 312 files were missing.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geo.coords_io import LAT_NAMES, LON_NAMES, find_column

#: Accepted names of the image column (first match wins, case-insensitive).
IMAGE_NAMES = ("image", "img_id", "image_id", "id", "path", "file", "filename", "photo")


@dataclass
class SkipReport:
    """Rows or images left out, by reason, with up to ``keep`` examples each."""

    keep: int = 5
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < self.keep:
            self.examples[reason].append(example)

    def merge(self, other: "SkipReport") -> "SkipReport":
        for reason, n in other.counts.items():
            self.counts[reason] += n
            self.examples[reason].extend(other.examples[reason][: self.keep - len(self.examples[reason])])
        return self

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self, what: str = "rows") -> str:
        if not self.total:
            return f"no {what} skipped"
        parts = [f"{n} {reason} (e.g. {', '.join(self.examples[reason][:3])})" for reason, n in sorted(self.counts.items())]
        return f"skipped {self.total} {what}: " + "; ".join(parts)

    def as_dict(self) -> dict:
        return {"total": self.total, "counts": dict(self.counts), "examples": {k: list(v) for k, v in self.examples.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "SkipReport":
        r = cls()
        r.counts.update(d.get("counts", {}))
        r.examples.update({k: list(v) for k, v in d.get("examples", {}).items()})
        return r


@dataclass
class GeoRecords:
    """Image ids (paths relative to ``root``) with their coordinates and, when known, their photographers
    (what photographer-grouped cross-validation keeps together)."""

    ids: list[str]
    lats: np.ndarray
    lons: np.ndarray
    root: Path | None = None
    groups: np.ndarray | None = None  # (n,) photographer of each photo

    def __len__(self) -> int:
        return len(self.ids)

    def path(self, i: int) -> Path:
        return (self.root / self.ids[i]) if self.root is not None else Path(self.ids[i])

    def subset(self, index: np.ndarray | list[int]) -> "GeoRecords":
        index = np.asarray(index, dtype=np.int64)
        groups = self.groups[index] if self.groups is not None else None
        return GeoRecords([self.ids[i] for i in index], self.lats[index], self.lons[index], self.root, groups)


def concat_records(parts: list[GeoRecords]) -> GeoRecords:
    """One list of several (in order). Ids stay relative when every part has the same image root (the view
    cache's keys then match a list read in one go); otherwise they become absolute paths."""
    roots = {p.root for p in parts}
    same = len(roots) == 1
    ids = [i if same else str(p.path(k)) for p in parts for k, i in enumerate(p.ids)]
    groups = np.concatenate([p.groups for p in parts]) if all(p.groups is not None for p in parts) else None
    return GeoRecords(ids, np.concatenate([p.lats for p in parts]), np.concatenate([p.lons for p in parts]),
                      roots.pop() if same else None, groups)


def default_image_root(csv_path: str | Path) -> Path:
    """Where a CSV's images are when no folder is named: the usual layouts, an ``images/`` folder beside
    the CSV, else the CSV's own folder."""
    folder = Path(csv_path).parent
    return folder / "images" if (folder / "images").is_dir() else folder


def read_records(csv_path: str | Path, images: str | Path | None = None, check_files: bool = True,
                 group: str | None = None, locate: Callable[[str], str | None] | None = None) -> tuple[GeoRecords, SkipReport]:
    """Read an ``image,lat,lon`` CSV; columns are found by name (lat/lon are never taken by position).
    ``group`` names the column of each photo's photographer (required then), kept in ``GeoRecords.groups``;
    ``locate`` maps the image column to the file under ``images`` (None: not there, skipped as missing).

    ``images`` defaults to an ``images/`` folder beside the CSV, else the CSV's folder. Rows with an empty image, unparsable, NaN or out-of-range coordinates, or (``check_files``) a
    missing file are skipped and counted in the returned report.
    """
    csv_path = Path(csv_path)
    # absolute: cache keys must not depend on the working directory
    root = Path(images if images is not None else default_image_root(csv_path)).resolve()
    if not csv_path.is_file():
        raise FileNotFoundError(f"no such CSV file: {csv_path}")
    if check_files and not root.is_dir():
        raise FileNotFoundError(f"image directory {root} does not exist")
    report = SkipReport()
    ids, lats, lons, groups = [], [], [], []
    with csv_path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{csv_path}: empty file")
        ii = find_column(header, IMAGE_NAMES, csv_path)
        ilat, ilon = find_column(header, LAT_NAMES, csv_path), find_column(header, LON_NAMES, csv_path)
        ig = find_column(header, (group.lower(),), csv_path) if group else ii
        for n, row in enumerate(reader, start=2):
            where = f"line {n}"
            if len(row) <= max(ii, ilat, ilon, ig):
                report.add("short row", where)
                continue
            name = row[ii].strip()
            if not name:
                report.add("empty image name", where)
                continue
            if locate is not None:
                found = locate(name)
                if found is None:
                    report.add("missing image file", name)
                    continue
                name = found
            try:
                lat, lon = float(row[ilat]), float(row[ilon])
            except ValueError:
                report.add("unparsable coordinates", f"{where} ({row[ilat]!r}, {row[ilon]!r})")
                continue
            if not (np.isfinite(lat) and np.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
                report.add("NaN or out-of-range coordinates", f"{where} ({lat}, {lon})")
                continue
            ids.append(name)
            lats.append(lat)
            lons.append(lon)
            groups.append(row[ig].strip())
    if check_files and ids:
        exists = np.fromiter(((root / i).is_file() for i in ids), dtype=bool, count=len(ids))
        for i in np.flatnonzero(~exists):
            report.add("missing image file", ids[i])
        keep = np.flatnonzero(exists)
        ids = [ids[i] for i in keep]
        lats, lons, groups = np.asarray(lats)[keep], np.asarray(lons)[keep], [groups[i] for i in keep]
    return GeoRecords(ids, np.asarray(lats, dtype=np.float64), np.asarray(lons, dtype=np.float64), root,
                      np.asarray(groups, dtype=str) if group else None), report
