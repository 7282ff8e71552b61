"""Straightforward per-point partitioning with ``s2sphere``, the way GeoEstimation builds its cells.

Slow (pure Python per sample and level); kept as the independent reference that tests and
``benchmarks/partition.py`` check the vectorized :func:`geosurge.geo.build_hierarchy` against.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import s2sphere


def reference_partition(lats: Sequence[float], lons: Sequence[float], tau_min: int, tau_max: int) -> dict[int, int]:
    """One partition as ``{cell_id: sample_count}``, computed sample by sample with ``s2sphere``."""
    leaves = [s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(float(a), float(b))) for a, b in zip(lats, lons)]
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
    """``{cell_id: count}`` of a vectorized partition, for comparison with :func:`reference_partition`."""
    return {int(i): int(c) for i, c in zip(ids, counts)}
