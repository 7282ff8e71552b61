"""webdataset tar shards for MP-16-scale training: ``<key>.jpg``, ``<key>.json`` and ``<key>.seg.png``.

Each shard set has an ``index.csv`` (key, lat, lon) beside it, so the hierarchy can be built and the
samples counted without reading the images.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from .labels import LabelStore
from .records import GeoRecords, SkipReport

INDEX = "index.csv"


def _key(image_id: str) -> str:
    # webdataset splits a member name at its first dot into key and extension: no dots in keys.
    return re.sub(r"[^A-Za-z0-9_/-]", "_", str(Path(image_id).with_suffix("")))


def write_shards(
    records: GeoRecords, out_dir: str | Path, labels: LabelStore | None = None, max_count: int = 5000, progress: bool = True
) -> tuple[list[Path], SkipReport]:
    """Pack the records' image files (bytes as they are) with their coordinates (and label maps)."""
    import webdataset as wds

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = SkipReport()
    rows = []
    it = range(len(records))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="writing shards", unit="img")
    with wds.ShardWriter(str(out / "%06d.tar"), maxcount=max_count, verbose=0) as sink:
        for i in it:
            rid = records.ids[i]
            try:
                data = records.path(i).read_bytes()
            except OSError as e:
                report.add("unreadable file", f"{rid} ({e})")
                continue
            sample = {"__key__": _key(rid), "jpg": data,
                      "json": json.dumps({"id": rid, "lat": float(records.lats[i]), "lon": float(records.lons[i])}).encode()}
            if labels is not None:
                if not labels.has(rid):
                    report.add("no label map", rid)
                    continue
                sample["seg.png"] = labels.path(rid).read_bytes()
            sink.write(sample)
            rows.append((sample["__key__"], records.lats[i], records.lons[i]))
    with (out / INDEX).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "lat", "lon"])
        w.writerows(rows)
    return sorted(out.glob("*.tar")), report


def read_shard_index(pattern: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Shard paths of a brace pattern or directory, and the coordinates of their samples (from index.csv)."""
    import braceexpand

    p = Path(pattern)
    if p.is_dir():
        urls, index = sorted(str(x) for x in p.glob("*.tar")), p / INDEX
    else:
        urls, index = list(braceexpand.braceexpand(pattern)), Path(next(iter(braceexpand.braceexpand(pattern)))).parent / INDEX
    if not urls:
        raise FileNotFoundError(f"no shards match {pattern}")
    if not index.is_file():
        raise FileNotFoundError(f"{index} is missing: shards written by `geosurge shards` carry one")
    lat, lon = [], []
    with index.open(newline="") as f:
        for row in csv.DictReader(f):
            lat.append(float(row["lat"]))
            lon.append(float(row["lon"]))
    return urls, np.asarray(lat), np.asarray(lon)
