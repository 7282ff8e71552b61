"""Straightforward per-point partitioning with ``s2sphere``, the way GeoEstimation builds its cells.

Slow (pure Python per sample and S2 level); kept as the independent reference that tests and
``benchmarks/partition.py`` check the vectorized :func:`geosurge.geo.build_hierarchy` against.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import s2sphere


def reference_hierarchy(
    lats: Sequence[float], lons: Sequence[float], tau_min: int, tau_maxes: Sequence[int]
) -> list[dict[int, int]]:
    """One ``{cell_id: sample_count}`` per ``tau_max`` (in the given order), sample by sample."""
    leaves = [s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(float(a), float(b))) for a, b in zip(lats, lons)]
    return [_partition(leaves, tau_min, tau) for tau in tau_maxes]


def reference_partition(lats: Sequence[float], lons: Sequence[float], tau_min: int, tau_max: int) -> dict[int, int]:
    """One partition as ``{cell_id: sample_count}``."""
    return reference_hierarchy(lats, lons, tau_min, [tau_max])[0]


def _partition(leaves: list[s2sphere.CellId], tau_min: int, tau_max: int) -> dict[int, int]:
    groups: dict[int, list[int]] = defaultdict(list)
    for k, cell in enumerate(leaves):
        groups[cell.parent(0).id()].append(k)
    kept: dict[int, int] = {}
    level = 0
    while groups:
        children: dict[int, list[int]] = defaultdict(list)
        for cid, members in groups.items():
            if len(members) > tau_max and level < s2sphere.CellId.MAX_LEVEL:
                for k in members:
                    children[leaves[k].parent(level + 1).id()].append(k)
            elif len(members) >= tau_min:
                kept[cid] = len(members)
        groups = children
        level += 1
    return kept


def partition_as_dict(ids: np.ndarray, counts: np.ndarray) -> dict[int, int]:
    """``{cell_id: count}`` of a vectorized partition, for comparison with the reference."""
    return {int(i): int(c) for i, c in zip(ids, counts)}
