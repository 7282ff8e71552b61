"""The decision rules that turn a distribution over the finest cells into one answer: parsed, applied and
described here, for the paper's scorer and the fitted posterior alike.

* ``argmax``: the most probable finest cell (with the paper's scores: the best product over the levels);
* ``median``: the finest-cell centre of least expected great-circle distance to the truth (the Bayes answer
  for mean error, restricted to cell centres so that every answer has a cell chain);
* ``within:R``: the finest-cell centre holding the most probability within R km (the Bayes answer for
  accuracy at R km).

Configs written before the vocabulary was one used ``map`` for ``argmax`` (``GeoConfig.decision``); it is read
as ``argmax`` (:data:`LEGACY_NAMES`).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..geo.distance import pairwise_haversine_km

ARGMAX, MEDIAN, WITHIN = "argmax", "median", "within"
#: old names still read from config.json files -> today's
LEGACY_NAMES = {"map": ARGMAX}
#: what an error message offers
CHOICES = "'argmax', 'median' or 'within:R' with R > 0 km"


class CellDistances:
    """Great-circle km between the finest-cell centres, for the rules: kept whole up to ``keep_up_to`` cells
    (the embedded checkpoint's 1,080: 4.7 MB), served by blocks of rows beyond, so memory stays bounded (the
    paper's 22,840 cells would take 2 GB at once, and a rule's float64 copy twice that)."""

    def __init__(self, centroids: np.ndarray, keep_up_to: int = 4096, block: int = 1024):
        self.centroids = np.asarray(centroids, np.float64)
        self.keep_up_to, self.block = keep_up_to, block
        self._matrix: np.ndarray | None = None
        self._near: dict[float, object] = {}

    def __len__(self) -> int:
        return len(self.centroids)

    @property
    def matrix(self) -> np.ndarray:
        """(n, n) float32 km, computed once (for small hierarchies; see :meth:`blocks`)."""
        if self._matrix is None:
            c = self.centroids
            self._matrix = pairwise_haversine_km(c[:, 0], c[:, 1], c[:, 0], c[:, 1]).astype(np.float32)
        return self._matrix

    def rows(self, cells: np.ndarray) -> np.ndarray:
        """(len(cells), n) float32 km from the given cells to every cell."""
        if self._matrix is not None or len(self) <= self.keep_up_to:
            return self.matrix[cells]
        c, a = self.centroids[np.asarray(cells)], self.centroids
        return pairwise_haversine_km(c[:, 0], c[:, 1], a[:, 0], a[:, 1]).astype(np.float32)

    def near(self, radius_km: float):
        """(n, n) sparse 0/1 matrix of the cell pairs within ``radius_km`` (scipy CSR), built once per radius by
        blocks: what ``within:R`` needs of a large hierarchy, in memory that grows with the neighbours, not n²."""
        if radius_km not in self._near:
            from scipy import sparse

            parts = [sparse.csr_matrix((d <= radius_km).astype(np.float64)) for _, d in self.blocks()]
            self._near[radius_km] = sparse.vstack(parts, format="csr")
        return self._near[radius_km]

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) covering every cell: the whole matrix at once when it is kept."""
        if len(self) <= self.keep_up_to:
            yield 0, self.matrix
            return
        for start in range(0, len(self), self.block):
            yield start, self.rows(np.arange(start, min(start + self.block, len(self))))


@dataclass(frozen=True)
class DecisionRule:
    """One parsed rule; ``str(rule)`` is its canonical text (``"within:750"``), the name every output uses."""

    kind: str  # ARGMAX, MEDIAN or WITHIN
    radius_km: float | None = None  # WITHIN only

    def __str__(self) -> str:
        return f"{WITHIN}:{self.radius_km:g}" if self.kind == WITHIN else self.kind

    def describe(self) -> str:
        """How the answer was chosen, for a sentence: "answer chosen by <this>"."""
        if self.kind == WITHIN:
            return f"the most chance within {self.radius_km:,.0f} km"
        if self.kind == MEDIAN:
            return "the least expected distance"
        return "the most probable cell"

    def choose(self, probs: torch.Tensor, distances: CellDistances | None = None) -> np.ndarray:
        """The answer's finest cell per row of ``probs`` (B, n_fin); ``distances`` between the cell centres
        (unused by ``argmax``)."""
        if self.kind == ARGMAX:
            return probs.argmax(dim=1).cpu().numpy()
        if distances is None:
            raise ValueError(f"the {self} rule needs the distances between cell centres")
        p = probs.double().cpu()
        if self.kind == WITHIN and len(distances) > distances.keep_up_to:
            return np.asarray((distances.near(self.radius_km) @ p.numpy().T).argmax(axis=0)).ravel()
        best_value = best_cell = None
        for start, d in distances.blocks():
            m = torch.from_numpy(d.astype(np.float64) if self.kind == MEDIAN else (d <= self.radius_km).astype(np.float64))
            value = p @ m if d.shape[0] == d.shape[1] else p @ m.T  # the whole matrix is symmetric
            if self.kind == MEDIAN:
                value = -value  # least expected distance
            v, i = value.max(dim=1)
            if best_value is None:
                best_value, best_cell = v, i + start
            else:  # an earlier block keeps ties, as one argmax over all cells would
                better = v > best_value
                best_value, best_cell = torch.where(better, v, best_value), torch.where(better, i + start, best_cell)
        return best_cell.numpy()


def parse_decision(text: str, field: str = "decision") -> DecisionRule:
    """The rule named by ``text`` (legacy names mapped); anything else is a ``ValueError`` naming ``field``
    and the choices."""
    text = LEGACY_NAMES.get(text, text) if isinstance(text, str) else text
    if text in (ARGMAX, MEDIAN):
        return DecisionRule(text)
    if isinstance(text, str) and text.startswith(f"{WITHIN}:"):
        try:
            r = float(text.split(":", 1)[1])
        except ValueError:
            r = -1.0
        if r > 0 and np.isfinite(r):
            return DecisionRule(WITHIN, r)
    raise ValueError(f"{field} must be {CHOICES}, not {text!r}")


def canonical_decision(text: str, field: str = "decision") -> str:
    """``text`` checked and written the one way outputs and calibration keys use (``"map"`` -> ``"argmax"``,
    ``"within:750.0"`` -> ``"within:750"``)."""
    return str(parse_decision(text, field))


def describe_decision(text: str) -> str:
    """Plain words for a rule's name (for the page and the CLI): ``"within:750"`` -> "the most chance within 750 km"."""
    return parse_decision(text).describe()
