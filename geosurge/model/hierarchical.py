"""Hierarchical inference (paper §III-D) and nearest-reference lookup, vectorized over images and cells."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..geo.distance import pairwise_haversine_km
from ..geo.hierarchy import Hierarchy


class HierarchicalScorer:
    """Scores every cell of every level for a batch of visual features.

    Per level: cosine similarity / temperature, then a softmax over that level's cells (never a product
    of raw cosines: they are not probabilities and their scale differs per level). A cell's score is the
    product of its own probability and those of all its ancestors, kept as a sum of logs.

    ``tables``, ``scales`` and ``biases`` are used as given: a head's
    :class:`~geosurge.model.geo_heads.HeadScoring` (:meth:`for_model`), rows L2-normalized for cosines.
    """

    def __init__(
        self,
        tables: list[torch.Tensor],
        scales: torch.Tensor,
        hierarchy: Hierarchy,
        biases: list[torch.Tensor] | None = None,
        prior_weight: float = 0.0,
    ):
        if [len(t) for t in tables] != hierarchy.num_cells:
            raise ValueError(f"embedding tables {[len(t) for t in tables]} do not match the hierarchy {hierarchy.num_cells}")
        self.tables = [t.detach().float() for t in tables]
        self.scales = scales.detach().float()
        self.parents = [torch.from_numpy(p.parents) for p in hierarchy.levels]
        # A classifier's bias goes inside its level's softmax. The log training frequency of a cell is
        # added once, to the cell's own cumulative score: per-level InfoNCE scores estimate
        # log p(x|cell) - log p(x) (the prior divided out), so p(cell|x) ~ p(cell) * prod_l exp(score_l);
        # adding it inside every level's softmax would count the prior once per level.
        self.offsets = torch.cat([biases[k].detach().float() if biases is not None else torch.zeros(len(lvl))
                                  for k, lvl in enumerate(hierarchy.levels)])
        self.priors = [prior_weight * torch.from_numpy(np.log(np.maximum(lvl.counts, 1) / lvl.counts.sum())).float()
                       if prior_weight else None for lvl in hierarchy.levels]
        # One matmul over all levels at once beats seven small ones.
        self.all_cells = torch.cat(self.tables)
        self.splits = [len(t) for t in self.tables]

    @classmethod
    def for_model(cls, model, hierarchy: Hierarchy) -> "HierarchicalScorer":
        """The scorer of a :class:`~geosurge.model.GeoSURGE` model's geographic head."""
        s, g = model.geo.scoring(), model.cfg.geo
        return cls(s.tables, s.scales, hierarchy, s.biases, g.prior_weight)

    def to(self, device: torch.device | str) -> "HierarchicalScorer":
        self.tables = [t.to(device) for t in self.tables]
        self.all_cells = self.all_cells.to(device)
        self.scales = self.scales.to(device)
        self.offsets = self.offsets.to(device)
        self.priors = [p.to(device) if p is not None else None for p in self.priors]
        self.parents = [p.to(device) for p in self.parents]
        return self

    def level_logits(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Per level, the model's raw cell logits (cosine / temperature [+ bias]): list of (B, n_l)."""
        sims = F.normalize(features.float(), dim=-1) @ self.all_cells.T
        parts = zip(sims.split(self.splits, dim=-1), self.offsets.split(self.splits))
        return [s * self.scales[k] + o for k, (s, o) in enumerate(parts)]

    def level_log_probs(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Per level, log-softmax over its cells: list of (B, n_l)."""
        return [torch.log_softmax(z, dim=-1) for z in self.level_logits(features)]

    def cumulative_from_logits(self, logits: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level, log of (own probability x all ancestors' probabilities) [x the cell's training
        frequency ** prior_weight], from :meth:`level_logits`: list of (B, n_l). The paper's product scores;
        :class:`~geosurge.model.decode.Decoder` turns them into answers."""
        logp = [torch.log_softmax(z, dim=-1) for z in logits]
        chain = [logp[0]]
        for k in range(1, len(logp)):
            chain.append(logp[k] + chain[-1][:, self.parents[k]])
        return [c + p if p is not None else c for c, p in zip(chain, self.priors)]

    def cumulative_log_scores(self, features: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`cumulative_from_logits` of ``features``' logits."""
        return self.cumulative_from_logits(self.level_logits(features))


#: Where no training photo lies in the answer's finest cell, the nearest one shown is the most similar within this
#: distance of the answer. 750 km is the "country" radius of the 1/25/200/750/2500 km ladder and the radius the
#: demo's answer is chosen for (the most chance within 750 km): a photo farther away no longer shows the place the
#: answer stands for, and the app says that no training photo is near the answer instead of showing one.
NEAR_REFERENCE_KM = 750.0


@dataclass
class ReferenceIndex:
    """Training images as references: normalized features, coordinates, ids and finest cell."""

    features: torch.Tensor  # (n, d) L2-normalized
    latlon: np.ndarray  # (n, 2)
    ids: list[str]
    cells: np.ndarray  # (n,) finest-level cell index, -1 if outside every kept cell

    def __post_init__(self) -> None:
        # Stored as float16 in checkpoints; rounding here too makes a saved-then-loaded index identical.
        self.features = F.normalize(self.features.float(), dim=-1).half().float()
        n = len(self.ids)
        if not (self.features.shape[0] == self.latlon.shape[0] == self.cells.shape[0] == n):
            raise ValueError("reference index arrays disagree in length")

    def nearest(self, features: torch.Tensor, cells: np.ndarray, points: np.ndarray | None = None,
                radius_km: float = NEAR_REFERENCE_KM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each query, the most similar reference inside ``cells[i]``; when that cell has none, the most
        similar within ``radius_km`` of ``points[i]`` ((B, 2) lat, lon: the answers), else the most similar
        overall (the caller tells by its distance).

        Returns (index, cosine similarity, in_cell flag), each (B,).
        """
        sims = F.normalize(features.float(), dim=-1) @ self.features.to(features.device).float().T  # (B, n)
        same = torch.from_numpy(self.cells[None, :] == np.asarray(cells)[:, None]).to(sims.device)
        masked = sims.masked_fill(~same, float("-inf"))
        best_in = masked.argmax(dim=1)
        fallback = sims
        if points is not None:
            pts, ref = torch.as_tensor(np.asarray(points), dtype=torch.float32), torch.as_tensor(self.latlon, dtype=torch.float32)
            near = (pairwise_haversine_km(pts[:, 0], pts[:, 1], ref[:, 0], ref[:, 1]) <= radius_km).to(sims.device)
            fallback = torch.where(near.any(dim=1, keepdim=True), sims.masked_fill(~near, float("-inf")), sims)
        best_any = fallback.argmax(dim=1)
        in_cell = same.any(dim=1)
        idx = torch.where(in_cell, best_in, best_any)
        sim = sims.gather(1, idx[:, None])[:, 0]
        return idx.cpu().numpy(), sim.cpu().numpy(), in_cell.cpu().numpy()
