"""The one decode step: visual features -> :class:`Decision` (the answer, its cell chain and the figures beside it).

The predictor, ``geosurge evaluate`` and the trainer's validation all call :class:`Decoder`; the level logits
are computed once per batch and feed both the paper's product scores and the fitted posterior.

With a fitted posterior (``model.posterior``) the distribution over the finest cells is the posterior, the rule
is ``posterior.decision`` and the chances are calibrated. Without one it is the paper's product scores of the
finest cells, normalized, and the rule is ``geo.decision`` (``argmax``: the paper's best cell). The rules live
in :mod:`geosurge.model.decisions`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..geo.hierarchy import Hierarchy
from .decisions import CellDistances, DecisionRule, parse_decision
from .evidence import evidence_bits
from .hierarchical import HierarchicalScorer
from .checkpoint_dir import CheckpointDir
from .posterior import Posterior
from .variants import variant_name

#: what ranks the cells shown beside an answer, with and without a fitted posterior
POSTERIOR_PROBABILITY = "posterior probability"
PRODUCT_SCORE = "product score"


@dataclass
class Decision:
    """A batch of answers and everything said beside them; every per-level figure describes ``chain``."""

    rule: str  # the rule that chose the answers ("argmax", "median", "within:750")
    cells: np.ndarray  # (B,) the answer's finest cell
    latlon: np.ndarray  # (B, 2) its centre (lat, lon)
    chain: np.ndarray  # (B, levels) the cell holding the answer at every level, coarse to fine
    level_scores: list[torch.Tensor]  # per level (B, n_l): log of the paper's product score (own x ancestors')
    #: per level (B, n_l): the figure shown per cell, ``ranked_by`` (posterior marginals, or product scores)
    level_probs: list[torch.Tensor]
    ranked_by: str  # POSTERIOR_PROBABILITY or PRODUCT_SCORE
    log_post: torch.Tensor  # (B, n_fin): the fitted posterior, else the normalized finest product scores
    #: R km -> (B,) calibrated chance that the truth lies within R km; empty without a fitted posterior
    within_km: dict[int, np.ndarray] = field(default_factory=dict)
    #: (B,) KL(posterior || Flickr prior) in bits (geosurge.model.evidence); NaN without a fitted posterior
    evidence_bits: np.ndarray | None = None


class Decoder:
    """Features -> :class:`Decision` for one model (its scorer), its hierarchy and its posterior (or None)."""

    def __init__(self, scorer: HierarchicalScorer, hierarchy: Hierarchy, posterior: Posterior | None = None,
                 rule: str = "argmax"):
        self.scorer, self.hierarchy, self.posterior = scorer, hierarchy, posterior
        self.rule = str(parse_decision(rule))  # the default without a posterior (geo.decision)
        self.ancestors = torch.from_numpy(hierarchy.ancestors())
        self._distances: CellDistances | None = None

    @classmethod
    def for_model(cls, model, hierarchy: Hierarchy, posterior: Posterior | None = None) -> "Decoder":
        """The decoder of a :class:`~geosurge.model.GeoSURGE` model (``geo.decision`` without a posterior)."""
        return cls(HierarchicalScorer.for_model(model, hierarchy), hierarchy, posterior, model.cfg.geo.decision)

    @classmethod
    def for_checkpoint(cls, model, hierarchy: Hierarchy, directory: str | Path) -> "Decoder":
        """The decoder of a checkpoint directory's model, with the posterior fitted in it (if any)."""
        variant = CheckpointDir.read(directory).variant(variant_name(model.uses_fusion))
        return cls.for_model(model, hierarchy, variant.posterior(hierarchy, model.cfg.posterior))

    def to(self, device: torch.device | str) -> "Decoder":
        """Score on ``device`` (the posterior and the rules run on the CPU: they are small and in float64)."""
        self.scorer.to(device)
        return self

    @property
    def distances(self) -> CellDistances:
        """Km between the finest-cell centres, for the rules (the posterior's when there is one)."""
        if self.posterior is not None:
            return self.posterior.cell_distances
        if self._distances is None:
            self._distances = CellDistances(self.hierarchy.finest.centroids)
        return self._distances

    def resolve(self, decision: str | None = None) -> DecisionRule:
        """The rule asked for, else the checkpoint's: ``posterior.decision`` with a posterior, ``geo.decision`` without."""
        if decision is not None:
            return parse_decision(decision)
        return self.posterior.rule() if self.posterior is not None else parse_decision(self.rule)

    @torch.no_grad()
    def __call__(self, features: torch.Tensor, decision: str | None = None) -> Decision:
        """Decide every photo of a batch of features (B, dim)."""
        rule = self.resolve(decision)
        logits = self.scorer.level_logits(features)
        scores = self.scorer.cumulative_from_logits(logits)
        if self.posterior is None:
            log_post = torch.log_softmax(scores[-1].double().cpu(), dim=1)
        else:
            log_post = self.posterior.log_posterior(logits)
        cells = rule.choose(log_post.exp(), self.distances)
        chain = self.ancestors[torch.from_numpy(cells)].numpy()
        d = Decision(str(rule), cells, self.hierarchy.finest.centroids[cells], chain, scores,
                     [s.exp().cpu() for s in scores], PRODUCT_SCORE, log_post,
                     evidence_bits=np.full(len(cells), math.nan))
        if self.posterior is not None:
            d.level_probs, d.ranked_by = self._marginals(log_post), POSTERIOR_PROBABILITY
            d.within_km = self.posterior.chances(log_post, cells, str(rule))
            d.evidence_bits = evidence_bits(log_post, self.posterior.log_base)
        return d

    def _marginals(self, log_post: torch.Tensor) -> list[torch.Tensor]:
        """Per level (B, n_l): the posterior probability of each cell (the sum over its finest cells)."""
        post = log_post.exp()
        return [torch.zeros(post.shape[0], n, dtype=post.dtype).index_add_(1, self.ancestors[:, k], post)
                for k, n in enumerate(self.hierarchy.num_cells)]
