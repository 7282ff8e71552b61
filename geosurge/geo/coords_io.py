"""Reading coordinate columns from CSV files, by column name (never by position)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

# Accepted header names. Columns are always found by name: some published IM2GPS3k CSVs swap the
# lat/lon columns, and guessing by position silently mirrors the world.
LAT_NAMES = ("lat", "latitude", "gps_lat", "lat_deg")
LON_NAMES = ("lon", "lng", "long", "longitude", "gps_lon", "lon_deg")


def find_column(header: list[str], names: tuple[str, ...], path: str | Path) -> int:
    """Index of the first header entry matching one of ``names`` (case-insensitive)."""
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    raise ValueError(f"{path}: no column named any of {list(names)}; header is {header}")


def read_coordinates_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes and longitudes (degrees) from a CSV with a header naming them (e.g. ``lat,lon`` or ``LAT,LON``)."""
    path = Path(path)
    with path.open(newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise ValueError(f"{path}: empty file")
    ilat, ilon = find_column(header, LAT_NAMES, path), find_column(header, LON_NAMES, path)
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(ilat, ilon), dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise ValueError(f"{path}: could not parse the coordinate columns as numbers ({e})") from None
    return data[:, 0], data[:, 1]
