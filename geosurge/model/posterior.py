"""The posterior over the finest cells: photo-density prior x per-level visual likelihood ratios.

    log p(f | x) = a * log prior(f) + sum_l w_l * r_l(a_l(f)) - log Z

``prior`` is the share of MP-16's photos in the finest cell f (the hierarchy's counts when it is built from
MP-16), ``a_l(f)`` the cell containing f at level l, ``r_l`` the model's log-likelihood ratio there and
``w_l = 1 / T_l`` a per-level temperature and ``a`` the prior's weight, all fitted by grouped cross-validation. A model trained with in-batch
InfoNCE scores cells by log p(x | c) / p(x) + const, so its softmax over the cells it was trained on is a
likelihood ratio against a uniform reference (``train_correction`` 0); a classifier's softmax carries the
training frequency, which ``train_correction`` 1 divides out. Cells without training photos have random
embeddings: they get r = 0 (no evidence at that level) and do not take part in that level's softmax.

Everything here works on batches and is vectorized over cells.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..geo.hierarchy import Hierarchy
from .config import PosteriorConfig
from .decisions import CellDistances, DecisionRule, parse_decision

#: Radii (km) of the calibrated chances: the benchmark's accuracy thresholds.
RADII_KM = (1, 25, 200, 750, 2500)


def training_counts(hierarchy: Hierarchy, lats: np.ndarray, lons: np.ndarray) -> list[np.ndarray]:
    """Training photos per cell at every level (photos outside every kept cell are not counted)."""
    cells = hierarchy.assign(lats, lons)
    return [np.bincount(cells[:, k][cells[:, k] >= 0], minlength=n).astype(np.int64) for k, n in enumerate(hierarchy.num_cells)]


def likelihood_ratios(logits: Sequence[torch.Tensor], train_counts: Sequence[np.ndarray], train_correction: float) -> list[torch.Tensor]:
    """Per level, the model's log-likelihood ratio of every cell, (B, n_l); 0 for cells without training photos."""
    out = []
    for z, c in zip(logits, train_counts):
        trained = torch.from_numpy(np.asarray(c) > 0).to(z.device)
        if not trained.any():
            out.append(torch.zeros_like(z, dtype=torch.float64))
            continue
        q = torch.from_numpy(np.asarray(c, dtype=np.float64) / max(1, int(np.sum(c)))).to(z.device)
        ref = train_correction * q[trained].log() + (1 - train_correction) * (-np.log(int(trained.sum())))
        logp = torch.log_softmax(z.double()[:, trained], dim=1)
        r = torch.zeros(z.shape, dtype=torch.float64, device=z.device)
        r[:, trained] = logp - ref
        out.append(r)
    return out


