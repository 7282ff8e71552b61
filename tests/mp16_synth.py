"""Synthetic MP-16-format data for tests: msgpack shards of JPEG records and an IMG_ID,LAT,LON CSV."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image



def write_shard(path: str | Path, records: list[dict]) -> Path:
    """Write records (``{"id": str, "image": bytes, ...}``) as one msgpack shard, as GeoEstimation does."""
    import msgpack

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for rec in records:
            f.write(msgpack.packb(rec, use_bin_type=True))
    return path


def jpeg(rng: np.random.Generator, size: tuple[int, int] = (96, 72)) -> bytes:
    """A small photo-like JPEG: a sky-to-ground gradient with a few random blocks."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    arr[:] = (top * (1 - t) + bottom * t).astype(np.uint8)
    for _ in range(3):
        x, y = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        arr[y : y + int(rng.integers(4, h // 2)), x : x + int(rng.integers(4, w // 2))] = rng.integers(0, 256, 3)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def write_mp16(root: Path, n_shards: int, per_shard: int, seed: int = 0, size=(96, 72), extra_rows: list | None = None,
               bad_records: list | None = None) -> tuple[Path, Path, dict]:
    """``root/shards/shard_K.msg`` + ``root/mp16_places365.csv``; returns (shard dir, CSV, {id: (lat, lon)})."""
    rng = np.random.default_rng(seed)
    coords = {}
    for k in range(n_shards):
        recs = []
        for j in range(per_shard):
            rid = f"{k:02x}/{j:02x}/{1000 * k + j}.jpg"
            # clustered around a few cities so that small hierarchies have cells
            c = [(48.85, 2.35), (40.71, -74.0), (35.68, 139.69), (-33.87, 151.2)][(k * per_shard + j) % 4]
            coords[rid] = (c[0] + float(rng.normal(0, 0.5)), c[1] + float(rng.normal(0, 0.5)))
            recs.append({"image": jpeg(rng, size), "id": rid})
        if k == 0 and bad_records:
            recs += bad_records
        write_shard(root / "shards" / f"shard_{k}.msg", recs)
    meta = root / "mp16_places365.csv"
    with meta.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["IMG_ID", "LAT", "LON", "S3_Label", "S16_Label", "S365_Label", "Prob_indoor", "Prob_natural", "Prob_urban"])
        for rid, (lat, lon) in coords.items():
            w.writerow([rid, lat, lon, 1, 5, 120, 0.1, 0.2, 0.7])
        for row in extra_rows or []:
            w.writerow(row)
    return root / "shards", meta, coords
