"""MP-16 as GeoEstimation distributes it: msgpack shards of ``{"id": ..., "image": JPEG bytes}`` records.

The coordinates are not in the shards: they come from a metadata CSV (``mp16_places365.csv``:
``IMG_ID, LAT, LON, ...``) whose ``IMG_ID`` is the record's ``id``. Shards are read as they are
(TIBHannover/GeoEstimation's ``MsgPackIterableDatasetMultiTargetWithDynLabels`` reads the same files:
a stream of msgpack maps per ``shard_N.msg``), with no conversion step. Records whose image does not
decode, or whose id has no coordinates, are skipped and counted in a :class:`SkipReport`.
"""
from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import ImageLoadError, load_image
from .records import SkipReport, read_records

#: File names of shard files in a shard directory (GeoEstimation: ``shard_0.msg`` ...).
SHARD_SUFFIXES = (".msg", ".msgpack")
#: Largest record accepted (the unpacker refuses longer objects instead of allocating for them).
MAX_RECORD_BYTES = 256 * 1024 * 1024


def list_shards(spec: str | Path) -> list[Path]:
    """Shard files of a directory, a glob pattern or a single file, in a stable (natural) order."""
    p = Path(spec)
    if p.is_dir():
        found = [x for x in p.iterdir() if x.suffix in SHARD_SUFFIXES and x.is_file()]
    elif p.is_file():
        found = [p]
    else:
        found = [Path(x) for x in glob.glob(str(spec))]
    if not found:
        raise FileNotFoundError(f"no msgpack shards (*.msg) at {spec}")
    return sorted(found, key=_natural_key)


def _natural_key(p: Path) -> tuple:
    # shard_2 before shard_10, as the files were written
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))


def _text(v) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)


def iter_shard(path: str | Path, report: SkipReport | None = None) -> Iterator[tuple[str, bytes]]:
    """``(id, image bytes)`` of every record of one shard, in file order; malformed records are counted."""
    import msgpack

    report = report if report is not None else SkipReport()
    with open(path, "rb") as f:
        # raw=True: older shards were packed without the bin type, so images may arrive as "raw strings".
        unpacker = msgpack.Unpacker(f, raw=True, max_buffer_size=MAX_RECORD_BYTES)
        n = 0
        try:
            for rec in unpacker:
                n += 1
                if not isinstance(rec, dict):
                    report.add("malformed record", f"{Path(path).name}#{n}")
                    continue
                rec = {_text(k): v for k, v in rec.items()}
                if "id" not in rec or not isinstance(rec.get("image"), (bytes, bytearray)):
                    report.add("malformed record", f"{Path(path).name}#{n}")
                    continue
                yield _text(rec["id"]), bytes(rec["image"])
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            report.add("truncated or corrupt shard", f"{Path(path).name} after record {n} ({e})")


@dataclass
class MsgpackDataset:
    """Shard files plus the coordinates of their ids (from the metadata CSV)."""

    shards: list[Path]
    coords: dict[str, tuple[float, float]]

    @classmethod
    def open(cls, shards: str | Path, meta_csv: str | Path) -> tuple["MsgpackDataset", SkipReport]:
        """Shards and the ``IMG_ID, LAT, LON`` CSV; returns the dataset and the CSV rows skipped."""
        records, report = read_records(meta_csv, images=None, check_files=False)
        coords = dict(zip(records.ids, zip(records.lats.tolist(), records.lons.tolist())))
        return cls(list_shards(shards), coords), report

    def coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """Latitudes and longitudes of every id of the metadata CSV (for the hierarchy)."""
        ll = np.asarray(list(self.coords.values()), dtype=np.float64).reshape(-1, 2)
        return ll[:, 0], ll[:, 1]

    def samples(self, shards: list[Path] | None = None, report: SkipReport | None = None, decode: bool = True):
        """``(id, PIL image, lat, lon)`` of the good records of ``shards`` (default: all), in order.

        With ``decode=False`` the image is the undecoded bytes (the caller decodes, e.g. in a worker).
        """
        report = report if report is not None else SkipReport()
        for shard in shards if shards is not None else self.shards:
            for rid, data in iter_shard(shard, report):
                ll = self.coords.get(rid)
                if ll is None:
                    report.add("id without coordinates", rid)
                    continue
                if decode:
                    try:
                        image = load_image(data)
                    except ImageLoadError as e:
                        report.add("undecodable image", f"{rid} ({e})")
                        continue
                else:
                    image = data
                yield rid, image, ll[0], ll[1]