def combine(log_prior: torch.Tensor, ratios: Sequence[torch.Tensor], ancestors: torch.Tensor, weights: torch.Tensor,
            prior_weight: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Normalized log posterior over the finest cells, (B, n_fin); differentiable in ``weights`` and ``prior_weight``."""
    total = (prior_weight * log_prior)[None, :].expand(ratios[0].shape[0], -1)
    for k, r in enumerate(ratios):
        total = total + weights[k] * r[:, ancestors[:, k]]
    return torch.log_softmax(total, dim=1)


def calibrate(raw: np.ndarray, knots: Sequence[Sequence[float]] | None) -> np.ndarray:
    """Apply a monotone calibration map (piecewise linear through its knots); identity when None."""
    raw = np.asarray(raw, dtype=np.float64)
    if not knots:
        return np.clip(raw, 0.0, 1.0)
    return np.interp(raw, np.asarray(knots[0], np.float64), np.asarray(knots[1], np.float64))


def monotone_in_radius(chances: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The chance within R km can only grow with R; maps fitted per radius may disagree by a hair, so each
    chance is raised to the largest at a smaller radius."""
    radii = sorted(chances)
    running = np.maximum.accumulate(np.stack([np.asarray(chances[r], np.float64) for r in radii]), axis=0)
    return {r: running[k] for k, r in enumerate(radii)}


class Posterior:
    """The checkpoint's posterior: prior, per-level weights, decision rule and calibration maps."""

    def __init__(self, cfg: PosteriorConfig, hierarchy: Hierarchy, train_counts: Sequence[np.ndarray]):
        if [len(c) for c in train_counts] != hierarchy.num_cells:
            raise ValueError(f"training counts {[len(c) for c in train_counts]} do not match the hierarchy {hierarchy.num_cells}")
        n_levels = len(hierarchy.levels)
        weights = cfg.level_weights if cfg.level_weights is not None else [1.0] * n_levels
        if len(weights) != n_levels:
            raise ValueError(f"posterior.level_weights has {len(weights)} entries for {n_levels} levels")
        self.cfg = cfg
        self.hierarchy = hierarchy
        self.train_counts = [np.asarray(c) for c in train_counts]
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.ancestors = torch.from_numpy(hierarchy.ancestors())
        counts = hierarchy.finest.counts.astype(np.float64)
        self.log_prior = torch.from_numpy(np.log(np.maximum(counts, 1e-12) / counts.sum()))
        self.centroids = hierarchy.finest.centroids
        self.cell_distances = CellDistances(self.centroids)

    @property
    def log_base(self) -> torch.Tensor:
        """(n_fin,) the normalized log posterior without a photo: the prior raised to ``prior_weight``."""
        return torch.log_softmax(self.cfg.prior_weight * self.log_prior, dim=0)

    @property
    def log_base(self) -> torch.Tensor:
        """(n_fin,) the normalized log posterior without a photo: the prior raised to ``prior_weight``."""
        return torch.log_softmax(self.cfg.prior_weight * self.log_prior, dim=0)

    @property
    def distances(self) -> np.ndarray:
        """(n_fin, n_fin) km between finest-cell centroids, computed once (small hierarchies; the rules use
        :attr:`cell_distances`, which stays bounded for large ones)."""
        return self.cell_distances.matrix

    def log_posterior(self, logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, n_fin) normalized log posterior from the model's per-level logits (``HierarchicalScorer.level_logits``)."""
        ratios = likelihood_ratios([z.cpu() for z in logits], self.train_counts, self.cfg.train_correction)
        return combine(self.log_prior, ratios, self.ancestors, self.weights, self.cfg.prior_weight)

    def rule(self, decision: str | None = None) -> DecisionRule:
        """The rule asked for, else the checkpoint's (``posterior.decision``)."""
        return parse_decision(decision or self.cfg.decision)

    def decide(self, log_post: torch.Tensor, decision: str | None = None) -> np.ndarray:
        """Finest cell of the answer under a rule of :mod:`geosurge.model.decisions` (default: the checkpoint's)."""
        return self.rule(decision).choose(log_post.exp(), self.cell_distances)

    def mass_within(self, log_post: torch.Tensor, answer: np.ndarray, radius_km: float) -> np.ndarray:
        """(B,) posterior mass of the finest cells whose centre lies within ``radius_km`` of each answer's cell."""
        near = torch.from_numpy(self.cell_distances.rows(answer) <= radius_km)
        return (log_post.exp() * near).sum(dim=1).clamp(0, 1).numpy()

    def chances(self, log_post: torch.Tensor, answer: np.ndarray, decision: str | None = None) -> dict[int, np.ndarray]:
        """R -> (B,) calibrated chance that the truth lies within R km of the answer (the rule's calibration maps)."""
        rule = str(self.rule(decision))
        raw = {r: self.mass_within(log_post, answer, r) for r in RADII_KM}
        return monotone_in_radius({r: calibrate(raw[r], self.cfg.calibration.get(f"{rule}@{r}")) for r in RADII_KM})


def credible_set(log_post_row: torch.Tensor, mass: float) -> np.ndarray:
    """Smallest set of finest cells holding at least ``mass`` of the posterior (most probable first)."""
    p, idx = log_post_row.exp().sort(descending=True)
    n = int(torch.searchsorted(p.cumsum(0), torch.tensor(mass, dtype=p.dtype)).item()) + 1
    return idx[: min(n, idx.numel())].numpy()
