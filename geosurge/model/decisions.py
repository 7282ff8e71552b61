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

from dataclasses import dataclass

import numpy as np
import torch

ARGMAX, MEDIAN, WITHIN = "argmax", "median", "within"
#: old names still read from config.json files -> today's
LEGACY_NAMES = {"map": ARGMAX}
#: what an error message offers
CHOICES = "'argmax', 'median' or 'within:R' with R > 0 km"


@dataclass(frozen=True)
class DecisionRule:
    """One parsed rule; ``str(rule)`` is its canonical text (``"within:750"``), the name every output uses."""

    kind: str  # ARGMAX, MEDIAN or WITHIN
    radius_km: float | None = None  # WITHIN only

    def __str__(self) -> str:
        return f"{WITHIN}:{self.radius_km:g}" if self.kind == WITHIN else self.kind

    @property
    def needs_distances(self) -> bool:
        return self.kind != ARGMAX

    def describe(self) -> str:
        """How the answer was chosen, for a sentence: "answer chosen by <this>"."""
        if self.kind == WITHIN:
            return f"the most chance within {self.radius_km:,.0f} km"
        if self.kind == MEDIAN:
            return "the least expected distance"
        return "the most probable cell"

    def choose(self, probs: torch.Tensor, distances: np.ndarray | None = None) -> np.ndarray:
        """The answer's finest cell per row of ``probs`` (B, n_fin); ``distances`` (n_fin, n_fin) in km between
        the cell centres (unused by ``argmax``)."""
        if self.kind == ARGMAX:
            return probs.argmax(dim=1).cpu().numpy()
        if distances is None:
            raise ValueError(f"the {self} rule needs the distances between cell centres")
        p = probs.double().cpu()
        if self.kind == MEDIAN:
            return (p @ torch.from_numpy(distances.astype(np.float64))).argmin(dim=1).numpy()
        near = torch.from_numpy((distances <= self.radius_km).astype(np.float64))
        return (p @ near).argmax(dim=1).numpy()


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
