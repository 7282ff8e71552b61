"""Geography: S2 partition hierarchy, great-circle distances and geolocalization metrics."""
from .distance import EARTH_RADIUS_KM, haversine_km, pairwise_haversine_km, spherical_median
from .hierarchy import PAPER_TAU_MAXES, PAPER_TAU_MIN, Hierarchy, Partition, build_hierarchy
from .metrics import THRESHOLDS_KM, AccuracyReport, accuracy_report, geoscore
from .partition_csv import load_partition_csv
from .validate import check_coordinates

__all__ = [
    "EARTH_RADIUS_KM",
    "PAPER_TAU_MAXES",
    "PAPER_TAU_MIN",
    "THRESHOLDS_KM",
    "AccuracyReport",
    "Hierarchy",
    "Partition",
    "accuracy_report",
    "build_hierarchy",
    "check_coordinates",
    "geoscore",
    "haversine_km",
    "load_partition_csv",
    "pairwise_haversine_km",
    "spherical_median",
]
