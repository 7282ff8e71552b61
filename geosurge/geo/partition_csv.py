"""Read and write partitions in GeoEstimation's CSV layout (``class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean``)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import s2
from .hierarchy import Partition


@dataclass
class PartitionTable:
    """Cells read from a partition CSV, plus the rows skipped for malformed tokens."""

    ids: np.ndarray  # uint64, in file order
    counts: np.ndarray
    centroids: np.ndarray  # (n, 2) lat/lon
    skipped: list[tuple[int, str]]  # (line number, token) of rows with malformed tokens


def load_partition_csv(path: str | Path, on_bad_token: str = "raise") -> PartitionTable:
    """Load a GeoEstimation-style partition CSV.

    ``on_bad_token="raise"`` (default) raises ``ValueError`` naming the rows whose ``hex_id`` is not a
    well-formed S2 token (such as ``8.9E+044``, mangled by a spreadsheet); ``"skip"`` leaves those
    rows out and lists them in ``PartitionTable.skipped``.
    """
    if on_bad_token not in ("raise", "skip"):
        raise ValueError("on_bad_token must be 'raise' or 'skip'")
    path = Path(path)
    tokens, counts, lats, lons, skipped = [], [], [], [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"hex_id", "imgs_per_cell"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; found {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            token = row["hex_id"].strip()
            if not s2.is_valid_token(token):
                skipped.append((line, token))
                continue
            tokens.append(token)
            counts.append(int(row["imgs_per_cell"]))
            lats.append(float(row.get("latitude_mean") or "nan"))
            lons.append(float(row.get("longitude_mean") or "nan"))
    if skipped and on_bad_token == "raise":
        shown = ", ".join(f"line {ln}: {t!r}" for ln, t in skipped[:5])
        raise ValueError(
            f"{path}: {len(skipped)} row(s) with malformed S2 tokens ({shown}{' ...' if len(skipped) > 5 else ''}); "
            "tokens like '8.9E+044' (or '4641600000', the same expanded back) were mangled by a spreadsheet. "
            "Pass on_bad_token='skip' to load the well-formed rows only."
        )
    return PartitionTable(
        ids=s2.tokens_to_ids(tokens),
        counts=np.asarray(counts, dtype=np.int64),
        centroids=np.stack([np.asarray(lats, float), np.asarray(lons, float)], axis=1) if tokens else np.zeros((0, 2)),
        skipped=skipped,
    )


def write_partition_csv(partition: Partition, path: str | Path) -> None:
    """Write one level in GeoEstimation's layout, so their tools can read our partitions."""
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class_label", "hex_id", "imgs_per_cell", "latitude_mean", "longitude_mean"])
        for k, (tok, cnt, (lat, lon)) in enumerate(zip(partition.s2_tokens, partition.counts, partition.centroids)):
            w.writerow([k, tok, int(cnt), f"{lat:.6f}", f"{lon:.6f}"])
