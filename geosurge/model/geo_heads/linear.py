"""No geographic embeddings: a linear classifier over the finest cells, trained with cross-entropy
(the paper's Table VI ablation)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import GeoHead, HeadScoring, register_geo_head

if TYPE_CHECKING:  # annotations only: config.py checks names against this registry, so no runtime import back
    from ..config import GeoConfig


@register_geo_head("linear")
class LinearGeoHead(GeoHead):
    """One level of cells: logits = W features + b (no normalization of W, no temperature)."""

    max_levels = 1

    def __init__(self, cfg: GeoConfig, num_cells: Sequence[int]):
        super().__init__()
        if len(num_cells) != 1:
            raise ValueError(f"the linear head classifies one level of cells, got {len(num_cells)} levels")
        self.num_cells = list(num_cells)
        self.fc = nn.Linear(cfg.embed_dim, num_cells[0])

    def logits(self, features: torch.Tensor, level: int) -> torch.Tensor:
        return self.fc(features)

    def scoring(self) -> HeadScoring:
        return HeadScoring([self.fc.weight.detach()], torch.ones(1), [self.fc.bias.detach()])

    def loss(self, features: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, list[float], list[float]]:
        """Cross-entropy over all cells of the head's single (finest) level."""
        valid = cells[:, -1] >= 0
        if not valid.any():
            return features.sum() * 0.0, [float("nan")], [float("nan")]
        logits = self.logits(features[valid], 0).float()
        target = cells[valid, -1]
        loss = F.cross_entropy(logits, target)
        return loss, [loss.item()], [(logits.argmax(1) == target).float().mean().item()]
