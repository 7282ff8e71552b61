"""Where Flickr photos are: the MP-16 photo density (cell statistics of Müller-Budack et al.) as a prior.

``cells_50_*.csv`` lists S2 cells with their photo count and mean coordinate (4.7 M photos in all). Used
two ways: as sample points from which the partition hierarchy is built (so its cells cover where people
photograph, not only where the few training photos are), and as the best constant answers a model has to
beat (densest cell, photo-weighted spherical median, the point holding the most photos within R km).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .distance import haversine_km, spherical_median


@dataclass
class PhotoDensity:
    """Photo counts at points (the mean coordinate of each MP-16 cell)."""

    lats: np.ndarray
    lons: np.ndarray
    counts: np.ndarray  # photos at each point

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def sample_points(self) -> tuple[np.ndarray, np.ndarray]:
        """One point per photo (each cell's photos at its mean coordinate): the input of ``build_hierarchy``.

        Exact for every partition whose cells are no finer than the source cells (``tau_max`` above the
        source's, e.g. > 1,000 for ``cells_50_1000.csv``): S2 cells nest, so counts per cell are the same.
        """
        return np.repeat(self.lats, self.counts), np.repeat(self.lons, self.counts)

    def densest(self) -> tuple[float, float]:
        i = int(np.argmax(self.counts))
        return float(self.lats[i]), float(self.lons[i])

    def median(self) -> tuple[float, float]:
        """Photo-weighted spherical median: the constant of least mean great-circle error."""
        lat, lon = spherical_median(np.stack([self.lats, self.lons], 1), self.counts.astype(np.float64), iterations=300)
        return float(lat), float(lon)

    def best_point(self, radius_km: float, chunk: int = 512) -> tuple[float, float, float]:
        """The cell point holding the most photos within ``radius_km``: (lat, lon, fraction of all photos)."""
        best, best_i = -1.0, 0
        w = self.counts.astype(np.float64)
        for s in range(0, self.lats.size, chunk):
            d = haversine_km(self.lats[s : s + chunk, None], self.lons[s : s + chunk, None], self.lats[None], self.lons[None])
            mass = (d <= radius_km) @ w
            j = int(np.argmax(mass))
            if mass[j] > best:
                best, best_i = float(mass[j]), s + j
        return float(self.lats[best_i]), float(self.lons[best_i]), best / w.sum()


def read_photo_density(path: str | Path) -> PhotoDensity:
    """Read an MP-16 cell CSV (``class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"photo-density file {path} is missing (MP-16 cells: ../shared/data/mp16/cells_50_1000.csv)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"imgs_per_cell", "latitude_mean", "longitude_mean"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"{path}: expected columns {sorted(need)}")
    lats = np.array([float(r["latitude_mean"]) for r in rows])
    lons = np.array([float(r["longitude_mean"]) for r in rows])
    counts = np.array([int(float(r["imgs_per_cell"])) for r in rows], dtype=np.int64)
    if np.any(counts < 0) or np.any(np.abs(lats) > 90) or np.any(np.abs(lons) > 180):
        raise ValueError(f"{path}: negative counts or coordinates out of range")
    return PhotoDensity(lats, lons, counts)
