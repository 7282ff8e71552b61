"""Batch prediction output: one record per photo, written as CSV or GeoJSON.

A record is built from :data:`COLUMNS`, an ordered table of (name, function of the prediction); a new
``Prediction`` field becomes a new output column by adding one line there. Unreadable photos are
records too, with ``error`` set and the other columns empty.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..model.variants import variant_name
from ..predictor import Prediction


def _top_cells(r: Prediction) -> str:
    """The answer's finest cell, then the best other finest cells by the same figure (``r.ranked_by``)."""
    cells = [r.chain[-1], *(r.runners_up[-1] if r.runners_up else [])][: len(r.top_k)] if r.chain else r.top_k
    return ";".join(f"{c.token}:{c.lat:.4f}:{c.lon:.4f}:{c.score:.4g}" for c in cells)


#: (column, value from the prediction). Every figure describes the answer's own cells, by ``ranked_by`` (the
#: posterior probability, or the paper's product score without a fitted posterior): "confidence" is that of the
#: answer's level-1 cell (the coarsest, continent-scale one), "score" that of its finest cell, and "top_cells"
#: starts with the answer's finest cell, then the best other finest cells by the same figure.
COLUMNS: list[tuple[str, Callable[[Prediction], Any]]] = [
    ("lat", lambda r: round(r.lat, 6)),
    ("lon", lambda r: round(r.lon, 6)),
    ("confidence", lambda r: round(r.chain[0].score if r.chain else r.levels[0][0].score, 4)),
    ("score", lambda r: float(f"{r.score:.4g}")),
    ("ranked_by", lambda r: r.ranked_by),
    ("model", lambda r: variant_name(r.fusion_used)),
    ("top_cells", _top_cells),
    ("nearest_reference", lambda r: r.nearest_reference.id if r.nearest_reference else ""),
    ("decision", lambda r: r.decision),
    ("views", lambda r: r.views),  # the crops averaged: center, five or ten
    # bits the photo added beyond the Flickr prior (empty without a fitted posterior) and that in words
    ("evidence_bits", lambda r: "" if math.isnan(r.evidence_bits) else round(r.evidence_bits, 4)),
    ("evidence", lambda r: r.evidence_text),
    # calibrated chance that the truth lies within R km (empty without a fitted posterior)
    *((f"within_{R}km", lambda r, R=R: round(r.within_km[R], 4) if R in r.within_km else "") for R in (1, 25, 200, 750, 2500)),
]
FIELDS = ["image", "place", *(name for name, _ in COLUMNS), "error"]


def result_record(path: Path, r: Prediction, place: str) -> dict[str, Any]:
    return {"image": str(path), "place": place, **{name: get(r) for name, get in COLUMNS}, "error": ""}


def error_record(path: Path, message: str) -> dict[str, Any]:
    return {**{f: "" for f in FIELDS}, "image": str(path), "error": message}


class CsvWriter:
    def __init__(self, path: Path):
        self._f = path.open("w", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=FIELDS)
        self._w.writeheader()

    def write(self, record: dict) -> None:
        self._w.writerow(record)
        self._f.flush()

    def write_error(self, path: Path, message: str) -> None:
        self.write(error_record(path, message))

    def close(self) -> None:
        self._f.close()


class GeoJsonWriter:
    """A FeatureCollection: a Point per located photo, a feature with ``geometry: null`` per unreadable one."""

    def __init__(self, path: Path):
        self.path, self.features = path, []

    def write(self, record: dict) -> None:
        props = {k: v for k, v in record.items() if k not in ("lat", "lon")}
        geometry = {"type": "Point", "coordinates": [record["lon"], record["lat"]]} if record.get("lat") != "" else None
        self.features.append({"type": "Feature", "geometry": geometry, "properties": props})

    def write_error(self, path: Path, message: str) -> None:
        self.write(error_record(path, message))

    def close(self) -> None:
        from ..files import atomic_write

        doc = {"type": "FeatureCollection", "features": self.features}
        atomic_write(self.path, lambda p: Path(p).write_text(json.dumps(doc, indent=1) + "\n"))


def open_writer(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return CsvWriter(path) if path.suffix.lower() == ".csv" else GeoJsonWriter(path)
