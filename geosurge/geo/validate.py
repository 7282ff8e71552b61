"""Input checks shared by everything that takes coordinates."""
from __future__ import annotations

from typing import Any

import numpy as np


def check_coordinates(lats: Any, lons: Any, what: str = "input") -> tuple[np.ndarray, np.ndarray]:
    """Return ``lats, lons`` as 1-D float64 arrays, or raise ``ValueError`` naming the bad rows.

    Rejects empty input, mismatched lengths, NaN/inf, latitudes outside [-90, 90] and longitudes
    outside [-180, 180].
    """
    lats = np.atleast_1d(np.asarray(lats, dtype=np.float64)).ravel()
    lons = np.atleast_1d(np.asarray(lons, dtype=np.float64)).ravel()
    if lats.size == 0:
        raise ValueError(f"{what}: no coordinates given (empty input)")
    if lats.shape != lons.shape:
        raise ValueError(f"{what}: {lats.size} latitudes but {lons.size} longitudes")
    bad = ~np.isfinite(lats) | ~np.isfinite(lons) | (np.abs(lats) > 90) | (np.abs(lons) > 180)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(f"{r} ({lats[r]!r}, {lons[r]!r})" for r in rows[:10])
        more = f" and {rows.size - 10} more" if rows.size > 10 else ""
        raise ValueError(
            f"{what}: {rows.size} row(s) with NaN/inf or out-of-range coordinates "
            f"(lat must be in [-90, 90], lon in [-180, 180]); rows (0-based) {shown}{more}"
        )
    return lats, lons
