"""The S2 partition hierarchy of GeoSURGE (paper §III-A).

One partition per ``tau_max``: start from the 6 S2 face cells, split every cell holding more than
``tau_max`` samples into its 4 children, recursively, and drop cells holding fewer than ``tau_min``.
The same ``tau_min`` for every level makes the partitions nest: every cell of a finer partition lies
inside exactly one cell of each coarser one.

All of it is vectorized: points are turned into leaf cell ids once and sorted, so the samples of any
cell at any level form one contiguous run of the sorted array. The count of every cell that any of
the partitions could need is then one pass per S2 level over the still-splitting samples, and each
partition is read off those counts.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import atomic_write
from . import s2
from .validate import check_coordinates

#: Paper defaults (§IV, implementation details).
PAPER_TAU_MIN = 50
PAPER_TAU_MAXES = (25000, 10000, 5000, 2000, 1000, 750, 500)

FORMAT_VERSION = 1
_JSON_NAME = "hierarchy.json"
_NPZ_NAME = "hierarchy.npz"


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: given a name, np.savez appends ".npz" to it
        np.savez(f, **arrays)


@dataclass
class Partition:
    """One level of the hierarchy: the kept S2 cells of one ``tau_max``, sorted by cell id."""

    tau_max: int
    ids: np.ndarray  # (n,) uint64 S2 cell ids, ascending
    counts: np.ndarray  # (n,) int64 training samples per cell
    centroids: np.ndarray  # (n, 2) float64 mean lat/lon of the cell's samples: the point predicted
    parents: np.ndarray  # (n,) int64 index into the previous (coarser) level; -1 at the coarsest
    _polygons: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def s2_tokens(self) -> list[str]:
        """S2 tokens (hex ids) of the cells."""
        return s2.ids_to_tokens(self.ids)

    @property
    def s2_levels(self) -> np.ndarray:
        """S2 level (0..30) of each cell."""
        return s2.cell_level(self.ids)

    def polygons(self, points_per_edge: int = 1) -> np.ndarray:
        """Cell boundaries, (n, 4 * points_per_edge, 2) lat/lon in degrees (see :func:`s2.cell_vertices`)."""
        if points_per_edge not in self._polygons:
            self._polygons[points_per_edge] = s2.cell_vertices(self.ids, points_per_edge)
        return self._polygons[points_per_edge]

    def polygon(self, index: int, points_per_edge: int = 4):
        """The cell as a shapely ``Polygon`` in (lon, lat); longitudes unwrapped across the antimeridian."""
        from shapely.geometry import Polygon

        latlon = s2.cell_vertices(self.ids[index : index + 1], points_per_edge)[0]
        lon = np.degrees(np.unwrap(np.radians(latlon[:, 1])))
        return Polygon(np.stack([lon, latlon[:, 0]], axis=1))

    def containing_cell_index(self, leaf_ids: np.ndarray) -> np.ndarray:
        """Index of the cell holding each leaf id, -1 where no kept cell does."""
        return s2.containing_cell_index(self.ids, leaf_ids)


@dataclass
class Hierarchy:
    """Partitions ordered coarse to fine (decreasing ``tau_max``), all with the same ``tau_min``."""

    tau_min: int
    levels: list[Partition]
    n_samples: int = 0

    def __post_init__(self) -> None:
        self._check_nesting()

    @property
    def tau_maxes(self) -> list[int]:
        return [p.tau_max for p in self.levels]

    @property
    def finest(self) -> Partition:
        return self.levels[-1]

    @property
    def num_cells(self) -> list[int]:
        return [len(p) for p in self.levels]

    def ancestors(self) -> np.ndarray:
        """(n_finest, n_levels) index of each finest cell's containing cell at every level."""
        n_levels = len(self.levels)
        out = np.empty((len(self.finest), n_levels), np.int64)
        out[:, -1] = np.arange(len(self.finest))
        for k in range(n_levels - 1, 0, -1):
            out[:, k - 1] = self.levels[k].parents[out[:, k]]
        return out

    def assign(self, lats: Sequence[float] | np.ndarray, lons: Sequence[float] | np.ndarray) -> np.ndarray:
        """(n, n_levels) cell index of each coordinate at every level; -1 where no kept cell contains it."""
        lats, lons = check_coordinates(lats, lons)
        leaf = s2.latlon_to_cell_id(lats, lons)
        return np.stack([p.containing_cell_index(leaf) for p in self.levels], axis=1)

    def summary(self) -> str:
        """Human-readable table of the levels."""
        rows = [f"{'level':>5} {'tau_max':>8} {'cells':>7} {'samples':>10} {'min':>6} {'max':>7} {'S2 lvl':>7}"]
        for k, p in enumerate(self.levels):
            lv = p.s2_levels
            rows.append(
                f"{k:>5} {p.tau_max:>8} {len(p):>7} {int(p.counts.sum()):>10} "
                f"{int(p.counts.min()) if len(p) else 0:>6} {int(p.counts.max()) if len(p) else 0:>7} "
                f"{f'{lv.min()}-{lv.max()}' if len(p) else '-':>7}"
            )
        return "\n".join(rows)

    # ------------------------------------------------------------------ serialization
    def save(self, directory: str | Path) -> None:
        """Write ``hierarchy.json`` (metadata, tokens) and ``hierarchy.npz`` (arrays) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "tau_min": self.tau_min,
            "tau_maxes": self.tau_maxes,
            "n_samples": self.n_samples,
            "num_cells": self.num_cells,
        }
        arrays: dict[str, np.ndarray] = {}
        for k, p in enumerate(self.levels):
            arrays[f"l{k}_ids"] = p.ids
            arrays[f"l{k}_counts"] = p.counts
            arrays[f"l{k}_centroids"] = p.centroids
            arrays[f"l{k}_parents"] = p.parents
        atomic_write(directory / _NPZ_NAME, lambda tmp: _save_npz(tmp, arrays))
        atomic_write(directory / _JSON_NAME, json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "Hierarchy":
        """Load what :meth:`save` wrote; raises ``FileNotFoundError``/``ValueError`` on missing or bad files."""
        directory = Path(directory)
        for name in (_JSON_NAME, _NPZ_NAME):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"hierarchy file {directory / name} is missing")
        meta = json.loads((directory / _JSON_NAME).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory / _JSON_NAME}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
        levels = []
        with np.load(directory / _NPZ_NAME, allow_pickle=False) as z:
            for k, tau in enumerate(meta["tau_maxes"]):
                try:
                    levels.append(
                        Partition(
                            tau_max=int(tau),
                            ids=z[f"l{k}_ids"].astype(np.uint64),
                            counts=z[f"l{k}_counts"].astype(np.int64),
                            centroids=z[f"l{k}_centroids"].astype(np.float64),
                            parents=z[f"l{k}_parents"].astype(np.int64),
                        )
                    )
                except KeyError as e:
                    raise ValueError(f"{directory / _NPZ_NAME} lacks array {e} for level {k}") from None
        h = cls(tau_min=int(meta["tau_min"]), levels=levels, n_samples=int(meta.get("n_samples", 0)))
        if h.num_cells != list(meta["num_cells"]):
            raise ValueError(f"{directory}: cell counts {h.num_cells} do not match the metadata {meta['num_cells']}")
        return h

    def _check_nesting(self) -> None:
        for k, p in enumerate(self.levels):
            n = len(p)
            if not (p.counts.shape == (n,) and p.centroids.shape == (n, 2) and p.parents.shape == (n,)):
                raise ValueError(f"level {k}: arrays disagree in length")
            if n > 1 and not np.all(p.ids[1:] > p.ids[:-1]):
                raise ValueError(f"level {k}: cell ids are not strictly ascending")
            if k == 0:
                if np.any(p.parents != -1):
                    raise ValueError("the coarsest level must have parents == -1")
                continue
            prev = self.levels[k - 1]
            expect = prev.containing_cell_index(s2.range_min(p.ids))
            if np.any(expect < 0) or np.any(expect != prev.containing_cell_index(s2.range_max(p.ids))):
                raise ValueError(f"level {k}: some cells do not lie inside exactly one cell of level {k - 1}")
            if not np.array_equal(expect, p.parents):
                raise ValueError(f"level {k}: stored parents disagree with the cell geometry")


def build_hierarchy(
    lats: Sequence[float] | np.ndarray,
    lons: Sequence[float] | np.ndarray,
    tau_min: int = PAPER_TAU_MIN,
    tau_maxes: Sequence[int] = PAPER_TAU_MAXES,
) -> Hierarchy:
    """Build the partition hierarchy of paper §III-A from sample coordinates (degrees).

    ``tau_maxes`` may come in any order; levels are returned coarse to fine (decreasing ``tau_max``).
    A cell is split while it holds more than ``tau_max`` samples (S2 level-30 leaves cannot split, so
    only they may exceed it) and kept if it holds at least ``tau_min``.
    """
    lats, lons = check_coordinates(lats, lons, what="build_hierarchy")
    tau_maxes = sorted({int(t) for t in tau_maxes}, reverse=True)
    if len(tau_maxes) == 0:
        raise ValueError("tau_maxes is empty")
    if tau_min < 1 or tau_maxes[-1] < tau_min:
        raise ValueError(f"need 1 <= tau_min <= every tau_max; got tau_min={tau_min}, tau_maxes={tau_maxes}")

    leaf = s2.latlon_to_cell_id(lats, lons)
    order = np.argsort(leaf, kind="stable")
    leaf = leaf[order]
    # Prefix sums of unit vectors give every cell's spherical mean in O(1) (correct across the antimeridian).
    csum = np.zeros((leaf.size + 1, 3))
    np.cumsum(s2.latlon_to_xyz(lats[order], lons[order]), axis=0, out=csum[1:])

    tree = _count_tree(leaf, split_above=tau_maxes[-1])
    levels: list[Partition] = []
    for tau in tau_maxes:
        ids, starts, counts = _read_partition(tree, tau, tau_min)
        cents = s2.xyz_to_latlon(csum[starts + counts] - csum[starts])
        prev = levels[-1] if levels else None
        parents = prev.containing_cell_index(ids) if prev is not None else np.full(ids.size, -1, np.int64)
        levels.append(Partition(tau_max=tau, ids=ids, counts=counts, centroids=cents, parents=parents))
    return Hierarchy(tau_min=int(tau_min), levels=levels, n_samples=int(leaf.size))


@dataclass
class _TreeLevel:
    ids: np.ndarray  # cells at this S2 level whose parent was split (ascending)
    starts: np.ndarray  # first index of each cell's run in the sorted leaf array
    counts: np.ndarray
    parent_counts: np.ndarray  # count of the parent cell (inf at S2 level 0)


def _count_tree(leaf_sorted: np.ndarray, split_above: int) -> list[_TreeLevel]:
    """Counts of every cell, S2 level by level, whose parent holds more than ``split_above`` samples.

    ``split_above`` is the smallest ``tau_max``: a coarser partition only splits cells the finest one
    splits too, so this tree holds every cell any of the partitions can keep. Each level touches only
    the samples still inside a splitting cell.
    """
    pos = np.arange(leaf_sorted.size, dtype=np.int64)  # positions of the still-active samples
    active = leaf_sorted
    parent_counts_of_active = np.full(leaf_sorted.size, np.iinfo(np.int64).max, np.int64)
    tree: list[_TreeLevel] = []
    for level in range(s2.MAX_LEVEL + 1):
        cells = s2.parent(active, level) if level < s2.MAX_LEVEL else active
        brk = np.flatnonzero(cells[1:] != cells[:-1]) + 1
        first = np.concatenate(([0], brk))
        counts = np.diff(np.concatenate((first, [cells.size])))
        tree.append(_TreeLevel(cells[first], pos[first], counts, parent_counts_of_active[first]))
        split = counts > split_above
        if level == s2.MAX_LEVEL or not split.any():
            break
        keep = np.repeat(split, counts)
        active, pos = active[keep], pos[keep]
        parent_counts_of_active = np.repeat(counts[split], counts[split])
    return tree


def _read_partition(tree: list[_TreeLevel], tau_max: int, tau_min: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kept cells of one partition: those whose parent was split, that are not split themselves, and hold >= tau_min."""
    ids, starts, counts = [], [], []
    for level, t in enumerate(tree):
        leaf_level = level == s2.MAX_LEVEL
        sel = (t.parent_counts > tau_max) & ((t.counts <= tau_max) | leaf_level) & (t.counts >= tau_min)
        ids.append(t.ids[sel])
        starts.append(t.starts[sel])
        counts.append(t.counts[sel])
    ids_a = np.concatenate(ids)
    order = np.argsort(ids_a, kind="stable")
    return ids_a[order], np.concatenate(starts)[order], np.concatenate(counts)[order].astype(np.int64)
